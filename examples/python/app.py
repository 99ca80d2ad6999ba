#!/usr/bin/python3
"""A lodis app in Python 3, standard library only.

It honours the app contract: it serves HTTP on the listening socket systemd
passes as fd 3 (LISTEN_FDS=1), answers $LODIS_HEALTH_PATH (default
/__/health) with 200 and a small JSON report, and on SIGTERM stops accepting,
finishes the requests in flight and exits 0. It sends no sd_notify (run it
with READY=health) and never exits by itself when idle (IDLE_TIMEOUT= in
app.conf lets lodis stop it). See README.md beside it.
"""

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

VERSION = "1.0.0"
SD_LISTEN_FDS_START = 3
HEALTH_PATH = os.environ.get("LODIS_HEALTH_PATH") or "/__/health"
STARTED = time.time()


def fail(msg):
    print(f"app.py: {msg}", file=sys.stderr)
    sys.exit(1)


def passed_socket():
    """The listening socket systemd passed, checked as sd_listen_fds(3) does."""
    fds = os.environ.get("LISTEN_FDS")
    if fds is None:
        fail("not socket-activated: LISTEN_FDS is unset. Run me from lodis, or try "
             "systemd-socket-activate -l 127.0.0.1:8080 ./app.py")
    pid = os.environ.get("LISTEN_PID")
    if pid and pid != str(os.getpid()):
        fail(f"LISTEN_PID={pid} is not this process ({os.getpid()}): the sockets were passed to another")
    if not fds.isdigit() or int(fds) < 1:
        fail(f"bad LISTEN_FDS={fds!r}: want the number of passed sockets, at least 1")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for child processes
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as e:
        fail(f"fd {SD_LISTEN_FDS_START} is not a socket: {e.strerror}")
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        fail(f"fd {SD_LISTEN_FDS_START} is not a listening stream socket")
    return sock


def own_sha256():
    """The SHA-256 of this file: the release lodis runs."""
    with open(os.path.realpath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Handler(BaseHTTPRequestHandler):
    server_version = "lodis-python-example/" + VERSION
    timeout = 10  # seconds a client may take to send its request: bounds a drain

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == HEALTH_PATH:
            self.reply(200, "application/json", json.dumps({
                "status": "ok", "name": "python-example", "pid": os.getpid(), "version": VERSION,
                "sha256": SHA256, "port": os.environ.get("LODIS_PORT", ""),
                "uptime_seconds": round(time.time() - STARTED, 3),
                "started": datetime.fromtimestamp(STARTED, timezone.utc).isoformat(),
            }) + "\n")
        elif url.path == "/":
            self.reply(200, "text/plain; charset=utf-8",
                       f"hello from Python, pid {os.getpid()}, port {os.environ.get('LODIS_PORT', '?')}\n")
        elif url.path == "/slow":
            self.slow(parse_qs(url.query).get("seconds", ["1"])[0])
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found\n")

    def slow(self, arg):
        """A slow answer, to watch a drain: /slow?seconds=2 (at most 10).

        The header goes out at once, the body after the wait."""
        try:
            seconds = float(arg)
        except ValueError:
            return self.reply(400, "text/plain; charset=utf-8", f"bad seconds={arg!r}: want a number\n")
        seconds = max(0.0, min(seconds, 10.0))
        body = f"slept {seconds} s\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        time.sleep(seconds)
        self.wfile.write(body)

    def reply(self, code, ctype, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if not getattr(self, "path", "").startswith(HEALTH_PATH):  # health checks would drown the journal
            super().log_message(fmt, *args)


class ActivatedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on an already listening socket: no bind, no listen."""

    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True

    def __init__(self, sock):
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()  # the unbound socket the base class made
        self.socket = sock
        self.server_name, self.server_port = sock.getsockname()[:2]


def main():
    server = ActivatedServer(passed_socket())

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return: call it from another thread.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"app.py {VERSION}: serving {server.server_name}:{server.server_port}, health at {HEALTH_PATH}",
          file=sys.stderr, flush=True)
    server.serve_forever()
    # Drain: stop accepting (systemd keeps its own copy of the socket and queues
    # new connections for the next worker), let the requests in flight finish.
    server.server_close()
    print("app.py: drained", file=sys.stderr, flush=True)


SHA256 = own_sha256()

if __name__ == "__main__":
    main()
