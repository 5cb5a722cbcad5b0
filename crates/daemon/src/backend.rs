//! The daemon as Transmission's RPC sees it: [`bitswarm_rpc::Backend`] over the session.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bitswarm_metainfo::{Magnet, Metainfo};
use bitswarm_peer::{AddSource, FilePriority, Limit, Source, State, TorrentHandle, TorrentSettings, TrackerProblem};
use bitswarm_rpc::backend::{
    AddOutcome, AddRequest, AddSource as RpcSource, Backend, BackendError, Changes, CreateJob, CreateRequest,
    FileSelection, QueueMove, SessionSet, SwarmView, TorrentRef, TorrentSet, TrackerServerView, Wants,
};
use bitswarm_rpc::view::{
    Encryption, Eta, FileView, LimitMode, PeerSource, PeerView, PeersFrom, Priority, SessionStats, SessionView,
    StatsTotals, Status, TorrentError, TorrentView, TrackerState, TrackerView,
};

use crate::Daemon;

fn rpc_hash(h: bitswarm_metainfo::InfoHash) -> bitswarm_rpc::InfoHash {
    bitswarm_rpc::InfoHash(h.0)
}

fn unix(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs() as i64)
}

fn status(s: &State) -> Status {
    match s {
        State::FetchingMetadata | State::Downloading => Status::Downloading,
        State::CheckQueued => Status::QueuedToVerify,
        State::Checking => Status::Verifying,
        State::DownloadQueued => Status::QueuedToDownload,
        State::SeedQueued => Status::QueuedToSeed,
        State::Seeding => Status::Seeding,
        State::Stopped | State::Error(_) => Status::Stopped,
    }
}

fn limit_mode<T>(l: Limit<T>) -> LimitMode {
    match l {
        Limit::Session => LimitMode::Global,
        Limit::Own(_) => LimitMode::Single,
        Limit::Unlimited => LimitMode::Unlimited,
    }
}

fn file_priority(p: FilePriority) -> Priority {
    match p {
        FilePriority::Low => Priority::Low,
        FilePriority::High => Priority::High,
        FilePriority::Normal | FilePriority::Skip => Priority::Normal,
    }
}

fn peer_source(s: Source) -> PeerSource {
    match s {
        Source::Incoming => PeerSource::Incoming,
        Source::Pex => PeerSource::Pex,
        Source::Dht => PeerSource::Dht,
        Source::Lsd => PeerSource::Lpd,
        Source::Tracker | Source::Given | Source::Magnet => PeerSource::Tracker,
    }
}

impl Daemon {
    fn handles(&self, ids: &[u32]) -> Vec<TorrentHandle> {
        self.session.get_many(ids)
    }

