"""A libtorrent peer that finds its peers by Local Service Discovery alone (BEP 14), for
tests/lsd.rs (run with /usr/bin/python3, inside the test's network namespace).

  lt_lsd.py seed TORRENT DIR     seeds DIR; prints "port N" once listening and "seeding" once its
                                 data is checked; runs until killed
  lt_lsd.py leech WHAT DIR       downloads WHAT (a .torrent or a magnet link) into DIR; prints
                                 "port N", then "done" and exits 0 once the files are whole; exits
                                 1 after LT_LSD_TIMEOUT seconds (default 120)

It listens on 127.0.0.1 (a free port), or where LT_LSD_LISTEN says (such as "[fd00::2]:0": then
its LSD is IPv6's alone, libtorrent running LSD on the groups of its listening addresses' families);
no tracker is asked, DHT, UPnP, NAT-PMP and uTP are off: LSD is its only way to find a peer. It announces every LT_LSD_INTERVAL seconds (default 2; 300
is libtorrent's), so a test need not wait minutes for a peer that started after it. Prints
"peer ADDR" for each peer it dials (an IPv6 one in brackets).

It refuses to run (LSD multicasts) unless nothing can leave: only `lo` exists, or besides it only
the veth pair the test made (BITSWARM_LSD_VETH names its two ends), both ends in this namespace,
which is not the one the test started in (BITSWARM_LSD_OUTER_NETNS), as tests/lsd.rs checks too.
"""
import json, os, subprocess, sys, time
import libtorrent as lt


def contained():
    ifs = [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]]
    if ifs == ["lo"]:
        return True, ifs
    made = os.environ.get("BITSWARM_LSD_VETH", "").split()
    outer = os.environ.get("BITSWARM_LSD_OUTER_NETNS")
    if len(made) != 2 or not outer or outer == os.readlink("/proc/self/ns/net") or sorted(ifs) != sorted(["lo"] + made):
        return False, ifs
    links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, check=True).stdout)
    by_name = {l["ifname"]: l for l in links}
    if sorted(by_name) != sorted(ifs):
        return False, ifs
    for a, b in (made, made[::-1]):
        l = by_name[a]
        if l.get("linkinfo", {}).get("info_kind") != "veth" or l.get("link") != b or "link_netnsid" in l:
            return False, ifs
    return True, ifs


ok, ifs = contained()
if not ok:
    sys.exit("refusing to run: LSD multicasts, and this is not a network namespace of the test's with nothing "
             "but lo and the test's veth pair (%s)" % ifs)

mode, what, folder = sys.argv[1:4]
settings = {
    "listen_interfaces": os.environ.get("LT_LSD_LISTEN", "127.0.0.1:0"),
    "enable_dht": False, "enable_lsd": True,
    "local_service_announce_interval": int(os.environ.get("LT_LSD_INTERVAL", "2")),
    "enable_upnp": False, "enable_natpmp": False, "enable_ip_notifier": False,
    "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage
    | lt.alert_category.peer | lt.alert_category.connect,
}
ses = lt.session(settings)
print("port %d" % ses.listen_port(), flush=True)
if what.startswith("magnet:"):
    atp = lt.parse_magnet_uri(what)
else:
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(what)
atp.trackers = []
atp.save_path = folder
atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
h = ses.add_torrent(atp)
deadline = time.time() + float(os.environ.get("LT_LSD_TIMEOUT", "120"))
said_seeding = False
while time.time() < deadline:
    ses.wait_for_alert(100)
    for a in ses.pop_alerts():
        if isinstance(a, lt.peer_connect_alert):
            host = a.endpoint[0]
            print("peer %s:%d" % ("[%s]" % host if ":" in host else host, a.endpoint[1]), flush=True)
        elif mode == "leech" and isinstance(a, lt.cache_flushed_alert):
            print("done", flush=True)
            sys.exit(0)
    s = h.status()
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
print("timed out: state %s, progress %.3f, peers %d" % (s.state, s.progress, s.num_peers), flush=True)
sys.exit(1)
