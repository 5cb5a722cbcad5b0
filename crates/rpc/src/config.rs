//! Who may use the RPC: [`RpcConfig`], with Transmission's three guards.
//!
//! | Transmission setting | here | check |
//! |---|---|---|
//! | `rpc-authentication-required`, `rpc-username`, `rpc-password` | [`RpcConfig::credentials`] | HTTP basic auth, 401 |
//! | `rpc-whitelist-enabled`, `rpc-whitelist` | [`RpcConfig::allow_list`] | client address, 403 |
//! | `rpc-host-whitelist-enabled`, `rpc-host-whitelist` | [`RpcConfig::host_whitelist`] | `Host` header when no password is required, 421 |
//!
//! Passwords are kept as argon2id PHC strings ([`hash_password`]), never in clear, unlike
//! Transmission's salted SHA-1.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};

/// A configuration that cannot be served as it is. The message says what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to serve the RPC on {listen} without protection: anyone who can reach it could control the \
         daemon. Set RPC credentials (a username and password), or an allow-list of client addresses \
         (rpc-whitelist, e.g. \"127.0.0.1,192.168.1.*\"), or listen on a loopback address"
    )]
    Unprotected { listen: SocketAddr },
    #[error("the RPC password hash is not an argon2 PHC string ($argon2id$v=19$…): {0}")]
    PasswordHash(String),
    #[error(
        "{entry:?} is not an address pattern for the RPC allow-list: use IPv4 or IPv6 addresses where `*` and `?` \
         may stand for digits, e.g. \"127.0.0.1,::1,192.168.*.*\""
    )]
    AllowListEntry { entry: String },
    #[error("{entry:?} is not a host name pattern for the RPC host whitelist (letters, digits, `.`, `-`, `*`, `?`)")]
    HostWhitelistEntry { entry: String },
}

/// Hashes a password for [`Credentials`]: argon2id with the crate's default cost (19 MiB, 2
/// passes) and a random salt, as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
///
/// # Panics
/// Only if the operating system's random number generator fails.
pub fn hash_password(password: &str) -> String {
    match argon2::Argon2::default().hash_password(password.as_bytes()) {
        Ok(h) => h.to_string(),
        Err(e) => panic!("hashing a password needs the OS random number generator: {e}"),
    }
}

/// Whether `password` matches a PHC string made by [`hash_password`]. A malformed hash
/// matches nothing. Takes tens of milliseconds by design.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A username and the argon2 hash of its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password_hash: String,
}

impl Credentials {
    /// Credentials from a stored hash; fails when `password_hash` is not an argon2 PHC string.
    pub fn new(username: impl Into<String>, password_hash: impl Into<String>) -> Result<Credentials, ConfigError> {
        let password_hash = password_hash.into();
        let parsed = PasswordHash::new(&password_hash).map_err(|e| ConfigError::PasswordHash(e.to_string()))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(ConfigError::PasswordHash(format!("algorithm {} is not argon2", parsed.algorithm.as_str())));
        }
        Ok(Credentials { username: username.into(), password_hash })
    }

    /// Credentials from a clear password, hashed here.
    pub fn from_password(username: impl Into<String>, password: &str) -> Credentials {
        Credentials { username: username.into(), password_hash: hash_password(password) }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password_hash(&self) -> &str {
        &self.password_hash
    }

    /// Whether this user and password match. Always runs the password check, whatever the
    /// username, so the time taken does not tell whether the username was right.
    pub fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        let password_ok = std::str::from_utf8(password).is_ok_and(|p| verify_password(p, &self.password_hash));
        let username_ok = constant_time_eq(username, self.username.as_bytes());
        password_ok & username_ok
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Transmission's `tr_wildmat`, as used by both whitelists: `*` matches any run of
/// characters, `?` one; ASCII letters match either case. Linear backtracking on the last
/// `*`, so no pattern takes exponential time.
pub(crate) fn wildmat(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Splits a Transmission list setting: entries separated by `,` or `;`, trimmed, empty ones
/// dropped.
fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', ';']).map(str::trim).filter(|e| !e.is_empty())
}

/// Client addresses allowed to use the RPC (`rpc-whitelist`): patterns such as `127.0.0.1`,
/// `::1`, `192.168.*.*`. An IPv4-mapped IPv6 client (`::ffff:192.168.1.2`) is matched as
/// IPv4, as Transmission does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressList {
    patterns: Vec<String>,
}

