//! torrent-get's fields (§5): their names, and how each is written from a [`TorrentView`].
//!
//! Values are serialized straight from the views (no intermediate JSON tree), so answering a
//! few fields of 10,000 torrents costs one pass. Every integer field is written from a Rust
//! integer and every double through [`Double`], which writes whole values as integers and
//! others with at most 4 decimals, as Transmission does; NaN and infinities (which serde_json
//! would write as `null`) cannot reach a client.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use crate::view::{FileView, PeerSource, PeerView, TorrentView, TrackerView};

/// A JSON number for a double field: an integer when whole, else rounded to 4 decimals;
/// 0 for a non-finite value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Double(pub f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = if self.0.is_finite() { (self.0 * 10_000.0).round() / 10_000.0 } else { 0.0 };
        // Whole values within the exactly representable range are written as integers.
        if f.fract() == 0.0 && f.abs() < 9.0e15 { s.serialize_i64(f as i64) } else { s.serialize_f64(f) }
    }
}

macro_rules! fields {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// A field torrent-get knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Field { $($variant),* }

        impl Field {
            /// Every known field, in Transmission's documentation order.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Field] = &[$(Field::$variant),*];

            pub(crate) fn name(self) -> &'static str {
                match self { $(Field::$variant => $name),* }
            }

            pub(crate) fn parse(name: &str) -> Option<Field> {
                match name { $($name => Some(Field::$variant),)* _ => None }
            }
        }
    };
}

fields! {
    ActivityDate = "activityDate",
    AddedDate = "addedDate",
    Availability = "availability",
    BandwidthPriority = "bandwidthPriority",
    Comment = "comment",
    CorruptEver = "corruptEver",
    Creator = "creator",
    DateCreated = "dateCreated",
    DesiredAvailable = "desiredAvailable",
    DoneDate = "doneDate",
    DownloadDir = "downloadDir",
    DownloadedEver = "downloadedEver",
    DownloadLimit = "downloadLimit",
    DownloadLimited = "downloadLimited",
    EditDate = "editDate",
    Error = "error",
    ErrorString = "errorString",
    Eta = "eta",
    EtaIdle = "etaIdle",
    FileCount = "file-count",
    Files = "files",
    FileStats = "fileStats",
    Group = "group",
    HashString = "hashString",
    HaveUnchecked = "haveUnchecked",
    HaveValid = "haveValid",
    HonorsSessionLimits = "honorsSessionLimits",
    Id = "id",
    IsFinished = "isFinished",
    IsPrivate = "isPrivate",
    IsStalled = "isStalled",
    Labels = "labels",
    LeftUntilDone = "leftUntilDone",
    MagnetLink = "magnetLink",
    ManualAnnounceTime = "manualAnnounceTime",
    MaxConnectedPeers = "maxConnectedPeers",
    MetadataPercentComplete = "metadataPercentComplete",
    Name = "name",
    PeerLimit = "peer-limit",
    Peers = "peers",
    PeersConnected = "peersConnected",
    PeersFrom = "peersFrom",
    PeersGettingFromUs = "peersGettingFromUs",
    PeersSendingToUs = "peersSendingToUs",
    PercentComplete = "percentComplete",
    PercentDone = "percentDone",
    Pieces = "pieces",
    PieceCount = "pieceCount",
    PieceSize = "pieceSize",
    Priorities = "priorities",
    PrimaryMimeType = "primary-mime-type",
    QueuePosition = "queuePosition",
    RateDownload = "rateDownload",
    RateUpload = "rateUpload",
    RecheckProgress = "recheckProgress",
    SecondsDownloading = "secondsDownloading",
    SecondsSeeding = "secondsSeeding",
    SeedIdleLimit = "seedIdleLimit",
    SeedIdleMode = "seedIdleMode",
    SeedRatioLimit = "seedRatioLimit",
    SeedRatioMode = "seedRatioMode",
    SizeWhenDone = "sizeWhenDone",
    Source = "source",
    StartDate = "startDate",
    Status = "status",
    Trackers = "trackers",
    TrackerList = "trackerList",
    TrackerStats = "trackerStats",
    TotalSize = "totalSize",
    TorrentFile = "torrentFile",
    UploadedEver = "uploadedEver",
    UploadLimit = "uploadLimit",
    UploadLimited = "uploadLimited",
    UploadRatio = "uploadRatio",
    Wanted = "wanted",
    Webseeds = "webseeds",
    WebseedsSendingToUs = "webseedsSendingToUs",
}

