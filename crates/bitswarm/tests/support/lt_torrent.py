"""libtorrent helpers for the interop tests. Run with /usr/bin/python3 (Debian's python3-libtorrent).

  lt_torrent.py hash FILE.torrent            prints the v1 info-hash libtorrent computes
  lt_torrent.py create PATH OUT [v1|hybrid]  makes a torrent with libtorrent's creator, prints its v1 info-hash
  lt_torrent.py check FILE.torrent DIR       checks DIR's data against the torrent; prints "pieces H of N"
"""
import sys, time
import libtorrent as lt

def v1(ti):
    return str(ti.info_hashes().v1)

cmd = sys.argv[1]
if cmd == "hash":
    print(v1(lt.torrent_info(sys.argv[2])))
elif cmd == "create":
    path, out = sys.argv[2], sys.argv[3]
    flags = lt.create_torrent.v1_only if (len(sys.argv) > 4 and sys.argv[4] == "v1") else 0
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, 0, flags=flags)
    ct.add_tracker("http://127.0.0.1:1/announce")
    import os
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(path)))
    data = lt.bencode(ct.generate())
    open(out, "wb").write(data)
    print(v1(lt.torrent_info(out)))
elif cmd == "check":
    ti = lt.torrent_info(sys.argv[2])
    ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                      "enable_upnp": False, "enable_natpmp": False,
                      "alert_mask": lt.alert_category.status | lt.alert_category.error})
    h = ses.add_torrent({"ti": ti, "save_path": sys.argv[3]})
    deadline = time.time() + 60
    checked = False
    while not checked and time.time() < deadline:
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
    if not checked:
        sys.exit("libtorrent did not finish checking within 60 s")
    s = h.status()
    print("hash", v1(ti))
    print("pieces %d of %d" % (s.num_pieces, ti.num_pieces()))
else:
    sys.exit("unknown command " + cmd)
