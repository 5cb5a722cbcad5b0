//! The Diffie-Hellman group of Message Stream Encryption: the 768-bit prime P (the first Oakley
//! group, RFC 2409 §6.1) with generator 2, and private keys of 160 bits.
//!
//! A fixed-size Montgomery modular exponentiation over twelve 64-bit limbs: the only arithmetic MSE
//! needs is `base^x mod P` for one known modulus, which takes about 60 lines here against a
//! general big-integer crate (and its two support crates) for a single function. The ladder
//! multiplies on every exponent bit and selects the result without branching on the private key.

/// Bytes of a public key or shared secret (big-endian, zero-padded on the left).
pub const KEY_LEN: usize = 96;
const LIMBS: usize = KEY_LEN / 8;

type Num = [u64; LIMBS];

/// P, big-endian.
pub const PRIME: [u8; KEY_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34, 0xC4, 0xC6, 0x62,
    0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74, 0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13,
    0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD, 0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30,
    0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37, 0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76,
    0x62, 0x5E, 0x7E, 0xC6, 0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05,
    0x63,
];

/// Limbs, least significant first.
fn from_be(b: &[u8; KEY_LEN]) -> Num {
    let mut n = [0u64; LIMBS];
    for (i, limb) in n.iter_mut().enumerate() {
        let at = KEY_LEN - 8 * (i + 1);
        *limb = u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    }
    n
}

fn to_be(n: &Num) -> [u8; KEY_LEN] {
    let mut b = [0u8; KEY_LEN];
    for (i, limb) in n.iter().enumerate() {
        let at = KEY_LEN - 8 * (i + 1);
        b[at..at + 8].copy_from_slice(&limb.to_be_bytes());
    }
    b
}

/// `a + b * c + carry` as (low, high).
#[inline(always)]
fn mac(a: u64, b: u64, c: u64, carry: u64) -> (u64, u64) {
    let t = u128::from(a) + u128::from(b) * u128::from(c) + u128::from(carry);
    (t as u64, (t >> 64) as u64)
}

/// `a - b` and whether it borrowed.
fn sub(a: &Num, b: &Num) -> (Num, bool) {
    let mut out = [0u64; LIMBS];
    let mut borrow = false;
    for i in 0..LIMBS {
        let (d, b1) = a[i].overflowing_sub(b[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    (out, borrow)
}

/// `if take { b } else { a }` without a branch on `take`.
fn select(a: &Num, b: &Num, take: bool) -> Num {
    let mask = 0u64.wrapping_sub(u64::from(take));
    let mut out = [0u64; LIMBS];
    for i in 0..LIMBS {
        out[i] = (a[i] & !mask) | (b[i] & mask);
    }
    out
}

struct Field {
    p: Num,
    /// -P⁻¹ mod 2⁶⁴.
    n0: u64,
    /// R² mod P, R = 2⁷⁶⁸.
    r2: Num,
}

impl Field {
    fn new() -> Field {
        let p = from_be(&PRIME);
        // Newton's iteration doubles the correct low bits of the inverse each step.
        let mut inv = 1u64;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(p[0].wrapping_mul(inv)));
        }
        // R mod P = R - P (P > R/2), then doubled 768 times: R·2⁷⁶⁸ mod P.
        let (mut r2, _) = sub(&[0; LIMBS], &p);
        for _ in 0..KEY_LEN * 8 {
            let top = r2[LIMBS - 1] >> 63;
            for i in (1..LIMBS).rev() {
                r2[i] = (r2[i] << 1) | (r2[i - 1] >> 63);
            }
            r2[0] <<= 1;
            let (d, borrow) = sub(&r2, &p);
            r2 = select(&r2, &d, top == 1 || !borrow);
        }
        Field { p, n0: inv.wrapping_neg(), r2 }
    }

    /// Montgomery product `a·b·R⁻¹ mod P` for `a, b < P`.
    fn mul(&self, a: &Num, b: &Num) -> Num {
        let mut t = [0u64; LIMBS + 2];
        for &bi in b {
            let mut c = 0;
            for j in 0..LIMBS {
                (t[j], c) = mac(t[j], a[j], bi, c);
            }
            let (s, o) = t[LIMBS].overflowing_add(c);
            t[LIMBS] = s;
            t[LIMBS + 1] = u64::from(o);
            let m = t[0].wrapping_mul(self.n0);
            let (_, mut c) = mac(t[0], m, self.p[0], 0);
            for j in 1..LIMBS {
                (t[j - 1], c) = mac(t[j], m, self.p[j], c);
            }
            let (s, o) = t[LIMBS].overflowing_add(c);
            t[LIMBS - 1] = s;
            t[LIMBS] = t[LIMBS + 1] + u64::from(o);
        }
        let r: Num = t[..LIMBS].try_into().expect("limbs");
        let (d, borrow) = sub(&r, &self.p);
        select(&r, &d, t[LIMBS] != 0 || !borrow)
    }

    /// `base^exp mod P`, `base < P`, `exp` big-endian.
    fn pow(&self, base: &Num, exp: &[u8]) -> Num {
        let x = self.mul(base, &self.r2);
        let mut one = [0u64; LIMBS];
        one[0] = 1;
        let mut acc = self.mul(&one, &self.r2);
        for byte in exp {
            for bit in (0..8).rev() {
                acc = self.mul(&acc, &acc);
                let with = self.mul(&acc, &x);
                acc = select(&acc, &with, (byte >> bit) & 1 == 1);
            }
        }
        self.mul(&acc, &one)
    }
}

fn field() -> &'static Field {
    static FIELD: std::sync::OnceLock<Field> = std::sync::OnceLock::new();
    FIELD.get_or_init(Field::new)
}

/// `base^exp mod P`, big-endian in and out. `None` when `base >= P`.
pub fn mod_pow(base: &[u8; KEY_LEN], exp: &[u8]) -> Option<[u8; KEY_LEN]> {
    let f = field();
    let b = from_be(base);
    let (_, below) = sub(&b, &f.p);
    below.then(|| to_be(&f.pow(&b, exp)))
}

/// Whether `y` is a usable public key: 2 ≤ y ≤ P − 2 (0, 1 and P − 1 would make the shared secret
/// predictable).
pub fn valid_public(y: &[u8; KEY_LEN]) -> bool {
    let f = field();
    let n = from_be(y);
    let mut two = [0u64; LIMBS];
    two[0] = 2;
    let (_, below_two) = sub(&n, &two);
    let (pm1, _) = sub(&f.p, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let (_, below_pm1) = sub(&n, &pm1);
    !below_two && below_pm1
}
