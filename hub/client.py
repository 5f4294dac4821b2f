"""An asyncio client for players and dashboards that loses nothing across a reconnect, and
says so loudly when the hub refuses it for good.

It reconnects on any transient drop (a refused or reset connection, a node draining with
1012 or full with 1013, a handshake answered 408, 429 or 5xx) with full-jitter exponential
backoff (for a minute after a 1012, doubling only to 5 s: that node comes back soon),
logging each at warning with the time of the next try; it resubscribes every room
with the last id it saw and that room's epoch, resuming each room on its own, hands each
event to the handler exactly once and in id order, tells the handler when a room could not
be recovered, and sends device heartbeats on the interval the welcome frame gives, every
frame at the pace the welcome's `limits` allow.

A room's current state (the hub's state events) is handed over before its other events on
each subscribe, to `on_state`, or else to `on_event` flagged `"state": true`; after a
room that could not be recovered it is what the application starts again from. With
`acknowledge_commands`, a device sends a `received` receipt for each `command` event
before its handler runs, and `done` or `failed` (the handler raised) after.

Events with an `apply_at` later than the hub's clock are held, then handed over at that
moment of the hub's clock, in `apply_at` order, from a task of their own: their handler may
run while another event's does (hub.apply). `client.clock` tells the hub's time from the
welcome's and the pongs'. Held events outlive a reconnect; `stop` drops them, as the
application is going away, and so does leaving their room. A command's `received` goes
when it arrives, its `done` or `failed` after its handler ran at `apply_at`.

A permanent refusal is never retried: a handshake answered with another 4xx (401 and 403
above all) ends `run` with `HubRefused`. A room the hub will never serve (`forbidden`,
`bad_request`, `too_large`) is dropped, the other rooms stay live, and the `RoomRefused` is
handed to `on_error`; without `on_error`, `run` raises it.

    client = HubClient(["ws://127.0.0.1:8000/v1/ws"], token, rooms=["status"], on_event=show)
    await client.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed, InvalidURI
from websockets.uri import parse_uri

from hub.apply import HubClock, Schedule, wall_ms
from hub.backoff import Backoff, Retries
from hub.dial import CONNECTION_ERRORS, Answer, Connection, Dialer, cut
from hub.history import parse_id
from hub.protocol import Transport
from hub.ratelimit import TokenBucket
from hub.redact import redact_path

log = logging.getLogger("hub.client")

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[None] | None]
StateHandler = Callable[[str, list[Event]], Awaitable[None] | None]
"""Called with a room and its current state (a list of events) on every (re)subscribe."""
LostHandler = Callable[[str], Awaitable[None] | None]
Token = str | Callable[[], str | Awaitable[str]]
"""A token, or a provider of fresh ones (sync or async): called before each connection
and when the hub says the socket's token is `expiring`."""

WELCOME_TIMEOUT = 10.0
"""Seconds an accepted socket may take to send its welcome."""
REQUEST_TIMEOUT = 30.0
"""Seconds a subscribe, unsubscribe or publish may wait for its answer."""
MAX_HELD = 100_000
"""Events of one room held while its subscribe waits for the ack (the replay, and live
events behind it); past it the connection is dropped and resumed."""
MIN_HEARTBEAT_INTERVAL = 0.1
"""The shortest heartbeat interval a welcome may set: a broken one cannot make a flood."""
MAX_TEXT = 300
"""The longest message from the hub kept in an exception or a log line."""
TRANSIENT_STATUSES = frozenset({408, 429})
"""Handshake answers in 4xx that are worth retrying; every other 4xx is a refusal."""
WEBSOCKET_RETRY = 300.0
"""Seconds on the event stream between two tries of a WebSocket."""
TRANSIENT_CODES = frozenset({"rate_limited", "unavailable"})
"""`error` codes of a subscribe that a later connection may not get; any other is final."""


class Refused(Exception):
    """The hub refused something for good: retrying the same thing cannot succeed."""


