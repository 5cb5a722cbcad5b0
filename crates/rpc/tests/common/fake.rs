//! A fake daemon: a few torrents in memory whose state the tests set, and a log of what the
//! RPC asked of it. It only stands in for the real daemon to test the protocol layer.

use std::sync::{Mutex, MutexGuard};

use bitswarm_rpc::{
    AddOutcome, AddRequest, AddSource, Backend, BackendError, Eta, FileView, InfoHash, Magnet, PeerSource, PeerView,
    PeersFrom, Priority, QueueMove, SessionSet, SessionStats, SessionView, StatsTotals, Status, TorrentRef, TorrentSet,
    TorrentView, TrackerState, TrackerView, Wants,
};

pub const HASH1: &str = "b5e8b288a3d56acc9461dd12f8b2cb885abe56f2";
pub const HASH2: &str = "0123456789abcdef0123456789abcdef01234567";
pub const HASH3: &str = "7efc188455d5207dbc1093fab4408ba2cbf7b99d";

/// What the RPC asked of the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Add(AddRequest),
    Start(Vec<u32>, bool),
    Stop(Vec<u32>),
    Verify(Vec<u32>),
    Reannounce(Vec<u32>),
    Remove(Vec<u32>, bool),
    Set(Vec<u32>, TorrentSet),
    SetLocation(Vec<u32>, String, bool),
    QueueMove(Vec<u32>, QueueMove),
    SessionSet(SessionSet),
    Close,
}

pub struct State {
    pub torrents: Vec<TorrentView>,
    pub session: SessionView,
    pub calls: Vec<Call>,
    /// The heavy parts asked for by each torrent-get.
    pub wants: Vec<Wants>,
    pub removed: Vec<u32>,
    next_id: u32,
}

pub struct FakeDaemon {
    state: Mutex<State>,
}

fn tracker(id: u32, announce: &str) -> TrackerView {
    TrackerView {
        id,
        tier: id,
        announce: announce.to_owned(),
        scrape: announce.replace("announce", "scrape"),
        announce_state: TrackerState::Waiting,
        scrape_state: TrackerState::Waiting,
        has_announced: true,
        last_announce_time: 1_796_540_000,
        last_announce_start_time: 1_796_539_999,
        next_announce_time: 1_796_541_800,
        last_announce_succeeded: true,
        last_announce_result: "Success".to_owned(),
        last_announce_peer_count: 7,
        seeder_count: Some(12),
        leecher_count: Some(3),
        download_count: None,
        ..TrackerView::default()
    }
}

fn peer(address: &str, client: &str, down: u64, up: u64, source: PeerSource) -> PeerView {
    PeerView {
        address: address.parse().expect("an IP"),
        port: 51413,
        client_name: client.to_owned(),
        progress: 0.5,
        rate_to_client: down,
        rate_to_peer: up,
        is_encrypted: true,
        is_incoming: false,
        is_utp: false,
        client_is_choked: down == 0,
        client_is_interested: true,
        peer_is_choked: up == 0,
        peer_is_interested: up > 0,
        is_downloading_from: down > 0,
        is_uploading_to: up > 0,
        is_optimistic: false,
        source,
    }
}

