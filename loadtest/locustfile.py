"""Locust users for hub: the players, dashboards and operators' scripts of a real fleet.

Players (`DeviceUser`) hold one socket for the whole run, beat on the interval their
welcome gives and answer every command with delivery receipts; dashboards (`DashboardUser`)
watch the tenant's `status` room and the locations, devices and groups; operators
(`OperatorUser`) broadcast over REST, mostly state events (`content.update`,
`playlist.update`) that every welcome then carries. Each socket's connect, every answer
awaited (subscribe, receipt, ping) and every event received become locust requests of type
`WS`, so the statistics show connect time, delivery latency and errors next to the REST
broadcasts.

    HUB_JWT_SECRET=... .venv/bin/locust -f loadtest/locustfile.py --headless \
        -u 200 -r 50 -t 1m --host http://127.0.0.1:8000 --csv results/locust

`loadtest/README.md` has the cluster and 10,000-device recipes and reads the statistics.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
import orjson
import psutil  # type: ignore[import-untyped]
import websocket
from locust import FastHttpUser, User, between, events, task
from locust.env import Environment

from hub.auth import Role, issue_token

SECRET = os.environ.get("HUB_JWT_SECRET", "")
if not SECRET:
    raise SystemExit(
        "HUB_JWT_SECRET is not set: export the secret the hub nodes verify tokens with"
    )
TENANT = os.environ.get("HUB_TENANT", "bench")
TOKEN_TTL = float(os.environ.get("HUB_TOKEN_TTL", "86400"))
"""Long enough that no token expires mid-run (the hub closes those with 1008)."""

LOCATIONS = ("lobby", "cafe", "entrance", "checkout")
GROUPS = ("portrait", "landscape", "menu")
CONNECT_TIMEOUT = 10.0
"""Seconds for the handshake and the welcome together."""
ANSWER_TIMEOUT = 10.0
"""Seconds an ack or pong may take before its request counts as failed."""
MAX_BACKOFF = 30.0

_numbers = itertools.count()
"""Users of this process, all classes together: spreads them over the nodes in turn."""


class HandshakeRefused(Exception):
    """The node answered the upgrade with an HTTP status (401, 403, 429, ...)."""


class SocketClosed(Exception):
    """The socket went away without us asking: close code and reason, or the I/O error."""


class NoAnswer(Exception):
    """An ack or pong did not come within `ANSWER_TIMEOUT`."""


class ErrorFrame(Exception):
    """The hub answered with an `error` frame."""


def _now_ms() -> float:
    return time.time() * 1000


def _bases(host: str | None) -> list[str]:
    """The nodes to spread over: `HUB_HOSTS` (comma-separated) when set, else `--host`."""
    listed = [item.strip() for item in os.environ.get("HUB_HOSTS", "").split(",")]
    hosts = [item for item in listed if item] or ([host] if host else [])
    if not hosts:
        raise ValueError("no target: pass --host http://HOST:PORT or set HUB_HOSTS")
    return [(h if "://" in h else f"http://{h}").rstrip("/") for h in hosts]


def _ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}/v1/ws"


def _kind(room: str) -> str:
    """`location:lobby` -> `location`: one statistics row per kind of room, not per room."""
    return room.split(":", 1)[0]


def _close_reason(payload: bytes) -> str:
    if len(payload) < 2:
        return "closed without a code"
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode("utf-8", "replace")
    return f"closed {code} {reason}".rstrip()


def _drop(ws: websocket.WebSocket) -> None:
    """Close the TCP socket without a closing handshake (it failed, or the peer left)."""
    sock, ws.sock = ws.sock, None
    ws.connected = False
    if sock is not None:
        sock.close()


def _worker_index(environment: Environment) -> int:
    """0 in a single process; the worker's index under `--processes` or `--master`."""
    return max(0, int(getattr(environment.runner, "worker_index", 0)))


