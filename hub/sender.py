"""One socket's write path: the hot path of the hub, called once per event per receiver.

Sends never wait: a socket with more than `HUB_SEND_QUEUE_BYTES` waiting for the kernel is
shed (closed with 4009), and everything sent to it afterwards is counted as dropped.
"""

from __future__ import annotations

import asyncio
from enum import Enum

from prometheus_client import Counter

from hub.disconnect import SLOW_CONSUMER, Disconnect
from hub.protocol import websocket_text_frame
from hub.stats import Dropped, Tally
from hub.wire import Wire

PACE_TIMEOUT = 30.0
"""How long a paced write waits for the peer to take what it was given."""


class SendState(Enum):
    """Where a socket's write path stands."""

    HOLDING = "holding"
    """Frames wait: before the welcome, so that it goes first, and while a replay goes out
    at the pace the peer reads it; more than the send queue of them sheds the socket."""
    OPEN = "open"
    SHED = "shed"
    """Closing as a slow consumer: what is sent now is dropped, and counted."""
    CLOSED = "closed"


_OPEN = SendState.OPEN
_HOLDING = SendState.HOLDING
_SHED = SendState.SHED


class Sender:
    """Writes a socket's frames without ever waiting, and sheds the socket past its queue bound."""

    __slots__ = ("_held", "_held_bytes", "_limit", "_shed", "_state", "_tally", "_wire")

    def __init__(self, wire: Wire, limit: int, tally: Tally, shed: Counter) -> None:
        self._wire = wire
        self._limit = limit
        self._tally = tally
        self._shed = shed
        self._state = _HOLDING
        self._held: list[bytes] | None = []
        """Only while holding: most sockets hold nothing, most of the time."""
        self._held_bytes = 0

    @property
    def cause(self) -> Disconnect | None:
        """Why the hub closed the socket, if it did."""
        return self._wire.cause

    def send(self, frame: bytes) -> None:
        """Write already-framed messages, or hold them until the welcome."""
        state = self._state
        if state is _OPEN:
            if self._wire.write(frame) > self._limit:
                self._shed_now()
        elif state is _HOLDING:
            assert self._held is not None
            self._held.append(frame)
            self._held_bytes += len(frame)
            if self._held_bytes > self._limit:
                self._shed_now()
        elif state is _SHED:
            self._tally.dropped[Dropped.SLOW_CONSUMER] += 1

    def reply(self, payload: bytes) -> None:
        """Send one server frame of this socket's own (an answer, not a room's event)."""
        self.send(websocket_text_frame(payload))

    def open(self, welcome: bytes) -> None:
        """Send the welcome, then whatever arrived before it."""
        if self._state is _HOLDING:
            self._wire.write(websocket_text_frame(welcome))
            self.release()

    def hold(self) -> None:
        """Keep what is sent from now on until `release` (a paced write goes first)."""
        if self._state is _OPEN:
            self._state = _HOLDING
            self._held = []

    def release(self) -> None:
        """Send what was held, and everything from now on."""
        if self._state is not _HOLDING:
            return
        held, self._held, self._held_bytes = self._held, None, 0
        self._state = _OPEN
        for frame in held or ():
            self.send(frame)

    async def write_paced(self, frames: list[bytes]) -> None:
        """While holding, write `frames` in steps the peer takes: a replay longer than
        the send queue reaches a client that reads, and only one that stops reading (for
        `PACE_TIMEOUT`) is shed."""
        wire, high = self._wire, self._limit // 2
        for frame in frames:
            if self._state is not _HOLDING:
                return
            if wire.write(frame) > high:
                try:
                    await asyncio.wait_for(wire.drained(), PACE_TIMEOUT)
                except TimeoutError:
                    self._shed_now()

    def buffered(self) -> int:
        """Bytes written to the socket and not yet taken by the kernel."""
        return self._wire.buffered()

    def pong(self, frame: bytes) -> None:
        """Write a pong now, ahead of anything held, if it fits in the send queue; a socket
        it would overflow is shed instead."""
        state = self._state
        if state is not _OPEN and state is not _HOLDING:
            return
        if self._wire.buffered() + len(frame) > self._limit:
            self._shed_now()
            return
        self._wire.write(frame)

    def close(self, cause: Disconnect) -> None:
        if self._state is _OPEN or self._state is _HOLDING:
            self._state = SendState.CLOSED
            self._held, self._held_bytes = None, 0
            self._wire.close(cause)

    def stop(self) -> None:
        """The socket is gone: nothing more is sent."""
        self._state = SendState.CLOSED
        self._held, self._held_bytes = None, 0

    def _shed_now(self) -> None:
        self._state = _SHED
        self._held, self._held_bytes = None, 0
        self._shed.inc()
        # Never inside the fan-out loop that is writing: its member set must not change.
        asyncio.get_running_loop().call_soon(self._wire.close, SLOW_CONSUMER)
