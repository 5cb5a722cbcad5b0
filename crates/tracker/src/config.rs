//! The tracker's configuration: TOML, every key optional, unknown keys refused.
//! [`DEFAULT_TOML`] is the documented default file (`bitswarm tracker --print-config`).

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// The default configuration as a commented TOML file. A test checks that it parses to
/// [`Config::default`], so the two cannot drift apart.
pub const DEFAULT_TOML: &str = r#"# bitswarm tracker configuration. Every key is optional; the values shown are the defaults.
# Unknown keys are refused. Durations are in seconds.

[http]
# Serve HTTP announce (/announce), scrape (/scrape), the stats page (/), /stats (JSON) and
# /metrics (Prometheus). "[::]:6969" serves IPv6 and IPv4 on one socket.
enabled = true
bind = "0.0.0.0:6969"
# Honour the `ip` parameter of an announce (off: peers are recorded at the address the
# tracker sees, so nobody can register someone else's address).
allow_ip_param = false
# Behind a reverse proxy: take the client address from this header (for example
# "X-Forwarded-For", whose last entry is used, or "X-Real-IP"; RFC 7239's "Forwarded" is not
# read) ...
real_ip_header = ""
# ... but only on connections from these proxy addresses. Others are served at their own
# address and the header is ignored.
trusted_proxies = []
# HTTP worker threads, each with its own listening socket (SO_REUSEPORT) and event loop
# (0: one per core).
threads = 0
# Seconds a connection may take to send a request's headers, waiting between keep-alive
# requests included (1 to 3600); then it is closed (idle and stalled connections do not pile up).
header_timeout = 15
# Seconds a client may go without taking any bytes of a reply it asked for (1 to 3600); then
# the connection is closed (a client that never reads cannot hold it open).
write_timeout = 15

[udp]
# Serve the UDP tracker protocol (BEP 15). "[::]:6969" serves IPv6 and IPv4.
enabled = true
bind = "0.0.0.0:6969"
# Threads receiving and answering packets (0: one per core).
threads = 0
# A connection id stays valid at least this long after it was handed out (BEP 15 says 2 minutes)...
connection_id_valid = 120
# ... plus this much grace for clients that keep using it a little longer.
connection_id_grace = 60
# Honour the `ip` field of an announce.
allow_ip_field = false

[announce]
# How long clients are told to wait between announces, and the least they must wait.
interval = 1800
min_interval = 900
# Peers returned when the client does not say (`numwant`), and the most ever returned.
numwant_default = 50
numwant_max = 100

[scrape]
# A scrape without info_hash lists every swarm. Off: such a scrape gets a failure reason.
full_scrape = false

[store]
# A peer that has not announced for this many seconds is dropped; a swarm with no peers left
# and no activity for as long goes with it. 0: twice announce.interval (3600 with the default
# interval). Set by hand, it must exceed announce.interval, with a margin for clients that
# announce late, or peers would be dropped between their announces.
peer_timeout = 0
# How often the background cleaner looks for such peers.
cleaner_interval = 60
# Caps: an announce that would add a peer beyond them is answered, but the peer is not stored
# (a swarm holds at most 1048574 peers of each address family).
max_peers_per_swarm = 100000
max_peers_total = 20000000
# Lock shards of the swarm table (a power of two): announces on different swarms rarely meet.
shards = 256
# Where swarms live: "memory" (this process: the fastest, one instance) or "redis" (a Redis
# server that several tracker instances share: they give every client the same peers and
# counts). On Redis, peers expire by Redis's clock (the instances' clocks do not matter), the
# caps above hold, and shards is not used; while Redis does not answer, announces and scrapes
# get a failure reason and the tracker reconnects by itself.
backend = "memory"
# With backend = "redis": the server, as redis://[:PASSWORD@]HOST[:PORT][/DB] or
# unix:///PATH/TO/redis.sock. Use a Redis of its own (or a database of its own: /DB) with
# maxmemory-policy noeviction.
redis_url = ""

[stats]
# Serve / (HTML), /stats (JSON) and /metrics (Prometheus text) on the HTTP address.
enabled = true
# The most swarms listed on / and /stats (the busiest first); totals always cover all of them.
max_swarms_listed = 1000

[access]
# Which info-hashes are served: "off" (all of them), "allow" (only those in `list`: a tracker
# of one's own torrents), "deny" (all but those in `list`), or "private" (only the torrents
# registered in the state database, and only to its users, each announcing at
# /announce/PASSKEY; see [private]). Others get a failure reason.
mode = "off"
# A file of info-hashes (40 hex digits or 32 base32 characters), one a line; '#' starts a
# comment. `bitswarm tracker` reads it again on SIGHUP (a list that does not parse is reported
# and the old one stays). Not used in private mode.
list = ""