/// The three torrents of the transcripts: a half-done single file with peers and a tracker, a
/// magnet link without metadata, and a complete stopped multi-file torrent.
fn torrents() -> Vec<TorrentView> {
    let sample = TorrentView {
        id: 1,
        info_hash: InfoHash::from_hex(HASH1).expect("hex"),
        name: "sample.bin".into(),
        status: Status::Downloading,
        total_size: 300_000,
        size_when_done: 300_000,
        left_until_done: 150_000,
        have_valid: 150_000,
        desired_available: 150_000,
        downloaded_ever: 150_000,
        uploaded_ever: 30_000,
        rate_download: 12_345,
        rate_upload: 1_000,
        peers_connected: 2,
        peers_sending_to_us: 1,
        peers_getting_from_us: 1,
        peers_from: PeersFrom { tracker: 1, pex: 1, ..PeersFrom::default() },
        piece_count: 10,
        piece_size: 32_768,
        file_count: 1,
        added_date: 1_796_540_772,
        start_date: 1_796_540_772,
        activity_date: 1_796_540_900,
        date_created: 1_796_540_763,
        download_dir: "/data/downloads".into(),
        comment: "a comment".into(),
        creator: "bitswarm 0.1.0".into(),
        is_private: true,
        labels: vec!["tv-sonarr".into()],
        eta: Eta::Seconds(121),
        manual_announce_time: Some(1_796_540_800),
        seconds_downloading: 128,
        torrent_file: "/var/lib/bitswarm/torrents/b5e8b288a3d56acc9461dd12f8b2cb885abe56f2.torrent".into(),
        files: Some(vec![FileView {
            name: "sample.bin".into(),
            length: 300_000,
            bytes_completed: 150_000,
            wanted: true,
            priority: Priority::High,
        }]),
        peers: Some(vec![
            peer("10.0.0.2", "Transmission 4.0.6", 12_345, 0, PeerSource::Tracker),
            peer("10.0.0.3", "qBittorrent 4.6.2", 0, 1_000, PeerSource::Pex),
        ]),
        trackers: Some(vec![tracker(0, "http://127.0.0.1:6969/announce")]),
        pieces: Some(vec![0b1111_1000, 0]),
        availability: Some(vec![None, None, None, None, None, Some(2), Some(1), Some(1), Some(0), Some(1)]),
        ..TorrentView::default()
    };
    let magnet = TorrentView {
        id: 2,
        info_hash: InfoHash::from_hex(HASH2).expect("hex"),
        name: "fake-magnet".into(),
        status: Status::Downloading,
        metadata_percent_complete: 0.25,
        eta: Eta::Unknown,
        added_date: 1_796_540_780,
        download_dir: "/data/downloads".into(),
        files: Some(vec![]),
        trackers: Some(vec![tracker(0, "udp://tracker.example.org:1337/announce")]),
        ..TorrentView::default()
    };
    let multi = TorrentView {
        id: 3,
        info_hash: InfoHash::from_hex(HASH3).expect("hex"),
        name: "multi".into(),
        status: Status::Stopped,
        total_size: 50_006,
        size_when_done: 50_006,
        left_until_done: 0,
        have_valid: 50_006,
        downloaded_ever: 50_006,
        uploaded_ever: 100_012,
        piece_count: 2,
        piece_size: 32_768,
        file_count: 2,
        added_date: 1_796_540_790,
        done_date: 1_796_540_800,
        download_dir: "/data/downloads".into(),
        queue_position: 2,
        files: Some(vec![
            FileView {
                name: "multi/a.txt".into(),
                length: 6,
                bytes_completed: 6,
                wanted: true,
                priority: Priority::Normal,
            },
            FileView {
                name: "multi/b.bin".into(),
                length: 50_000,
                bytes_completed: 50_000,
                wanted: true,
                priority: Priority::Low,
            },
        ]),
        trackers: Some(vec![]),
        pieces: Some(vec![0b1100_0000]),
        ..TorrentView::default()
    };
    vec![sample, magnet, multi]
}

/// The torrent's name in a .torrent file (`4:name` in the info dictionary), for the fake only.
fn metainfo_name(bytes: &[u8]) -> Option<String> {
    let at = bytes.windows(6).position(|w| w == b"4:name")? + 6;
    let rest = &bytes[at..];
    let colon = rest.iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some(String::from_utf8_lossy(rest.get(colon + 1..colon + 1 + len)?).into_owned())
}

/// A stand-in info hash for metainfo bytes (the fake has no SHA-1): the bytes folded into 20.
fn fold_hash(bytes: &[u8]) -> InfoHash {
    let mut h = [0u8; 20];
    for (i, b) in bytes.iter().enumerate() {
        h[i % 20] = h[i % 20].rotate_left(3) ^ b;
    }
    InfoHash(h)
}