/// The known fields among `names`, each once, in request order (unknown names are dropped,
/// never an error: Sonarr asks for `fileCount`, which Transmission does not have).
pub(crate) fn parse_fields<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for f in names.into_iter().filter_map(Field::parse) {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// torrent-get's `torrents`: objects with the fields sorted by name (as Transmission writes
/// keys), or with `table` a header row of field names in request order and one row per
/// torrent.
pub(crate) struct Torrents<'a> {
    pub views: &'a [TorrentView],
    pub fields: &'a [Field],
    pub table: bool,
}

impl Serialize for Torrents<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.table {
            let mut seq = s.serialize_seq(Some(self.views.len() + 1))?;
            seq.serialize_element(&Header(self.fields))?;
            for t in self.views {
                seq.serialize_element(&Row { t, fields: self.fields })?;
            }
            seq.end()
        } else {
            let mut sorted = self.fields.to_vec();
            sorted.sort_by_key(|f| f.name());
            let mut seq = s.serialize_seq(Some(self.views.len()))?;
            for t in self.views {
                seq.serialize_element(&Object { t, fields: &sorted })?;
            }
            seq.end()
        }
    }
}

struct Header<'a>(&'a [Field]);

impl Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|f| f.name()))
    }
}

struct Row<'a> {
    t: &'a TorrentView,
    fields: &'a [Field],
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.fields.iter().map(|&f| Value { t: self.t, f }))
    }
}

struct Object<'a> {
    t: &'a TorrentView,
    fields: &'a [Field],
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for &f in self.fields {
            map.serialize_entry(f.name(), &Value { t: self.t, f })?;
        }
        map.end()
    }
}

/// One field of one torrent.
struct Value<'a> {
    t: &'a TorrentView,
    f: Field,
}

fn slice_or_empty<T>(v: &Option<Vec<T>>) -> &[T] {
    v.as_deref().unwrap_or(&[])
}

/// `part / whole` in 0..1, 0 when `whole` is 0.
fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { (part.min(whole) as f64) / (whole as f64) }
}