def _target_or_exit(environment: Environment, **_: Any) -> None:
    """Without a target every user would fail on every tick. A run that starts by itself
    (`--headless`, `--autostart`) therefore ends before its first user, with the reason;
    in the web UI the host is typed in when the run starts. Workers get the host from the
    master, so only the master (or a single process) checks."""
    options = environment.parsed_options
    if options is None or options.worker or not (options.headless or options.autostart):
        return
    try:
        _bases(environment.host)
    except ValueError as error:
        logging.error("%s", error)
        if options.processes:
            # The workers are forked already, and would wait a minute for a master that is
            # gone: end them first (locust's exit reaps them).
            for worker in psutil.Process().children():
                worker.terminate()
        raise SystemExit(1) from None


events.init.add_listener(_target_or_exit)  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class _Pending:
    name: str
    started_ms: float


class HubSocketUser(User):
    """One WebSocket per user, read by its own greenlet so that nothing a user waits for
    (its next beat, a ping) delays reading; answers are matched to requests by `ref`."""

    abstract = True
    role: ClassVar[Role]
    prefix: ClassVar[str]

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.number = next(_numbers)
        self.sub = f"{self.prefix}-{_worker_index(environment)}-{self.number}"
        self.ws: websocket.WebSocket | None = None
        self.reader: Any = None
        self.opened_ms = 0.0
        self.pending: dict[int, _Pending] = {}
        self.refs = itertools.count(1)
        self.failed_connects = 0
        self.stopping = False

    def claims(self) -> dict[str, Any]:
        """Extra token claims of this kind of user."""
        return {}

    def on_welcome(self, welcome: dict[str, Any]) -> None:
        """Called once the socket is welcomed, before its reader starts."""

    def on_event(self, event: dict[str, Any], size: int) -> None:
        """Called by the reader for each `event` frame."""

    def pace(self) -> float:
        """Seconds between two ticks while connected."""
        return 10.0

    def wait_time(self) -> float:
        """The class's pace while connected; full-jitter backoff while reconnecting."""
        if self.ws is not None:
            return self.pace()
        return random.uniform(0, min(MAX_BACKOFF, 2.0**self.failed_connects))

    def fire(
        self, name: str, response_time: float, length: int, error: Exception | None = None
    ) -> None:
        if self.stopping:
            return
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=max(0.0, response_time),
            response_length=length,
            exception=error,
            context={},
        )

    def on_stop(self) -> None:
        self.stopping = True
        self.disconnect()

    def connect(self) -> bool:
        """Open, and wait for the welcome: that is when a device's rooms are joined."""
        bases = _bases(self.host or self.environment.host)
        url = _ws_url(bases[self.number % len(bases)])
        token = issue_token(
            SECRET,
            sub=self.sub,
            role=self.role,
            tenant=TENANT,
            ttl=TOKEN_TTL,
            extra=self.claims(),
        )
        name = f"connect {self.role.value}"
        started = time.perf_counter()
        ws: websocket.WebSocket | None = None
        try:
            ws = websocket.create_connection(
                url,
                timeout=CONNECT_TIMEOUT,
                header=[f"Authorization: Bearer {token}"],
                skip_utf8_validation=True,
            )
            opcode, payload = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise SocketClosed(_close_reason(payload))
            welcome = orjson.loads(payload)
            if welcome.get("type") != "welcome":
                raise SocketClosed(f"first frame is {welcome.get('type')!r}, not a welcome")
            ws.settimeout(None)
        except Exception as error:
            if ws is not None:
                _drop(ws)
            if isinstance(error, websocket.WebSocketBadStatusException):
                body = (error.resp_body or b"").decode("utf-8", "replace")[:200]
                error = HandshakeRefused(f"HTTP {error.status_code} {body}".rstrip())
            self.fire(name, (time.perf_counter() - started) * 1000, 0, error)
            self.failed_connects += 1
            return False
        self.fire(name, (time.perf_counter() - started) * 1000, len(payload))
        self.failed_connects = 0
        self.ws = ws
        self.opened_ms = _now_ms()
        self.on_welcome(welcome)
        self.reader = gevent.spawn(self.read, ws)
        return True

    def disconnect(self) -> None:
        """Our own close: nothing about it counts as a failure."""
        if self.reader is not None:
            self.reader.kill(block=True, timeout=1)
            self.reader = None
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                _drop(ws)
        self.pending.clear()

    def read(self, ws: websocket.WebSocket) -> None:
        """Reader greenlet: every frame until the socket ends. Pings are answered inside
        `recv_data`; a close we did not ask for is reported with its code and reason."""
        reason = "connection lost"
        try:
            while True:
                opcode, payload = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    reason = _close_reason(payload)
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.dispatch(payload)
        except Exception as error:
            reason = f"connection lost: {type(error).__name__}"
        if ws is not self.ws or self.stopping:
            return
        self.ws = None
        _drop(ws)
        failure = SocketClosed(reason)
        for pending in self.pending.values():
            self.fire(pending.name, _now_ms() - pending.started_ms, 0, failure)
        self.pending.clear()
        self.fire(f"closed {self.role.value}", _now_ms() - self.opened_ms, 0, failure)

    def dispatch(self, payload: bytes) -> None:
        frame = orjson.loads(payload)
        kind = frame.get("type")
        if kind == "event":
            self.on_event(frame, len(payload))
        elif kind in ("ack", "pong"):
            pending = self.pending.pop(frame.get("ref"), None)
            if pending is not None:
                self.fire(pending.name, _now_ms() - pending.started_ms, len(payload))
        elif kind == "error":
            failure = ErrorFrame(f"{frame.get('code')}: {frame.get('message')}")
            pending = self.pending.pop(frame.get("ref"), None)
            if pending is not None:
                self.fire(pending.name, _now_ms() - pending.started_ms, len(payload), failure)
            else:
                self.fire(f"error {self.role.value}", 0, len(payload), failure)

    def send(self, frame: dict[str, Any]) -> Exception | None:
        ws = self.ws
        if ws is None:
            return SocketClosed("not connected")
        try:
            ws.send(orjson.dumps(frame))
        except Exception as error:
            return error
        return None

    def request(self, name: str, frame: dict[str, Any], started_ms: float | None = None) -> None:
        """Send `frame` with a fresh `ref`; its ack (or error) completes request `name`,
        timed from `started_ms` (default: now)."""
        ref = next(self.refs)
        started = _now_ms() if started_ms is None else started_ms
        error = self.send({**frame, "ref": ref})
        if error is not None:
            self.fire(name, _now_ms() - started, 0, error)
        else:
            self.pending[ref] = _Pending(name, started)

    def expire(self) -> None:
        """Fail the requests whose answer is overdue."""
        deadline = _now_ms() - ANSWER_TIMEOUT * 1000
        for ref, pending in list(self.pending.items()):
            if pending.started_ms < deadline:
                del self.pending[ref]
                failure = NoAnswer(f"no answer within {ANSWER_TIMEOUT:g} s")
                self.fire(pending.name, _now_ms() - pending.started_ms, 0, failure)


