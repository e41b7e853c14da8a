#!/usr/bin/env python3
"""A real subscriber process for the screenshot script: answers POST /event.

usage: subscriber.py PORT [STATUS] [DELAY_SECONDS]
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
DELAY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(DELAY)
        # A failing service says why, as a half-written one does: the inspector shows it.
        body = b""
        if STATUS >= 400:
            body = (
                b'{"error": "KeyError: \'customer\'", "at": "handlers/orders.py:42",'
                b' "trace": ["handle_event", "create_order", "lookup_customer"]}'
            )
        self.send_response(STATUS)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
