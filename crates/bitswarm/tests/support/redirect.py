"""An HTTP server that answers every GET with a redirect, as a tracker that moved does.
Usage: redirect.py STATUS BASE. Listens on 127.0.0.1 (an ephemeral port) and prints "port N";
a GET of PATH gets STATUS with "Location: BASE + PATH" (an empty BASE redirects to itself).
Serves until killed."""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

status, base = int(sys.argv[1]), sys.argv[2]

class Redirect(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status)
        self.send_header("Location", base + self.path)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
print("port %d" % server.server_address[1], flush=True)
server.serve_forever()
