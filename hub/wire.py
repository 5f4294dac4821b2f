"""The seam between a session and the connection that carries it.

A session reads the peer's messages, writes already-framed bytes, and closes with a
`Disconnect`; it never knows how the bytes travel. The WebSocket transport
(`hub.transport.HubWebSocketProtocol`) is one wire; a test's in-process wire is another.

Reading is pulled: a wire parses nothing ahead of what its session asks for, so a session
that stops calling `read` (a publish waiting for the broker) has stopped the peer's reads,
and calling it again resumes them.
"""

from __future__ import annotations

from typing import Any, Protocol

from hub.disconnect import Disconnect

Message = str | bytes
"""A whole message from the peer: text, or binary (which the hub refuses)."""


class Peer(Protocol):
    """What a wire tells its session about, between reads."""

    def pinged(self, pong: bytes) -> None:
        """The peer pinged: `pong` is the framed answer, for the session to send when
        the peer's budget allows it, or never."""


class Wire(Protocol):
    """A session's connection: messages in, framed bytes out, and why it closed."""

    peer: Peer | None
    """Told of the peer's pings; None until a session takes the wire."""

    @property
    def hello(self) -> dict[str, Any] | None:
        """What the welcome says of the wire, if anything (an event stream's session)."""

    @property
    def cause(self) -> Disconnect | None:
        """Why the hub closed the connection, if it did (None: the peer went)."""

    async def read(self) -> Message | None:
        """The peer's next message; None once the connection is closed."""

    def write(self, frames: bytes) -> int:
        """Queue already-framed messages, never blocking; return the bytes now waiting
        for the kernel (0 once the connection is closing)."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""

    async def drained(self) -> None:
        """Return once the kernel has taken most of what waits (or the connection is gone)."""

    def keepalive(self, interval: float) -> None:
        """Keep the connection alive every `interval` seconds from now on, in place of the
        node's (`HUB_PING_INTERVAL`): for a device that claims its own heartbeat interval."""

    def close(self, cause: Disconnect) -> None:
        """Say why in a close, and drop the connection if the peer does not answer in time."""
