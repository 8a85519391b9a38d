"""Print Alertmanager's webhook notifications, one line per alert: the receiver of `make demo-stack`.

Usage: python scripts/webhook_log.py [HOST:PORT]   (127.0.0.1:5001 by default, where alertmanager.yml sends)
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 1024 * 1024


class Notifications(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
        try:
            notification = json.loads(self.rfile.read(length))
            for alert in notification.get("alerts", []):
                labels = alert.get("labels", {})
                where = labels.get("instance", labels.get("exporter", ""))
                print(
                    f"{self.path.strip('/')}: {alert.get('status', '?')} {labels.get('alertname', '?')} "
                    f"site={labels.get('site', '-')} {where}",
                    flush=True,
                )
        except (ValueError, AttributeError):
            print(f"{self.path}: a notification that is not Alertmanager's JSON", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Only the notifications are printed."""


def main() -> None:
    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:5001").rpartition(":")
    ThreadingHTTPServer((host or "127.0.0.1", int(port)), Notifications).serve_forever()


if __name__ == "__main__":
    main()