    /// One torrent as torrent-get reports it.
    fn view(&self, h: &TorrentHandle, wants: Wants, session: &bitswarm_peer::Settings) -> TorrentView {
        let mut s = h.stats();
        let name = std::mem::take(&mut s.name);
        let times = if wants.times { h.times() } else { bitswarm_peer::Times::default() };
        let meta = h.metainfo();
        let (secs_down, secs_seed) = times.totals();
        let peers_list = if wants.peers { Some(h.peers()) } else { None };
        let problem = h.tracker_problem();
        let mut v = h.with_settings(|settings| TorrentView {
            id: h.id(),
            info_hash: rpc_hash(h.info_hash()),
            name,
            status: status(&s.state),
            error: match &s.state {
                State::Error(e) => Some(TorrentError::Local(e.clone())),
                _ => match problem {
                    Some(TrackerProblem::Error(e)) => Some(TorrentError::TrackerError(e)),
                    Some(TrackerProblem::Warning(w)) => Some(TorrentError::TrackerWarning(w)),
                    None => None,
                },
            },
            total_size: s.total,
            size_when_done: s.wanted,
            left_until_done: s.left,
            have_valid: s.have,
            corrupt_ever: s.corrupt,
            // Without piece availability at hand: what is missing, when someone sends to us.
            desired_available: if s.peers_sending > 0 { s.left } else { 0 },
            downloaded_ever: s.downloaded,
            uploaded_ever: s.uploaded,
            rate_download: s.down_rate,
            rate_upload: s.up_rate,
            peers_connected: s.peers as u32,
            peers_sending_to_us: s.peers_sending as u32,
            peers_getting_from_us: s.peers_getting as u32,
            peer_limit: settings.max_peers.unwrap_or(session.max_peers_per_torrent) as u32,
            metadata_percent_complete: if meta.is_some() { 1.0 } else { 0.0 },
            recheck_progress: if matches!(s.state, State::Checking) && s.total > 0 {
                s.checked.min(s.total) as f64 / s.total as f64
            } else {
                0.0
            },
            piece_count: s.pieces as u32,
            piece_size: meta.as_ref().map_or(0, |m| m.info.piece_length),
            file_count: meta.as_ref().map_or(0, |m| m.info.files.iter().filter(|f| !f.padding).count() as u32),
            added_date: unix(times.added),
            done_date: unix(times.done),
            start_date: unix(times.started),
            activity_date: unix(times.activity),
            date_created: meta.as_ref().and_then(|m| m.creation_date).unwrap_or(0),
            is_private: meta.as_ref().is_some_and(|m| m.info.private),
            labels: if wants.text { settings.labels.clone() } else { Vec::new() },
            queue_position: h.queue_position() as u32,
            bandwidth_priority: match settings.bandwidth_priority {
                p if p < 0 => Priority::Low,
                p if p > 0 => Priority::High,
                _ => Priority::Normal,
            },
            download_limit: (settings.download_limit / 1000) as u32,
            download_limited: settings.download_limited,
            upload_limit: (settings.upload_limit / 1000) as u32,
            upload_limited: settings.upload_limited,
            honors_session_limits: settings.honors_session_limits,
            seed_ratio_limit: match settings.seed_ratio {
                Limit::Own(r) => r,
                _ => session.seed_ratio.unwrap_or(2.0),
            },
            seed_ratio_mode: limit_mode(settings.seed_ratio),
            seed_idle_limit: match settings.seed_idle_minutes {
                Limit::Own(m) => m as u32,
                _ => session.seed_idle_minutes.unwrap_or(30) as u32,
            },
            seed_idle_mode: limit_mode(settings.seed_idle_minutes),
            is_finished: h.finished(),
            // As Transmission: downloading or seeding, and idle (since the run started or data
            // last moved, whichever is later) for the session's stalled time at least.
            is_stalled: matches!(s.state, State::Downloading | State::Seeding)
                && session.queue_stalled.is_some_and(|d| times.idle().is_some_and(|idle| idle >= d)),
            seconds_downloading: secs_down,
            seconds_seeding: secs_seed,
            eta: eta(&s),
            manual_announce_time: s.state.is_active().then_some(0),
            ..TorrentView::default()
        });
        if wants.text {
            // As Transmission: where the data goes, also while it is written in the incomplete
            // folder.
            v.download_dir =
                h.with_settings(|s| s.complete_dir.clone()).unwrap_or_else(|| h.dir()).to_string_lossy().into_owned();
            if let Some(m) = &meta {
                v.comment = m.comment.clone().unwrap_or_default();
                v.creator = m.created_by.clone().unwrap_or_default();
                v.source = m.info.source.clone().unwrap_or_default();
                v.webseeds = m.url_list.clone();
            }
        }
        if wants.files
            && let Some(m) = &meta
        {
            v.files = Some(files(m, &h.settings(), h));
        }
        if let Some(peers) = peers_list {
            v.peers_from = PeersFrom::default();
            let mut list = Vec::new();
            for p in peers {
                match p.source {
                    Source::Incoming => v.peers_from.incoming += 1,
                    Source::Pex => v.peers_from.pex += 1,
                    Source::Dht => v.peers_from.dht += 1,
                    Source::Lsd => v.peers_from.lpd += 1,
                    _ => v.peers_from.tracker += 1,
                }
                list.push(PeerView {
                    address: p.addr.ip(),
                    port: p.addr.port(),
                    client_name: p.client.unwrap_or_default(),
                    progress: p.progress,
                    rate_to_client: p.down_rate,
                    rate_to_peer: p.up_rate,
                    is_encrypted: p.encrypted,
                    is_incoming: !p.outgoing,
                    is_utp: false,
                    client_is_choked: p.peer_choking,
                    client_is_interested: p.am_interested,
                    peer_is_choked: p.am_choking,
                    peer_is_interested: p.peer_interested,
                    is_downloading_from: !p.peer_choking && p.am_interested,
                    is_uploading_to: !p.am_choking && p.peer_interested,
                    is_optimistic: false,
                    source: peer_source(p.source),
                });
            }
            v.peers = Some(list);
        }
        if wants.trackers {
            v.trackers = Some(trackers(h, meta.as_deref()));
        }
        if wants.pieces {
            v.pieces = h.have_pieces().map(|b| b.as_bytes().to_vec());
        }
        v
    }
}

/// Seconds left: while downloading, what is left at the current rate; unknown without a
/// rate; nothing to estimate otherwise.
fn eta(s: &bitswarm_peer::TorrentStats) -> Eta {
    match s.state {
        State::FetchingMetadata => Eta::Unknown,
        State::Downloading if s.down_rate > 0 => Eta::Seconds(s.left / s.down_rate),
        State::Downloading => Eta::Unknown,
        _ => Eta::NotAvailable,
    }
}

/// The files with what we have of each.
fn files(m: &Metainfo, settings: &TorrentSettings, h: &TorrentHandle) -> Vec<FileView> {
    let have = h.have_pieces();
    let info = &m.info;
    let mut names = h.file_paths().into_iter();
    info.files
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f, names.next().unwrap_or_default()))
        .filter(|(_, f, _)| !f.padding)
        .map(|(i, f, name)| {
            let mut done = 0u64;
            if f.length > 0
                && let Some(have) = &have
            {
                let first = f.offset / info.piece_length;
                let last = (f.offset + f.length - 1) / info.piece_length;
                for p in first..=last {
                    if have.get(p as usize) {
                        let start = (p * info.piece_length).max(f.offset);
                        let end = ((p + 1) * info.piece_length).min(f.offset + f.length);
                        done += end - start;
                    }
                }
            }
            let prio = settings.files.get(i).copied().unwrap_or_default();
            FileView {
                name,
                length: f.length,
                bytes_completed: done,
                wanted: prio != FilePriority::Skip,
                priority: file_priority(prio),
            }
        })
        .collect()
}

/// The tracker tiers a torrent announces to: a client's edit, else the torrent's own.
fn tiers_of(h: &TorrentHandle, meta: Option<&Metainfo>) -> Vec<Vec<String>> {
    h.settings()
        .trackers
        .or_else(|| meta.map(|m| m.trackers()))
        // A magnet link waiting for its metadata: its `tr` URLs, each a tier, as Transmission lists them.
        .or_else(|| h.magnet().map(|m| m.trackers.into_iter().map(|t| vec![t]).collect()))
        .unwrap_or_default()
}