class HubRefused(Refused):
    """The handshake was refused for good (401 bad token, 403 unusable token, 404 wrong path,
    ...): `status` is the HTTP status, `code` and `message` what the hub's body says."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.code = code


class RoomRefused(Refused):
    """A room's subscribe was refused for good (`forbidden`, `bad_request`, ...)."""

    def __init__(self, room: str, code: str, message: str) -> None:
        super().__init__(f"subscribe {room}: {code}: {message}")
        self.room = room
        self.code = code
        self.message = message


ErrorHandler = Callable[[RoomRefused], Awaitable[None] | None]


class _Broken(Exception):
    """This connection cannot go on (a malformed frame, a room the hub cannot serve right
    now): drop it and resume on the next one."""


_Request = Callable[[dict[str, Any]], Awaitable[Event]]
_Receipt = Callable[[Event, str], Awaitable[None]]


@dataclass
class _Subscription:
    """Where the client stands in one room it keeps (the last id seen, the room's epoch), and
    the room's events held while its subscribe waits for the ack."""

    last: tuple[int, int] | None = None
    epoch: str | None = None
    pending: list[Event] | None = field(default=None)


class _Subscriptions:
    """The rooms kept across reconnects, each resumed on its own from where it stands, and
    their events handed over once each, in id order, the room's state first."""

    def __init__(
        self,
        rooms: Iterable[str],
        request: _Request,
        receipt: _Receipt,
        *,
        on_event: Handler | None,
        on_state: StateHandler | None,
        on_lost: LostHandler | None,
        on_error: ErrorHandler | None,
        acknowledge: bool,
        clock: HubClock,
    ) -> None:
        self._rooms: dict[str, _Subscription] = {room: _Subscription() for room in rooms}
        self.schedule = Schedule(clock, self._hand_over)
        """Events that wait for their `apply_at`."""
        self._request = request
        self._receipt = receipt
        self._on_event = on_event
        self._on_state = on_state
        self._on_lost = on_lost
        self._on_error = on_error
        self._acknowledge = acknowledge

    def keep(self, room: str) -> None:
        self._rooms.setdefault(room, _Subscription())

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)
        self.schedule.drop(room)

    def hold_all(self) -> None:
        """From a welcome on, hold every room's events until its subscribe's ack: the
        welcome's own rooms get live events at once, and one handed over before the ack
        would make the ack's replay of older ones look like repeats."""
        for subscription in self._rooms.values():
            if subscription.pending is None:
                subscription.pending = []

    async def resume_all(self) -> None:
        await asyncio.gather(*(self._keep(room) for room in list(self._rooms)))

    async def _keep(self, room: str) -> None:
        """Resume one room; a refusal for good drops it alone and is reported."""
        try:
            await self.resume(room)
        except RoomRefused as refusal:
            if self._on_error is None:
                raise
            await _call(self._on_error, refusal)

    async def take(self, event: Event) -> None:
        """An event as it arrives: handed on, or held while its room waits for the ack."""
        room = event.get("room")
        subscription = self._rooms.get(room) if isinstance(room, str) else None
        if subscription is None:
            return
        if subscription.pending is None:
            await self._deliver(subscription, event)
        elif len(subscription.pending) < MAX_HELD:
            subscription.pending.append(event)
        else:
            raise _Broken(f"more than {MAX_HELD} events of {room} before its ack")

    async def resume(self, room: str) -> Event:
        """(Re)subscribe from the last id seen; hold the room's events until the ack."""
        subscription = self._rooms[room]
        if subscription.pending is None:
            subscription.pending = []
        frame: dict[str, Any] = {"op": "subscribe", "room": room}
        if subscription.last is not None:
            frame["since"] = f"{subscription.last[0]}-{subscription.last[1]}"
            if subscription.epoch is not None:
                frame["epoch"] = subscription.epoch
        try:
            ack = await self._request(frame)
            epoch, last = _subscribed(room, ack)
            recovered = "since" in frame and ack.get("recovered") is True
            if "since" in frame and not recovered and self._on_lost is not None:
                await _call(self._on_lost, room)
            subscription.epoch = epoch
            current = await self._hand_state(room, ack, recovered)
            await self._hand_held(subscription, current)
            # From here on every event counts; an empty room resumes from its beginning. On a
            # first subscribe the held events all went: a device's came after its welcome.
            newest = (parse_id(last) if last else None) or (0, 0)
            subscription.last = max(subscription.last or newest, newest)
        except RoomRefused:
            if self._rooms.get(room) is subscription:
                del self._rooms[room]
            raise
        finally:
            subscription.pending = None
        return ack

    async def _hand_held(self, subscription: _Subscription, current: set[tuple[int, int]]) -> None:
        """Hand over the events held until the ack, in id order, and those that arrive while
        the handlers run: the room holds them until none is left, as a live event handed
        over first would make the held ones before it look like repeats."""
        held = subscription.pending or []
        while held:
            events = sorted(held, key=_order)
            held.clear()
            for event in events:
                if _id(event) not in current:
                    await self._deliver(subscription, event)

    async def _hand_state(self, room: str, ack: Event, recovered: bool) -> set[tuple[int, int]]:
        """Hand the room's state over before its other events: to `on_state` on every
        subscribe; without it, to `on_event` (each flagged `"state": true`) unless the
        room was recovered, whose state the application has seen. Returns the ids handed
        over, which are not handed over again as live events."""
        listed = ack.get("state")
        events = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
        if self._on_state is not None:
            await _call(self._on_state, room, events)
        elif self._on_event is not None and not recovered:
            for event in events:
                await self.schedule.hand({**event, "state": True})
        else:
            return set()
        return {event_id for event in events if (event_id := _id(event)) is not None}

    async def _deliver(self, subscription: _Subscription, event: Event) -> None:
        """Hand an event on once: anything at or below the last id seen is a repeat. A
        command's `received` goes at once, though the event may wait for its `apply_at`."""
        event_id = _id(event)
        if event_id is not None:
            if subscription.last is not None and event_id <= subscription.last:
                return
            subscription.last = event_id
        if self._on_event is None:
            return
        if self._acknowledged(event):
            await self._receipt(event, "received")
        await self.schedule.hand(event)

    async def _hand_over(self, event: Event) -> None:
        """Run the handler, on arrival or at `apply_at`; then a command's `done` or `failed`,
        which is lost (and logged) when no connection is there to carry it."""
        if self._on_event is None:
            return
        ran = await _call(self._on_event, event)
        if not self._acknowledged(event):
            return
        status = "done" if ran else "failed"
        try:
            await self._receipt(event, status)
        except CONNECTION_ERRORS as error:
            log.warning(
                "no %s receipt for %s: %s", status, _text(event.get("id")), _describe(error)
            )

    def _acknowledged(self, event: Event) -> bool:
        """Whether `event` gets receipts: a command with an id, not a room's state."""
        return (
            self._acknowledge
            and event.get("event") == "command"
            and _id(event) is not None
            and event.get("state") is not True
        )