/// Transmission 4.0's `uploadRatio`: uploaded over the wanted size; -1 when nothing was sent
/// and nothing is wanted, -2 (infinite) when data was sent but nothing is wanted.
fn upload_ratio(t: &TorrentView) -> f64 {
    match (t.uploaded_ever, t.size_when_done) {
        (0, 0) => -1.0,
        (_, 0) => -2.0,
        (up, size) => up as f64 / size as f64,
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.t;
        match self.f {
            Field::ActivityDate => s.serialize_i64(t.activity_date),
            Field::AddedDate => s.serialize_i64(t.added_date),
            Field::Availability => {
                s.collect_seq(slice_or_empty(&t.availability).iter().map(|a| a.map_or(-1, i64::from)))
            }
            Field::BandwidthPriority => s.serialize_i8(t.bandwidth_priority as i8),
            Field::Comment => s.serialize_str(&t.comment),
            Field::CorruptEver => s.serialize_u64(t.corrupt_ever),
            Field::Creator => s.serialize_str(&t.creator),
            Field::DateCreated => s.serialize_i64(t.date_created),
            Field::DesiredAvailable => s.serialize_u64(t.desired_available),
            Field::DoneDate => s.serialize_i64(t.done_date),
            Field::DownloadDir => s.serialize_str(&t.download_dir),
            Field::DownloadedEver => s.serialize_u64(t.downloaded_ever),
            Field::DownloadLimit => s.serialize_u32(t.download_limit),
            Field::DownloadLimited => s.serialize_bool(t.download_limited),
            Field::EditDate => s.serialize_i64(t.edit_date),
            Field::Error => s.serialize_i64(t.error.as_ref().map_or(0, |e| e.code())),
            Field::ErrorString => s.serialize_str(t.error.as_ref().map_or("", |e| e.message())),
            Field::Eta => s.serialize_i64(t.eta.to_wire()),
            Field::EtaIdle => s.serialize_i64(t.eta_idle.to_wire()),
            Field::FileCount => s.serialize_u32(t.file_count),
            Field::Files => s.collect_seq(slice_or_empty(&t.files).iter().map(|f| FileJson {
                bytes_completed: f.bytes_completed,
                length: f.length,
                name: &f.name,
            })),
            Field::FileStats => s.collect_seq(slice_or_empty(&t.files).iter().map(|f| FileStatJson {
                bytes_completed: f.bytes_completed,
                priority: f.priority as i8,
                wanted: f.wanted,
            })),
            Field::Group => s.serialize_str(&t.group),
            Field::HashString => s.serialize_str(&t.info_hash.to_hex()),
            Field::HaveUnchecked => s.serialize_u64(t.have_unchecked),
            Field::HaveValid => s.serialize_u64(t.have_valid),
            Field::HonorsSessionLimits => s.serialize_bool(t.honors_session_limits),
            Field::Id => s.serialize_u32(t.id),
            Field::IsFinished => s.serialize_bool(t.is_finished),
            Field::IsPrivate => s.serialize_bool(t.is_private),
            Field::IsStalled => s.serialize_bool(t.is_stalled),
            Field::Labels => t.labels.serialize(s),
            Field::LeftUntilDone => s.serialize_u64(t.left_until_done.min(t.size_when_done)),
            Field::MagnetLink => match &t.magnet_link {
                Some(link) => s.serialize_str(link),
                None => s.serialize_str(&magnet_link(t)),
            },
            Field::ManualAnnounceTime => s.serialize_i64(t.manual_announce_time.unwrap_or(-1)),
            Field::MaxConnectedPeers | Field::PeerLimit => s.serialize_u32(t.peer_limit),
            Field::MetadataPercentComplete => Double(t.metadata_percent_complete.clamp(0.0, 1.0)).serialize(s),
            Field::Name => s.serialize_str(&t.name),
            Field::Peers => s.collect_seq(slice_or_empty(&t.peers).iter().map(PeerJson)),
            Field::PeersConnected => s.serialize_u32(t.peers_connected),
            Field::PeersFrom => PeersFromJson {
                from_cache: t.peers_from.cache,
                from_dht: t.peers_from.dht,
                from_incoming: t.peers_from.incoming,
                from_lpd: t.peers_from.lpd,
                from_ltep: t.peers_from.ltep,
                from_pex: t.peers_from.pex,
                from_tracker: t.peers_from.tracker,
            }
            .serialize(s),
            Field::PeersGettingFromUs => s.serialize_u32(t.peers_getting_from_us),
            Field::PeersSendingToUs => s.serialize_u32(t.peers_sending_to_us),
            Field::PercentComplete => Double(fraction(t.have_valid, t.total_size)).serialize(s),
            Field::PercentDone => {
                let left = t.left_until_done.min(t.size_when_done);
                Double(fraction(t.size_when_done - left, t.size_when_done)).serialize(s)
            }
            Field::Pieces => s.serialize_str(&data_encoding::BASE64.encode(slice_or_empty(&t.pieces))),
            Field::PieceCount => s.serialize_u32(t.piece_count),
            Field::PieceSize => s.serialize_u64(t.piece_size),
            Field::Priorities => s.collect_seq(slice_or_empty(&t.files).iter().map(|f| f.priority as i8)),
            Field::PrimaryMimeType => s.serialize_str(primary_mime_type(slice_or_empty(&t.files))),
            Field::QueuePosition => s.serialize_u32(t.queue_position),
            Field::RateDownload => s.serialize_u64(t.rate_download),
            Field::RateUpload => s.serialize_u64(t.rate_upload),
            Field::RecheckProgress => Double(t.recheck_progress.clamp(0.0, 1.0)).serialize(s),
            Field::SecondsDownloading => s.serialize_u64(t.seconds_downloading),
            Field::SecondsSeeding => s.serialize_u64(t.seconds_seeding),
            Field::SeedIdleLimit => s.serialize_u32(t.seed_idle_limit),
            Field::SeedIdleMode => s.serialize_u8(t.seed_idle_mode as u8),
            Field::SeedRatioLimit => Double(t.seed_ratio_limit).serialize(s),
            Field::SeedRatioMode => s.serialize_u8(t.seed_ratio_mode as u8),
            Field::SizeWhenDone => s.serialize_u64(t.size_when_done),
            Field::Source => s.serialize_str(&t.source),
            Field::StartDate => s.serialize_i64(t.start_date),
            Field::Status => s.serialize_u8(t.status as u8),
            Field::Trackers => s.collect_seq(slice_or_empty(&t.trackers).iter().map(|tr| TrackerJson {
                announce: &tr.announce,
                id: tr.id,
                scrape: &tr.scrape,
                sitename: sitename(&tr.announce),
                tier: tr.tier,
            })),
            Field::TrackerList => s.serialize_str(&tracker_list(slice_or_empty(&t.trackers))),
            Field::TrackerStats => s.collect_seq(slice_or_empty(&t.trackers).iter().map(TrackerStatJson)),
            Field::TotalSize => s.serialize_u64(t.total_size),
            Field::TorrentFile => s.serialize_str(&t.torrent_file),
            Field::UploadedEver => s.serialize_u64(t.uploaded_ever),
            Field::UploadLimit => s.serialize_u32(t.upload_limit),
            Field::UploadLimited => s.serialize_bool(t.upload_limited),
            Field::UploadRatio => Double(upload_ratio(t)).serialize(s),
            Field::Wanted => s.collect_seq(slice_or_empty(&t.files).iter().map(|f| u8::from(f.wanted))),
            Field::Webseeds => t.webseeds.serialize(s),
            Field::WebseedsSendingToUs => s.serialize_u32(t.webseeds_sending_to_us),
        }
    }
}