[private]
# Used with access.mode = "private". The folder of the users' and torrents' database
# (tracker.db, SQLite). "": $XDG_DATA_HOME/bitswarm/tracker (~/.local/share/bitswarm/tracker);
# `bitswarm tracker --state DIR` overrides it. `bitswarm tracker user ...` and
# `bitswarm tracker torrent ...` change it, also while the tracker runs (it notices within
# a fraction of a second, and the command waits until it has).
state = ""
# Seconds between two writes of the users' uploaded, downloaded and completed figures to the
# database (announces only add to counters in memory; a stop writes what is left).
flush_interval = 5
# Bytes a second: an announce whose uploaded or downloaded figure grew faster than this since
# the peer's last announce is not counted (and is logged), nor is a downloaded figure that grew
# by more than twice the torrent's size.
max_rate = 1073741824
# The admin JSON API (/admin/..., on the HTTP address, with `Authorization: Bearer TOKEN`; make
# the token with `bitswarm tracker admin-token`) answers only connections from loopback unless
# this is true (put it behind TLS then).
admin_remote = false
"#;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub udp: UdpConfig,
    pub announce: AnnounceConfig,
    pub scrape: ScrapeConfig,
    pub store: StoreConfig,
    pub stats: StatsConfig,
    pub access: AccessConfig,
    pub private: PrivateConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub allow_ip_param: bool,
    pub real_ip_header: String,
    pub trusted_proxies: Vec<IpAddr>,
    pub threads: usize,
    pub header_timeout: u64,
    pub write_timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub threads: usize,
    pub connection_id_valid: u64,
    pub connection_id_grace: u64,
    pub allow_ip_field: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    pub interval: u32,
    pub min_interval: u32,
    pub numwant_default: u32,
    pub numwant_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub full_scrape: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub peer_timeout: u32,
    pub cleaner_interval: u32,
    pub max_peers_per_swarm: u32,
    pub max_peers_total: u64,
    pub shards: usize,
    pub backend: StoreBackend,
    pub redis_url: String,
}

/// Where swarms live (see [`crate::backend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Memory,
    Redis,
}

/// Which info-hashes are served (see [`crate::access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    #[default]
    Off,
    Allow,
    Deny,
    /// Registered torrents only, for the users of the state database (see [`crate::private`]).
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivateConfig {
    pub state: std::path::PathBuf,
    pub flush_interval: u32,
    pub max_rate: u64,
    pub admin_remote: bool,
}

impl Default for PrivateConfig {
    fn default() -> Self {
        PrivateConfig { state: std::path::PathBuf::new(), flush_interval: 5, max_rate: 1 << 30, admin_remote: false }
    }
}

impl PrivateConfig {
    /// The state folder: `state`, or `$XDG_DATA_HOME/bitswarm/tracker`
    /// (`~/.local/share/bitswarm/tracker`) when that is empty.
    pub fn state_dir(&self) -> std::path::PathBuf {
        if !self.state.as_os_str().is_empty() {
            return self.state.clone();
        }
        default_state_dir()
    }
}