class _Token:
    """The token a connection holds: the one given, or a provider's, asked before each
    connection and again when the hub says the one in use is `expiring`."""

    def __init__(self, token: Token, request: _Request) -> None:
        self._token = token
        self._request = request
        self._refreshing: asyncio.Task[None] | None = None
        self._in_use: str | None = None
        """The token the current connection holds (its handshake's, or its last refresh's)."""

    def held(self) -> str:
        """The token the current connection holds: what its stream's POSTs carry."""
        return self._in_use or ""

    async def for_handshake(self) -> str:
        """The token a new connection presents, and holds from then on."""
        self._in_use = await self._current()
        return self._in_use

    def expiring(self, exp: Any) -> None:
        """Refresh the token in use before `exp`, one refresh at a time."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(exp))

    async def _current(self) -> str:
        if not callable(self._token):
            return self._token
        token = self._token()
        return await token if inspect.isawaitable(token) else token

    async def _refresh(self, exp: Any) -> None:
        """Hand the hub a fresh token before the socket's expires; without a provider, or
        when the hub refuses it, the socket closes at `exp` and the next connection asks
        the provider again."""
        if not callable(self._token):
            log.warning("the token expires at %s and no token provider was given", _text(exp))
            return
        fresh = await self._current()
        if fresh == self._in_use:
            # The hub would notice the same token again at once: wait for a fresh one.
            log.warning(
                "the token provider gave the token in use again, which expires at %s", _text(exp)
            )
            return
        try:
            answer = await self._request({"op": "refresh", "token": fresh})
        except CONNECTION_ERRORS:
            return  # the next connection takes a fresh token anyway (ConnectionError is an OSError)
        if answer.get("type") != "ack":
            code, message = _text(answer.get("code")), _text(answer.get("message"))
            log.warning("token refresh refused: %s: %s", code, message)
            return
        self._in_use = fresh


class HubClient:
    """One resuming connection to the hub, for players and dashboards."""

    def __init__(
        self,
        urls: Sequence[str],
        token: Token,
        *,
        rooms: Iterable[str] = (),
        on_event: Handler | None = None,
        on_lost: LostHandler | None = None,
        on_error: ErrorHandler | None = None,
        heartbeat: Callable[[], dict[str, Any]] | None = None,
        backoff: Backoff | None = None,
        on_state: StateHandler | None = None,
        acknowledge_commands: bool = False,
        websocket_retry: float = WEBSOCKET_RETRY,
        clock: Callable[[], float] = wall_ms,
    ) -> None:
        self._urls = _checked_urls(urls)
        self._dialer = Dialer()
        self._websocket_retry = websocket_retry
        """Seconds on the event stream between two tries of a WebSocket."""
        self._token = _Token(token, self._request)
        self.clock = HubClock(clock)
        """The hub's clock as this client tells it from its own (`clock`, ms since the epoch):
        `client.clock.now()`, the moment events with `apply_at` are handed over."""
        self._subscriptions = _Subscriptions(
            rooms,
            self._request,
            self.receipt,
            on_event=on_event,
            on_state=on_state,
            on_lost=on_lost,
            on_error=on_error,
            acknowledge=acknowledge_commands,
            clock=self.clock,
        )
        self._heartbeat = heartbeat
        self._retries = Retries(backoff or Backoff(base=0.5, cap=30.0))
        self._waiting = _Waiting()
        self._ws: Connection | None = None
        self._pace: TokenBucket | None = None
        """The connection's frame rate, from its welcome: frames past it would be refused."""
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.welcome: Event | None = None

    async def run(self) -> None:
        """Stay connected until `stop`; every connection resumes where the last one ended.

        Raises `HubRefused` when a handshake is refused for good, and `RoomRefused` when a
        room is and no `on_error` was given.
        """
        for attempt in itertools.count():
            if self._stopping.is_set():
                return
            ended, least_wait = await self._attempt(self._urls[attempt % len(self._urls)])
            if self._stopping.is_set():
                return
            delay = max(self._retries.next(), least_wait)
            log.warning("%s; retrying in %.1f s", ended, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()
        self._subscriptions.schedule.drop()  # after the close: no event comes to be held again

    @property
    def transport(self) -> Transport:
        """What carries the connection: a WebSocket, or the event stream (a proxy refuses
        WebSockets); the next connection's, between two."""
        return self._dialer.transport

    async def drop(self) -> None:
        """Cut the current connection without a closing handshake, as a network would."""
        if self._ws is not None:
            cut(self._ws)

    async def subscribe(self, room: str) -> Event:
        """Join `room` and keep it across reconnects. Raises `RoomRefused` (the room is
        dropped) or `ConnectionError` (it is resumed on the next connection)."""
        self._subscriptions.keep(room)
        try:
            return await self._subscriptions.resume(room)
        except _Broken as error:
            await self.drop()
            raise ConnectionError(str(error)) from None

    async def unsubscribe(self, room: str) -> Event:
        self._subscriptions.forget(room)
        return await self._request({"op": "unsubscribe", "room": room})

    async def publish(self, room: str, event: str, data: Any) -> Event:
        return await self._request({"op": "publish", "room": room, "event": event, "data": data})

    async def receipt(self, event: Event, status: str, data: dict[str, Any] | None = None) -> None:
        """Tell the hub what became of `event` here: `received`, `done` or `failed`.

        Sent without waiting for the answer, so a handler may call it; a refusal is
        logged. Raises `ConnectionError` when not connected.
        """
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        frame: dict[str, Any] = {
            "op": "receipt",
            "room": event.get("room"),
            "id": event.get("id"),
            "status": status,
        }
        if data is not None:
            frame["data"] = data
        await self._send(ws, orjson.dumps(frame).decode())

    async def _send(self, ws: Connection, text: str) -> None:
        """Send at the pace the welcome gave, in the order asked: a client resubscribing
        more rooms than the hub's burst would otherwise be refused past it, and closed."""
        if self._pace is not None and (wait := self._pace.reserve()) > 0.0:
            await asyncio.sleep(wait)
        await ws.send(text)

    async def _attempt(self, url: str) -> tuple[str, float]:
        """One connection, from handshake to end: how it ended, and the least wait before
        the next (the hub's `Retry-After`). Permanent refusals are raised."""
        shown = redact_path(url)
        token = await self._token.for_handshake()
        try:
            ws = await self._dialer.open(url, token, self._token.held)
        except Answer as answer:
            self._retries.answered()
            status = answer.status
            if answer.code is not None and 400 <= status < 500 and status not in TRANSIENT_STATUSES:
                raise HubRefused(status, answer.message, answer.code) from None
            return f"{shown} answered {answer}", answer.retry_after
        except CONNECTION_ERRORS as error:
            return f"cannot connect to {shown}: {_describe(error)}", 0.0
        self._ws = ws
        try:
            if not self._stopping.is_set():  # `stop` came during the handshake
                await self._session(ws, url)
        except (*CONNECTION_ERRORS, _Broken) as error:
            return f"connection to {shown} ended: {_describe(error)}", 0.0
        finally:
            self._ws = None
            self.connected.clear()
            self._waiting.fail()
            await ws.close()
            self._retries.closed(ws.close_code)
        return f"connection to {shown} ended: {_closed(ws.close_code, ws.close_reason)}", 0.0

    async def _session(self, ws: Connection, url: str) -> None:
        welcome = _welcome(await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT))
        self.welcome = welcome
        self._pace = _pace(welcome)
        node, role, transport = _text(welcome.get("node")), _text(welcome["role"]), self.transport
        log.info("connected to node %s as %s over a %s", node, role, transport.value)
        for room in welcome["rooms"]:
            self._subscriptions.keep(room)
        self._subscriptions.hold_all()
        reader = asyncio.create_task(self._read(ws))
        beats = asyncio.create_task(_beat(ws, welcome, self._heartbeat, self._send))
        timing = asyncio.create_task(self._subscriptions.schedule.keep_time(welcome, self._request))
        switching = (
            asyncio.create_task(
                self._dialer.websocket_again(ws, url, self._token.held, self._websocket_retry)
            )
            if transport is Transport.STREAM
            else None
        )
        try:
            await self._subscriptions.resume_all()
            self._retries.reset()
            self.connected.set()
            await reader
        except ConnectionError:
            # Requests fail when the reader ends: its own failure says why.
            cause = reader.exception() if reader.done() and not reader.cancelled() else None
            if cause is not None:
                raise cause from None
            raise
        finally:
            beats.cancel()
            timing.cancel()
            reader.cancel()
            if switching is not None:
                switching.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, _Broken):
                await reader
            with contextlib.suppress(asyncio.CancelledError):
                await beats

    async def _request(self, frame: dict[str, Any]) -> Event:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        ref, waiter = self._waiting.new()
        try:
            await self._send(ws, orjson.dumps({**frame, "ref": ref}).decode())
            return await asyncio.wait_for(waiter, REQUEST_TIMEOUT)
        finally:
            self._waiting.forget(ref, waiter)

    async def _read(self, ws: Connection) -> None:
        try:
            await self._dispatch(ws)
        finally:
            # Nothing will be answered any more: no request may wait from here on.
            if self._ws is ws:
                self._ws = None
            self._waiting.fail()

    async def _dispatch(self, ws: Connection) -> None:
        async for message in ws:
            frame = _frame(message)
            kind = frame.get("type")
            if kind == "event":
                await self._subscriptions.take(frame)
                continue
            ref = frame.get("ref")
            if self._waiting.answer(ref, frame):
                continue
            if kind == "expiring":
                self._token.expiring(frame.get("exp"))
            elif kind == "error" and ref is None:
                code, message = _text(frame.get("code")), _text(frame.get("message"))
                log.warning("the hub refused a heartbeat or a receipt: %s: %s", code, message)