/// Applies torrent-set's tracker keys to the tiers; Ok(false) when they changed nothing.
fn edit_trackers(tiers: &mut Vec<Vec<String>>, set: &TorrentSet) -> bool {
    let before = tiers.clone();
    if let Some(list) = &set.tracker_list {
        *tiers = list.clone();
    }
    // Tracker ids number the URLs in tier order, as `trackers` lists them.
    let flat: Vec<String> = tiers.iter().flatten().cloned().collect();
    if let Some(remove) = &set.tracker_remove {
        let gone: Vec<&String> = remove.iter().filter_map(|id| flat.get(*id as usize)).collect();
        for tier in tiers.iter_mut() {
            tier.retain(|u| !gone.contains(&u));
        }
    }
    if let Some(replace) = &set.tracker_replace {
        for (id, url) in replace {
            if let Some(old) = flat.get(*id as usize) {
                for u in tiers.iter_mut().flatten().filter(|u| *u == old) {
                    *u = url.clone();
                }
            }
        }
    }
    if let Some(add) = &set.tracker_add {
        for url in add {
            if !tiers.iter().flatten().any(|u| u == url) {
                tiers.push(vec![url.clone()]);
            }
        }
    }
    tiers.retain(|t| !t.is_empty());
    *tiers != before
}

/// The trackers as the last announces left them (as listed in the torrent while stopped).
fn trackers(h: &TorrentHandle, meta: Option<&Metainfo>) -> Vec<TrackerView> {
    let live = h.trackers();
    let tiers = tiers_of(h, meta);
    let mut out = Vec::new();
    let mut id = 0u32;
    for (tier, urls) in tiers.iter().enumerate() {
        for url in urls {
            let st = live.iter().find(|t| &t.url == url);
            let mut v = TrackerView {
                id,
                tier: tier as u32,
                announce: url.clone(),
                scrape: scrape_url(url),
                ..TrackerView::default()
            };
            if let Some(st) = st {
                v.announce_state = TrackerState::Waiting;
                v.has_announced = st.last_announce.is_some();
                v.last_announce_time = unix(st.last_announce);
                v.last_announce_start_time = unix(st.last_announce);
                v.next_announce_time = unix(st.next_announce);
                v.last_announce_succeeded = st.ok;
                v.last_announce_result = st.message.clone();
                v.last_announce_peer_count = st.peers;
                if st.ok {
                    v.seeder_count = Some(st.seeders);
                    v.leecher_count = Some(st.leechers);
                }
            }
            out.push(v);
            id += 1;
        }
    }
    out
}

/// The scrape URL of an announce URL (BEP 48: `announce` in the last path component).
fn scrape_url(announce: &str) -> String {
    match announce.rfind('/') {
        Some(i) if announce[i + 1..].starts_with("announce") => {
            format!("{}/scrape{}", &announce[..i], &announce[i + 1 + "announce".len()..])
        }
        _ => String::new(),
    }
}

/// Applies a file selection (`files-wanted`, `priority-high`…) to the per-file priorities.
/// `visible`: the torrent's file of each index a client gives (see [`apply_files`]).
fn select(
    files: &mut [FilePriority],
    visible: &[usize],
    sel: &FileSelection,
    f: impl Fn(&mut FilePriority),
) -> Result<(), BackendError> {
    match sel {
        FileSelection::All => {
            files.iter_mut().for_each(f);
            Ok(())
        }
        FileSelection::Indices(ix) => {
            let mut out_of_range = false;
            for &i in ix {
                match visible.get(i as usize).and_then(|&real| files.get_mut(real)) {
                    Some(p) => f(p),
                    None => out_of_range = true,
                }
            }
            if out_of_range { Err(BackendError::FileIndexOutOfRange) } else { Ok(()) }
        }
    }
}

/// Whether a torrent-set touches the files.
fn touches_files(set: &TorrentSet) -> bool {
    set.files_wanted.is_some()
        || set.files_unwanted.is_some()
        || set.priority_high.is_some()
        || set.priority_low.is_some()
        || set.priority_normal.is_some()
}

/// A file's wish from torrent-add (indices), as a selection.
fn indices(v: &[u32]) -> Option<FileSelection> {
    (!v.is_empty()).then(|| FileSelection::Indices(v.to_vec()))
}

/// Applies torrent-set's file keys to `settings` (sized to `count` files).
/// A client's file index is the file's place in torrent-get's `files`, which leaves padding
/// files (BEP 47) out, as Transmission does; the settings keep one entry a file of the torrent,
/// padding included.
fn apply_files(
    settings: &mut TorrentSettings,
    info: &bitswarm_metainfo::Info,
    set: &TorrentSet,
) -> Result<(), BackendError> {
    let visible: Vec<usize> = info.files.iter().enumerate().filter(|(_, f)| !f.padding).map(|(i, _)| i).collect();
    settings.files.resize(info.files.len(), FilePriority::Normal);
    let mut result = Ok(());
    let files = &mut settings.files;
    let mut note = |r: Result<(), BackendError>| {
        if r.is_err() {
            result = r;
        }
    };
    // Priorities first, so that a file both unwanted and given a priority stays unwanted.
    if let Some(s) = &set.priority_high {
        note(select(files, &visible, s, |p| {
            *p = if *p == FilePriority::Skip { FilePriority::Skip } else { FilePriority::High }
        }));
    }
    if let Some(s) = &set.priority_low {
        note(select(files, &visible, s, |p| {
            *p = if *p == FilePriority::Skip { FilePriority::Skip } else { FilePriority::Low }
        }));
    }
    if let Some(s) = &set.priority_normal {
        note(select(files, &visible, s, |p| {
            *p = if *p == FilePriority::Skip { FilePriority::Skip } else { FilePriority::Normal }
        }));
    }
    if let Some(s) = &set.files_wanted {
        note(select(files, &visible, s, |p| {
            if *p == FilePriority::Skip {
                *p = FilePriority::Normal;
            }
        }));
    }
    if let Some(s) = &set.files_unwanted {
        note(select(files, &visible, s, |p| *p = FilePriority::Skip));
    }
    result
}