// Keys of the nested objects are declared in byte order, as Transmission writes them.

#[derive(Serialize)]
struct FileJson<'a> {
    #[serde(rename = "bytesCompleted")]
    bytes_completed: u64,
    length: u64,
    name: &'a str,
}

/// `fileStats[].wanted` is a bool, unlike the 0/1 ints of `wanted`.
#[derive(Serialize)]
struct FileStatJson {
    #[serde(rename = "bytesCompleted")]
    bytes_completed: u64,
    priority: i8,
    wanted: bool,
}

#[derive(Serialize)]
struct PeersFromJson {
    #[serde(rename = "fromCache")]
    from_cache: u32,
    #[serde(rename = "fromDht")]
    from_dht: u32,
    #[serde(rename = "fromIncoming")]
    from_incoming: u32,
    #[serde(rename = "fromLpd")]
    from_lpd: u32,
    #[serde(rename = "fromLtep")]
    from_ltep: u32,
    #[serde(rename = "fromPex")]
    from_pex: u32,
    #[serde(rename = "fromTracker")]
    from_tracker: u32,
}

#[derive(Serialize)]
struct TrackerJson<'a> {
    announce: &'a str,
    id: u32,
    scrape: &'a str,
    sitename: &'a str,
    tier: u32,
}

struct PeerJson<'a>(&'a PeerView);

impl Serialize for PeerJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(Some(17))?;
        m.serialize_entry("address", &p.address.to_canonical().to_string())?;
        m.serialize_entry("clientIsChoked", &p.client_is_choked)?;
        m.serialize_entry("clientIsInterested", &p.client_is_interested)?;
        m.serialize_entry("clientName", &p.client_name)?;
        m.serialize_entry("flagStr", &flag_str(p))?;
        // bitswarm's own (Transmission's peers say it only in flagStr, and not for all sources):
        // where we learned of the peer, as `peersFrom` counts it.
        m.serialize_entry("from", peer_from(p.source))?;
        m.serialize_entry("isDownloadingFrom", &p.is_downloading_from)?;
        m.serialize_entry("isEncrypted", &p.is_encrypted)?;
        m.serialize_entry("isIncoming", &p.is_incoming)?;
        m.serialize_entry("isUTP", &p.is_utp)?;
        m.serialize_entry("isUploadingTo", &p.is_uploading_to)?;
        m.serialize_entry("peerIsChoked", &p.peer_is_choked)?;
        m.serialize_entry("peerIsInterested", &p.peer_is_interested)?;
        m.serialize_entry("port", &p.port)?;
        m.serialize_entry("progress", &Double(p.progress.clamp(0.0, 1.0)))?;
        m.serialize_entry("rateToClient", &p.rate_to_client)?;
        m.serialize_entry("rateToPeer", &p.rate_to_peer)?;
        m.end()
    }
}

/// A peer's `from`: its source, as `peersFrom` names it (less the `from` prefix).
fn peer_from(source: PeerSource) -> &'static str {
    match source {
        PeerSource::Incoming => "incoming",
        PeerSource::Tracker => "tracker",
        PeerSource::Dht => "dht",
        PeerSource::Pex => "pex",
        PeerSource::Lpd => "lpd",
        PeerSource::Cache => "cache",
        PeerSource::Ltep => "ltep",
    }
}

/// Transmission's `flagStr`: `T` uTP, `O` optimistic unchoke, `D` downloading from it (else
/// `d` if we are interested), `U` uploading to it (else `u` if it is interested), `K` it
/// unchoked us but we are not interested, `?` we unchoked it but it is not interested, `E`
/// encrypted, `H` from the DHT (else `X` from PEX), `I` incoming.
pub(crate) fn flag_str(p: &PeerView) -> String {
    let mut s = String::with_capacity(9);
    if p.is_utp {
        s.push('T');
    }
    if p.is_optimistic {
        s.push('O');
    }
    if p.is_downloading_from {
        s.push('D');
    } else if p.client_is_interested {
        s.push('d');
    }
    if p.is_uploading_to {
        s.push('U');
    } else if p.peer_is_interested {
        s.push('u');
    }
    if !p.client_is_choked && !p.client_is_interested {
        s.push('K');
    }
    if !p.peer_is_choked && !p.peer_is_interested {
        s.push('?');
    }
    if p.is_encrypted {
        s.push('E');
    }
    match p.source {
        PeerSource::Dht => s.push('H'),
        PeerSource::Pex => s.push('X'),
        _ => {}
    }
    if p.is_incoming {
        s.push('I');
    }
    s
}

