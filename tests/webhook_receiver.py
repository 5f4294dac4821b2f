"""A back office's webhook endpoint on this machine, for tests: it keeps what the hub posts
and answers as the test says (fail the first requests, hold them until the test lets them
go, answer slowly, go away and come back on the same port)."""

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
    """What the receiver answers it (a held request: once let go)."""

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


STOP_WITHIN = 0.05
"""Seconds `stop` may wait for the server's loop to see it: a test stops every receiver."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Answer = int | threading.Event
"""A status, or an event that holds the request until it is set, then answers 200."""


class Receiver:
    """Answers its first requests with `answers`, then `status`; after `delay` seconds."""

    def __init__(self, *answers: Answer, port: int = 0) -> None:
        self.status = 200
        self.answers = list(answers)
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
                status, held = receiver._answer(self.headers, body)
                if held is not None:
                    held.wait()
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._lock:
                    receiver.answered.append(time.monotonic())

            def log_message(self, *args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", port), Handler)
        serve = {"poll_interval": STOP_WITHIN}
        threading.Thread(target=server.serve_forever, kwargs=serve, daemon=True).start()
        return server

    def _answer(self, headers: Any, body: bytes) -> tuple[int, threading.Event | None]:
        """Keep the request (held or not: a test counts what arrived), and say what it is
        answered, and what it waits for first."""
        with self._lock:
            answer = self.answers.pop(0) if self.answers else self.status
            held = answer if isinstance(answer, threading.Event) else None
            status = 200 if isinstance(answer, threading.Event) else answer
            kept = {name.lower(): value for name, value in headers.items()}
            self.received.append(Received(kept, body, time.monotonic(), status))
            return status, held

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
