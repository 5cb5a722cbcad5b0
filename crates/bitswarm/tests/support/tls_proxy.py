"""A TLS-terminating proxy in front of a plain HTTP server, as HTTPS trackers are usually run
(OpenSSL, through Python's ssl module). It closes connections without TLS's close_notify, as many
servers do.
Usage: tls_proxy.py CERT KEY HOST:PORT. Listens on 127.0.0.1 (an ephemeral port), prints
"port N", then for each connection prints "handshake failed: WHY", or reads one request (up to
the end of its headers), passes it to HOST:PORT and the whole reply back; serves until killed."""
import socket, ssl, sys, threading

cert, key, target = sys.argv[1:4]
host, port = target.rsplit(":", 1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print("port %d" % ls.getsockname()[1], flush=True)

def serve(raw):
    raw.settimeout(30)
    try:
        c = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed: %s" % e, flush=True)
        raw.close()
        return
    try:
        request = b""
        while b"\r\n\r\n" not in request:
            d = c.recv(65536)
            if not d:
                return
            request += d
        with socket.create_connection((host, int(port)), timeout=30) as u:
            u.sendall(request)
            while True:
                d = u.recv(65536)
                if not d:
                    break
                c.sendall(d)
    except OSError as e:
        print("proxy error: %s" % e, flush=True)
    finally:
        # No close_notify: shut the TCP connection under TLS.
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.close()

while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
