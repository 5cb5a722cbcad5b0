"""A peer that lies, for the ban test: it claims every piece and answers each request with random
bytes. Usage: bad_peer.py HOST PIECES. Prints "port N" once listening; serves until killed."""
import os, socket, struct, sys, threading

host, pieces = sys.argv[1], int(sys.argv[2])
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
        c.sendall(b"\x13BitTorrent protocol" + b"\0" * 8 + hs[28:48] + b"-XX0000-liarliarliar")
        bf = bytearray((pieces + 7) // 8)
        for i in range(pieces):
            bf[i // 8] |= 0x80 >> (i % 8)
        c.sendall(struct.pack(">IB", len(bf) + 1, 5) + bytes(bf) + struct.pack(">IB", 1, 1))
        while True:
            (n,) = struct.unpack(">I", recv_exact(c, 4))
            if n == 0:
                continue
            body = recv_exact(c, n)
            if body[0] == 6:
                index, begin, length = struct.unpack(">III", body[1:13])
                c.sendall(struct.pack(">IBII", 9 + length, 7, index, begin) + os.urandom(length))
    except (EOFError, OSError):
        pass
    finally:
        c.close()

while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