impl Backend for Daemon {
    fn torrent_ids(&self) -> Vec<(u32, bitswarm_rpc::InfoHash)> {
        self.session.torrents().iter().map(|h| (h.id(), rpc_hash(h.info_hash()))).collect()
    }

    fn recently_active(&self) -> Vec<u32> {
        let recent = Duration::from_secs(bitswarm_rpc::RECENT_SECONDS);
        self.session
            .torrents()
            .iter()
            .filter(|h| {
                let s = h.stats();
                h.changed_at().elapsed() < recent
                    || s.down_rate > 0
                    || s.up_rate > 0
                    || h.times().activity.and_then(|t| t.elapsed().ok()).is_some_and(|e| e < recent)
            })
            .map(|h| h.id())
            .collect()
    }

    fn changed_since(&self, since: Instant) -> Vec<u32> {
        let c = self.changes_since(since);
        let mut ids = c.changed;
        ids.extend(c.moving);
        ids
    }

    fn changes_since(&self, since: Instant) -> Changes {
        let recent = Duration::from_secs(bitswarm_rpc::RECENT_SECONDS);
        let mut c = Changes::default();
        for h in self.session.torrents() {
            if h.changed_at() >= since {
                c.changed.push(h.id());
                continue;
            }
            let s = h.stats();
            if s.down_rate > 0
                || s.up_rate > 0
                || s.peers > 0
                || matches!(s.state, State::Checking | State::CheckQueued)
                || h.times().activity.and_then(|t| t.elapsed().ok()).is_some_and(|e| e < recent)
            {
                c.moving.push(h.id());
            }
        }
        c.removed = self.removed.lock().unwrap_or_else(|p| p.into_inner()).back().is_some_and(|(_, t)| *t >= since);
        c
    }

