//! A backend for the unit tests: a few torrents in memory, and a log of every call.

use std::sync::Mutex;

use crate::backend::{
    AddOutcome, AddRequest, AddSource, Backend, BackendError, CreateJob, CreateRequest, CreateState, QueueMove,
    SessionSet, SwarmView, TorrentRef, TorrentSet, TrackerServerView, Wants,
};
use crate::hash::InfoHash;
use crate::view::{SessionStats, SessionView, Status, TorrentView};

pub(crate) const HASH1: &str = "b5e8b288a3d56acc9461dd12f8b2cb885abe56f2";
pub(crate) const HASH2: &str = "0123456789abcdef0123456789abcdef01234567";
pub(crate) const HASH3: &str = "7efc188455d5207dbc1093fab4408ba2cbf7b99d";

#[derive(Default)]
pub(crate) struct Fake {
    pub torrents: Mutex<Vec<TorrentView>>,
    pub calls: Mutex<Vec<String>>,
    pub session: Mutex<SessionView>,
    pub last_wants: Mutex<Option<Wants>>,
    pub last_add: Mutex<Option<AddRequest>>,
    pub last_set: Mutex<Option<TorrentSet>>,
    pub last_session_set: Mutex<Option<SessionSet>>,
    pub last_create: Mutex<Option<CreateRequest>>,
    /// Whether the daemon runs a tracker (bitswarm-tracker-get).
    pub tracker: Mutex<bool>,
    /// `recently_removed` (set by [`Fake::new`] to `[9]`).
    pub removed: Mutex<Vec<u32>>,
    /// A removal that happens as the named method is entered, once: torrent-get's reads raced.
    pub race: Mutex<Option<(&'static str, u32)>>,
}

impl Fake {
    /// Three torrents with ids 1, 2 and 3.
    pub(crate) fn new() -> Fake {
        let t = |id, hash, name: &str, status| TorrentView {
            id,
            info_hash: InfoHash::from_hex(hash).unwrap(),
            name: name.into(),
            status,
            ..TorrentView::default()
        };
        let f = Fake { removed: Mutex::new(vec![9]), ..Fake::default() };
        *f.torrents.lock().unwrap() = vec![
            t(1, HASH1, "sample.bin", Status::Downloading),
            t(2, HASH2, "fake-magnet", Status::Downloading),
            t(3, HASH3, "multi", Status::Stopped),
        ];
        f
    }

    pub(crate) fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// The removal set for `method` (see [`Fake::race`]), if this is its turn: the torrent
    /// leaves the list, then enters `removed`, as the daemon does it.
    fn entering(&self, method: &str) {
        let mut race = self.race.lock().unwrap();
        let Some((_, id)) = race.take_if(|(m, _)| *m == method) else { return };
        self.torrents.lock().unwrap().retain(|t| t.id != id);
        self.removed.lock().unwrap().push(id);
    }
}

impl Backend for Fake {
    fn torrent_ids(&self) -> Vec<(u32, InfoHash)> {
        self.entering("torrent_ids");
        self.torrents.lock().unwrap().iter().rev().map(|t| (t.id, t.info_hash)).collect()
    }

    fn recently_active(&self) -> Vec<u32> {
        self.entering("recently_active");
        vec![2, 1]
    }

    fn recently_removed(&self) -> Vec<u32> {
        self.entering("recently_removed");
        self.removed.lock().unwrap().clone()
    }

    /// 1 changed, 2 only moving (their union is `recently_active`).
    fn changes_since(&self, _since: std::time::Instant) -> crate::backend::Changes {
        self.entering("changes_since");
        crate::backend::Changes { changed: vec![1], moving: vec![2], removed: false }
    }

    fn torrents(&self, ids: &[u32], wants: Wants) -> Vec<TorrentView> {
        self.entering("torrents");
        *self.last_wants.lock().unwrap() = Some(wants);
        let all = self.torrents.lock().unwrap();
        // The torrents are kept by increasing id.
        ids.iter().filter_map(|id| all.binary_search_by_key(id, |t| t.id).ok().map(|i| all[i].clone())).collect()
    }

