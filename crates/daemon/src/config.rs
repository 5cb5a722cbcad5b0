//! The daemon's configuration: TOML, every key optional, unknown keys refused.
//! [`DEFAULT_TOML`] is the documented default file (`bitswarm daemon --print-config`); a test
//! checks that it parses to [`Config::default`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

/// The default configuration as a commented TOML file.
pub const DEFAULT_TOML: &str = r#"# bitswarm daemon configuration. Every key is optional; the values shown are the defaults.
# Unknown keys are refused. Sizes and rates are in bytes (per second).

[daemon]
# Where the daemon keeps its state (torrents, their settings and resume data, in an SQLite
# database). Empty: $XDG_DATA_HOME/bitswarm (~/.local/share/bitswarm without the variable).
state_dir = ""
# Where torrents are downloaded unless one is added with a folder of its own. Empty:
# ~/Downloads.
download_dir = ""
# A folder watched for .torrent files: each one dropped in is added, then renamed
# NAME.torrent.added (NAME.torrent.invalid when it is not a usable torrent). Empty: none.
watch_dir = ""
# Torrents start as soon as they are added (unless added paused).
start_added = true
# Folders the RPC may make torrents from (bitswarm-torrent-create, the web page's "Create"):
# a path outside them, or a symbolic link leading out of them, is refused. Empty: the
# download folder above (as configured, not as a client may change it later).
create_dirs = []

[peers]
# The TCP port peers connect to (0: any free port, printed at start). The RPC's peer-port
# moves it while the daemon runs, and is kept in the state over this value.
port = 51413
# The address to listen on and to dial from.
bind = "0.0.0.0"
# Connections at once over every torrent, per torrent, and per torrent from one IP address
# (0: no limit per address).
max_connections = 500
max_per_torrent = 60
max_per_ip = 1
# Message Stream Encryption: "plaintext", "prefer" (MSE offered first, plaintext peers
# accepted) or "require" (MSE with RC4 only, both ways).
encryption = "prefer"
# Regular unchoke slots per torrent (one optimistic slot comes on top).
upload_slots = 4

[dht]
# A Mainline DHT node (BEP 5) on UDP at the peers' address and port: public torrents ask it for
# peers and announce themselves on it (private torrents never do), and magnet links with no
# tracker find their peers there. Its routing table is kept in the state folder (dht.dat)
# and read at start, before the routers are asked.
enabled = true
# HOST:PORT of the routers the node joins the DHT through.
routers = ["router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881"]

[lsd]
# Local Service Discovery (BEP 14): public torrents are announced on the local network by
# multicast (each at most once every 5 minutes, several to a packet, about a packet a minute
# after the first few), and the peers announced there are dialed; private torrents never are.
# The RPC's lpd-enabled turns it on and off while the daemon runs (kept in the state, over
# this value); --no-lsd turns it off for the daemon's life.
enabled = true
# The multicast groups, ADDRESS:PORT (BEP 14's IPv4 and IPv6 ones). Empty: no LSD at all.
groups = ["239.192.152.143:6771", "[ff15::efc0:988f]:6771"]

[limits]
# Bytes per second over every torrent; 0: no limit.
max_upload_rate = 0
max_download_rate = 0

[queue]
# Torrents downloading, seeding and checking their data at once; the others wait their turn
# in queue order (0: no limit for downloading and seeding).
max_downloading = 5
max_seeding = 0
max_checking = 2

[seeding]
# Seeding stops at this upload ratio (uploaded / size), after this many minutes without
# uploading, or after this many minutes of seeding, unless a torrent says otherwise
# (0: no limit).
ratio_limit = 0.0
idle_limit_minutes = 0
time_limit_minutes = 0

[rpc]
# Transmission's RPC (/transmission/rpc) and /metrics. On an address other than loopback, a
# user and password, or an allow-list, is required.
bind = "127.0.0.1:9091"
# HTTP basic auth: the user, and the password's hash (an argon2 PHC string, as
# `bitswarm daemon --hash-password` prints it). Empty: no password.
user = ""
password_hash = ""
# Client addresses allowed, as Transmission's rpc-whitelist ("192.168.*.*"). Empty: loopback
# only when there is no password, anyone with the password otherwise.
allow = []
# Host names clients may call the daemon by (against DNS rebinding, when there is no
# password): IP addresses and "localhost" are always allowed.
host_whitelist = []

