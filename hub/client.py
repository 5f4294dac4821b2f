"""An asyncio client for players and dashboards that loses nothing across a reconnect.

It reconnects on any drop with full-jitter exponential backoff, resubscribes every room
with the last id it saw and that room's epoch, hands each event to the handler exactly once
and in id order, tells the handler when a room could not be recovered, and sends device
heartbeats on the interval the welcome frame gives.

    client = HubClient(["ws://127.0.0.1:8000/v1/ws"], token, rooms=["status"], on_event=show)
    await client.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from hub.backoff import Backoff
from hub.history import parse_id

log = logging.getLogger("hub.client")

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[None] | None]
LostHandler = Callable[[str], Awaitable[None] | None]
Token = str | Callable[[], str]


class Refused(Exception):
    """The hub answered a request with an `error` frame."""


@dataclass
class _Room:
    """What the client knows of one room: where it stands, and what waits for the ack."""

    last: tuple[int, int] | None = None
    epoch: str | None = None
    pending: list[Event] | None = field(default=None)


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
        heartbeat: Callable[[], dict[str, Any]] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._urls = list(urls)
        self._token = token
        self._rooms: dict[str, _Room] = {room: _Room() for room in rooms}
        self._on_event = on_event
        self._on_lost = on_lost
        self._heartbeat = heartbeat
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._refs = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Event]] = {}
        self._ws: ClientConnection | None = None
        self._stopped = False
        self.connected = asyncio.Event()
        self.welcome: Event | None = None

    async def run(self) -> None:
        """Stay connected until `stop`; every connection resumes where the last one ended."""
        for attempt in itertools.count():
            if self._stopped:
                return
            url = self._urls[attempt % len(self._urls)]
            token = self._token() if callable(self._token) else self._token
            try:
                async with connect(
                    url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None
                ) as ws:
                    self._ws = ws
                    await self._session(ws)
            except (OSError, WebSocketException, TimeoutError) as error:
                log.info("connection to %s ended: %s", url, error)
            except Refused as error:
                log.warning("session on %s refused: %s", url, error)
            finally:
                self._ws = None
                self.connected.clear()
                self._fail_waiters()
            if not self._stopped:
                await asyncio.sleep(self._backoff.next())

    async def stop(self) -> None:
        self._stopped = True
        if self._ws is not None:
            await self._ws.close()

    async def drop(self) -> None:
        """Cut the current connection without a closing handshake, as a network would."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def subscribe(self, room: str) -> Event:
        self._rooms.setdefault(room, _Room())
        return await self._resume(room)

    async def unsubscribe(self, room: str) -> Event:
        self._rooms.pop(room, None)
        return await self._request({"op": "unsubscribe", "room": room})

    async def publish(self, room: str, event: str, data: Any) -> Event:
        return await self._request({"op": "publish", "room": room, "event": event, "data": data})

    async def _session(self, ws: ClientConnection) -> None:
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        self.welcome = welcome
        for room in welcome.get("rooms", []):
            self._rooms.setdefault(room, _Room())
        reader = asyncio.create_task(self._read(ws))
        beats = asyncio.create_task(self._beat(ws, welcome))
        try:
            await asyncio.gather(*(self._resume(room) for room in list(self._rooms)))
            self._backoff.reset()
            self.connected.set()
            await reader
        finally:
            beats.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader

    async def _resume(self, room: str) -> Event:
        """(Re)subscribe from the last id seen; hold the room's events until the ack."""
        state = self._rooms[room]
        state.pending = []
        frame: dict[str, Any] = {"op": "subscribe", "room": room}
        if state.last is not None:
            frame["since"] = f"{state.last[0]}-{state.last[1]}"
            if state.epoch is not None:
                frame["epoch"] = state.epoch
        try:
            ack = await self._request(frame)
        except BaseException:
            state.pending = None
            raise
        if ack.get("type") != "ack":
            state.pending = None
            raise Refused(f"subscribe {room}: {ack.get('code')}: {ack.get('message')}")
        held, state.pending = state.pending or [], None
        if "since" in frame and not ack["recovered"] and self._on_lost is not None:
            await _call(self._on_lost, room)
        state.epoch = ack["epoch"]
        if state.last is None:
            # From here on every event counts; an empty room resumes from its beginning.
            state.last = parse_id(ack["last"]) if ack.get("last") else (0, 0)
        for event in sorted(held, key=lambda e: parse_id(e.get("id", "")) or (0, 0)):
            await self._deliver(state, event)
        return ack

    async def _request(self, frame: dict[str, Any]) -> Event:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        ref = next(self._refs)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[ref] = waiter
        await ws.send(orjson.dumps({**frame, "ref": ref}).decode())
        try:
            return await asyncio.wait_for(waiter, 30)
        finally:
            self._waiting.pop(ref, None)

    def _fail_waiters(self) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection lost"))
        self._waiting.clear()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            await self._dispatch(ws)
        finally:
            self._fail_waiters()

    async def _dispatch(self, ws: ClientConnection) -> None:
        async for message in ws:
            frame = orjson.loads(message)
            if frame.get("type") == "event":
                state = self._rooms.get(frame["room"])
                if state is None:
                    continue
                if state.pending is not None:
                    state.pending.append(frame)
                else:
                    await self._deliver(state, frame)
                continue
            waiter = self._waiting.get(frame.get("ref"))
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)

    async def _deliver(self, state: _Room, event: Event) -> None:
        """Hand an event on once: anything at or below the last id seen is a repeat."""
        event_id = parse_id(event["id"]) if "id" in event else None
        if event_id is not None:
            if state.last is not None and event_id <= state.last:
                return
            state.last = event_id
        if self._on_event is not None:
            await _call(self._on_event, event)

    async def _beat(self, ws: ClientConnection, welcome: Event) -> None:
        if welcome.get("role") != "device":
            return
        interval = float(welcome["heartbeat"]["interval"])
        while True:
            data = self._heartbeat() if self._heartbeat is not None else {"status": "ok"}
            await ws.send(orjson.dumps({"op": "heartbeat", "data": data}).decode())
            await asyncio.sleep(interval)


async def _call(handler: Callable[[Any], Awaitable[None] | None], argument: Any) -> None:
    """Run a user handler; its failure is logged, never the end of the connection."""
    try:
        result = handler(argument)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("event handler failed")
