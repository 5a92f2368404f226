"""A Helm chart repository for the tests: serves a directory over HTTPS on 127.0.0.1 with
basic auth, as `helm repo index` leaves it. `/endless/index.yaml` never ends (for the size
cap). Prints the port on its first line."""
import base64
import http.server
import os
import ssl
import sys

root, cert, key, user, password = sys.argv[1:6]
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
        super().do_GET()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