/// `trackerStats[]`: transmission-remote `-it` prints a tracker only when all 24 keys it reads
/// are there with these types.
struct TrackerStatJson<'a>(&'a TrackerView);

impl Serialize for TrackerStatJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let count = |c: Option<u32>| c.map_or(-1, i64::from);
        let mut m = s.serialize_map(Some(27))?;
        m.serialize_entry("announce", &t.announce)?;
        m.serialize_entry("announceState", &(t.announce_state as u8))?;
        m.serialize_entry("downloadCount", &count(t.download_count))?;
        m.serialize_entry("hasAnnounced", &t.has_announced)?;
        m.serialize_entry("hasScraped", &t.has_scraped)?;
        m.serialize_entry("host", &host(&t.announce))?;
        m.serialize_entry("id", &t.id)?;
        m.serialize_entry("isBackup", &t.is_backup)?;
        m.serialize_entry("lastAnnouncePeerCount", &t.last_announce_peer_count)?;
        m.serialize_entry("lastAnnounceResult", &t.last_announce_result)?;
        m.serialize_entry("lastAnnounceStartTime", &t.last_announce_start_time)?;
        m.serialize_entry("lastAnnounceSucceeded", &t.last_announce_succeeded)?;
        m.serialize_entry("lastAnnounceTime", &t.last_announce_time)?;
        m.serialize_entry("lastAnnounceTimedOut", &t.last_announce_timed_out)?;
        m.serialize_entry("lastScrapeResult", &t.last_scrape_result)?;
        m.serialize_entry("lastScrapeStartTime", &t.last_scrape_start_time)?;
        m.serialize_entry("lastScrapeSucceeded", &t.last_scrape_succeeded)?;
        m.serialize_entry("lastScrapeTime", &t.last_scrape_time)?;
        m.serialize_entry("lastScrapeTimedOut", &t.last_scrape_timed_out)?;
        m.serialize_entry("leecherCount", &count(t.leecher_count))?;
        m.serialize_entry("nextAnnounceTime", &t.next_announce_time)?;
        m.serialize_entry("nextScrapeTime", &t.next_scrape_time)?;
        m.serialize_entry("scrape", &t.scrape)?;
        m.serialize_entry("scrapeState", &(t.scrape_state as u8))?;
        m.serialize_entry("seederCount", &count(t.seeder_count))?;
        m.serialize_entry("sitename", sitename(&t.announce))?;
        m.serialize_entry("tier", &t.tier)?;
        m.end()
    }
}

/// The host and port of a URL: `scheme://user@host:port/path` → (`host`, port). The port is
/// the scheme's default when absent (none for schemes without one).
fn authority(url: &str) -> Option<(&str, Option<u16>)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
    let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    };
    (!host.is_empty()).then_some((host, port))
}

/// `trackerStats[].host` as 4.0 writes it: `host:port` (IPv6 hosts in brackets).
pub(crate) fn host(announce: &str) -> String {
    match authority(announce) {
        Some((h, port)) => {
            let h = if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
            match port {
                Some(p) => format!("{h}:{p}"),
                None => h,
            }
        }
        None => announce.to_owned(),
    }
}

/// `sitename`: the label before the registrable suffix (`tracker.example.org` → `example`),
/// or the address for an IP host. Without a public suffix list, two-level suffixes are
/// recognised by the common `co.uk`/`com.au` pattern only.
pub(crate) fn sitename(announce: &str) -> &str {
    let Some((host, _)) = authority(announce) else { return "" };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let n = labels.len();
    if n < 2 {
        return labels[0];
    }
    let second_level = ["co", "com", "net", "org", "ac", "gov", "edu", "or", "ne"];
    if n >= 3 && labels[n - 1].len() == 2 && second_level.contains(&labels[n - 2]) {
        return labels[n - 3];
    }
    labels[n - 2]
}