    async fn add(&self, request: AddRequest) -> Result<AddOutcome, BackendError> {
        *self.last_add.lock().unwrap() = Some(request.clone());
        match &request.source {
            AddSource::Magnet { info_hash, .. } => {
                let mut all = self.torrents.lock().unwrap();
                if let Some(t) = all.iter().find(|t| t.info_hash == *info_hash) {
                    return Ok(AddOutcome::Duplicate(TorrentRef {
                        id: t.id,
                        info_hash: t.info_hash,
                        name: t.name.clone(),
                    }));
                }
                let id = all.len() as u32 + 1;
                all.push(TorrentView { id, info_hash: *info_hash, name: "m".into(), ..TorrentView::default() });
                Ok(AddOutcome::Added(TorrentRef { id, info_hash: *info_hash, name: "m".into() }))
            }
            AddSource::Metainfo(b) if b.starts_with(b"d") => {
                Ok(AddOutcome::Added(TorrentRef { id: 7, info_hash: InfoHash([7; 20]), name: "t".into() }))
            }
            AddSource::Metainfo(_) => Err(BackendError::CorruptTorrent),
            AddSource::Url { .. } => Err(BackendError::Fetch { reason: "Not Found".into(), code: 404 }),
            AddSource::Path(_) => Err(BackendError::Io(std::io::Error::from_raw_os_error(libc::EACCES))),
        }
    }

    fn start(&self, ids: &[u32], bypass_queue: bool) {
        self.log(format!("start {ids:?} {bypass_queue}"));
    }

    fn stop(&self, ids: &[u32]) {
        self.log(format!("stop {ids:?}"));
    }

    fn verify(&self, ids: &[u32]) {
        self.log(format!("verify {ids:?}"));
    }

    fn reannounce(&self, ids: &[u32]) {
        self.log(format!("reannounce {ids:?}"));
    }

    async fn remove(&self, ids: &[u32], delete_data: bool) -> Result<(), BackendError> {
        self.log(format!("remove {ids:?} {delete_data}"));
        Ok(())
    }

    fn set(&self, ids: &[u32], set: &TorrentSet) -> Result<(), BackendError> {
        self.log(format!("set {ids:?}"));
        *self.last_set.lock().unwrap() = Some(set.clone());
        if set.tracker_remove.is_some() { Err(BackendError::AnnounceList) } else { Ok(()) }
    }

    async fn set_location(&self, ids: &[u32], location: &str, move_data: bool) -> Result<(), BackendError> {
        self.log(format!("set_location {ids:?} {location} {move_data}"));
        Ok(())
    }

    fn queue_move(&self, ids: &[u32], to: QueueMove) {
        self.log(format!("queue_move {ids:?} {to:?}"));
    }

    fn session(&self) -> SessionView {
        self.session.lock().unwrap().clone()
    }

    async fn session_set(&self, set: &SessionSet) -> Result<(), BackendError> {
        *self.last_session_set.lock().unwrap() = Some(set.clone());
        Ok(())
    }

    fn session_stats(&self) -> SessionStats {
        SessionStats { active_torrent_count: 2, torrent_count: 3, download_speed: 1000, ..SessionStats::default() }
    }

    fn session_close(&self) {
        self.log("close".into());
    }

    async fn create_torrent(&self, request: CreateRequest) -> Result<CreateJob, BackendError> {
        *self.last_create.lock().unwrap() = Some(request.clone());
        if !request.path.starts_with("/allowed/") {
            return Err(BackendError::Other(format!("{}: not in a folder torrents may be made from", request.path)));
        }
        let name = request.path.rsplit('/').next().unwrap_or("").to_owned();
        Ok(CreateJob { job: 1, path: request.path, name, hashed: 0, total: 100, state: CreateState::Hashing })
    }

    fn create_jobs(&self) -> Vec<CreateJob> {
        let job = |job, state| CreateJob {
            job,
            path: format!("/allowed/{job}"),
            name: job.to_string(),
            hashed: 50,
            total: 100,
            state,
        };
        vec![
            job(1, CreateState::Hashing),
            job(
                2,
                CreateState::Done {
                    torrent: TorrentRef { id: 4, info_hash: InfoHash([4; 20]), name: "2".into() },
                    magnet_link: "magnet:?xt=urn:btih:0404040404040404040404040404040404040404".into(),
                },
            ),
            job(3, CreateState::Failed("/allowed/3: No such file or directory".into())),
        ]
    }

    async fn tracker(&self) -> Result<Option<TrackerServerView>, BackendError> {
        if !*self.tracker.lock().unwrap() {
            return Ok(None);
        }
        Ok(Some(TrackerServerView {
            announce_urls: vec!["http://127.0.0.1:6969/announce".into()],
            uptime_secs: 5,
            swarms: 1,
            seeders: 1,
            leechers: 2,
            completed: 3,
            announces: 9,
            scrapes: 1,
            list: vec![SwarmView {
                info_hash: InfoHash::from_hex(HASH1).unwrap(),
                name: Some("sample.bin".into()),
                seeders: 1,
                leechers: 2,
                completed: 3,
                idle_secs: 0,
            }],
        }))
    }
}
