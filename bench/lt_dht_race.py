"""libtorrent on a loopback DHT, for bench/dht-race.py (run with /usr/bin/python3).

  lt_dht_race.py nodes ROUTER HOST...      one DHT node (a session with no torrent) on each HOST,
                                           bootstrapping from ROUTER; prints "ready" once all
                                           have bootstrapped, then runs until killed
  lt_dht_race.py leech MAGNET DIR HOST ROUTER
                                           downloads the magnet link through the DHT alone,
                                           announcing at bootstrap and every 3 s until a peer;
                                           prints "peer ADDR" at its first peer connection and
                                           "done" once every piece passed its check and the
                                           files are flushed; exits 1 after 120 s

Each session listens on HOST (127.X.Y.1, a /24 of its own) and bootstraps from ROUTER only; LSD,
UPnP, NAT-PMP and uTP are off.
"""
import os, sys, time
t0 = time.time()
import libtorrent as lt


def session(host, router):
    return lt.session({
        "listen_interfaces": host + ":0",
        "outgoing_interfaces": host,
        "enable_dht": True,
        "dht_bootstrap_nodes": router,
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False, "enable_ip_notifier": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage
        | lt.alert_category.dht | lt.alert_category.connect
        | (lt.alert_category.dht_log if os.environ.get("LT_DEBUG") else 0),
    })


mode = sys.argv[1]
if mode == "nodes":
    router, hosts = sys.argv[2], sys.argv[3:]
    sessions = [session(h, router) for h in hosts]
    # libtorrent bans an address that sends more than 50 packets in 10 s for 5 minutes, and
    # sends 8,000 bytes of DHT a second at most; the idle measure's 1,000 announces all go to
    # these few nodes (on the real DHT they spread over thousands), so both are raised, as the
    # shared loopback recipe does.
    for s in sessions:
        s.apply_settings({"dht_block_ratelimit": 100000, "dht_upload_rate_limit": 10000000})
    waiting = set(range(len(sessions)))
    while waiting:
        for i in list(waiting):
            for a in sessions[i].pop_alerts():
                if isinstance(a, lt.dht_bootstrap_alert):
                    waiting.discard(i)
        time.sleep(0.05)
    print("ready", flush=True)
    while True:
        for s in sessions:
            s.pop_alerts()
        time.sleep(1)

magnet, folder, host, router = sys.argv[2:6]
ses = session(host, router)
atp = lt.parse_magnet_uri(magnet)
atp.save_path = folder
atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
h = ses.add_torrent(atp)
deadline = time.time() + 120
said_peer = False
bootstrapped = False
forced = 0.0
while time.time() < deadline:
    ses.wait_for_alert(50)
    for a in ses.pop_alerts():
        if os.environ.get("LT_DEBUG"):
            print("%.3f %s: %s" % (time.time() - t0, a.what(), a.message()), flush=True)
        if isinstance(a, lt.dht_bootstrap_alert):
            bootstrapped = True
        if a.what() == "peer_connected" and not said_peer:
            said_peer = True
            print("peer %s" % (a.message(),), flush=True)
        elif isinstance(a, lt.cache_flushed_alert):
            print("done", flush=True)
            sys.exit(0)
    # Left alone, a torrent added while the node bootstraps was not looked up for minutes in 2
    # of 3 tries here (its next DHT announce comes with the session's 15-minute timer): as the
    # DHT tests' lt_dht.py does, announce at once when the node has bootstrapped and every 3 s
    # until a peer is connected. This makes libtorrent the stricter anchor.
    if bootstrapped and not said_peer and time.time() - forced > 3:
        forced = time.time()
        h.force_dht_announce()
    s = h.status()
    if s.has_metadata and s.is_seeding:
        h.flush_cache()
print("timed out", flush=True)
sys.exit(1)