/// `trackerList` as 4.0 writes it: each announce URL followed by a newline, and a blank line
/// between tiers.
pub(crate) fn tracker_list(trackers: &[TrackerView]) -> String {
    let mut sorted: Vec<&TrackerView> = trackers.iter().collect();
    sorted.sort_by_key(|t| t.tier);
    let mut out = String::new();
    let mut tier = None;
    for t in sorted {
        if tier.is_some_and(|x| x != t.tier) {
            out.push('\n');
        }
        out.push_str(&t.announce);
        out.push('\n');
        tier = Some(t.tier);
    }
    out
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded, as Transmission's
/// `tr_urlPercentEncode` does (`http%3A%2F%2F127.0.0.1%3A6969%2Fannounce`).
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `magnetLink` built from the view: the hash, the name as `dn`, each announce URL as `tr` (once, in tier order)
/// and each web seed as `ws`.
pub(crate) fn magnet_link(t: &TorrentView) -> String {
    use percent_encoding::utf8_percent_encode as enc;
    let mut s = format!("magnet:?xt=urn:btih:{}", t.info_hash.to_hex());
    if !t.name.is_empty() {
        s.push_str(&format!("&dn={}", enc(&t.name, COMPONENT)));
    }
    let mut trackers: Vec<&TrackerView> = slice_or_empty(&t.trackers).iter().collect();
    trackers.sort_by_key(|tr| tr.tier);
    let mut seen = std::collections::HashSet::new();
    for tr in trackers {
        if seen.insert(tr.announce.as_str()) {
            s.push_str(&format!("&tr={}", enc(&tr.announce, COMPONENT)));
        }
    }
    for ws in &t.webseeds {
        s.push_str(&format!("&ws={}", enc(ws, COMPONENT)));
    }
    s
}

/// The MIME type of a file name, by extension, for the common kinds of torrent content.
fn mime_of(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "mkv" => "video/x-matroska",
        "mp4" | "m4v" => "video/mp4",
        "avi" => "video/x-msvideo",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "ts" => "video/mp2t",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "m4a" => "audio/mp4",
        "wav" => "audio/wav",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "txt" | "nfo" => "text/plain",
        "srt" => "application/x-subrip",
        "pdf" => "application/pdf",
        "epub" => "application/epub+zip",
        "zip" => "application/zip",
        "rar" => "application/vnd.rar",
        "7z" => "application/x-7z-compressed",
        "gz" => "application/gzip",
        "xz" => "application/x-xz",
        "tar" => "application/x-tar",
        "iso" => "application/x-iso9660-image",
        _ => "application/octet-stream",
    }
}