impl AddressList {
    /// Parses `127.0.0.1,192.168.*.*` (separators `,` or `;`).
    pub fn parse(list: &str) -> Result<AddressList, ConfigError> {
        let mut patterns = Vec::new();
        for e in entries(list) {
            let ok = e.bytes().all(|c| c.is_ascii_hexdigit() || matches!(c, b'.' | b':' | b'*' | b'?'));
            if !ok {
                return Err(ConfigError::AllowListEntry { entry: e.to_owned() });
            }
            patterns.push(e.to_owned());
        }
        Ok(AddressList { patterns })
    }

    /// `127.0.0.1,::1`, Transmission's default.
    pub fn loopback() -> AddressList {
        AddressList { patterns: vec!["127.0.0.1".to_owned(), "::1".to_owned()] }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether a client at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let text = ip.to_canonical().to_string();
        self.patterns.iter().any(|p| wildmat(p, &text))
    }

    /// Whether some pattern is only wildcards and separators (`*`, `*.*.*.*`), so that every
    /// address of a family passes: such a list protects nothing.
    fn admits_everything(&self) -> bool {
        self.patterns.iter().any(|p| p.bytes().all(|c| matches!(c, b'*' | b'.' | b':')))
    }
}

impl FromStr for AddressList {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<AddressList, ConfigError> {
        AddressList::parse(s)
    }
}

/// Host names clients may use in the `Host` header when no password is required
/// (`rpc-host-whitelist`), against DNS rebinding: a web page on `evil.example` that makes its
/// name resolve to 127.0.0.1 sends `Host: evil.example`. IP literals and `localhost` are
/// always allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostWhitelist {
    patterns: Vec<String>,
}

impl HostWhitelist {
    /// Parses `mybox.lan,*.home.arpa` (separators `,` or `;`).
    pub fn parse(list: &str) -> Result<HostWhitelist, ConfigError> {
        let mut patterns = Vec::new();
        for e in entries(list) {
            let ok = e.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'*' | b'?'));
            if !ok {
                return Err(ConfigError::HostWhitelistEntry { entry: e.to_owned() });
            }
            patterns.push(e.to_owned());
        }
        Ok(HostWhitelist { patterns })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Transmission's `isHostnameAllowed` once a password is known not to be required: no
    /// `Host` fails; an IP address with or without port passes; so does `localhost` (or
    /// `localhost.`); otherwise the name before any `:` must match a pattern.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        if is_ip_with_optional_port(host) {
            return true;
        }
        let name = host.split(':').next().unwrap_or(host);
        if name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.") {
            return true;
        }
        self.patterns.iter().any(|p| wildmat(p, name))
    }
}

impl FromStr for HostWhitelist {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<HostWhitelist, ConfigError> {
        HostWhitelist::parse(s)
    }
}

fn is_ip_with_optional_port(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || host.parse::<SocketAddr>().is_ok()
        || host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).is_some_and(|h| h.parse::<IpAddr>().is_ok())
}

/// Who may use the RPC. The default is Transmission's: no password, clients on loopback only,
/// and the `Host` check on with no extra names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// `Some`: every request needs this user and password (HTTP basic auth).
    pub credentials: Option<Credentials>,
    /// `Some`: only clients whose address matches may connect; `None`: any address.
    pub allow_list: Option<AddressList>,
    /// `Some`: when no password is required, the `Host` header must be an IP address,
    /// `localhost`, or match this list; `None`: no `Host` check.
    pub host_whitelist: Option<HostWhitelist>,
}

impl Default for RpcConfig {
    fn default() -> RpcConfig {
        RpcConfig {
            credentials: None,
            allow_list: Some(AddressList::loopback()),
            host_whitelist: Some(HostWhitelist::default()),
        }
    }
}