/// `$XDG_DATA_HOME/bitswarm/tracker`, else `$HOME/.local/share/bitswarm/tracker`, else
/// `./bitswarm-tracker`.
pub fn default_state_dir() -> std::path::PathBuf {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => std::path::PathBuf::from(h).join(".local/share"),
            None => return std::path::PathBuf::from("bitswarm-tracker"),
        },
    };
    base.join("bitswarm").join("tracker")
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub mode: AccessMode,
    pub list: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    pub enabled: bool,
    pub max_swarms_listed: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 6969)),
            allow_ip_param: false,
            real_ip_header: String::new(),
            trusted_proxies: Vec::new(),
            threads: 0,
            header_timeout: 15,
            write_timeout: 15,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            enabled: true,
            bind: SocketAddr::from(([0, 0, 0, 0], 6969)),
            threads: 0,
            connection_id_valid: 120,
            connection_id_grace: 60,
            allow_ip_field: false,
        }
    }
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig { interval: 1800, min_interval: 900, numwant_default: 50, numwant_max: 100 }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            peer_timeout: 0,
            cleaner_interval: 60,
            max_peers_per_swarm: 100_000,
            max_peers_total: 20_000_000,
            shards: 256,
            backend: StoreBackend::Memory,
            redis_url: String::new(),
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { enabled: true, max_swarms_listed: 1000 }
    }
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses a TOML configuration (unknown keys refused) and checks its values.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Seconds after its last announce that a peer is dropped: `store.peer_timeout`, or twice
    /// `announce.interval` when that is 0.
    pub fn peer_timeout(&self) -> u32 {
        match self.store.peer_timeout {
            0 => self.announce.interval.saturating_mul(2),
            t => t,
        }
    }

    /// Checks the values that TOML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.announce.interval == 0 {
            return bad("announce.interval must be at least 1");
        }
        if self.announce.min_interval > self.announce.interval {
            return bad("announce.min_interval must not exceed announce.interval");
        }
        if self.announce.numwant_max == 0 || self.announce.numwant_default > self.announce.numwant_max {
            return bad("announce.numwant_max must be at least 1 and at least announce.numwant_default");
        }
        if self.store.cleaner_interval == 0 {
            return bad("store.cleaner_interval must be at least 1");
        }
        if self.store.peer_timeout != 0 && self.store.peer_timeout <= self.announce.interval {
            return bad(&format!(
                "store.peer_timeout ({} s) must exceed announce.interval ({} s), or peers that announce on \
                 time are dropped between their announces; 0 makes it twice the interval",
                self.store.peer_timeout, self.announce.interval
            ));
        }
        if !self.store.shards.is_power_of_two() || self.store.shards > 65536 {
            return bad("store.shards must be a power of two up to 65536");
        }
        if self.store.max_peers_per_swarm as usize > crate::store::MAX_LIST {
            return bad(&format!("store.max_peers_per_swarm must be at most {}", crate::store::MAX_LIST));
        }
        if self.http.header_timeout == 0 || self.http.header_timeout > 3600 {
            return bad("http.header_timeout must be 1 to 3600 seconds");
        }
        if self.http.write_timeout == 0 || self.http.write_timeout > 3600 {
            return bad("http.write_timeout must be 1 to 3600 seconds");
        }
        if self.udp.connection_id_valid == 0 {
            return bad("udp.connection_id_valid must be at least 1");
        }
        if !self.http.real_ip_header.is_empty() && self.http.trusted_proxies.is_empty() {
            return bad("http.real_ip_header needs http.trusted_proxies: the header is only believed from them");
        }
        if !self.http.real_ip_header.is_empty() && axum::http::HeaderName::try_from(&self.http.real_ip_header).is_err()
        {
            return bad("http.real_ip_header is not a valid header name");
        }
        if !self.http.enabled && !self.udp.enabled {
            return bad("both HTTP and UDP are off: nothing to serve");
        }
        match self.store.backend {
            StoreBackend::Redis if self.store.redis_url.is_empty() => {
                return bad("store.backend \"redis\" needs store.redis_url, as redis://HOST:PORT or unix:///PATH");
            }
            StoreBackend::Redis => {
                if let Err(e) = redis::Client::open(self.store.redis_url.as_str()) {
                    return bad(&format!("store.redis_url: {e}"));
                }
            }
            StoreBackend::Memory if !self.store.redis_url.is_empty() => {
                return bad("store.redis_url is set but store.backend is \"memory\": say backend = \"redis\"");
            }
            StoreBackend::Memory => {}
        }
        match self.access.mode {
            AccessMode::Allow | AccessMode::Deny if self.access.list.as_os_str().is_empty() => {
                return bad("access.mode \"allow\" or \"deny\" needs access.list, a file of info-hashes");
            }
            AccessMode::Private if !self.access.list.as_os_str().is_empty() => {
                return bad("access.list is not used in private mode: the registered torrents are served \
                     (bitswarm tracker torrent add)");
            }
            _ => {}
        }
        if self.private.flush_interval == 0 || self.private.flush_interval > 3600 {
            return bad("private.flush_interval must be 1 to 3600 seconds");
        }
        if self.private.max_rate == 0 {
            return bad("private.max_rate must be at least 1 byte a second");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_is_the_default() {
        assert_eq!(Config::from_toml(DEFAULT_TOML).unwrap(), Config::default());
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        let c = Config::default();
        assert_eq!(c.http.bind.to_string(), "0.0.0.0:6969");
        assert_eq!(c.udp.bind.to_string(), "0.0.0.0:6969");
        assert!(c.http.enabled && c.udp.enabled && !c.scrape.full_scrape && !c.http.allow_ip_param);
        assert_eq!(c.peer_timeout(), 2 * c.announce.interval);
        assert_eq!(c.peer_timeout(), 3600);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = Config::from_toml("[http]\nbindd = \"1.2.3.4:5\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `bindd`"), "{e}");
        let e = Config::from_toml("[nope]\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `nope`"), "{e}");
        assert!(Config::from_toml("[store]\nshards = 3\n").is_err());
        assert!(Config::from_toml("[http]\nheader_timeout = 0\n").is_err());
        assert!(Config::from_toml("[http]\nheader_timeout = 3601\n").is_err());
        assert_eq!(Config::from_toml("[http]\nheader_timeout = 3600\n").unwrap().http.header_timeout, 3600);
        assert!(Config::from_toml("[http]\nwrite_timeout = 0\n").is_err());
        assert!(Config::from_toml("[http]\nwrite_timeout = 3601\n").is_err());
        assert_eq!(Config::from_toml("[http]\nwrite_timeout = 7\n").unwrap().http.write_timeout, 7);
        let cap = crate::store::MAX_LIST;
        assert!(Config::from_toml(&format!("[store]\nmax_peers_per_swarm = {cap}\n")).is_ok());
        assert!(Config::from_toml(&format!("[store]\nmax_peers_per_swarm = {}\n", cap + 1)).is_err());
        assert!(Config::from_toml("[announce]\ninterval = 10\nmin_interval = 20\n").is_err());
        assert!(Config::from_toml("[http]\nreal_ip_header = \"X-Real-IP\"\n").is_err());
        let c = Config::from_toml(
            "[http]\nreal_ip_header = \"X-Real-IP\"\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n[store]\npeer_timeout = 2000\n",
        )
        .unwrap();
        assert_eq!(c.http.trusted_proxies.len(), 2);
        assert_eq!(c.peer_timeout(), 2000);
        // The timeout follows the interval unless set, and a set one must exceed it.
        assert_eq!(Config::from_toml("[announce]\ninterval = 7200\n").unwrap().peer_timeout(), 14400);
        let e =
            Config::from_toml("[announce]\ninterval = 7200\n[store]\npeer_timeout = 3600\n").unwrap_err().to_string();
        assert!(e.contains("store.peer_timeout (3600 s) must exceed announce.interval (7200 s)"), "{e}");
        assert!(Config::from_toml("[store]\npeer_timeout = 1800\n").is_err());
        assert!(Config::from_toml("[store]\ncleaner_interval = 0\n").is_err());
        let e = Config::from_toml("[access]\nmode = \"allow\"\n").unwrap_err().to_string();
        assert!(e.contains("needs access.list"), "{e}");
        let e = Config::from_toml("[access]\nmode = \"sometimes\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
        let c = Config::from_toml("[access]\nmode = \"private\"\n[private]\nstate = \"/srv/t\"\n").unwrap();
        assert_eq!((c.access.mode, c.private.state_dir()), (AccessMode::Private, "/srv/t".into()));
        let e = Config::from_toml("[access]\nmode = \"private\"\nlist = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("not used in private mode"), "{e}");
        assert!(Config::from_toml("[private]\nflush_interval = 0\n").is_err());
        assert!(Config::from_toml("[private]\nmax_rate = 0\n").is_err());
        let c = Config::from_toml("[access]\nmode = \"deny\"\nlist = \"/etc/bitswarm/deny.txt\"\n").unwrap();
        assert_eq!(c.access.mode, AccessMode::Deny);
        // Redis: the URL is needed, checked, and only with the backend that uses it.
        let e = Config::from_toml("[store]\nbackend = \"redis\"\n").unwrap_err().to_string();
        assert!(e.contains("needs store.redis_url"), "{e}");
        let e = Config::from_toml("[store]\nbackend = \"redis\"\nredis_url = \"http://x\"\n").unwrap_err().to_string();
        assert!(e.contains("store.redis_url:"), "{e}");
        let e = Config::from_toml("[store]\nredis_url = \"redis://127.0.0.1\"\n").unwrap_err().to_string();
        assert!(e.contains("backend is \"memory\""), "{e}");
        let e = Config::from_toml("[store]\nbackend = \"sql\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown variant `sql`"), "{e}");
        let e = Config::from_toml("[store]\nredis = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `redis`"), "{e}");
        for url in ["redis://127.0.0.1:6379/2", "unix:///run/redis/redis.sock", "redis://:secret@10.0.0.1"] {
            let c = Config::from_toml(&format!("[store]\nbackend = \"redis\"\nredis_url = \"{url}\"\n")).unwrap();
            assert_eq!((c.store.backend, c.store.redis_url.as_str()), (StoreBackend::Redis, url));
        }
    }
}