async def _beat(
    ws: Connection,
    welcome: Event,
    data: Callable[[], dict[str, Any]] | None,
    send: Callable[[Connection, str], Awaitable[None]],
) -> None:
    """A device's heartbeats, on the welcome's interval, until the connection ends."""
    if welcome["role"] != "device":
        return
    interval = max(MIN_HEARTBEAT_INTERVAL, welcome["heartbeat"]["interval"])
    while True:
        text = _heartbeat(data)
        if text is not None:
            try:
                await send(ws, text)
            except ConnectionClosed:
                return
        await asyncio.sleep(interval)


def _heartbeat(data: Callable[[], dict[str, Any]] | None) -> str | None:
    """A heartbeat frame with what `data` says (`{"status": "ok"}` without it); None, and
    the failure logged, when `data` raises."""
    try:
        said = data() if data is not None else {"status": "ok"}
        return orjson.dumps({"op": "heartbeat", "data": said}).decode()
    except Exception:
        log.exception("heartbeat callback failed: no heartbeat sent this time")
        return None


class _Waiting:
    """Requests waiting for their answers, by `ref`."""

    def __init__(self) -> None:
        self._refs = itertools.count(1)
        self._futures: dict[int, asyncio.Future[Event]] = {}

    def new(self) -> tuple[int, asyncio.Future[Event]]:
        ref = next(self._refs)
        waiter: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._futures[ref] = waiter
        return ref, waiter

    def answer(self, ref: Any, frame: Event) -> bool:
        """Hand `frame` to the request `ref` names, if one waits for it."""
        waiter = self._futures.get(ref) if isinstance(ref, int) else None
        if waiter is None or waiter.done():
            return False
        waiter.set_result(frame)
        return True

    def forget(self, ref: int, waiter: asyncio.Future[Event]) -> None:
        self._futures.pop(ref, None)
        if waiter.done() and not waiter.cancelled():
            waiter.exception()  # a loss the send met first is raised by the send

    def fail(self) -> None:
        """The connection is gone: no answer comes any more."""
        for waiter in self._futures.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection lost"))
        self._futures.clear()


