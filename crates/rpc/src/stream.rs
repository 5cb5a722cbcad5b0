//! The web page's update stream (bitswarm's own, `POST /transmission/stream`): one response
//! that stays open, a line of JSON each time something changed.
//!
//! The request is a torrent-get, as the page would poll with it: `fields`, `format: "table"`,
//! and `bitswarm-moving` (the fields of a torrent whose figures alone move). The answer
//! (`application/x-ndjson`) is a line at once with every torrent, then a line whenever the
//! held torrent-get ([`crate::hold`]) would answer, saying only what the client does not know:
//!
//! ```text
//! {"full":true,"keys":["id","name",…],"torrents":[[1,"a",…],…]}
//! {"moving":[[1,1,65536,3,120]],"movingKeys":["id","rateDownload",…]}
//! {"removed":[2],"torrents":[[7,"new",…]]}
//! ```
//!
//! - `torrents`: every field of the torrents whose state or settings changed (or that were
//!   added), a row per torrent as in torrent-get's table format, the fields' names (`keys`)
//!   sent once.
//! - `moving`: a torrent whose figures alone moved is `[id, i, value, i, value, …]`: the
//!   fields (by their place `i` in `movingKeys`, sent once) whose value differs from what
//!   this stream last sent of it. A figure that did not change is not sent again.
//! - `removed`: the ids, among those this stream sent, of the torrents removed since.
//! - Figures are as precise as a page shows them: fractions (`percentDone`, `uploadRatio`, …)
//!   to 4 decimals (a page shows 0.1%), rates to 3 significant digits ("64.1 kB/s"), an ETA to
//!   the minute beyond a minute and to the hour beyond a day, so that a figure moving within
//!   what is shown is not sent again.
//!
//! Gzipped (`Content-Encoding: gzip`) when the client accepts it, flushed at each line: a
//! browser decodes each line as it comes, and a line like the ones before costs a few bytes.
//!
//! Nothing to say for [`KEEPALIVE`]: an empty line, so that the client (and any proxy) sees the
//! stream is alive. A stream holds one of its client's held-request places for its life
//! ([`crate::hold::MAX_HELD_PER_CLIENT`]); past the caps, or for a backend that has no
//! events, the answer is the one line `{"poll":true}` and its end: the page polls instead (a
//! normal condition, many tabs open, so not an HTTP error in the browser's console). The stream ends when the
//! client goes away or the daemon shuts down.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::backend::Backend;
use crate::coerce::Args;
use crate::envelope::Request;
use crate::methods::{self, Context};

/// After this long without a line, an empty one.
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// What one stream has told its client, so that each line says only what is new.
#[derive(Default)]
pub(crate) struct Lines {
    /// Whether the first line (every torrent) was made.
    started: bool,
    /// The fields' names as last sent (`keys`).
    keys: Option<Vec<Value>>,
    /// The moving fields' names as last sent (`movingKeys`).
    moving_keys: Option<Vec<Value>>,
    /// The moving fields' values last sent, by torrent id (the id's own place included).
    sent: HashMap<u32, Vec<Value>>,
    /// The torrents the client was sent and not told were removed, with a hash of the row
    /// last sent in full (0 once figures were sent since): a row sent again unchanged (the
    /// held torrent-get sends a second's changes twice) is left out.
    known: HashMap<u32, u64>,
}

