#!/usr/bin/python3
"""The isolation test's Python app: a standard-library HTTP server on the
listening socket systemd passes (fd 3), made the way such servers usually
are (socketserver makes a socket of its own first, then adopts fd 3), ready
over $NOTIFY_SOCKET. GET answers what the app could do, as JSON."""

import hashlib
import http.server
import json
import os
import socket


def notify(state):
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return "no NOTIFY_SOCKET"
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError as e:
        return str(e)
    return ""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("/proc/self/exe", "rb") as f:
            exe = hashlib.sha256(f.read()).hexdigest()
        body = json.dumps({"pid": os.getpid(), "family": FAMILY, "notify_error": NOTIFY_ERROR,
                           "exe_sha256": exe}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


listener = socket.socket(fileno=3)
FAMILY = listener.family.name
server = http.server.HTTPServer(listener.getsockname()[:2], Handler, bind_and_activate=False)
server.socket.close()
server.socket = listener
NOTIFY_ERROR = notify("READY=1")
print("lodis-isolation-pyapp: serving", flush=True)
server.serve_forever()