def _checked_urls(urls: Sequence[str]) -> list[str]:
    """The node URLs, each a ws:// or wss:// URL; a wrong one is refused at once."""
    if isinstance(urls, str):
        raise ValueError("urls must be a list of URLs, not one string")
    checked = list(urls)
    if not checked:
        raise ValueError("give at least one URL (ws://host:port/v1/ws)")
    for url in checked:
        try:
            parse_uri(url)
        except (InvalidURI, ValueError) as error:
            raise ValueError(f"not a WebSocket URL: {redact_path(url)!r} ({error})") from None
    return checked


def _frame(message: str | bytes) -> Event:
    """One frame from the hub: a JSON object, else the connection is broken."""
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise _Broken("the hub sent a frame that is not JSON") from None
    if not isinstance(frame, dict):
        raise _Broken("the hub sent a frame that is not a JSON object")
    return frame


def _welcome(message: str | bytes) -> Event:
    """The welcome frame, checked for what the client relies on: its rooms, its role and,
    for a device, a heartbeat interval that is a positive number."""
    welcome = _frame(message)
    if welcome.get("type") != "welcome":
        raise _Broken(f"expected a welcome, got {_text(welcome.get('type'))}")
    rooms = welcome.get("rooms", [])
    if not isinstance(rooms, list) or not all(isinstance(room, str) for room in rooms):
        raise _Broken("malformed welcome: rooms must be a list of names")
    welcome["rooms"] = rooms
    if not isinstance(welcome.get("role"), str):
        raise _Broken("malformed welcome: no role")
    if welcome["role"] == "device":
        beat = welcome.get("heartbeat")
        interval = beat.get("interval") if isinstance(beat, dict) else None
        if not _positive(interval):
            raise _Broken("malformed welcome: heartbeat.interval must be a positive number")
    limits = welcome.get("limits")
    if limits is not None and not (
        isinstance(limits, dict)
        and (_positive(limits.get("rate")) or limits.get("rate") == 0)
        and _positive(limits.get("burst"))
    ):
        raise _Broken("malformed welcome: limits needs a rate of 0 or more and a positive burst")
    return welcome


