"""A TLS-terminating proxy in front of a plain HTTP server, as HTTPS trackers are usually run
(OpenSSL, through Python's ssl module). It closes connections without TLS's close_notify, as many
servers do.
Usage: tls_proxy.py CERT KEY HOST:PORT. Listens on 127.0.0.1 (an ephemeral port), prints
"port N", then for each connection prints "handshake failed: WHY" or forwards its bytes to
HOST:PORT and back; serves until killed."""
import socket, ssl, sys, threading

cert, key, target = sys.argv[1:4]
host, port = target.rsplit(":", 1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print("port %d" % ls.getsockname()[1], flush=True)

def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def serve(raw):
    raw.settimeout(30)
    try:
        c = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed: %s" % e, flush=True)
        raw.close()
        return
    u = socket.create_connection((host, int(port)), timeout=30)
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
    pump(c, u)

while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
