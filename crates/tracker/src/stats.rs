//! Counters, the stats page (HTML and JSON) and the Prometheus text exposition (hand-written:
//! a handful of counters does not need a metrics framework).

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::backend::Snapshot;
use crate::store::{SwarmInfo, Totals};

/// The protocol a request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http = 0,
    Udp = 1,
}

const PROTOS: [(Proto, &str); 2] = [(Proto::Http, "http"), (Proto::Udp, "udp")];

/// Counters of one protocol, on a cache line of their own so the protocols do not share one.
#[derive(Default)]
#[repr(align(128))]
pub struct ProtoCounters {
    pub announces: AtomicU64,
    pub scrapes: AtomicU64,
    pub connects: AtomicU64,
    /// Requests answered with an error (bad query, bad packet, refused full scrape).
    pub errors: AtomicU64,
    /// UDP packets dropped for an invalid or expired connection id.
    pub bad_connection_ids: AtomicU64,
    /// New peers not stored because a cap was reached.
    pub peers_refused: AtomicU64,
}

/// Request counters striped by thread: each thread adds to a stripe of its own (picked once,
/// round-robin), so worker threads on many cores do not pass one cache line back and forth on
/// every request; readers add the stripes up.
pub struct Metrics {
    stripes: Box<[[ProtoCounters; 2]]>,
    pub peers_expired: AtomicU64,
    pub swarms_expired: AtomicU64,
}

/// Stripes of request counters (threads beyond this many share them).
const STRIPES: usize = 16;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            stripes: (0..STRIPES).map(|_| Default::default()).collect(),
            peers_expired: AtomicU64::new(0),
            swarms_expired: AtomicU64::new(0),
        }
    }
}

/// This thread's stripe.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        s.get()
    })
}

impl Metrics {
    /// The calling thread's counters of protocol `p`, to add to with [`Metrics::inc`].
    pub fn of(&self, p: Proto) -> &ProtoCounters {
        &self.stripes[stripe()][p as usize]
    }
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// One counter of protocol `p`, summed over every thread.
    pub fn total(&self, p: Proto, counter: impl Fn(&ProtoCounters) -> &AtomicU64) -> u64 {
        self.stripes.iter().map(|s| get(counter(&s[p as usize]))).sum()
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The `/metrics` body.
pub fn prometheus(totals: &Totals, uptime: std::time::Duration, m: &Metrics) -> String {
    let t = totals;
    let mut s = String::with_capacity(2048);
    // A series per protocol the counter can move for (connection ids are UDP's alone).
    let mut family = |name: &str, help: &str, protos: &[(Proto, &str)], f: &dyn Fn(&ProtoCounters) -> &AtomicU64| {
        let _ = writeln!(s, "# HELP bitswarm_tracker_{name} {help}\n# TYPE bitswarm_tracker_{name} counter");
        for &(p, label) in protos {
            let _ = writeln!(s, "bitswarm_tracker_{name}{{protocol=\"{label}\"}} {}", m.total(p, f));
        }
    };
    let udp = &[(Proto::Udp, "udp")];
    family("announces_total", "Announces answered.", &PROTOS, &|c| &c.announces);
    family("scrapes_total", "Scrapes answered.", &PROTOS, &|c| &c.scrapes);
    family("connects_total", "UDP connect requests answered.", udp, &|c| &c.connects);
    family("errors_total", "Requests refused as malformed or not allowed.", &PROTOS, &|c| &c.errors);
    family("bad_connection_ids_total", "UDP requests dropped for a bad connection id.", udp, &|c| {
        &c.bad_connection_ids
    });
    family("peers_refused_total", "New peers not stored because a cap was reached.", &PROTOS, &|c| &c.peers_refused);
    let mut gauge = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            s,
            "# HELP bitswarm_tracker_{name} {help}\n# TYPE bitswarm_tracker_{name} {kind}\nbitswarm_tracker_{name} {v}"
        );
    };
    gauge("peers_expired_total", "counter", "Peers dropped by the cleaner.", get(&m.peers_expired));
    gauge("swarms_expired_total", "counter", "Empty swarms dropped by the cleaner.", get(&m.swarms_expired));
    gauge("swarms", "gauge", "Swarms tracked.", t.swarms);
    gauge("seeders", "gauge", "Seeders tracked.", t.seeders);
    gauge("leechers", "gauge", "Leechers tracked.", t.leechers);
    gauge("peers", "gauge", "Peers tracked.", t.peers);
    gauge("downloaded", "gauge", "Completed downloads seen in the swarms tracked.", t.downloaded);
    gauge("uptime_seconds", "gauge", "Seconds since the tracker started.", uptime.as_secs());
    s
}