impl RpcConfig {
    /// Refuses to serve on a non-loopback address with neither credentials nor an allow-list
    /// that excludes someone: that would hand the daemon (and the files it can write) to
    /// anyone on the network.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        let guarded = self.credentials.is_some() || self.allow_list.as_ref().is_some_and(|l| !l.admits_everything());
        if listen.ip().to_canonical().is_loopback() || guarded {
            Ok(())
        } else {
            Err(ConfigError::Unprotected { listen })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildmat_like_transmission() {
        assert!(wildmat("192.168.*.*", "192.168.1.20"));
        assert!(!wildmat("192.168.*.*", "10.0.0.1"));
        assert!(wildmat("127.0.0.1", "127.0.0.1"));
        assert!(!wildmat("127.0.0.1", "127.0.0.10"));
        assert!(wildmat("10.0.0.?", "10.0.0.7"));
        assert!(!wildmat("10.0.0.?", "10.0.0.77"));
        assert!(wildmat("*", ""));
        assert!(wildmat("*.LAN", "box.lan"));
        assert!(wildmat("a*b*c", "aXXbYYc"));
        assert!(!wildmat("a*b*c", "aXXbYY"));
        // Many stars against a long text stay linear enough to finish at once.
        let long = "a".repeat(10_000);
        assert!(!wildmat("*a*a*a*a*a*b", &long));
    }

    #[test]
    fn allow_list() {
        let l = AddressList::parse("127.0.0.1, 192.168.*.*;::1").unwrap();
        assert!(l.allows("127.0.0.1".parse().unwrap()));
        assert!(l.allows("192.168.4.5".parse().unwrap()));
        assert!(l.allows("::ffff:192.168.4.5".parse().unwrap()));
        assert!(l.allows("::1".parse().unwrap()));
        assert!(!l.allows("10.1.1.1".parse().unwrap()));
        assert!(AddressList::parse("localhost").is_err());
        assert!(AddressList::parse("").unwrap().patterns().is_empty());
    }

    #[test]
    fn host_whitelist() {
        let none = HostWhitelist::default();
        assert!(none.allows(Some("127.0.0.1:9091")));
        assert!(none.allows(Some("[::1]:9091")));
        assert!(none.allows(Some("[::1]")));
        assert!(none.allows(Some("10.0.0.1")));
        assert!(none.allows(Some("localhost:9091")));
        assert!(none.allows(Some("LOCALHOST.")));
        assert!(!none.allows(Some("evil.example:9091")));
        assert!(!none.allows(Some("localhost.evil.example")));
        assert!(!none.allows(None));
        let list = HostWhitelist::parse("*.lan,nas").unwrap();
        assert!(list.allows(Some("box.lan:9091")));
        assert!(list.allows(Some("nas")));
        assert!(!list.allows(Some("nas.evil")));
        assert!(HostWhitelist::parse("a b").is_err());
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let h = hash_password("secret");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("secret", &h));
        assert!(!verify_password("Secret", &h));
        assert!(!verify_password("secret", "not a hash"));
        let c = Credentials::new("user", h).unwrap();
        assert!(c.matches(b"user", b"secret"));
        assert!(!c.matches(b"usr", b"secret"));
        assert!(!c.matches(b"user", b"\xff"));
        assert!(Credentials::new("user", "secret").is_err());
        assert!(!format!("{c:?}").contains("argon2"));
    }

    #[test]
    fn validate_refuses_an_open_network_listener() {
        let open = RpcConfig { credentials: None, allow_list: None, host_whitelist: None };
        assert!(open.validate("127.0.0.1:9091".parse().unwrap()).is_ok());
        assert!(open.validate("[::1]:9091".parse().unwrap()).is_ok());
        let err = open.validate("0.0.0.0:9091".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("credentials") && err.to_string().contains("rpc-whitelist"), "{err}");
        let star = RpcConfig { allow_list: Some(AddressList::parse("*.*.*.*").unwrap()), ..open.clone() };
        assert!(star.validate("0.0.0.0:9091".parse().unwrap()).is_err());
        let lan = RpcConfig { allow_list: Some(AddressList::parse("192.168.*.*").unwrap()), ..open.clone() };
        assert!(lan.validate("0.0.0.0:9091".parse().unwrap()).is_ok());
        assert!(RpcConfig::default().validate("0.0.0.0:9091".parse().unwrap()).is_ok());
    }
}
