"""A back office's webhook endpoint on this machine, for tests: it keeps what the hub posts
and answers as the test says (fail the first requests, answer slowly, go away and come
back on the same port)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    """When it arrived (monotonic)."""
    status: int
    """What the receiver answered."""

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Receiver:
    """Answers `status`, or 500 to its first `failing` requests; after `delay` seconds."""

    def __init__(self, port: int = 0) -> None:
        self.status = 200
        self.failing = 0
        self.delay = 0.0
        self.received: list[Received] = []
        self.answered: list[float] = []
        """When each answer went (monotonic), in order."""
        self._lock = threading.Lock()
        self._server = self._serve(port)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/hub"

    def _serve(self, port: int) -> _Server:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._answer(self.headers, body)
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._lock:
                    receiver.answered.append(time.monotonic())

            def log_message(self, *args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _answer(self, headers: Any, body: bytes) -> int:
        with self._lock:
            status = 500 if self.failing > 0 else self.status
            self.failing -= 1
            kept = {name.lower(): value for name, value in headers.items()}
            self.received.append(Received(kept, body, time.monotonic(), status))
            return status

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def start_again(self) -> None:
        """Listen again on the same port, after `stop`."""
        self._server = self._serve(self.port)

    def delivered(self, kind: str | None = None) -> list[Received]:
        """What it took (2xx), of one type or all, in arrival order."""
        with self._lock:
            taken = [r for r in self.received if 200 <= r.status < 300]
        return [r for r in taken if kind is None or r.message["type"] == kind]

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every message it took, each checked by the Standard Webhooks reference verifier."""
        checker = Webhook(secret)
        return [checker.verify(r.body, r.headers) for r in self.delivered()]
