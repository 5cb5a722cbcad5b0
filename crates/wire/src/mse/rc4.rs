//! RC4, the stream cipher of MSE (kept only for compatibility: it is broken as a cipher, and
//! MSE uses it as obfuscation).

#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    /// The key schedule; `key` must hold 1 to 256 bytes.
    pub fn new(key: &[u8]) -> Rc4 {
        assert!(!key.is_empty() && key.len() <= 256, "RC4 key of {} bytes", key.len());
        let mut s = [0u8; 256];
        for (i, x) in s.iter_mut().enumerate() {
            *x = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// Encrypts or decrypts `data` in place (the same operation).
    #[inline]
    pub fn apply(&mut self, data: &mut [u8]) {
        let (mut i, mut j, s) = (self.i, self.j, &mut self.s);
        for b in data {
            i = i.wrapping_add(1);
            let si = s[i as usize];
            j = j.wrapping_add(si);
            let sj = s[j as usize];
            s[i as usize] = sj;
            s[j as usize] = si;
            *b ^= s[si.wrapping_add(sj) as usize];
        }
        (self.i, self.j) = (i, j);
    }

    /// Drops `n` bytes of keystream.
    pub fn discard(&mut self, n: usize) {
        let mut sink = [0u8; 256];
        let mut left = n;
        while left > 0 {
            let k = left.min(sink.len());
            self.apply(&mut sink[..k]);
            left -= k;
        }
    }
}

impl std::fmt::Debug for Rc4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4 { .. }")
    }
}