/// A hash of a row's values (never 0), without serializing them.
fn hash_of(row: &[Value]) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(v: &Value, h: &mut impl Hasher) {
        std::mem::discriminant(v).hash(h);
        match v {
            Value::Null => {}
            Value::Bool(b) => b.hash(h),
            Value::Number(n) => (n.as_u64(), n.as_i64(), n.as_f64().map(f64::to_bits)).hash(h),
            Value::String(s) => s.hash(h),
            Value::Array(a) => {
                a.len().hash(h);
                a.iter().for_each(|v| walk(v, h));
            }
            Value::Object(m) => {
                m.len().hash(h);
                for (k, v) in m {
                    k.hash(h);
                    walk(v, h);
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    row.iter().for_each(|v| walk(v, &mut h));
    h.finish() | 1
}

/// A value as precise as a page shows it: fractions to 4 decimals, rates to 3 significant
/// digits ("64.1 kB/s"), an ETA to the second under a minute, to the minute under a day, to
/// the hour beyond. A figure that moves within that precision is then not sent again.
fn shown(key: &Value, v: &mut Value) {
    let Value::Number(n) = v else { return };
    let rounded = match key.as_str() {
        Some("rateDownload" | "rateUpload") => n.as_u64().map(|r| {
            let mut unit = 1;
            while r / unit >= 1000 {
                unit *= 10;
            }
            Value::from((r + unit / 2) / unit * unit)
        }),
        Some("eta") => n.as_i64().filter(|s| *s >= 60).map(|s| {
            let unit = if s < 86_400 { 60 } else { 3600 };
            Value::from(s - s % unit)
        }),
        _ if n.is_f64() => {
            n.as_f64().and_then(|x| serde_json::Number::from_f64((x * 1e4).round() / 1e4)).map(Value::Number)
        }
        _ => None,
    };
    if let Some(r) = rounded {
        *v = r;
    }
}

/// A table-format list (`[names, row, …]`): its names and rows, each value as shown.
fn table(v: Option<Value>) -> Option<(Vec<Value>, Vec<Vec<Value>>)> {
    let Some(Value::Array(mut list)) = v else { return None };
    if list.is_empty() {
        return None;
    }
    let Value::Array(keys) = list.remove(0) else { return None };
    let rows = list
        .into_iter()
        .filter_map(|r| match r {
            Value::Array(mut row) => {
                row.iter_mut().zip(&keys).for_each(|(v, k)| shown(k, v));
                Some(row)
            }
            _ => None,
        })
        .collect();
    Some((keys, rows))
}

fn id_of(row: &[Value], at: usize) -> Option<u32> {
    row.get(at).and_then(Value::as_u64).and_then(|id| u32::try_from(id).ok())
}

impl Lines {
    /// The line for a torrent-get's arguments (table format): what the client does not know
    /// yet, or `None` when that is nothing. Also the ids of torrents moving that the client
    /// was never sent (to be got in full).
    pub(crate) fn line(&mut self, mut args: Map<String, Value>) -> (Option<String>, Vec<u32>) {
        let mut out = Map::new();
        if !self.started {
            self.started = true;
            out.insert("full".into(), Value::Bool(true));
        }
        let mut unknown = Vec::new();
        let mut in_rows = HashSet::new();
        if let Some((keys, rows)) = table(args.remove("torrents"))
            && let Some(at) = keys.iter().position(|k| k == "id")
        {
            let mut list = Vec::new();
            for row in rows {
                let Some(id) = id_of(&row, at) else { continue };
                in_rows.insert(id);
                let h = hash_of(&row);
                if self.known.insert(id, h) != Some(h) {
                    self.sent.remove(&id);
                    list.push(Value::Array(row));
                }
            }
            if !list.is_empty() {
                if self.keys.as_ref() != Some(&keys) {
                    out.insert("keys".into(), Value::Array(keys.clone()));
                    self.keys = Some(keys);
                }
                out.insert("torrents".into(), Value::Array(list));
            }
        }
        if let Some((keys, rows)) = table(args.remove("bitswarm-moving"))
            && let Some(at) = keys.iter().position(|k| k == "id")
        {
            if self.moving_keys.as_ref() != Some(&keys) {
                self.sent.clear();
            }
            let mut moving = Vec::new();
            for row in rows {
                let Some(id) = id_of(&row, at) else { continue };
                let Some(full) = self.known.get_mut(&id) else {
                    unknown.push(id);
                    continue;
                };
                let before = self.sent.get(&id);
                let mut diff = vec![Value::from(id)];
                for (i, v) in row.iter().enumerate() {
                    if i != at && before.is_none_or(|b| b.get(i) != Some(v)) {
                        diff.push(Value::from(i));
                        diff.push(v.clone());
                    }
                }
                if diff.len() > 1 {
                    moving.push(Value::Array(diff));
                    *full = 0;
                }
                self.sent.insert(id, row);
            }
            if !moving.is_empty() {
                if self.moving_keys.as_ref() != Some(&keys) {
                    out.insert("movingKeys".into(), Value::Array(keys.clone()));
                    self.moving_keys = Some(keys);
                }
                out.insert("moving".into(), Value::Array(moving));
            }
        }
        if let Some(Value::Array(removed)) = args.remove("removed") {
            let gone: Vec<Value> = removed
                .iter()
                .filter_map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
                .filter(|id| !in_rows.contains(id) && self.known.remove(id).is_some())
                .map(|id| {
                    self.sent.remove(&id);
                    Value::from(id)
                })
                .collect();
            if !gone.is_empty() {
                out.insert("removed".into(), Value::Array(gone));
            }
        }
        ((!out.is_empty()).then(|| Value::Object(out).to_string()), unknown)
    }
}

/// The request's arguments for the torrent-get this stream makes.
fn get_args(base: &Args, since: u64) -> Args {
    let mut args = base.clone();
    args.insert("format".into(), Value::from("table"));
    args.insert("ids".into(), Value::from("recently-active"));
    args.insert("bitswarm-since".into(), Value::from(since));
    args.remove("bitswarm-wait");
    args
}

/// One torrent-get's arguments, as JSON.
async fn get<B: Backend>(backend: &B, args: Args) -> Map<String, Value> {
    let ctx = Context { session_id: crate::http::session_id(), anti_brute_force: false };
    let reply = methods::call(backend, ctx, Request { method: Some("torrent-get".into()), args, tag: None }).await;
    match serde_json::from_str(reply.arguments.get()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The stream's state between two lines.
struct Stream<B> {
    backend: Arc<B>,
    base: Args,
    lines: Lines,
    since: u64,
    events: tokio::sync::watch::Receiver<u64>,
    _slot: crate::hold::Slot,
}

impl<B: Backend> Stream<B> {
    /// The next bytes to send: a line (or, after [`KEEPALIVE`], an empty one); `None` when
    /// the daemon is closing.
    async fn next(&mut self) -> Option<String> {
        let quiet_since = tokio::time::Instant::now();
        loop {
            if self.lines.started {
                let since = crate::ids::marker_instant(self.since as i64).unwrap_or_else(std::time::Instant::now);
                let left = KEEPALIVE.saturating_sub(quiet_since.elapsed());
                if !crate::hold::until_news(self.backend.as_ref(), &mut self.events, since, left).await {
                    return None;
                }
            }
            let mut args = get(self.backend.as_ref(), get_args(&self.base, self.since)).await;
            if let Some(now) = args.remove("bitswarm-now").and_then(|v| v.as_u64()) {
                self.since = now;
            }
            let (line, unknown) = self.lines.line(args);
            let line = if unknown.is_empty() {
                line
            } else {
                // Moving torrents this stream never sent (added while it looked): in full.
                let mut full = self.base.clone();
                full.insert("format".into(), Value::from("table"));
                full.insert("ids".into(), Value::from(unknown));
                full.remove("bitswarm-moving");
                let more = get(self.backend.as_ref(), full).await;
                let (more, _) = self.lines.line(more);
                match (line, more) {
                    (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
                    (a, b) => a.or(b),
                }
            };
            if let Some(line) = line {
                return Some(line + "\n");
            }
            if quiet_since.elapsed() >= KEEPALIVE {
                return Some("\n".into());
            }
        }
    }
}

/// The stream's bytes: its lines as they are, or gzipped as one member, flushed at each line
/// (`Z_SYNC_FLUSH`: the client decodes a line as soon as it comes). The compressor keeps what
/// came before, so a line like the last ones costs a few bytes.
enum Encoding {
    Identity,
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Encoding {
    fn encode(&mut self, line: String) -> Vec<u8> {
        use std::io::Write;
        match self {
            Encoding::Identity => line.into_bytes(),
            Encoding::Gzip(z) => {
                // Writing to a Vec cannot fail.
                let _ = z.write_all(line.as_bytes());
                let _ = z.flush();
                std::mem::take(z.get_mut())
            }
        }
    }
}

/// Opens a stream for `client`, asking torrent-gets with `args`, gzipped if `gzip`; `None`
/// when the backend has no events or the client holds its most.
pub(crate) fn open<B: Backend>(
    backend: Arc<B>,
    holds: &crate::hold::Holds,
    client: Option<IpAddr>,
    args: Args,
    gzip: bool,
) -> Option<impl futures_util::Stream<Item = Result<axum::body::Bytes, std::convert::Infallible>> + Send + 'static> {
    let events = backend.events()?;
    let slot = holds.take(client)?;
    let stream = Stream { backend, base: args, lines: Lines::default(), since: 0, events, _slot: slot };
    let encoding = if gzip {
        Encoding::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()))
    } else {
        Encoding::Identity
    };
    Some(futures_util::stream::unfold((stream, encoding), |(mut s, mut e)| async move {
        let line = s.next().await?;
        let bytes = e.encode(line);
        Some((Ok(axum::body::Bytes::from(bytes)), (s, e)))
    }))
}

/// Whether an `Accept-Encoding` header accepts gzip (`gzip` or `*`, not at `q=0`).
pub(crate) fn accepts_gzip(header: Option<&[u8]>) -> bool {
    let Some(h) = header.and_then(|h| std::str::from_utf8(h).ok()) else { return false };
    h.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")).and_then(|q| q.trim().parse::<f32>().ok())
                == Some(0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_line_says_only_what_is_new() {
        let mut l = Lines::default();
        let (first, _) = l.line(args(json!({"torrents": [["id", "name"], [1, "a"], [2, "b"]], "removed": []})));
        assert_eq!(first.unwrap(), r#"{"full":true,"keys":["id","name"],"torrents":[[1,"a"],[2,"b"]]}"#);

        // Moving figures: all of them the first time, with the names; then only what changed.
        let moving = |rate: u64, done: f64| {
            args(json!({"torrents": [], "bitswarm-moving": [["id", "rateDownload", "percentDone"], [1, rate, done]]}))
        };
        let (a, _) = l.line(moving(100, 0.123456));
        assert_eq!(a.unwrap(), r#"{"moving":[[1,1,100,2,0.1235]],"movingKeys":["id","rateDownload","percentDone"]}"#);
        let (b, _) = l.line(moving(200, 0.12351));
        assert_eq!(b.unwrap(), r#"{"moving":[[1,1,200]]}"#, "the rounded fraction did not change");
        let (c, _) = l.line(moving(200, 0.12351));
        assert_eq!(c, None, "nothing changed: no line");

        // A torrent sent in full is sent its figures whole next time.
        l.line(args(json!({"torrents": [["id", "name"], [1, "a2"]]})));
        let (d, _) = l.line(moving(200, 0.12351));
        assert_eq!(d.unwrap(), r#"{"moving":[[1,1,200,2,0.1235]]}"#);

        // Removed: only ids the client knows, once, and never one listed in the same line.
        let (e, _) = l.line(args(json!({"torrents": [["id", "name"], [3, "c"]], "removed": [2, 3, 9]})));
        assert_eq!(e.unwrap(), r#"{"removed":[2],"torrents":[[3,"c"]]}"#);
        let (f, _) = l.line(args(json!({"torrents": [], "removed": [2, 9]})));
        assert_eq!(f, None);
    }

    #[test]
    fn figures_are_as_precise_as_shown() {
        let keys = json!(["rateDownload", "rateUpload", "eta", "percentDone", "id"]);
        let mut l = Lines::default();
        let line = |l: &mut Lines, row: Value| {
            l.line(args(json!({"torrents": [keys.clone(), row]}))).0.map(|s| serde_json::from_str::<Value>(&s).unwrap())
        };
        let first = line(&mut l, json!([64_149, 999, 59, 0.123_44, 1])).unwrap();
        assert_eq!(first["torrents"][0], json!([64_100, 999, 59, 0.1234, 1]));
        let r = line(&mut l, json!([1_234_567, 1_000, 3_599, 0.5, 1])).unwrap();
        assert_eq!(r["torrents"][0], json!([1_230_000, 1_000, 3_540, 0.5, 1]));
        let r = line(&mut l, json!([1_235_000, 0, 200_000, 1.0, 1])).unwrap();
        assert_eq!(r["torrents"][0], json!([1_240_000, 0, 198_000, 1.0, 1]));
        let r = line(&mut l, json!([1, 1, -1, 0.5, 1])).unwrap();
        assert_eq!(r["torrents"][0], json!([1, 1, -1, 0.5, 1]), "small rates, unknown ETA untouched");
        // Moving within what is shown: nothing to say.
        assert_eq!(line(&mut l, json!([1, 1, -1, 0.500_01, 1])), None);
    }

    #[test]
    fn a_row_sent_again_unchanged_is_left_out_until_its_figures_moved() {
        let mut l = Lines::default();
        let full = |rate: u64| args(json!({"torrents": [["id", "rateDownload"], [1, rate]]}));
        assert!(l.line(full(0)).0.is_some());
        assert_eq!(l.line(full(0)).0, None, "the same row again");
        l.line(args(json!({"bitswarm-moving": [["id", "rateDownload"], [1, 100]]})));
        // The client now shows 100: the row of 0 is news again.
        assert_eq!(l.line(full(0)).0.unwrap(), r#"{"torrents":[[1,0]]}"#);
    }

    #[test]
    fn a_moving_torrent_never_sent_is_asked_for_in_full() {
        let mut l = Lines::default();
        l.line(args(json!({"torrents": [["id"], [1]]})));
        let (line, unknown) = l.line(args(json!({"bitswarm-moving": [["id", "rateUpload"], [1, 5], [4, 6]]})));
        assert_eq!(line.unwrap(), r#"{"moving":[[1,1,5]],"movingKeys":["id","rateUpload"]}"#);
        assert_eq!(unknown, vec![4]);
    }

    #[test]
    fn gzipped_lines_decode_one_by_one_and_cost_little_once_alike() {
        use std::io::Read;
        let mut e = Encoding::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
        let lines: Vec<String> = (0..20)
            .map(|i| format!("{{\"moving\":[[10001,3,0.{:04},7,64{:03}00]]}}\n", 1000 + i * 26, i % 7))
            .collect();
        let mut wire = Vec::new();
        let mut sizes = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let bytes = e.encode(line.clone());
            sizes.push(bytes.len());
            wire.extend_from_slice(&bytes);
            // What came so far decodes to every line so far (a decoder reading a stream that has
            // not ended yet: it stops at the bytes' end with what it has).
            let mut d = flate2::read::GzDecoder::new(&wire[..]);
            let mut out = Vec::new();
            let _ = d.read_to_end(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), lines[..=i].concat());
        }
        assert!(sizes[10..].iter().all(|n| *n < lines[10].len()), "{sizes:?}");
    }

    #[test]
    fn gzip_is_used_when_accepted() {
        assert!(accepts_gzip(Some(b"gzip, deflate, br, zstd")));
        assert!(accepts_gzip(Some(b"br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(Some(b"*")));
        assert!(!accepts_gzip(Some(b"gzip;q=0")));
        assert!(!accepts_gzip(Some(b"deflate")));
        assert!(!accepts_gzip(Some(b"\xff")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn malformed_arguments_make_no_line_and_no_panic() {
        let mut l = Lines::default();
        l.line(args(json!({})));
        for v in [
            json!({"torrents": "x"}),
            json!({"torrents": [1, 2]}),
            json!({"torrents": [["name"], ["a"]]}),
            json!({"bitswarm-moving": [["id"], ["x"], [-1], [1.5]]}),
            json!({"removed": ["a", -1, 1e30]}),
        ] {
            assert_eq!(l.line(args(v.clone())).0, None, "{v}");
        }
    }
}
