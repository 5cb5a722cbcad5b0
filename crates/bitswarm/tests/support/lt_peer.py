"""A libtorrent peer for the interop tests (run with /usr/bin/python3).

  lt_peer.py seed TORRENT DIR             seeds DIR; prints "port N" once listening and "seeding" once
                                          its data checked; runs until killed
  lt_peer.py leech TORRENT DIR [PEER]...  downloads into DIR, dialing each PEER (host:port); prints
                                          "port N", then "done" and exits 0 once it seeds; exits 1
                                          after 120 s. TORRENT may be a magnet link: the info
                                          dictionary then comes from the peers (BEP 9)
An optional --enc=POLICY after DIR sets Message Stream Encryption: "default" (libtorrent's own:
outgoing connections try MSE first, then plaintext; both accepted), "forced" (MSE with RC4 only,
both ways) or "disabled" (plaintext only, both ways).
uTP is off on both sides of a test (libtorrent's uTP crawls on loopback).
LT_PEER_HOST sets the address it listens on and dials from (default 127.0.0.1), so that it can
look like another host on 127/8.
"""
import sys, time
import libtorrent as lt

mode, torrent, folder = sys.argv[1], sys.argv[2], sys.argv[3]
enc = "default"
peers = []
for a in sys.argv[4:]:
    if a.startswith("--enc="):
        enc = a[len("--enc="):]
    else:
        peers.append(a)
settings = {
    "listen_interfaces": __import__("os").environ.get("LT_PEER_HOST", "127.0.0.1") + ":0", "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
    "enable_natpmp": False, "allow_multiple_connections_per_ip": True, "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "alert_mask": lt.alert_category.status | lt.alert_category.error | lt.alert_category.storage,
}
if "LT_PEER_HOST" in __import__("os").environ:
    settings["outgoing_interfaces"] = __import__("os").environ["LT_PEER_HOST"]
if enc == "forced":
    settings.update({"out_enc_policy": int(lt.enc_policy.forced), "in_enc_policy": int(lt.enc_policy.forced),
                     "allowed_enc_level": int(lt.enc_level.rc4)})
elif enc == "disabled":
    settings.update({"out_enc_policy": int(lt.enc_policy.disabled), "in_enc_policy": int(lt.enc_policy.disabled)})
elif enc != "default":
    sys.exit("unknown --enc=%s" % enc)
ses = lt.session(settings)
print("port %d" % ses.listen_port(), flush=True)
if torrent.startswith("magnet:"):
    atp = lt.parse_magnet_uri(torrent)
    atp.save_path = folder
    h = ses.add_torrent(atp)
else:
    h = ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": folder})
deadline = time.time() + float(__import__("os").environ.get("LT_PEER_TIMEOUT", "120"))
announced = False
while time.time() < deadline:
    s = h.status()
    if s.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
        time.sleep(0.05)
        continue
    if not announced:
        announced = True
        for p in peers:
            host, port = p.rsplit(":", 1)
            h.connect_peer((host, int(port)))
    if s.is_seeding:
        if mode == "leech":
            # Seeding means every piece passed its hash check; the disk threads may still be
            # writing. The flush is a fence behind those writes: "done" means the files are whole.
            h.flush_cache()
            while time.time() < deadline:
                ses.wait_for_alert(100)
                if any(isinstance(a, lt.cache_flushed_alert) for a in ses.pop_alerts()):
                    print("done", flush=True)
                    sys.exit(0)
            break
        print("seeding", flush=True)
        while True:
            time.sleep(3600)
    ses.wait_for_alert(20)
    ses.pop_alerts()
print("timed out: state %s, progress %.3f, peers %d" % (h.status().state, h.status().progress, h.status().num_peers), flush=True)
sys.exit(1)
