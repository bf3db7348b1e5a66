"""A local Alertmanager webhook receiver for labs and tests: each notification POSTed to it is
appended, as one JSON line, to a file.

    mailarchive-alert-sink.py 127.0.0.1:9095 /var/log/mailarchive-alerts/alerts.jsonl
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_BODY = 1 << 20


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.send_error(413, "expected a JSON body of at most 1 MiB")
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "expected a JSON body")
            return
        with open(self.server.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(notification, sort_keys=True) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("alert-sink: %s\n" % (fmt % args))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    server = HTTPServer((host, int(port)), Sink)
    server.path = sys.argv[2]
    server.serve_forever()


if __name__ == "__main__":
    main()