class DeviceUser(HubSocketUser):
    """A player: one socket all run long, a heartbeat on the welcome's interval, and for
    every command a `received` then a `done` receipt, the `done` one's ack timed from the
    command's `ts`."""

    weight = 100
    role = Role.DEVICE
    prefix = "dev"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.loc = LOCATIONS[self.number % len(LOCATIONS)]
        self.screen_group = GROUPS[self.number % len(GROUPS)]
        self.interval = 15.0

    def claims(self) -> dict[str, Any]:
        return {"loc": self.loc, "groups": [self.screen_group]}

    def on_welcome(self, welcome: dict[str, Any]) -> None:
        self.interval = float(welcome.get("heartbeat", {}).get("interval", self.interval))

    def pace(self) -> float:
        return self.interval

    @task
    def beat(self) -> None:
        """Connect when not connected; otherwise beat. Timed as the send alone: the hub
        answers heartbeats with nothing, dashboards see them as `event status`."""
        if self.ws is None and not self.connect():
            return
        self.expire()
        data = {
            "status": "playing",
            "content": f"c-{self.number % 50}",
            "cpu": round(random.uniform(5, 60), 1),
            "mem": round(random.uniform(20, 80), 1),
            "temp": round(random.uniform(35, 70), 1),
            "uptime": round((_now_ms() - self.opened_ms) / 1000),
        }
        started = time.perf_counter()
        error = self.send({"op": "heartbeat", "data": data})
        self.fire("heartbeat", (time.perf_counter() - started) * 1000, 0, error)

    def on_event(self, event: dict[str, Any], size: int) -> None:
        ts = event.get("ts")
        if isinstance(ts, int | float):
            self.fire(f"device event {_kind(event.get('room', ''))}", _now_ms() - ts, size)
        if event.get("event") == "command":
            receipt = {"op": "receipt", "room": event.get("room"), "id": event.get("id")}
            # Its ack answers no request: only an error frame for it is counted.
            self.send({**receipt, "status": "received", "ref": next(self.refs)})
            started = float(ts) if isinstance(ts, int | float) else _now_ms()
            self.request("command done", {**receipt, "status": "done"}, started)


