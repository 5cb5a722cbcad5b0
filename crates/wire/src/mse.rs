//! Message Stream Encryption (MSE, also called Protocol Encryption), without I/O.
//!
//! The handshake, A being the side that connects and B the side that accepts:
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
//! 5 A->B: ENCRYPT2(payload stream)
//! ```
//!
//! Y is a 768-bit Diffie-Hellman public key (96 bytes, big-endian), S the shared secret, SKEY the
//! info-hash, HASH SHA-1, VC eight zero bytes. ENCRYPT is RC4 keyed with `HASH('keyA', S, SKEY)`
//! from A to B and `HASH('keyB', S, SKEY)` from B to A, the first 1024 bytes of keystream
//! discarded. ENCRYPT2 is that same RC4 stream going on when B selected RC4, or nothing when it
//! selected plaintext. Pads are 0 to 512 bytes; IA (the initial payload) is the first bytes of
//! A's payload stream, usually its BitTorrent handshake, and always RC4-encrypted.
//!
//! [`Initiator`] and [`Responder`] are state machines: feed them what the peer sent with
//! `receive`, send what they append to `out`, until they return [`Progress::Done`] with the method
//! chosen, the ciphers for the rest of the stream, and the payload bytes already received. They
//! bound what they buffer and scan, never panic on input, and fail with [`MseError`] on a peer that
//! breaks the protocol. [`detect`] tells an incoming plaintext BitTorrent handshake from an MSE
//! attempt.

mod dh;
mod rc4;

use sha1::{Digest, Sha1};

pub use dh::{KEY_LEN, PRIME};
pub use rc4::Rc4;

/// Longest pad (PadA, PadB, PadC, PadD).
pub const MAX_PAD: usize = 512;
/// Bits of crypto_provide / crypto_select.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
pub const CRYPTO_RC4: u32 = 0x02;
/// Bytes of a private key (160 bits).
pub const PRIVATE_KEY_LEN: usize = 20;
/// Keystream dropped before use.
const DISCARD: usize = 1024;
const VC: [u8; 8] = [0; 8];

/// The stream method after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Plaintext,
    Rc4,
}

impl Method {
    fn bit(self) -> u32 {
        match self {
            Method::Plaintext => CRYPTO_PLAINTEXT,
            Method::Rc4 => CRYPTO_RC4,
        }
    }
}

