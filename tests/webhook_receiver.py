"""A real webhook endpoint for tests: verifies every delivery with ``standardwebhooks``."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tzLTAxMjM0NTY3"


class Receiver:
    """A webhook endpoint on a free port. ``failing`` makes it answer 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.failing = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.attempts += 1
                if receiver.failing:
                    self.send_response(500)
                    self.end_headers()
                    return
                # Raises if the signature does not cover exactly these bytes.
                event = Webhook(SECRET).verify(body, dict(self.headers.items()))
                receiver.received.append(
                    {"event": event, "id": self.headers["webhook-id"], "raw": body}
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, batch_id: str) -> list[str]:
        return [r["event"]["type"] for r in self.received if r["event"]["data"]["id"] == batch_id]

    def wait(self, predicate: Any, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"receiver never saw it; got {[r['event'] for r in self.received]}")
