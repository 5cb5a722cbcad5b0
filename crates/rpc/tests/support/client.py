"""Drives a Transmission RPC server with the transmission-rpc client from PyPI, the way
Sonarr-like scripts do, and prints one JSON object with what it saw for the Rust test to check.

Usage: client.py PORT TORRENT_FILE [USER PASSWORD]

Every property of every Torrent, Session and SessionStats object is read, so a field that is
missing or of a type the client cannot convert shows up in "errors".
"""

import json
import pathlib
import sys
import warnings

import transmission_rpc
from transmission_rpc.session import Session, SessionStats
from transmission_rpc.torrent import Torrent


def read_all(obj, cls, label, errors):
    """Reads every property of obj, recording the ones that raise."""
    values = {}
    for name in sorted(dir(cls)):
        if name.startswith("_") or not isinstance(getattr(cls, name), property):
            continue
        try:
            values[name] = getattr(obj, name)
        except Exception as e:  # noqa: BLE001 - any failure is what we report
            errors.append(f"{label}.{name}: {type(e).__name__}: {e}")
    return values


def main():
    # read_all reads the deprecated aliases too; their warnings are noise here.
    warnings.simplefilter("ignore", DeprecationWarning)
    port = int(sys.argv[1])
    torrent_file = pathlib.Path(sys.argv[2])
    auth = {}
    if len(sys.argv) > 4:
        auth = {"username": sys.argv[3], "password": sys.argv[4]}
    client = transmission_rpc.Client(host="127.0.0.1", port=port, timeout=20, **auth)
    errors = []
    first = client.get_session()
    out = {"server_version": first.version, "rpc_version": first.rpc_version,
           "semver": first.rpc_version_semver, "fields_requested": len(client.torrent_get_arguments)}

    torrents = client.get_torrents()
    out["torrents"] = []
    out["torrent_properties_read"] = 0
    for t in torrents:
        out["torrent_properties_read"] = len(read_all(t, Torrent, f"torrent {t.id}", errors))
        files = t.get_files()
        out["torrents"].append({
            "id": t.id,
            "name": t.name,
            "hash": t.hash_string,
            "status": str(t.status),
            "progress": t.progress,
            "ratio": t.ratio,
            "eta": None if t.eta is None else t.eta.total_seconds(),
            "labels": t.labels,
            "files": [[f.name, f.size, f.completed, f.selected, int(f.priority)] for f in files],
            "peers": len(t.peers),
            "trackers": [tr.announce for tr in t.trackers],
            "tracker_hosts": [ts.host for ts in t.tracker_stats],
            "tracker_list": t.tracker_list,
            "priority": int(t.bandwidth_priority),
            "mime": t.primary_mime_type,
            "available": t.available,
        })

    session = client.get_session()
    read_all(session, Session, "session", errors)
    out["session"] = {"download_dir": session.download_dir, "version": session.version,
                      "rpc_version": session.rpc_version, "peer_port": session.peer_port}

    stats = client.session_stats()
    read_all(stats, SessionStats, "stats", errors)
    out["stats"] = {"torrents": stats.torrent_count, "active": stats.active_torrent_count,
                    "uploaded": stats.current_stats.uploaded_bytes,
                    "sessions": stats.cumulative_stats.session_count}

    added = client.add_torrent(torrent_file, paused=True, labels=["tv-sonarr"])
    out["added"] = {"id": added.id, "name": added.name, "hash": added.hash_string}
    again = client.add_torrent(torrent_file.read_bytes())
    out["duplicate_id"] = again.id
    magnet = client.add_torrent("magnet:?xt=urn:btih:89abcdef0123456789abcdef0123456789abcdef&dn=m2")
    out["magnet"] = {"id": magnet.id, "name": magnet.name}

    client.start_torrent(added.id)
    client.start_torrent([added.hash_string], bypass_queue=True)
    client.stop_torrent([added.id])
    client.change_torrent(added.hash_string, seed_ratio_limit=1.5, seed_ratio_mode=1)
    changed = client.get_torrent(added.id)
    out["changed"] = {"seed_ratio_limit": changed.seed_ratio_limit, "mode": changed.seed_ratio_mode}
    recent = client.get_recently_active_torrents()
    out["recent"] = {"active": sorted(t.id for t in recent[0]), "removed": recent[1]}
    out["free_space"] = client.free_space("/tmp")
    out["blocklist"] = client.blocklist_update()
    client.queue_top([magnet.hash_string])
    client.remove_torrent(magnet.hash_string, delete_data=False)
    client.remove_torrent([added.id], delete_data=True)
    out["left"] = sorted(t.id for t in client.get_torrents(arguments=["id", "name"]))
    try:
        client.port_test()
        out["port_test"] = "answered"
    except transmission_rpc.TransmissionError as e:
        out["port_test"] = str(e)

    out["errors"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    main()