/// How the responder picks among the methods the initiator provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Plaintext when provided (no cipher on bulk data), RC4 when it is the only one.
    PreferPlaintext,
    /// RC4, or no connection.
    RequireRc4,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("the peer's Diffie-Hellman key is out of range")]
    BadPublicKey,
    #[error("no synchronisation ({0}) within the bound the protocol sets")]
    NoSync(&'static str),
    #[error("the peer asks for a torrent we do not serve")]
    UnknownInfoHash,
    #[error("bad verification constant")]
    BadVc,
    #[error("pad of {0} bytes (at most 512)")]
    BadPad(u16),
    #[error("no acceptable method among those the peer provides ({0:#x})")]
    NoCommonMethod(u32),
    #[error("the peer selected {selected:#x}, not one method of {provided:#x}")]
    BadSelect { selected: u32, provided: u32 },
    #[error("the handshake is over (or failed)")]
    Finished,
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// The random parts of one handshake: the private key and the pads this side sends.
#[derive(Clone)]
pub struct Secrets {
    private_key: [u8; PRIVATE_KEY_LEN],
    /// PadA (initiator) or PadB (responder).
    pad_key: Vec<u8>,
    /// PadC (initiator) or PadD (responder).
    pad_crypto: Vec<u8>,
}

impl Secrets {
    /// Fixed secrets (for tests). Panics if a pad is longer than [`MAX_PAD`].
    pub fn new(private_key: [u8; PRIVATE_KEY_LEN], pad_key: Vec<u8>, pad_crypto: Vec<u8>) -> Secrets {
        assert!(pad_key.len() <= MAX_PAD && pad_crypto.len() <= MAX_PAD, "pads are at most {MAX_PAD} bytes");
        Secrets { private_key, pad_key, pad_crypto }
    }

    /// A private key and PadA/PadB (random length 0–512, random bytes) from the operating
    /// system's generator. PadC/PadD are empty, as the specification's usual practice has it.
    pub fn random() -> Result<Secrets, MseError> {
        let fill = |b: &mut [u8]| getrandom::fill(b).map_err(|e| MseError::Random(e.to_string()));
        let mut private_key = [0u8; PRIVATE_KEY_LEN];
        fill(&mut private_key)?;
        let mut len = [0u8; 2];
        fill(&mut len)?;
        let mut pad_key = vec![0u8; usize::from(u16::from_le_bytes(len)) % (MAX_PAD + 1)];
        fill(&mut pad_key)?;
        Ok(Secrets { private_key, pad_key, pad_crypto: Vec::new() })
    }

    fn public_key(&self) -> [u8; KEY_LEN] {
        let mut g = [0u8; KEY_LEN];
        g[KEY_LEN - 1] = 2;
        dh::mod_pow(&g, &self.private_key).expect("2 < P")
    }

    fn shared_secret(&self, theirs: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], MseError> {
        if !dh::valid_public(theirs) {
            return Err(MseError::BadPublicKey);
        }
        dh::mod_pow(theirs, &self.private_key).ok_or(MseError::BadPublicKey)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// The public key for a private key (Y = 2^X mod P).
pub fn public_key(private_key: &[u8; PRIVATE_KEY_LEN]) -> [u8; KEY_LEN] {
    Secrets::new(*private_key, Vec::new(), Vec::new()).public_key()
}

/// The shared secret S from our private key and the peer's public key.
pub fn shared_secret(private_key: &[u8; PRIVATE_KEY_LEN], theirs: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], MseError> {
    Secrets::new(*private_key, Vec::new(), Vec::new()).shared_secret(theirs)
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RC4 keyed with `HASH(name, S, SKEY)`, the first 1024 bytes dropped.
fn cipher(name: &[u8], s: &[u8; KEY_LEN], skey: &[u8; 20]) -> Rc4 {
    let mut c = Rc4::new(&hash(&[name, s, skey]));
    c.discard(DISCARD);
    c
}

fn xor20(a: [u8; 20], b: [u8; 20]) -> [u8; 20] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The two directions of an RC4 stream after the handshake.
#[derive(Debug, Clone)]
pub struct Ciphers {
    /// Decrypts what the peer sends.
    pub decrypt: Rc4,
    /// Encrypts what we send.
    pub encrypt: Rc4,
}

/// A finished handshake.
#[derive(Debug)]
pub struct Established {
    /// SKEY: the torrent the connection is for.
    pub info_hash: [u8; 20],
    pub method: Method,
    /// `Some` exactly when the method is RC4: every further byte each way goes through it.
    pub ciphers: Option<Ciphers>,
    /// The peer's payload stream received so far, in plaintext (for the responder, IA first).
    pub received: Vec<u8>,
}

#[derive(Debug)]
pub enum Progress {
    /// Send what was appended to `out`, then feed more of the peer's bytes.
    NeedMore,
    Done(Box<Established>),
}

/// What the first bytes of an incoming connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    NeedMore,
    /// `19, "BitTorrent protocol"`: a plaintext handshake.
    Plaintext,
    /// Anything else: taken as an MSE handshake (Ya).
    Encrypted,
}

/// Tells a plaintext handshake from an MSE attempt by the first 20 bytes (fewer when they
/// already differ).
pub fn detect(start: &[u8]) -> Detected {
    let mut plain = [19u8; 20];
    plain[1..].copy_from_slice(crate::PROTOCOL);
    let n = start.len().min(20);
    if start[..n] != plain[..n] {
        Detected::Encrypted
    } else if n < 20 {
        Detected::NeedMore
    } else {
        Detected::Plaintext
    }
}

/// Finds `pat` starting at most [`MAX_PAD`] bytes into `buf`: `Ok(Some(at))`, `Ok(None)` to wait
/// for more, or an error once the bound is passed.
fn sync(buf: &[u8], pat: &[u8], what: &'static str) -> Result<Option<usize>, MseError> {
    let limit = MAX_PAD + pat.len();
    if let Some(at) = buf[..buf.len().min(limit)].windows(pat.len()).position(|w| w == pat) {
        return Ok(Some(at));
    }
    if buf.len() >= limit { Err(MseError::NoSync(what)) } else { Ok(None) }
}

/// Takes the first `n` bytes of `buf`, decrypted, if they are there.
fn take(buf: &mut Vec<u8>, n: usize, c: &mut Rc4) -> Option<Vec<u8>> {
    if buf.len() < n {
        return None;
    }
    let mut head: Vec<u8> = buf.drain(..n).collect();
    c.apply(&mut head);
    Some(head)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn done(
    info_hash: [u8; 20],
    method: Method,
    mut decrypt: Rc4,
    encrypt: Rc4,
    mut received: Vec<u8>,
    rest: Vec<u8>,
) -> Established {
    let at = received.len();
    received.extend_from_slice(&rest);
    let ciphers = match method {
        Method::Rc4 => {
            decrypt.apply(&mut received[at..]);
            Some(Ciphers { decrypt, encrypt })
        }
        Method::Plaintext => None,
    };
    Established { info_hash, method, ciphers, received }
}

enum IState {
    /// Waiting for Yb.
    Key,
    /// Waiting for ENCRYPT(VC) (the cipher has passed it).
    Vc {
        pattern: [u8; 8],
        dec: Rc4,
        enc: Rc4,
    },
    /// Waiting for crypto_select and len(PadD).
    Select {
        dec: Rc4,
        enc: Rc4,
    },
    PadD {
        dec: Rc4,
        enc: Rc4,
        method: Method,
        len: usize,
    },
    Over,
}

/// The side that connects (A).
pub struct Initiator {
    info_hash: [u8; 20],
    provide: u32,
    initial_payload: Vec<u8>,
    secrets: Secrets,
    buf: Vec<u8>,
    state: IState,
}

impl Initiator {
    /// Starts a handshake for `info_hash`, offering the methods in `provide` (bits
    /// [`CRYPTO_PLAINTEXT`], [`CRYPTO_RC4`]), with `initial_payload` (IA, at most 65535 bytes: the
    /// BitTorrent handshake, typically) sent as soon as the keys are known. Appends step 1 to `out`.
    pub fn new(
        info_hash: [u8; 20],
        provide: u32,
        initial_payload: Vec<u8>,
        secrets: Secrets,
        out: &mut Vec<u8>,
    ) -> Initiator {
        assert!(provide & (CRYPTO_PLAINTEXT | CRYPTO_RC4) != 0, "provide at least one method");
        assert!(initial_payload.len() <= usize::from(u16::MAX), "IA is at most 65535 bytes");
        out.extend_from_slice(&secrets.public_key());
        out.extend_from_slice(&secrets.pad_key);
        Initiator { info_hash, provide, initial_payload, secrets, buf: Vec::new(), state: IState::Key }
    }

    /// Feeds bytes from the peer; appends what to send to `out`.
    pub fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, MseError> {
        self.buf.extend_from_slice(input);
        let r = self.step(out);
        if r.is_err() {
            self.state = IState::Over;
            self.buf = Vec::new();
        }
        r
    }

    fn step(&mut self, out: &mut Vec<u8>) -> Result<Progress, MseError> {
        loop {
            self.state = match std::mem::replace(&mut self.state, IState::Over) {
                IState::Key => {
                    if self.buf.len() < KEY_LEN {
                        self.state = IState::Key;
                        return Ok(Progress::NeedMore);
                    }
                    let yb: [u8; KEY_LEN] = self.buf[..KEY_LEN].try_into().expect("key");
                    self.buf.drain(..KEY_LEN);
                    let s = self.secrets.shared_secret(&yb)?;
                    let mut enc = cipher(b"keyA", &s, &self.info_hash);
                    let mut dec = cipher(b"keyB", &s, &self.info_hash);
                    out.extend_from_slice(&hash(&[b"req1", &s]));
                    out.extend_from_slice(&xor20(hash(&[b"req2", &self.info_hash]), hash(&[b"req3", &s])));
                    let at = out.len();
                    out.extend_from_slice(&VC);
                    out.extend_from_slice(&self.provide.to_be_bytes());
                    out.extend_from_slice(&(self.secrets.pad_crypto.len() as u16).to_be_bytes());
                    out.extend_from_slice(&self.secrets.pad_crypto);
                    out.extend_from_slice(&(self.initial_payload.len() as u16).to_be_bytes());
                    out.extend_from_slice(&self.initial_payload);
                    enc.apply(&mut out[at..]);
                    let mut pattern = VC;
                    dec.apply(&mut pattern);
                    IState::Vc { pattern, dec, enc }
                }
                IState::Vc { pattern, dec, enc } => match sync(&self.buf, &pattern, "ENCRYPT(VC)")? {
                    Some(at) => {
                        self.buf.drain(..at + pattern.len());
                        IState::Select { dec, enc }
                    }
                    None => {
                        self.state = IState::Vc { pattern, dec, enc };
                        return Ok(Progress::NeedMore);
                    }
                },
                IState::Select { mut dec, enc } => {
                    let Some(h) = take(&mut self.buf, 6, &mut dec) else {
                        self.state = IState::Select { dec, enc };
                        return Ok(Progress::NeedMore);
                    };
                    let selected = be32(&h);
                    let method = match selected {
                        CRYPTO_PLAINTEXT => Method::Plaintext,
                        CRYPTO_RC4 => Method::Rc4,
                        _ => return Err(MseError::BadSelect { selected, provided: self.provide }),
                    };
                    if self.provide & selected == 0 {
                        return Err(MseError::BadSelect { selected, provided: self.provide });
                    }
                    let len = be16(&h[4..]);
                    if usize::from(len) > MAX_PAD {
                        return Err(MseError::BadPad(len));
                    }
                    IState::PadD { dec, enc, method, len: usize::from(len) }
                }
                IState::PadD { mut dec, enc, method, len } => {
                    if take(&mut self.buf, len, &mut dec).is_none() {
                        self.state = IState::PadD { dec, enc, method, len };
                        return Ok(Progress::NeedMore);
                    }
                    let rest = std::mem::take(&mut self.buf);
                    return Ok(Progress::Done(Box::new(done(self.info_hash, method, dec, enc, Vec::new(), rest))));
                }
                IState::Over => return Err(MseError::Finished),
            };
        }
    }
}

enum RState {
    /// Waiting for Ya.
    Key,
    /// Waiting for HASH('req1', S) after PadA.
    Req1 {
        s: Box<[u8; KEY_LEN]>,
        req1: [u8; 20],
    },
    /// Waiting for HASH('req2', SKEY) xor HASH('req3', S).
    Skey {
        s: Box<[u8; KEY_LEN]>,
    },
    /// Waiting for VC, crypto_provide, len(PadC).
    Header {
        dec: Rc4,
        enc: Rc4,
        info_hash: [u8; 20],
    },
    /// Waiting for PadC and len(IA).
    PadC {
        dec: Rc4,
        enc: Rc4,
        info_hash: [u8; 20],
        method: Method,
        len: usize,
    },
    Ia {
        dec: Rc4,
        enc: Rc4,
        info_hash: [u8; 20],
        method: Method,
        len: usize,
    },
    Over,
}

/// `HASH('req2', info-hash)`: how an initiator names its torrent in the handshake (XORed with
/// `HASH('req3', S)`). A responder with many torrents keeps these in a map (see
/// [`Responder::with_lookup`]).
pub fn req2_digest(info_hash: &[u8; 20]) -> [u8; 20] {
    hash(&[b"req2", &info_hash[..]])
}

/// Finds the info-hash whose [`req2_digest`] is the one given.
pub type Lookup = Box<dyn Fn(&[u8; 20]) -> Option<[u8; 20]> + Send>;

enum Torrents {
    List(Vec<[u8; 20]>),
    Lookup(Lookup),
}

/// The side that accepts (B), for the torrents whose info-hashes it is given.
pub struct Responder {
    torrents: Torrents,
    select: Select,
    secrets: Secrets,
    buf: Vec<u8>,
    state: RState,
}

impl Responder {
    pub fn new(info_hashes: Vec<[u8; 20]>, select: Select, secrets: Secrets) -> Responder {
        Responder { torrents: Torrents::List(info_hashes), select, secrets, buf: Vec::new(), state: RState::Key }
    }

    /// A responder for many torrents: `lookup` maps a [`req2_digest`] to its info-hash.
    pub fn with_lookup(lookup: Lookup, select: Select, secrets: Secrets) -> Responder {
        Responder { torrents: Torrents::Lookup(lookup), select, secrets, buf: Vec::new(), state: RState::Key }
    }

    /// Feeds bytes from the peer (from the connection's first byte on); appends what to send
    /// to `out`.
    pub fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, MseError> {
        self.buf.extend_from_slice(input);
        let r = self.step(out);
        if r.is_err() {
            self.state = RState::Over;
            self.buf = Vec::new();
        }
        r
    }

    fn choose(&self, provided: u32) -> Result<Method, MseError> {
        match self.select {
            Select::PreferPlaintext if provided & CRYPTO_PLAINTEXT != 0 => Ok(Method::Plaintext),
            _ if provided & CRYPTO_RC4 != 0 => Ok(Method::Rc4),
            _ => Err(MseError::NoCommonMethod(provided)),
        }
    }

    fn step(&mut self, out: &mut Vec<u8>) -> Result<Progress, MseError> {
        loop {
            self.state = match std::mem::replace(&mut self.state, RState::Over) {
                RState::Key => {
                    if self.buf.len() < KEY_LEN {
                        self.state = RState::Key;
                        return Ok(Progress::NeedMore);
                    }
                    let ya: [u8; KEY_LEN] = self.buf[..KEY_LEN].try_into().expect("key");
                    self.buf.drain(..KEY_LEN);
                    let s = self.secrets.shared_secret(&ya)?;
                    out.extend_from_slice(&self.secrets.public_key());
                    out.extend_from_slice(&self.secrets.pad_key);
                    RState::Req1 { req1: hash(&[b"req1", &s]), s: Box::new(s) }
                }
                RState::Req1 { s, req1 } => match sync(&self.buf, &req1, "HASH('req1', S)")? {
                    Some(at) => {
                        self.buf.drain(..at + req1.len());
                        RState::Skey { s }
                    }
                    None => {
                        self.state = RState::Req1 { s, req1 };
                        return Ok(Progress::NeedMore);
                    }
                },
                RState::Skey { s } => {
                    if self.buf.len() < 20 {
                        self.state = RState::Skey { s };
                        return Ok(Progress::NeedMore);
                    }
                    let got: [u8; 20] = self.buf[..20].try_into().expect("20");
                    self.buf.drain(..20);
                    let req2 = xor20(got, hash(&[b"req3", &s[..]]));
                    let info_hash = match &self.torrents {
                        Torrents::List(l) => l.iter().find(|ih| req2_digest(ih) == req2).copied(),
                        Torrents::Lookup(f) => f(&req2),
                    }
                    .ok_or(MseError::UnknownInfoHash)?;
                    let dec = cipher(b"keyA", &s, &info_hash);
                    let enc = cipher(b"keyB", &s, &info_hash);
                    RState::Header { dec, enc, info_hash }
                }
                RState::Header { mut dec, enc, info_hash } => {
                    let Some(h) = take(&mut self.buf, 14, &mut dec) else {
                        self.state = RState::Header { dec, enc, info_hash };
                        return Ok(Progress::NeedMore);
                    };
                    if h[..8] != VC {
                        return Err(MseError::BadVc);
                    }
                    let method = self.choose(be32(&h[8..]))?;
                    let len = be16(&h[12..]);
                    if usize::from(len) > MAX_PAD {
                        return Err(MseError::BadPad(len));
                    }
                    RState::PadC { dec, enc, info_hash, method, len: usize::from(len) }
                }
                RState::PadC { mut dec, enc, info_hash, method, len } => {
                    let Some(p) = take(&mut self.buf, len + 2, &mut dec) else {
                        self.state = RState::PadC { dec, enc, info_hash, method, len };
                        return Ok(Progress::NeedMore);
                    };
                    RState::Ia { dec, enc, info_hash, method, len: usize::from(be16(&p[len..])) }
                }
                RState::Ia { mut dec, mut enc, info_hash, method, len } => {
                    let Some(ia) = take(&mut self.buf, len, &mut dec) else {
                        self.state = RState::Ia { dec, enc, info_hash, method, len };
                        return Ok(Progress::NeedMore);
                    };
                    let at = out.len();
                    out.extend_from_slice(&VC);
                    out.extend_from_slice(&method.bit().to_be_bytes());
                    out.extend_from_slice(&(self.secrets.pad_crypto.len() as u16).to_be_bytes());
                    out.extend_from_slice(&self.secrets.pad_crypto);
                    enc.apply(&mut out[at..]);
                    let rest = std::mem::take(&mut self.buf);
                    return Ok(Progress::Done(Box::new(done(info_hash, method, dec, enc, ia, rest))));
                }
                RState::Over => return Err(MseError::Finished),
            };
        }
    }
}

#[cfg(test)]
mod tests;