/// `primary-mime-type`: the type with the most bytes among the files;
/// `application/octet-stream` without files.
pub(crate) fn primary_mime_type(files: &[FileView]) -> &'static str {
    let mut totals: Vec<(&'static str, u64)> = Vec::new();
    for f in files {
        let m = mime_of(&f.name);
        match totals.iter_mut().find(|(k, _)| *k == m) {
            Some((_, n)) => *n = n.saturating_add(f.length),
            None => totals.push((m, f.length)),
        }
    }
    totals.into_iter().max_by_key(|&(_, n)| n).map_or("application/octet-stream", |(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::InfoHash;
    use crate::view::{Eta, Priority, Status, TorrentError};
    use serde_json::{Value as Json, json};

    fn get(t: &TorrentView, names: &[&str]) -> Json {
        let fields = parse_fields(names.iter().copied());
        let views = std::slice::from_ref(t);
        let v = serde_json::to_value(Torrents { views, fields: &fields, table: false }).unwrap();
        v[0].clone()
    }

    fn sample() -> TorrentView {
        TorrentView {
            id: 1,
            info_hash: InfoHash::from_hex("B5E8B288A3D56ACC9461DD12F8B2CB885ABE56F2").unwrap(),
            name: "multi".into(),
            status: Status::Downloading,
            total_size: 50006,
            size_when_done: 50006,
            left_until_done: 25003,
            have_valid: 25003,
            files: Some(vec![
                FileView {
                    name: "multi/a.txt".into(),
                    length: 6,
                    bytes_completed: 6,
                    wanted: true,
                    priority: Priority::High,
                },
                FileView {
                    name: "multi/b.mkv".into(),
                    length: 50000,
                    bytes_completed: 0,
                    wanted: false,
                    priority: Priority::Low,
                },
            ]),
            trackers: Some(vec![
                TrackerView { id: 0, tier: 0, announce: "http://127.0.0.1:6969/announce".into(), ..Default::default() },
                TrackerView {
                    id: 1,
                    tier: 1,
                    announce: "udp://tracker.example.co.uk:1337".into(),
                    ..Default::default()
                },
            ]),
            ..TorrentView::default()
        }
    }

    #[test]
    fn doubles_are_ints_when_whole() {
        let j = |f: f64| serde_json::to_string(&Double(f)).unwrap();
        assert_eq!(j(2.0), "2");
        assert_eq!(j(-1.0), "-1");
        assert_eq!(j(0.5), "0.5");
        assert_eq!(j(0.123456), "0.1235");
        assert_eq!(j(f64::NAN), "0");
        assert_eq!(j(f64::INFINITY), "0");
    }

    #[test]
    fn list_fields_are_integers_of_the_right_kind() {
        let mut t = sample();
        t.rate_download = 1234;
        t.eta = Eta::Seconds(60);
        t.error = Some(TorrentError::TrackerWarning("slow down".into()));
        let v = get(
            &t,
            &[
                "error",
                "errorString",
                "eta",
                "id",
                "isFinished",
                "leftUntilDone",
                "name",
                "peersGettingFromUs",
                "peersSendingToUs",
                "rateDownload",
                "rateUpload",
                "sizeWhenDone",
                "status",
                "uploadRatio",
            ],
        );
        assert_eq!(
            v,
            json!({"error":1,"errorString":"slow down","eta":60,"id":1,"isFinished":false,"leftUntilDone":25003,
                   "name":"multi","peersGettingFromUs":0,"peersSendingToUs":0,"rateDownload":1234,"rateUpload":0,
                   "sizeWhenDone":50006,"status":4,"uploadRatio":0})
        );
        for k in ["eta", "id", "leftUntilDone", "rateDownload", "rateUpload", "sizeWhenDone", "status", "error"] {
            assert!(v[k].is_i64() || v[k].is_u64(), "{k} must be an integer: {}", v[k]);
        }
    }

    #[test]
    fn files_wanted_and_priorities() {
        let v = get(&sample(), &["files", "fileStats", "wanted", "priorities", "primary-mime-type", "file-count"]);
        assert_eq!(v["files"][0], json!({"bytesCompleted":6,"length":6,"name":"multi/a.txt"}));
        assert_eq!(v["fileStats"][1], json!({"bytesCompleted":0,"priority":-1,"wanted":false}));
        assert_eq!(v["wanted"], json!([1, 0]));
        assert_eq!(v["priorities"], json!([1, -1]));
        assert_eq!(v["primary-mime-type"], json!("video/x-matroska"));
    }

    #[test]
    fn derived_values() {
        let v = get(
            &sample(),
            &[
                "percentDone",
                "percentComplete",
                "hashString",
                "magnetLink",
                "trackerList",
                "trackers",
                "trackerStats",
                "uploadRatio",
                "manualAnnounceTime",
                "maxConnectedPeers",
                "peer-limit",
            ],
        );
        assert_eq!(v["percentDone"], json!(0.5));
        assert_eq!(v["percentComplete"], json!(0.5));
        assert_eq!(v["hashString"], json!("b5e8b288a3d56acc9461dd12f8b2cb885abe56f2"));
        assert_eq!(
            v["magnetLink"],
            json!(
                "magnet:?xt=urn:btih:b5e8b288a3d56acc9461dd12f8b2cb885abe56f2&dn=multi&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&tr=udp%3A%2F%2Ftracker.example.co.uk%3A1337"
            )
        );
        assert_eq!(v["trackerList"], json!("http://127.0.0.1:6969/announce\n\nudp://tracker.example.co.uk:1337\n"));
        assert_eq!(v["trackers"][1]["sitename"], json!("example"));
        assert_eq!(v["trackerStats"][0]["host"], json!("127.0.0.1:6969"));
        assert_eq!(v["trackerStats"][0]["seederCount"], json!(-1));
        assert_eq!(v["trackerStats"][0].as_object().unwrap().len(), 27);
        assert_eq!(v["uploadRatio"], json!(0));
        assert_eq!(v["manualAnnounceTime"], json!(-1));
        assert_eq!(v["peer-limit"], json!(50));
    }

    #[test]
    fn a_magnet_link_given_is_reported_as_is() {
        let t = TorrentView { magnet_link: Some("magnet:?xt=urn:btih:x&x.pe=1.2.3.4:5".into()), ..sample() };
        assert_eq!(get(&t, &["magnetLink"])["magnetLink"], json!("magnet:?xt=urn:btih:x&x.pe=1.2.3.4:5"));
        let t = TorrentView { webseeds: vec!["http://w/f b".into()], trackers: None, ..sample() };
        assert_eq!(
            get(&t, &["magnetLink"])["magnetLink"],
            json!("magnet:?xt=urn:btih:b5e8b288a3d56acc9461dd12f8b2cb885abe56f2&dn=multi&ws=http%3A%2F%2Fw%2Ff%20b")
        );
    }

    #[test]
    fn magnet_without_metadata() {
        let t = TorrentView {
            id: 2,
            name: "fake-magnet".into(),
            status: Status::Downloading,
            eta: Eta::Unknown,
            metadata_percent_complete: 0.0,
            ..TorrentView::default()
        };
        let v = get(
            &t,
            &["files", "pieces", "percentDone", "eta", "uploadRatio", "sizeWhenDone", "metadataPercentComplete"],
        );
        assert_eq!(
            v,
            json!({"eta":-2,"files":[],"metadataPercentComplete":0,"percentDone":0,"pieces":"","sizeWhenDone":0,"uploadRatio":-1})
        );
    }

    #[test]
    fn every_field_has_the_documented_type() {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        let mut t = sample();
        t.pieces = Some(vec![0b1000_0000]);
        t.availability = Some(vec![None, Some(3)]);
        t.peers = Some(vec![PeerView {
            address: "::ffff:10.0.0.1".parse().unwrap(),
            port: 6881,
            client_name: "Transmission 4.0.6".into(),
            progress: 0.25,
            rate_to_client: 10,
            rate_to_peer: 0,
            is_encrypted: true,
            is_incoming: true,
            is_utp: false,
            client_is_choked: false,
            client_is_interested: true,
            peer_is_choked: true,
            peer_is_interested: false,
            is_downloading_from: true,
            is_uploading_to: false,
            is_optimistic: false,
            source: PeerSource::Pex,
        }]);
        let v = get(&t, &names);
        assert_eq!(v.as_object().unwrap().len(), Field::ALL.len());
        let ints = [
            "activityDate",
            "addedDate",
            "bandwidthPriority",
            "corruptEver",
            "dateCreated",
            "desiredAvailable",
            "doneDate",
            "downloadedEver",
            "downloadLimit",
            "editDate",
            "error",
            "eta",
            "etaIdle",
            "file-count",
            "haveUnchecked",
            "haveValid",
            "id",
            "leftUntilDone",
            "manualAnnounceTime",
            "maxConnectedPeers",
            "peer-limit",
            "peersConnected",
            "peersGettingFromUs",
            "peersSendingToUs",
            "pieceCount",
            "pieceSize",
            "queuePosition",
            "rateDownload",
            "rateUpload",
            "secondsDownloading",
            "secondsSeeding",
            "seedIdleLimit",
            "seedIdleMode",
            "seedRatioMode",
            "sizeWhenDone",
            "startDate",
            "status",
            "totalSize",
            "uploadedEver",
            "uploadLimit",
            "webseedsSendingToUs",
        ];
        for k in ints {
            assert!(v[k].is_i64() || v[k].is_u64(), "{k} must be an integer: {}", v[k]);
        }
        let bools = ["downloadLimited", "honorsSessionLimits", "isFinished", "isPrivate", "isStalled", "uploadLimited"];
        for k in bools {
            assert!(v[k].is_boolean(), "{k} must be a bool");
        }
        let strings = [
            "comment",
            "creator",
            "downloadDir",
            "errorString",
            "group",
            "hashString",
            "magnetLink",
            "name",
            "pieces",
            "primary-mime-type",
            "source",
            "torrentFile",
            "trackerList",
        ];
        for k in strings {
            assert!(v[k].is_string(), "{k} must be a string");
        }
        for k in [
            "metadataPercentComplete",
            "percentComplete",
            "percentDone",
            "recheckProgress",
            "seedRatioLimit",
            "uploadRatio",
        ] {
            assert!(v[k].is_number(), "{k} must be a number");
        }
        assert_eq!(v["pieces"], json!("gA=="));
        assert_eq!(v["availability"], json!([-1, 3]));
        let peer = &v["peers"][0];
        assert_eq!(peer["address"], json!("10.0.0.1"));
        assert_eq!(peer["flagStr"], json!("DEXI"));
        assert_eq!(peer["progress"], json!(0.25));
        assert_eq!(peer["from"], json!("pex"));
        assert_eq!(peer.as_object().unwrap().len(), 17);
        assert_eq!(v["peersFrom"].as_object().unwrap().len(), 7);
    }

    #[test]
    fn table_keeps_request_order() {
        let fields = parse_fields(["name", "id", "bogus", "name"]);
        let views = [sample()];
        let v = serde_json::to_value(Torrents { views: &views, fields: &fields, table: true }).unwrap();
        assert_eq!(v, json!([["name", "id"], ["multi", 1]]));
    }

    #[test]
    fn hosts_and_sitenames() {
        assert_eq!(host("https://tracker.example.org/announce"), "tracker.example.org:443");
        assert_eq!(host("http://u:p@[::1]:6969/announce"), "[::1]:6969");
        assert_eq!(host("udp://tracker.opentrackr.org:1337/announce"), "tracker.opentrackr.org:1337");
        assert_eq!(host("garbage"), "garbage");
        assert_eq!(sitename("udp://tracker.opentrackr.org:1337/announce"), "opentrackr");
        assert_eq!(sitename("http://localhost:6969/announce"), "localhost");
        assert_eq!(sitename("http://10.1.2.3/announce"), "10.1.2.3");
        assert_eq!(sitename("http:///x"), "");
    }
}
