"""A libtorrent peer on the DHT alone, for the DHT interop tests (run with /usr/bin/python3).

  lt_dht.py seed TORRENT DIR HOST ROUTER    seeds DIR with no tracker; prints "port N" once
                                            listening (TCP and the DHT's UDP) and "seeding" once its
                                            data checked; runs until killed
  lt_dht.py leech MAGNET DIR HOST ROUTER    downloads by magnet link (info-hash only), its peers
                                            from the DHT alone; prints "port N", then "done" and
                                            exits 0 once the files are whole; exits 1 after
                                            LT_DHT_TIMEOUT seconds (default 120)

HOST is the loopback address it listens on and dials from (127.0.X.1: a /24 of its own, so the
DHT's one-node-per-address rules see another host). ROUTER (HOST:PORT) is the only node it
bootstraps from: set when the session is made, so libtorrent never tries its public default.
LSD, UPnP, NAT-PMP and uTP are off; every address it is given is on loopback.
"""
import os, sys, time
import libtorrent as lt

mode, torrent, folder, host, router = sys.argv[1:6]
settings = {
    "listen_interfaces": host + ":0",
    "outgoing_interfaces": host,
    "enable_dht": True,
    "dht_bootstrap_nodes": router,
    "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False, "enable_ip_notifier": False,
    "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage
    | lt.alert_category.dht,
}
ses = lt.session(settings)
print("port %d" % ses.listen_port(), flush=True)
if mode == "leech":
    atp = lt.parse_magnet_uri(torrent)
else:
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
atp.save_path = folder
atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
h = ses.add_torrent(atp)
deadline = time.time() + float(os.environ.get("LT_DHT_TIMEOUT", "120"))
bootstrapped = False
forced = 0.0
said_seeding = False
while time.time() < deadline:
    ses.wait_for_alert(100)
    for a in ses.pop_alerts():
        if isinstance(a, lt.dht_bootstrap_alert):
            bootstrapped = True
        elif mode == "leech" and isinstance(a, lt.cache_flushed_alert):
            print("done", flush=True)
            sys.exit(0)
    s = h.status()
    # libtorrent announces every 15 minutes; in a test, every 3 s until there is something.
    if bootstrapped and time.time() - forced > 3:
        forced = time.time()
        h.force_dht_announce()
    if s.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
        continue
    if s.is_seeding:
        if mode == "leech":
            # Seeding means every piece passed its hash check; the flush is a fence behind the
            # disk writes, so "done" means the files are whole.
            h.flush_cache()
        elif not said_seeding:
            said_seeding = True
            print("seeding", flush=True)
            deadline = float("inf")
s = h.status()
print("timed out: state %s, progress %.3f, peers %d, dht nodes %d"
      % (s.state, s.progress, s.num_peers, ses.status().dht_nodes), flush=True)
sys.exit(1)