    fn events(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.session.events())
    }

    async fn closing(&self) {
        self.closed().await;
    }

    fn recently_removed(&self) -> Vec<u32> {
        let recent = Duration::from_secs(bitswarm_rpc::RECENT_SECONDS);
        let r = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<u32> = r.iter().filter(|(_, t)| t.elapsed() < recent).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    fn torrents(&self, ids: &[u32], wants: Wants) -> Vec<TorrentView> {
        let session = self.session.settings();
        let mut views = Vec::with_capacity(ids.len());
        views.extend(self.session.get_many(ids).iter().map(|h| self.view(h, wants, &session)));
        views
    }

    async fn add(&self, request: AddRequest) -> Result<AddOutcome, BackendError> {
        let source = match request.source {
            RpcSource::Magnet { link, .. } => {
                let link = if link.starts_with("magnet:") { link } else { format!("magnet:?xt=urn:btih:{link}") };
                let m = Magnet::parse(&link).map_err(|_| BackendError::UnrecognizedInfo)?;
                AddSource::Magnet(m)
            }
            RpcSource::Path(p) => {
                let bytes = tokio::task::spawn_blocking(move || crate::read_capped(std::path::Path::new(&p)))
                    .await
                    .map_err(|e| BackendError::Other(e.to_string()))?
                    .map_err(BackendError::Other)?;
                parse(bytes)?
            }
            RpcSource::Url { url, cookies } => {
                let bytes = bitswarm_peer::fetch_url(&url, cookies.as_deref(), crate::MAX_TORRENT_SIZE)
                    .await
                    .map_err(|reason| BackendError::Fetch { reason, code: 0 })?;
                parse(bytes)?
            }
            RpcSource::Metainfo(bytes) => parse(bytes)?,
        };
        let mut settings = TorrentSettings {
            labels: request.labels.clone(),
            max_peers: request.peer_limit.map(|n| n as usize),
            bandwidth_priority: request.bandwidth_priority.map_or(0, |p| p as i8),
            ..TorrentSettings::default()
        };
        if let AddSource::Metainfo(m) = &source {
            let set = TorrentSet {
                files_wanted: indices(&request.files_wanted),
                files_unwanted: indices(&request.files_unwanted),
                priority_high: indices(&request.priority_high),
                priority_low: indices(&request.priority_low),
                priority_normal: indices(&request.priority_normal),
                ..TorrentSet::default()
            };
            // Indices past the last file are ignored at add, as Transmission does.
            let _ = apply_files(&mut settings, &m.info, &set);
        }
        let dir = request.download_dir.map(PathBuf::from);
        let stop_at_metadata = request.stop_at_metadata && matches!(source, AddSource::Magnet(_));
        let paused = if stop_at_metadata { Some(false) } else { request.paused };
        let (h, added) =
            self.add_torrent(source, dir, paused, settings, stop_at_metadata).map_err(BackendError::Other)?;
        let r = TorrentRef { id: h.id(), info_hash: rpc_hash(h.info_hash()), name: h.name() };
        Ok(if added { AddOutcome::Added(r) } else { AddOutcome::Duplicate(r) })
    }

    fn start(&self, ids: &[u32], bypass_queue: bool) {
        for h in self.handles(ids) {
            h.start(bypass_queue);
        }
    }

    fn stop(&self, ids: &[u32]) {
        for h in self.handles(ids) {
            h.stop();
        }
    }

    fn verify(&self, ids: &[u32]) {
        for h in self.handles(ids) {
            h.verify();
        }
    }

    fn reannounce(&self, ids: &[u32]) {
        for h in self.handles(ids) {
            h.reannounce();
        }
    }

    async fn remove(&self, ids: &[u32], delete_data: bool) -> Result<(), BackendError> {
        // Out of the session and into torrent-get's `removed` together, all of them, before
        // anything is awaited: as Transmission does, a torrent leaves the list and enters
        // `removed` at once, and the removal cannot be cut short by the client going away.
        let gone: Vec<TorrentHandle> = ids.iter().filter_map(|id| self.session.detach(*id)).collect();
        for h in &gone {
            self.forget(h.id(), h.info_hash());
        }
        // Stopping (the trackers told) and deleting the data take seconds: each torrent on a
        // task of its own, all at once (a hundred torrents whose tracker does not answer take
        // one tracker timeout, not a hundred), which ends even if the request is dropped. The
        // answer waits for them.
        let tasks: Vec<_> =
            gone.into_iter().map(|h| tokio::spawn(async move { h.dispose(delete_data).await })).collect();
        for task in tasks {
            task.await.map_err(|e| BackendError::Other(format!("removing torrents: {e}")))?;
        }
        Ok(())
    }

    fn set(&self, ids: &[u32], set: &TorrentSet) -> Result<(), BackendError> {
        let mut result = Ok(());
        for h in self.handles(ids) {
            let meta = h.metainfo();
            h.set_settings(|s| {
                if let Some(p) = set.bandwidth_priority {
                    s.bandwidth_priority = p as i8;
                }
                // kB/s on the wire.
                if let Some(v) = set.download_limit {
                    s.download_limit = u64::from(v) * 1000;
                }
                if let Some(on) = set.download_limited {
                    s.download_limited = on;
                }
                if let Some(v) = set.upload_limit {
                    s.upload_limit = u64::from(v) * 1000;
                }
                if let Some(on) = set.upload_limited {
                    s.upload_limited = on;
                }
                if let Some(v) = set.honors_session_limits {
                    s.honors_session_limits = v;
                }
                if let Some(n) = set.peer_limit {
                    s.max_peers = Some(n.max(1) as usize);
                }
                if let Some(r) = set.seed_ratio_limit
                    && (matches!(s.seed_ratio, Limit::Own(_)) || set.seed_ratio_mode == Some(LimitMode::Single))
                {
                    s.seed_ratio = Limit::Own(r);
                }
                match set.seed_ratio_mode {
                    Some(LimitMode::Global) => s.seed_ratio = Limit::Session,
                    Some(LimitMode::Unlimited) => s.seed_ratio = Limit::Unlimited,
                    Some(LimitMode::Single) => {
                        s.seed_ratio = Limit::Own(set.seed_ratio_limit.unwrap_or(match s.seed_ratio {
                            Limit::Own(r) => r,
                            _ => 2.0,
                        }))
                    }
                    None => {}
                }
                if let Some(m) = set.seed_idle_limit
                    && (matches!(s.seed_idle_minutes, Limit::Own(_)) || set.seed_idle_mode == Some(LimitMode::Single))
                {
                    s.seed_idle_minutes = Limit::Own(u64::from(m));
                }
                match set.seed_idle_mode {
                    Some(LimitMode::Global) => s.seed_idle_minutes = Limit::Session,
                    Some(LimitMode::Unlimited) => s.seed_idle_minutes = Limit::Unlimited,
                    Some(LimitMode::Single) => {
                        s.seed_idle_minutes = Limit::Own(u64::from(set.seed_idle_limit.unwrap_or(30)))
                    }
                    None => {}
                }
                if let Some(l) = &set.labels {
                    s.labels = l.clone();
                }
                let edits = set.tracker_list.is_some()
                    || set.tracker_add.is_some()
                    || set.tracker_remove.is_some()
                    || set.tracker_replace.is_some();
                if edits {
                    let mut tiers =
                        s.trackers.clone().or_else(|| h.metainfo().map(|m| m.trackers())).unwrap_or_default();
                    if edit_trackers(&mut tiers, set) {
                        s.trackers = Some(tiers);
                    } else if set.tracker_list.is_none() {
                        result = Err(BackendError::AnnounceList);
                    }
                }
                if let Some(m) = &meta
                    && touches_files(set)
                    && let Err(e) = apply_files(s, &m.info, set)
                {
                    result = Err(e);
                }
            });
            if let Some(pos) = set.queue_position {
                self.session.set_queue_position(h.id(), pos as usize);
            }
            if let Some(loc) = &set.location {
                let h = h.clone();
                let dir = PathBuf::from(loc);
                tokio::spawn(async move {
                    let _ = h.set_location(dir, false).await;
                });
            }
            self.save_record(&h);
        }
        result
    }

    async fn set_location(&self, ids: &[u32], location: &str, move_data: bool) -> Result<(), BackendError> {
        let dir = PathBuf::from(location);
        for h in self.handles(ids) {
            // Moved by hand: no longer moved once complete.
            h.set_settings(|s| s.complete_dir = None);
            h.set_location(dir.clone(), move_data).await.map_err(BackendError::Other)?;
            self.save_record(&h);
        }
        Ok(())
    }

    async fn blocklist_update(&self) -> Result<u64, BackendError> {
        let _one = self.blocklist_update.lock().await;
        let url = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).blocklist_url.clone();
        let bytes = bitswarm_peer::fetch_url(&url, None, crate::MAX_BLOCKLIST)
            .await
            .map_err(|e| BackendError::Other(format!("{url}: {e}")))?;
        // Read, then kept as fetched: written whole (and synced) before it replaces the one
        // kept before.
        let path = self.state_dir.join(crate::BLOCKLIST_FILE);
        let from = url.clone();
        let list = tokio::task::spawn_blocking(move || {
            let list =
                bitswarm_peer::Blocklist::parse(&bytes).map_err(|e| BackendError::Other(format!("{from}: {e}")))?;
            let new = path.with_extension("new");
            let mut f = std::fs::File::create(&new)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            std::fs::rename(&new, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok::<_, BackendError>(list)
        })
        .await
        .map_err(|e| BackendError::Other(e.to_string()))??;
        let rules = list.rules() as u64;
        tracing::info!("blocklist: {rules} rules from {url}");
        *self.blocklist.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(list));
        self.apply_blocklist();
        Ok(rules)
    }

    async fn rename_path(&self, id: u32, path: &str, name: &str) -> Result<(), BackendError> {
        let h = self.handles(&[id]).pop().ok_or_else(|| BackendError::Other(format!("no torrent {id}")))?;
        let result = h.rename_path(path, name).await.map_err(BackendError::Other);
        self.save_record(&h);
        result
    }

    fn queue_move(&self, ids: &[u32], to: QueueMove) {
        let to = match to {
            QueueMove::Top => bitswarm_peer::QueueMove::Top,
            QueueMove::Up => bitswarm_peer::QueueMove::Up,
            QueueMove::Down => bitswarm_peer::QueueMove::Down,
            QueueMove::Bottom => bitswarm_peer::QueueMove::Bottom,
        };
        self.session.queue_move(ids, to);
    }

    fn session(&self) -> SessionView {
        let r = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).clone();
        SessionView {
            download_dir: r.download_dir.to_string_lossy().into_owned(),
            incomplete_dir: r.incomplete_dir.as_ref().unwrap_or(&r.download_dir).to_string_lossy().into_owned(),
            incomplete_dir_enabled: r.incomplete_dir_enabled,
            blocklist_enabled: r.blocklist_enabled,
            blocklist_url: r.blocklist_url.clone(),
            blocklist_size: self
                .blocklist
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or(0, |b| b.rules() as u64),
            config_dir: self.state_dir.to_string_lossy().into_owned(),
            peer_port: self.session.listen_addr().port(),
            peer_limit_global: r.peer_limit_global,
            peer_limit_per_torrent: r.peer_limit_per_torrent,
            speed_limit_down: r.speed_limit_down,
            speed_limit_down_enabled: r.speed_limit_down_enabled,
            speed_limit_up: r.speed_limit_up,
            speed_limit_up_enabled: r.speed_limit_up_enabled,
            download_queue_enabled: r.download_queue_enabled,
            download_queue_size: r.download_queue_size,
            seed_queue_enabled: r.seed_queue_enabled,
            seed_queue_size: r.seed_queue_size,
            queue_stalled_enabled: r.queue_stalled_enabled,
            queue_stalled_minutes: r.queue_stalled_minutes,
            seed_ratio_limit: r.seed_ratio_limit,
            seed_ratio_limited: r.seed_ratio_limited,
            idle_seeding_limit: r.idle_seeding_limit,
            idle_seeding_limit_enabled: r.idle_seeding_limit_enabled,
            encryption: match r.encryption.as_str() {
                "require" => Encryption::Required,
                "plaintext" => Encryption::Tolerated,
                _ => Encryption::Preferred,
            },
            start_added_torrents: r.start_added,
            dht_enabled: self.session.dht_stats().is_some(),
            pex_enabled: true,
            lpd_enabled: self.session.lsd_enabled(),
            utp_enabled: false,
            tcp_enabled: true,
            alt_speed_enabled: r.alt_speed_enabled,
            alt_speed_down: r.alt_speed_down,
            alt_speed_up: r.alt_speed_up,
            alt_speed_time_enabled: r.alt_speed_time_enabled,
            alt_speed_time_begin: r.alt_speed_time_begin,
            alt_speed_time_end: r.alt_speed_time_end,
            alt_speed_time_day: r.alt_speed_time_day,
            watch_dir: r
                .watch_dir
                .clone()
                .unwrap_or_else(|| self.config_watch_dir.clone())
                .to_string_lossy()
                .into_owned(),
            watch_dir_enabled: r.watching(&self.config_watch_dir).is_some(),
            ..SessionView::default()
        }
    }

    async fn session_set(&self, set: &SessionSet) -> Result<(), BackendError> {
        // The peer port first: a port that cannot be bound is refused, the old one stays, and
        // the other keys still apply (as dht-enabled's failure).
        let mut port_error = None;
        if let Some(p) = set.peer_port {
            match self.session.set_port(p).await {
                Ok(bound) => self.runtime.lock().unwrap_or_else(|p| p.into_inner()).peer_port = Some(bound),
                Err(e) => port_error = Some(BackendError::Other(format!("peer-port {p}: {e}"))),
            }
        }
        {
            let mut r = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = &set.download_dir {
                r.download_dir = PathBuf::from(d);
            }
            if let Some(d) = &set.incomplete_dir {
                r.incomplete_dir = Some(PathBuf::from(d));
            }
            macro_rules! take {
                ($($field:ident),*) => { $(if let Some(v) = set.$field.clone() { r.$field = v; })* };
            }
            take!(
                speed_limit_down,
                speed_limit_down_enabled,
                speed_limit_up,
                speed_limit_up_enabled,
                download_queue_size,
                download_queue_enabled,
                seed_queue_size,
                seed_queue_enabled,
                queue_stalled_enabled,
                queue_stalled_minutes,
                incomplete_dir_enabled,
                blocklist_enabled,
                blocklist_url,
                seed_ratio_limit,
                seed_ratio_limited,
                idle_seeding_limit,
                idle_seeding_limit_enabled,
                peer_limit_global,
                peer_limit_per_torrent,
                alt_speed_enabled,
                alt_speed_down,
                alt_speed_up,
                alt_speed_time_enabled,
                alt_speed_time_begin,
                alt_speed_time_end,
                alt_speed_time_day
            );
            if let Some(d) = &set.watch_dir {
                r.watch_dir = Some(PathBuf::from(d));
            }
            if let Some(on) = set.watch_dir_enabled {
                r.watch_dir_enabled = Some(on);
            }
            if let Some(v) = set.start_added_torrents {
                r.start_added = v;
            }
            if let Some(v) = set.lpd_enabled {
                r.lpd_enabled = Some(v);
            }
            if let Some(e) = set.encryption {
                r.encryption = match e {
                    Encryption::Required => "require",
                    Encryption::Tolerated => "plaintext",
                    Encryption::Preferred => "prefer",
                }
                .into();
            }
            if set.dht_enabled.is_some() {
                r.dht_enabled = set.dht_enabled;
            }
        }
        self.save_runtime();
        if set.blocklist_enabled.is_some() {
            self.apply_blocklist();
        }
        let schedule = [set.alt_speed_time_begin, set.alt_speed_time_end, set.alt_speed_time_day];
        if set.alt_speed_time_enabled.is_some() || schedule.iter().any(Option::is_some) {
            self.schedule_changed.notify_one();
        }
        if let Some(on) = set.dht_enabled
            && !self.session.set_dht(on).await
        {
            return Err(BackendError::Other("the DHT node cannot start (see the log)".into()));
        }
        port_error.map_or(Ok(()), Err)
    }

    fn session_stats(&self) -> SessionStats {
        let all = self.session.torrents();
        let stats: Vec<_> = all.iter().map(|h| h.stats()).collect();
        let active = stats.iter().filter(|s| s.state.is_active()).count() as u32;
        let now = self.counters_now();
        let before = self.counters_before;
        SessionStats {
            active_torrent_count: active,
            torrent_count: stats.len() as u32,
            download_speed: stats.iter().map(|s| s.down_rate).sum(),
            upload_speed: stats.iter().map(|s| s.up_rate).sum(),
            current: StatsTotals {
                uploaded_bytes: now.uploaded,
                downloaded_bytes: now.downloaded,
                files_added: now.files_added,
                session_count: 1,
                seconds_active: now.seconds_active,
            },
            cumulative: StatsTotals {
                uploaded_bytes: before.uploaded + now.uploaded,
                downloaded_bytes: before.downloaded + now.downloaded,
                files_added: before.files_added + now.files_added,
                session_count: before.session_count,
                seconds_active: before.seconds_active + now.seconds_active,
            },
        }
    }

    fn session_close(&self) {
        self.close();
    }

    async fn create_torrent(&self, request: CreateRequest) -> Result<CreateJob, BackendError> {
        Daemon::create_torrent(self, request).await
    }

    fn create_jobs(&self) -> Vec<CreateJob> {
        Daemon::create_jobs(self)
    }

    async fn tracker(&self) -> Result<Option<TrackerServerView>, BackendError> {
        use bitswarm_tracker::stats::Proto;
        let Some(t) = &self.tracker else { return Ok(None) };
        let snap = t.shared.snapshot().await.map_err(|e| BackendError::Other(format!("tracker: {e}")))?;
        let m = &t.shared.metrics;
        let names: std::collections::HashMap<[u8; 20], String> =
            self.session.torrents().iter().map(|h| (h.info_hash().0, h.name())).collect();
        let list = snap
            .swarms
            .iter()
            .filter_map(|s| {
                let info_hash = bitswarm_rpc::InfoHash::from_hex(&s.info_hash)?;
                Some(SwarmView {
                    name: names.get(&info_hash.0).cloned(),
                    info_hash,
                    seeders: s.counts.seeders,
                    leechers: s.counts.leechers,
                    completed: s.counts.downloaded,
                    idle_secs: s.idle_secs,
                })
            })
            .collect();
        Ok(Some(TrackerServerView {
            announce_urls: t.urls.clone(),
            uptime_secs: t.shared.uptime().as_secs(),
            swarms: snap.totals.swarms,
            seeders: snap.totals.seeders,
            leechers: snap.totals.leechers,
            completed: snap.totals.downloaded,
            announces: m.total(Proto::Http, |c| &c.announces) + m.total(Proto::Udp, |c| &c.announces),
            scrapes: m.total(Proto::Http, |c| &c.scrapes) + m.total(Proto::Udp, |c| &c.scrapes),
            list,
        }))
    }
}

