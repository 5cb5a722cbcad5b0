"""libtorrent's torrent creator, for the benchmark: lt_create.py PATH OUT PIECE_BYTES (v1 only, as the others)."""
import os, sys
import libtorrent as lt
path, out, piece = sys.argv[1], sys.argv[2], int(sys.argv[3])
fs = lt.file_storage()
lt.add_files(fs, path)
ct = lt.create_torrent(fs, piece, flags=lt.create_torrent.v1_only)
ct.add_tracker("http://127.0.0.1:1/announce")
lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(path)))
open(out, "wb").write(lt.bencode(ct.generate()))