impl FakeDaemon {
    pub fn new() -> FakeDaemon {
        let session = SessionView {
            download_dir: "/tmp".into(),
            config_dir: "/var/lib/bitswarm".into(),
            peer_port: 51413,
            dht_enabled: true,
            pex_enabled: true,
            ..SessionView::default()
        };
        FakeDaemon {
            state: Mutex::new(State {
                torrents: torrents(),
                session,
                calls: Vec::new(),
                wants: Vec::new(),
                removed: Vec::new(),
                next_id: 4,
            }),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls since the last time, oldest first.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    fn record(&self, call: Call) {
        self.state().calls.push(call);
    }

    fn with<R>(&self, ids: &[u32], mut f: impl FnMut(&mut TorrentView) -> R) {
        let mut s = self.state();
        for t in s.torrents.iter_mut().filter(|t| ids.contains(&t.id)) {
            f(t);
        }
    }
}

impl Backend for FakeDaemon {
    fn torrent_ids(&self) -> Vec<(u32, InfoHash)> {
        self.state().torrents.iter().map(|t| (t.id, t.info_hash)).collect()
    }

    fn recently_active(&self) -> Vec<u32> {
        self.state().torrents.iter().filter(|t| t.rate_download > 0 || t.rate_upload > 0).map(|t| t.id).collect()
    }

    fn recently_removed(&self) -> Vec<u32> {
        self.state().removed.clone()
    }

    fn torrents(&self, ids: &[u32], wants: Wants) -> Vec<TorrentView> {
        let mut s = self.state();
        s.wants.push(wants);
        ids.iter()
            .filter_map(|id| s.torrents.iter().find(|t| t.id == *id))
            .map(|t| {
                // Build only what was asked for, as the daemon must.
                let mut v = t.clone();
                v.files = v.files.filter(|_| wants.files);
                v.peers = v.peers.filter(|_| wants.peers);
                v.trackers = v.trackers.filter(|_| wants.trackers);
                v.pieces = v.pieces.filter(|_| wants.pieces);
                v.availability = v.availability.filter(|_| wants.availability);
                v
            })
            .collect()
    }

    async fn add(&self, request: AddRequest) -> Result<AddOutcome, BackendError> {
        self.record(Call::Add(request.clone()));
        let (hash, name) = match &request.source {
            AddSource::Magnet { link, info_hash } => {
                let name = Magnet::parse(link).and_then(|m| m.name).unwrap_or_else(|| info_hash.to_hex());
                (*info_hash, name)
            }
            AddSource::Metainfo(bytes) => (fold_hash(bytes), metainfo_name(bytes).ok_or(BackendError::CorruptTorrent)?),
            AddSource::Path(path) => {
                let bytes = std::fs::read(path)?;
                (fold_hash(&bytes), metainfo_name(&bytes).ok_or(BackendError::CorruptTorrent)?)
            }
            AddSource::Url { .. } => return Err(BackendError::Fetch { reason: "Not Found".into(), code: 404 }),
        };
        let mut s = self.state();
        if let Some(t) = s.torrents.iter().find(|t| t.info_hash == hash) {
            return Ok(AddOutcome::Duplicate(TorrentRef { id: t.id, info_hash: hash, name: t.name.clone() }));
        }
        let id = s.next_id;
        s.next_id += 1;
        let paused = request.paused.unwrap_or(!s.session.start_added_torrents);
        let status = if paused { Status::Stopped } else { Status::Downloading };
        let download_dir = request.download_dir.clone().unwrap_or_else(|| s.session.download_dir.clone());
        s.torrents.push(TorrentView {
            id,
            info_hash: hash,
            name: name.clone(),
            status,
            download_dir,
            labels: request.labels.clone(),
            files: Some(vec![]),
            trackers: Some(vec![]),
            ..TorrentView::default()
        });
        Ok(AddOutcome::Added(TorrentRef { id, info_hash: hash, name }))
    }

    fn start(&self, ids: &[u32], bypass_queue: bool) {
        self.record(Call::Start(ids.to_vec(), bypass_queue));
        self.with(ids, |t| {
            t.status =
                if t.left_until_done == 0 && t.size_when_done > 0 { Status::Seeding } else { Status::Downloading }
        });
    }

    fn stop(&self, ids: &[u32]) {
        self.record(Call::Stop(ids.to_vec()));
        self.with(ids, |t| t.status = Status::Stopped);
    }

    fn verify(&self, ids: &[u32]) {
        self.record(Call::Verify(ids.to_vec()));
        self.with(ids, |t| t.status = Status::QueuedToVerify);
    }

    fn reannounce(&self, ids: &[u32]) {
        self.record(Call::Reannounce(ids.to_vec()));
    }

    async fn remove(&self, ids: &[u32], delete_data: bool) -> Result<(), BackendError> {
        self.record(Call::Remove(ids.to_vec(), delete_data));
        let mut s = self.state();
        s.torrents.retain(|t| !ids.contains(&t.id));
        s.removed.extend_from_slice(ids);
        Ok(())
    }

    fn set(&self, ids: &[u32], set: &TorrentSet) -> Result<(), BackendError> {
        self.record(Call::Set(ids.to_vec(), set.clone()));
        self.with(ids, |t| {
            if let Some(v) = set.download_limit {
                t.download_limit = v;
            }
            if let Some(v) = set.download_limited {
                t.download_limited = v;
            }
            if let Some(v) = set.upload_limit {
                t.upload_limit = v;
            }
            if let Some(v) = set.upload_limited {
                t.upload_limited = v;
            }
            if let Some(v) = set.seed_ratio_limit {
                t.seed_ratio_limit = v;
            }
            if let Some(v) = set.seed_ratio_mode {
                t.seed_ratio_mode = v;
            }
            if let Some(v) = &set.labels {
                t.labels = v.clone();
            }
        });
        Ok(())
    }

    async fn set_location(&self, ids: &[u32], location: &str, move_data: bool) -> Result<(), BackendError> {
        self.record(Call::SetLocation(ids.to_vec(), location.to_owned(), move_data));
        self.with(ids, |t| t.download_dir = location.to_owned());
        Ok(())
    }

    fn queue_move(&self, ids: &[u32], to: QueueMove) {
        self.record(Call::QueueMove(ids.to_vec(), to));
    }

    fn session(&self) -> SessionView {
        self.state().session.clone()
    }

    async fn session_set(&self, set: &SessionSet) -> Result<(), BackendError> {
        self.record(Call::SessionSet(set.clone()));
        let mut s = self.state();
        if let Some(v) = set.speed_limit_down {
            s.session.speed_limit_down = v;
        }
        if let Some(v) = set.speed_limit_down_enabled {
            s.session.speed_limit_down_enabled = v;
        }
        Ok(())
    }

    fn session_stats(&self) -> SessionStats {
        let s = self.state();
        let active = s.torrents.iter().filter(|t| t.status != Status::Stopped).count() as u32;
        let totals = StatsTotals {
            uploaded_bytes: 130_012,
            downloaded_bytes: 200_006,
            files_added: 3,
            session_count: 1,
            seconds_active: 3_725,
        };
        SessionStats {
            active_torrent_count: active,
            torrent_count: s.torrents.len() as u32,
            download_speed: s.torrents.iter().map(|t| t.rate_download).sum(),
            upload_speed: s.torrents.iter().map(|t| t.rate_upload).sum(),
            current: totals,
            cumulative: StatsTotals { session_count: 4, seconds_active: 90_000, ..totals },
        }
    }

    fn session_close(&self) {
        self.record(Call::Close);
    }
}
