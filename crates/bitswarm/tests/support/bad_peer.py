"""A peer that misbehaves, for the tests: it claims the first PIECES pieces, in a bitfield of
PIECES bits rounded up to whole bytes (so PIECES must be the torrent's piece count, or fewer in
the same last byte: 127 of 128), and
- by default lies, answering each request with random bytes (the ban test);
- with --stall-after N FILE PIECE_LENGTH answers the first N requests with the true bytes of
  FILE (a single-file torrent's data), then keeps the connection open and answers nothing more
  (the slow-tail test).
- with --choked keeps every peer choked and answers nothing (a peer that only listens).
Usage: bad_peer.py HOST PIECES [--choked] [--stall-after N FILE PIECE_LENGTH]. Prints "port N" once
listening, and "handshake from ID" (the first 8 bytes of each dialer's peer id, its client
prefix); serves until killed. It never dials anyone."""
import os, socket, struct, sys, threading

args = [a for a in sys.argv[1:] if a != "--choked"]
choked = len(args) < len(sys.argv) - 1
host, pieces = args[0], int(args[1])
stall_after = None
if len(args) > 2 and args[2] == "--stall-after":
    stall_after, data_file, piece_length = int(args[3]), args[4], int(args[5])
ls = socket.socket()
ls.bind((host, 0))
ls.listen(16)
print("port %d" % ls.getsockname()[1], flush=True)

def recv_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b

def serve(c):
    try:
        hs = recv_exact(c, 68)
        print("handshake from %s" % hs[48:56].decode("latin-1"), flush=True)
        c.sendall(b"\x13BitTorrent protocol" + b"\0" * 8 + hs[28:48] + b"-XX0000-liarliarliar")
        bf = bytearray((pieces + 7) // 8)
        for i in range(pieces):
            bf[i // 8] |= 0x80 >> (i % 8)
        c.sendall(struct.pack(">IB", len(bf) + 1, 5) + bytes(bf) + (b"" if choked else struct.pack(">IB", 1, 1)))
        answered = 0
        f = open(data_file, "rb") if stall_after is not None else None
        while True:
            (n,) = struct.unpack(">I", recv_exact(c, 4))
            if n == 0:
                continue
            body = recv_exact(c, n)
            if body[0] == 6 and not choked:
                index, begin, length = struct.unpack(">III", body[1:13])
                if f is None:
                    block = os.urandom(length)
                elif answered < stall_after:
                    f.seek(index * piece_length + begin)
                    block = f.read(length)
                else:
                    continue  # stalled: the request stays unanswered
                answered += 1
                c.sendall(struct.pack(">IBII", 9 + length, 7, index, begin) + block)
    except (EOFError, OSError):
        pass
    finally:
        c.close()

while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