#[derive(serde::Serialize)]
struct StatsJson<'a> {
    uptime_secs: u64,
    totals: Totals,
    requests: Requests,
    swarms_listed: usize,
    swarms: &'a [SwarmInfo],
}

#[derive(serde::Serialize)]
struct Requests {
    http_announces: u64,
    http_scrapes: u64,
    http_errors: u64,
    udp_connects: u64,
    udp_announces: u64,
    udp_scrapes: u64,
    udp_errors: u64,
}

fn requests(m: &Metrics) -> Requests {
    let (h, u) = (Proto::Http, Proto::Udp);
    Requests {
        http_announces: m.total(h, |c| &c.announces),
        http_scrapes: m.total(h, |c| &c.scrapes),
        http_errors: m.total(h, |c| &c.errors),
        udp_connects: m.total(u, |c| &c.connects),
        udp_announces: m.total(u, |c| &c.announces),
        udp_scrapes: m.total(u, |c| &c.scrapes),
        udp_errors: m.total(u, |c| &c.errors),
    }
}

/// The `/stats` body.
pub fn json(snap: &Snapshot, uptime: std::time::Duration, m: &Metrics) -> String {
    let swarms = &snap.swarms;
    let j = StatsJson {
        uptime_secs: uptime.as_secs(),
        totals: snap.totals,
        requests: requests(m),
        swarms_listed: swarms.len(),
        swarms,
    };
    serde_json::to_string_pretty(&j).unwrap_or_else(|_| "{}".into())
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// The `/` page.
pub fn html(snap: &Snapshot, uptime: std::time::Duration, m: &Metrics) -> String {
    let t = snap.totals;
    let swarms = &snap.swarms;
    let r = requests(m);
    let mut s = String::with_capacity(1024 + swarms.len() * 160);
    s.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>bitswarm tracker</title>\n<style>\
         body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}\
         td:first-child,th:first-child{text-align:left;font-family:monospace}</style></head><body>\n\
         <h1>bitswarm tracker</h1>\n",
    );
    let _ = writeln!(
        s,
        "<p>Up {}. {} swarms, {} peers ({} seeders, {} leechers), {} completed downloads.</p>",
        duration(uptime.as_secs()),
        t.swarms,
        t.peers,
        t.seeders,
        t.leechers,
        t.downloaded
    );
    let _ = writeln!(
        s,
        "<p>Requests: HTTP {} announces, {} scrapes, {} errors; UDP {} connects, {} announces, {} scrapes, {} errors. \
         <a href=\"/stats\">JSON</a> · <a href=\"/metrics\">metrics</a></p>",
        r.http_announces, r.http_scrapes, r.http_errors, r.udp_connects, r.udp_announces, r.udp_scrapes, r.udp_errors
    );
    if (swarms.len() as u64) < t.swarms {
        let _ = writeln!(s, "<p>The {} busiest swarms:</p>", swarms.len());
    }
    s.push_str(
        "<table>\n<tr><th>info-hash</th><th>seeders</th><th>leechers</th><th>completed</th><th>last activity</th></tr>\n",
    );
    for w in swarms {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ago</td></tr>",
            w.info_hash,
            w.counts.seeders,
            w.counts.leechers,
            w.counts.downloaded,
            duration(u64::from(w.idle_secs))
        );
    }
    let _ = writeln!(
        s,
        "<tr><th>total</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>\n</table>\n</body></html>",
        t.seeders, t.leechers, t.downloaded
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let m = Metrics::default();
        std::thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        Metrics::inc(&m.of(Proto::Udp).announces);
                    }
                    Metrics::inc(&m.of(Proto::Http).errors);
                });
            }
        });
        assert_eq!(m.total(Proto::Udp, |c| &c.announces), 20_000);
        assert_eq!(m.total(Proto::Http, |c| &c.errors), 20);
        assert_eq!(m.total(Proto::Http, |c| &c.announces), 0);
        let used = m.stripes.iter().filter(|s| get(&s[Proto::Udp as usize].announces) > 0).count();
        assert!(used > 1, "threads count on stripes of their own");
        assert!(requests(&m).udp_announces == 20_000 && prometheus_counts_ok(&m));
    }

    fn prometheus_counts_ok(m: &Metrics) -> bool {
        prometheus(&Totals::default(), std::time::Duration::ZERO, m)
            .contains("bitswarm_tracker_announces_total{protocol=\"udp\"} 20000")
    }
}