[tracker]
# Runs bitswarm's tracker (as `bitswarm tracker` does) in the daemon's process; the web page
# shows its swarms. Off by default.
enabled = false
# Where it serves HTTP and UDP announces and scrapes ("off" turns a protocol off).
http = "127.0.0.1:6969"
udp = "127.0.0.1:6969"
# A tracker configuration file for everything else (`bitswarm tracker --print-config`); its
# bind addresses are replaced by the two above. Empty: the tracker's defaults.
config = ""
"#;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub peers: PeersConfig,
    pub dht: DhtConfig,
    pub lsd: LsdConfig,
    pub limits: LimitsConfig,
    pub queue: QueueConfig,
    pub seeding: SeedingConfig,
    pub rpc: RpcSection,
    pub tracker: TrackerSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSection {
    pub enabled: bool,
    pub http: String,
    pub udp: String,
    pub config: PathBuf,
}

impl Default for TrackerSection {
    fn default() -> Self {
        TrackerSection {
            enabled: false,
            http: "127.0.0.1:6969".into(),
            udp: "127.0.0.1:6969".into(),
            config: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub download_dir: PathBuf,
    pub watch_dir: PathBuf,
    pub start_added: bool,
    pub create_dirs: Vec<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::new(),
            download_dir: PathBuf::new(),
            watch_dir: PathBuf::new(),
            start_added: true,
            create_dirs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    pub port: u16,
    pub bind: IpAddr,
    pub max_connections: usize,
    pub max_per_torrent: usize,
    pub max_per_ip: usize,
    pub encryption: String,
    pub upload_slots: usize,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            port: 51413,
            bind: IpAddr::from([0, 0, 0, 0]),
            max_connections: 500,
            max_per_torrent: 60,
            max_per_ip: 1,
            encryption: "prefer".into(),
            upload_slots: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhtConfig {
    pub enabled: bool,
    pub routers: Vec<String>,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig { enabled: true, routers: bitswarm_peer::DEFAULT_ROUTERS.iter().map(|r| r.to_string()).collect() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LsdConfig {
    pub enabled: bool,
    pub groups: Vec<SocketAddr>,
}

impl Default for LsdConfig {
    fn default() -> Self {
        LsdConfig { enabled: true, groups: bitswarm_peer::default_lsd_groups() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub max_downloading: usize,
    pub max_seeding: usize,
    pub max_checking: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { max_downloading: 5, max_seeding: 0, max_checking: 2 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SeedingConfig {
    pub ratio_limit: f64,
    pub idle_limit_minutes: u64,
    pub time_limit_minutes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSection {
    pub bind: SocketAddr,
    pub user: String,
    pub password_hash: String,
    pub allow: Vec<String>,
    pub host_whitelist: Vec<String>,
}

impl Default for RpcSection {
    fn default() -> Self {
        RpcSection {
            bind: SocketAddr::from(([127, 0, 0, 1], 9091)),
            user: String::new(),
            password_hash: String::new(),
            allow: Vec::new(),
            host_whitelist: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a configuration file's text and checks it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// What TOML cannot say: values that are wrong together or out of range.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !matches!(self.peers.encryption.as_str(), "plaintext" | "prefer" | "require") {
            return bad(format!(
                "peers.encryption: {:?} is not one of \"plaintext\", \"prefer\", \"require\"",
                self.peers.encryption
            ));
        }
        if self.peers.max_connections == 0 || self.peers.max_per_torrent == 0 {
            return bad("peers.max_connections and peers.max_per_torrent must be at least 1".into());
        }
        for r in &self.dht.routers {
            bitswarm_peer::parse_router(r).map_err(|e| ConfigError::Invalid(format!("dht.routers: {e}")))?;
        }
        for g in &self.lsd.groups {
            bitswarm_peer::check_lsd_group(*g).map_err(|e| ConfigError::Invalid(format!("lsd.groups: {e}")))?;
        }
        if self.seeding.ratio_limit < 0.0 || !self.seeding.ratio_limit.is_finite() {
            return bad(format!("seeding.ratio_limit: {} is not a ratio", self.seeding.ratio_limit));
        }
        if self.rpc.user.is_empty() != self.rpc.password_hash.is_empty() {
            return bad("rpc.user and rpc.password_hash go together: set both, or neither".into());
        }
        if !self.rpc.bind.ip().to_canonical().is_loopback() && self.rpc.user.is_empty() && self.rpc.allow.is_empty() {
            return bad(format!(
                "rpc: {} is reachable from other machines: set rpc.user and rpc.password_hash \
                 (bitswarm daemon --hash-password), or rpc.allow (the client addresses allowed)",
                self.rpc.bind
            ));
        }
        self.rpc_config()?;
        if let Some(d) = self.daemon.create_dirs.iter().find(|d| !d.is_absolute()) {
            return bad(format!("daemon.create_dirs: {} is not an absolute path", d.display()));
        }
        if self.tracker.enabled {
            self.tracker_config()?;
        }
        Ok(())
    }

    /// The configuration of the tracker the daemon runs (`[tracker]`), read and checked.
    pub fn tracker_config(&self) -> Result<bitswarm_tracker::Config, ConfigError> {
        let t = &self.tracker;
        let mut c = if t.config.as_os_str().is_empty() {
            bitswarm_tracker::Config::default()
        } else {
            let text = std::fs::read_to_string(&t.config)
                .map_err(|e| ConfigError::Invalid(format!("tracker.config: {}: {e}", t.config.display())))?;
            bitswarm_tracker::Config::from_toml(&text)
                .map_err(|e| ConfigError::Invalid(format!("tracker.config: {}: {e}", t.config.display())))?
        };
        for (key, value, enabled, bind) in [
            ("http", &t.http, &mut c.http.enabled, &mut c.http.bind),
            ("udp", &t.udp, &mut c.udp.enabled, &mut c.udp.bind),
        ] {
            if value == "off" {
                *enabled = false;
            } else {
                *enabled = true;
                *bind = value.parse().map_err(|_| {
                    ConfigError::Invalid(format!("tracker.{key}: {value:?} is not an IP:PORT address or \"off\""))
                })?;
            }
        }
        if !c.http.enabled && !c.udp.enabled {
            return Err(ConfigError::Invalid("tracker: http and udp are both off".into()));
        }
        c.validate().map_err(|e| ConfigError::Invalid(format!("tracker: {e}")))?;
        Ok(c)
    }

    /// The folders torrents may be made from: as configured, else the download folder.
    pub fn create_dirs(&self) -> Result<Vec<PathBuf>, ConfigError> {
        if self.daemon.create_dirs.is_empty() {
            Ok(vec![self.download_dir()?])
        } else {
            Ok(self.daemon.create_dirs.clone())
        }
    }

    /// The RPC's access rules, checked against where it listens.
    pub fn rpc_config(&self) -> Result<bitswarm_rpc::RpcConfig, ConfigError> {
        let invalid = |e: bitswarm_rpc::ConfigError| ConfigError::Invalid(format!("rpc: {e}"));
        let mut c = bitswarm_rpc::RpcConfig::default();
        if !self.rpc.user.is_empty() {
            c.credentials =
                Some(bitswarm_rpc::Credentials::new(&self.rpc.user, &self.rpc.password_hash).map_err(invalid)?);
            // With a password, anyone who has it may connect unless an allow-list says more.
            c.allow_list = None;
        }
        if !self.rpc.allow.is_empty() {
            c.allow_list = Some(bitswarm_rpc::AddressList::parse(&self.rpc.allow.join(",")).map_err(invalid)?);
        }
        if !self.rpc.host_whitelist.is_empty() {
            c.host_whitelist =
                Some(bitswarm_rpc::HostWhitelist::parse(&self.rpc.host_whitelist.join(",")).map_err(invalid)?);
        }
        c.validate(self.rpc.bind).map_err(invalid)?;
        Ok(c)
    }

    /// The state folder: as configured, else `$XDG_DATA_HOME/bitswarm` or
    /// `~/.local/share/bitswarm`.
    pub fn state_dir(&self) -> Result<PathBuf, ConfigError> {
        if !self.daemon.state_dir.as_os_str().is_empty() {
            return Ok(self.daemon.state_dir.clone());
        }
        let var = |k| std::env::var_os(k).map(PathBuf::from).filter(|p| p.is_absolute());
        var("XDG_DATA_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".local/share")))
            .map(|d| d.join("bitswarm"))
            .ok_or_else(|| ConfigError::Invalid("no state folder: set daemon.state_dir (or --state), or HOME".into()))
    }

    /// The default download folder: as configured, else `~/Downloads`.
    pub fn download_dir(&self) -> Result<PathBuf, ConfigError> {
        if !self.daemon.download_dir.as_os_str().is_empty() {
            return Ok(self.daemon.download_dir.clone());
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Downloads")).filter(|p| p.is_absolute()).ok_or_else(
            || ConfigError::Invalid("no download folder: set daemon.download_dir (or --download-dir)".into()),
        )
    }

    /// The session's settings.
    pub fn session_settings(&self) -> bitswarm_peer::Settings {
        let mut s = bitswarm_peer::Settings::new(SocketAddr::new(self.peers.bind, self.peers.port));
        s.max_connections = self.peers.max_connections;
        s.max_peers_per_torrent = self.peers.max_per_torrent;
        s.max_peers_per_ip = self.peers.max_per_ip;
        s.upload_slots = self.peers.upload_slots;
        (s.outgoing_encryption, s.incoming_encryption) = encryption(&self.peers.encryption);
        s.max_upload_rate = self.limits.max_upload_rate;
        s.max_download_rate = self.limits.max_download_rate;
        s.max_downloading = (self.queue.max_downloading > 0).then_some(self.queue.max_downloading);
        s.max_seeding = (self.queue.max_seeding > 0).then_some(self.queue.max_seeding);
        s.max_checking = self.queue.max_checking.max(1);
        s.seed_ratio = (self.seeding.ratio_limit > 0.0).then_some(self.seeding.ratio_limit);
        s.seed_idle_minutes = (self.seeding.idle_limit_minutes > 0).then_some(self.seeding.idle_limit_minutes);
        s.seed_time_minutes = (self.seeding.time_limit_minutes > 0).then_some(self.seeding.time_limit_minutes);
        s.dht = self.dht.enabled;
        s.dht_routers = self.dht.routers.clone();
        s.dht_state = self.state_dir().ok().map(|d| d.join("dht.dat"));
        s.lsd = self.lsd.enabled;
        s.lsd_groups = self.lsd.groups.clone();
        s
    }
}

/// The policies of an `encryption` setting, for dialing and for accepting.
pub fn encryption(name: &str) -> (bitswarm_peer::Outgoing, bitswarm_peer::Incoming) {
    use bitswarm_peer::{Incoming, Outgoing};
    match name {
        "require" => (Outgoing::Require, Incoming::Require),
        "prefer" => (Outgoing::Prefer, Incoming::Any),
        _ => (Outgoing::Plaintext, Incoming::Any),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_is_the_default() {
        assert_eq!(Config::from_toml(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = Config::from_toml("[peers]\nprot = 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `prot`"), "{e}");
        let e = Config::from_toml("[peers]\nencryption = \"always\"\n").unwrap_err().to_string();
        assert!(e.contains("peers.encryption"), "{e}");
        let e = Config::from_toml("[rpc]\nbind = \"0.0.0.0:9091\"\n").unwrap_err().to_string();
        assert!(e.starts_with("rpc: "), "{e}");
        let e = Config::from_toml("[rpc]\nuser = \"a\"\n").unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        let e = Config::from_toml("[dht]\nrouters = [\"nowhere\"]\n").unwrap_err().to_string();
        assert!(e.contains("dht.routers") && e.contains("HOST:PORT"), "{e}");
        let e = Config::from_toml("[lsd]\ngroups = [\"127.0.0.1:6771\"]\n").unwrap_err().to_string();
        assert!(e.contains("lsd.groups") && e.contains("not a multicast address"), "{e}");
        let e = Config::from_toml("[lsd]\ngroups = [\"239.1.2.3\"]\n").unwrap_err().to_string();
        assert!(e.contains("groups"), "{e}");
        let c = Config::from_toml("[lsd]\nenabled = false\ngroups = [\"239.1.2.3:7000\"]\n").unwrap();
        let s = c.session_settings();
        assert!(!s.lsd && s.lsd_groups == vec!["239.1.2.3:7000".parse().unwrap()]);
        let e = Config::from_toml("[dht]\nenable = false\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `enable`"), "{e}");
        // Elsewhere than loopback with an allow-list, or a password: served.
        assert!(Config::from_toml("[rpc]\nbind = \"0.0.0.0:9091\"\nallow = [\"192.168.*.*\"]\n").is_ok());
        let hash = bitswarm_rpc::hash_password("secret");
        let t = format!("[rpc]\nbind = \"0.0.0.0:9091\"\nuser = \"me\"\npassword_hash = \"{hash}\"\n");
        assert!(Config::from_toml(&t).is_ok());
        let e = Config::from_toml("[daemon]\ncreate_dirs = [\"data\"]\n").unwrap_err().to_string();
        assert!(e.contains("daemon.create_dirs: data is not an absolute path"), "{e}");
        let e = Config::from_toml("[tracker]\nenabled = true\nhttp = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.contains("tracker.http: \"nowhere\""), "{e}");
        let e =
            Config::from_toml("[tracker]\nenabled = true\nhttp = \"off\"\nudp = \"off\"\n").unwrap_err().to_string();
        assert!(e.contains("both off"), "{e}");
        let c = Config::from_toml("[tracker]\nenabled = true\nudp = \"off\"\nhttp = \"127.0.0.1:0\"\n").unwrap();
        let t = c.tracker_config().unwrap();
        assert!(t.http.enabled && !t.udp.enabled && t.http.bind.port() == 0);
    }
}
