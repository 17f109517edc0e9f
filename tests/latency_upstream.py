"""A small OpenAI-compatible HTTP server whose every request takes a fixed time without
using the CPU (it sleeps), for the ``openai`` engine's retry test and the scale-out
benchmark. Not a model: it answers with a fixed short completion.

    python tests/latency_upstream.py --port 8011 --latency 0.2 [--flaky]

``--flaky``: each distinct request body is first answered 503 (odd requests) or 429 with
``Retry-After: 0`` (even ones), then 200; one containing ``SLOW`` first takes an extra
second. A message containing ``REJECT`` gets 400 with an OpenAI error body.
``GET /stats`` reports requests served and the most seen in flight.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class State:
    def __init__(self, latency: float, flaky: bool) -> None:
        self.latency, self.flaky = latency, flaky
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.requests = self.in_flight = self.max_in_flight = 0


def completion(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    if chat:
        return {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello there."},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    return {
        "id": "cmpl-upstream",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "text": " there.", "finish_reason": "stop"}],
        "usage": usage,
    }


class Handler(BaseHTTPRequestHandler):
    state: State
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        s = self.state
        with s.lock:
            self._send(200, {"requests": s.requests, "max_in_flight": s.max_in_flight})

    def do_POST(self) -> None:
        s = self.state
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        digest = hashlib.sha256(raw).hexdigest()
        with s.lock:
            s.requests += 1
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
            first = digest not in s.seen
            s.seen.add(digest)
            number = s.requests
        try:
            time.sleep(s.latency)
            if s.flaky and first and b"SLOW" in raw:
                time.sleep(1.0)  # longer than the client's timeout in the tests
            if b"REJECT" in raw:
                error = {"message": "rejected", "type": "invalid_request_error", "param": None}
                self._send(400, {"error": {**error, "code": "rejected_by_upstream"}})
            elif s.flaky and first and number % 2:
                self._send(503, {"error": {"message": "overloaded", "type": "server_error"}})
            elif s.flaky and first:
                error = {"message": "slow down", "type": "rate_limit_error"}
                self._send(429, {"error": error}, {"Retry-After": "0"})
            else:
                self._send(200, completion(body, self.path.endswith("/chat/completions")))
        finally:
            with s.lock:
                s.in_flight -= 1


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (a killed worker) is not the server's problem


def serve(port: int, latency: float, flaky: bool = False) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": State(latency, flaky)})
    server = Server(("127.0.0.1", port), handler)
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--flaky", action="store_true")
    args = parser.parse_args()
    serve(args.port, args.latency, args.flaky).serve_forever()