/// A .torrent's bytes, parsed.
fn parse(bytes: Vec<u8>) -> Result<AddSource, BackendError> {
    let m = Metainfo::parse(&bytes).map_err(|e| {
        tracing::info!("torrent-add: {e}");
        if matches!(e, bitswarm_metainfo::MetainfoError::Bencode(_)) {
            BackendError::UnrecognizedInfo
        } else {
            BackendError::CorruptTorrent
        }
    })?;
    Ok(AddSource::Metainfo(Arc::new(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon on loopback with its state and downloads under `dir`: no DHT, no LSD.
    async fn daemon_in(dir: &std::path::Path) -> crate::Running {
        let toml = format!(
            "[daemon]\nstate_dir = {:?}\ndownload_dir = {:?}\n[peers]\nport = 0\nbind = \"127.0.0.1\"\n\
             [dht]\nenabled = false\n[lsd]\nenabled = false\n[rpc]\nbind = \"127.0.0.1:0\"\n",
            dir.join("state"),
            dir.join("downloads"),
        );
        Daemon::start(crate::Config::from_toml(&toml).unwrap()).await.unwrap()
    }

    /// A torrent of one 5-byte file (no data on disk) announcing to `tracker`, added running.
    async fn add_torrent(d: &Daemon, name: &str, tracker: &str) -> u32 {
        let mut e = bitswarm_bencode::Encoder::new();
        e.begin_dict().str("announce").str(tracker).str("info").begin_dict();
        e.str("length").int(5).str("name").str(name).str("piece length").int(16384).str("pieces").bytes(&[0; 20]);
        e.end().end();
        match d.add(AddRequest::new(RpcSource::Metainfo(e.finish()))).await.unwrap() {
            AddOutcome::Added(r) => r.id,
            other => panic!("{other:?}"),
        }
    }

    fn listed(d: &Daemon) -> Vec<u32> {
        let mut ids: Vec<u32> = d.torrent_ids().into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    /// torrent-get's `removed` as Transmission keeps it: a torrent is in it from the moment it
    /// leaves the list, even when the torrent-remove is dropped at its first wait (the client
    /// went away), and the rest of that removal still happens (its record gone for good); a
    /// save that took the torrent before its removal does not write it back; an id removed is
    /// never given again in the run, so `removed` never names a listed torrent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torrent_is_in_removed_as_it_leaves_and_stays_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A tracker that takes connections (the kernel does) and never answers: stopping a
        // torrent waits for its `stopped` announce to time out.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tracker = format!("http://{}/announce", silent.local_addr().unwrap());
        let run = daemon_in(dir.path()).await;
        let d = run.daemon.clone();
        let (a, b) = (add_torrent(&d, "a", &tracker).await, add_torrent(&d, "b", &tracker).await);
        for id in [a, b] {
            let h = d.session.get(id).unwrap();
            tokio::time::timeout(Duration::from_secs(60), h.wait_running()).await.expect("running");
        }
        let before = Instant::now();
        // What the save loop holds, taken before the removal.
        let held = d.session.get(b).unwrap();
        // Polled once, then dropped: the client went away.
        let _ = tokio::time::timeout(Duration::ZERO, d.remove(&[a, b], true)).await;
        assert_eq!(listed(&d), Vec::<u32>::new());
        assert_eq!(d.recently_removed(), vec![a, b], "in `removed` as they leave the list");
        assert!(d.changes_since(before).removed);
        d.save_record(&held);
        d.save_resume(&held, true);

        // Added again: a new id, not in `removed`; a removed one is never listed.
        let c = add_torrent(&d, "a", &tracker).await;
        assert!(c > b, "id {c} after {a} and {b} were removed");
        assert_eq!(listed(&d), vec![c]);
        assert_eq!(d.recently_removed(), vec![a, b]);

        // The removal ran to its end (the runs ended): after a restart only c is back.
        tokio::time::timeout(Duration::from_secs(60), held.stop_and_wait()).await.expect("the removed one stopped");
        drop((d, held));
        run.shutdown().await;
        let run = daemon_in(dir.path()).await;
        assert_eq!(listed(&run.daemon), vec![c]);
        assert!(run.daemon.recently_removed().is_empty(), "`removed` is this run's");
        run.shutdown().await;
        drop(silent);
    }

    /// Files a, padding, b: a client's index 1 is b (torrent-get lists a and b only).
    #[test]
    fn a_clients_file_indices_skip_padding_files() {
        let mut e = bitswarm_bencode::Encoder::new();
        e.begin_dict().str("info").begin_dict().str("files").begin_list();
        e.begin_dict().str("length").int(5).str("path").begin_list().str("a").end().end();
        e.begin_dict()
            .str("attr")
            .str("p")
            .str("length")
            .int(16379)
            .str("path")
            .begin_list()
            .str(".pad")
            .str("16379")
            .end()
            .end();
        e.begin_dict().str("length").int(5).str("path").begin_list().str("b").end().end();
        e.end().str("name").str("r").str("piece length").int(16384).str("pieces").bytes(&[0; 40]).end().end();
        let m = Metainfo::parse(&e.finish()).unwrap();
        let mut s = TorrentSettings::default();
        let set = TorrentSet { files_unwanted: Some(FileSelection::Indices(vec![1])), ..TorrentSet::default() };
        apply_files(&mut s, &m.info, &set).unwrap();
        assert_eq!(s.files, vec![FilePriority::Normal, FilePriority::Normal, FilePriority::Skip]);
        let set = TorrentSet { priority_high: Some(FileSelection::Indices(vec![2])), ..TorrentSet::default() };
        assert!(matches!(apply_files(&mut s, &m.info, &set), Err(BackendError::FileIndexOutOfRange)));
    }
}