def _pace(welcome: Event) -> TokenBucket | None:
    """A bucket within the hub's: its rate, and half its burst, which leaves the other half
    for frames the network bunches together and for the pings the connection sends. None
    when the hub sets no rate (or, older, does not say)."""
    limits = welcome.get("limits")
    if limits is None or limits["rate"] == 0:
        return None
    return TokenBucket(limits["rate"], max(1.0, limits["burst"] // 2))


def _subscribed(room: str, answer: Event) -> tuple[str, str | None]:
    """The epoch and last id of a subscribe's ack; a refusal is raised, `RoomRefused` when
    it is for good."""
    if answer.get("type") == "error":
        code, message = _text(answer.get("code")), _text(answer.get("message"))
        if code in TRANSIENT_CODES:
            raise _Broken(f"subscribe {room}: {code}: {message}")
        raise RoomRefused(room, code, message)
    epoch, last = answer.get("epoch"), answer.get("last")
    if answer.get("type") != "ack" or not isinstance(epoch, str):
        raise _Broken(f"subscribe {room}: not an ack")
    if not (last is None or isinstance(last, str)):
        raise _Broken(f"subscribe {room}: malformed ack")
    return epoch, last


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _id(event: Event) -> tuple[int, int] | None:
    value = event.get("id")
    return parse_id(value) if isinstance(value, str) else None


def _order(event: Event) -> tuple[int, int]:
    return _id(event) or (0, 0)


def _text(value: Any) -> str:
    """Something the hub said, made safe for one log line: a string, short, no controls."""
    text = value if isinstance(value, str) else str(value)
    text = "".join(char if char.isprintable() else " " for char in text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _closed(code: int | None, reason: str | None) -> str:
    return f"closed {code} {_text(reason or '')}".rstrip()


def _describe(error: BaseException) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(error, ConnectionClosed):
        if error.rcvd is None:
            return "connection lost"
        return _closed(error.rcvd.code, error.rcvd.reason)
    if isinstance(error, TimeoutError):
        return "timed out"
    return _text(str(error) or type(error).__name__)


async def _call(handler: Callable[..., Awaitable[None] | None], *arguments: Any) -> bool:
    """Run a user handler; its failure is logged (and returned as False), never the end of
    the connection."""
    try:
        result = handler(*arguments)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("handler %s failed", getattr(handler, "__qualname__", handler))
        return False
    return True