class DashboardUser(HubSocketUser):
    """An operator's dashboard: subscribes to the fleet's live rooms and times the delivery
    of every event (its `ts`, taken by the accepting node, to now) per kind of room, and of
    the devices' delivery receipts apart from the rest of `status`."""

    weight = 2
    role = Role.DASHBOARD
    prefix = "dash"
    rooms: ClassVar[tuple[str, ...]] = (
        "status",
        "devices",
        *(f"location:{loc}" for loc in LOCATIONS),
        *(f"group:{group}" for group in GROUPS),
    )

    def on_welcome(self, _welcome: dict[str, Any]) -> None:
        for room in self.rooms:
            self.request(f"subscribe {_kind(room)}", {"op": "subscribe", "room": room})

    def pace(self) -> float:
        return random.uniform(5, 15)

    @task
    def ping(self) -> None:
        """Connect when not connected; otherwise a `ping` round trip through the node."""
        if self.ws is None and not self.connect():
            return
        self.expire()
        self.request("ping", {"op": "ping"})

    def on_event(self, event: dict[str, Any], size: int) -> None:
        ts = event.get("ts")
        if isinstance(ts, int | float):
            receipt = event.get("event") == "delivery.receipt"
            kind = "receipt" if receipt else _kind(event.get("room", ""))
            self.fire(f"event {kind}", _now_ms() - ts, size)


class OperatorUser(FastHttpUser):
    """A back-office script: `POST /v1/broadcast` with an operator token, named by the
    room's kind so that the statistics keep one row per kind."""

    weight = 1
    wait_time = between(1, 3)

    def on_start(self) -> None:
        number = next(_numbers)
        bases = _bases(self.host)
        self.url = f"{bases[number % len(bases)]}/v1/broadcast"
        sub = f"op-{_worker_index(self.environment)}-{number}"
        token = issue_token(SECRET, sub=sub, role=Role.OPERATOR, tenant=TENANT, ttl=TOKEN_TTL)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.version = 0

    def broadcast(self, room: str, event: str, data: dict[str, Any]) -> None:
        body = {"room": room, "event": event, "data": data}
        with self.client.post(
            self.url,
            json=body,
            headers=self.headers,
            name=f"broadcast {_kind(room)}",
            catch_response=True,
        ) as response:
            error = getattr(response, "error", None)
            if isinstance(error, Exception):
                response.failure(error)
            elif response.status_code != 202:
                text = (response.text or "")[:200]
                response.failure(f"HTTP {response.status_code} {text}".rstrip())

    @task(6)
    def content_update(self) -> None:
        self.version += 1
        data = {"content_id": f"c-{uuid.uuid4().hex[:8]}", "version": self.version}
        self.broadcast(f"location:{random.choice(LOCATIONS)}", "content.update", data)

    @task(2)
    def playlist_update(self) -> None:
        items = [f"c-{n}" for n in random.sample(range(50), 3)]
        data = {"playlist_id": f"p-{uuid.uuid4().hex[:8]}", "items": items}
        self.broadcast(f"group:{random.choice(GROUPS)}", "playlist.update", data)

    @task(1)
    def command(self) -> None:
        self.broadcast("devices", "command", {"name": "reload"})

    @task(1)
    def alert(self) -> None:
        data = {"level": "info", "message": "load test alert"}
        self.broadcast(f"group:{random.choice(GROUPS)}", "alert", data)
