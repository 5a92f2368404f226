"""A Helm chart repository for the tests: serves a directory over HTTPS on 127.0.0.1 with
basic auth, as `helm repo index` leaves it. `/endless/index.yaml` never ends (for the size
cap). Prints the port on its first line."""
import base64
import hashlib
import http.server
import os
import ssl
import sys

root, cert, key, user, password, log = sys.argv[1:7]


def record(path, status):
    with open(log, "a") as f:
        f.write(f"{status} {path}\n")
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=root, **kw)

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.end_headers()
            return
        if self.path.startswith("/endless/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/yaml")
            self.end_headers()
            try:
                self.wfile.write(b"apiVersion: v1\nentries:\n")
                line = b"# " + b"x" * 1022 + b"\n"
                while True:
                    self.wfile.write(line * 64)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                return
        # index.yaml with an ETag (its content's hash), answering 304 to If-None-Match.
        if self.path.endswith("/index.yaml") or self.path == "/index.yaml":
            try:
                with open(os.path.join(root, "index.yaml"), "rb") as f:
                    body = f.read()
            except FileNotFoundError:
                self.send_response(404)
                self.end_headers()
                return
            tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == tag:
                record(self.path, 304)
                self.send_response(304)
                self.send_header("ETag", tag)
                self.end_headers()
                return
            record(self.path, 200)
            self.send_response(200)
            self.send_header("ETag", tag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
