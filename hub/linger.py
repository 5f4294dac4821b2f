"""How long a connection the node refused or closed is still read from.

A connection closed while the peer's bytes wait unread in the kernel is reset, not closed,
and the reset makes the peer's kernel throw away what it had not read yet: the answer
that says why included (a 431, a 1009 close). So the node reads on after its answer, and
discards, until the peer closes or one of these bounds is reached (RFC 6455 7.1.1, RFC 9112
9.6). A peer that sends past them does not read anyway, and is dropped (`drop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios

LINGER_SECONDS = 2.0
"""How long a refused HTTP request is read from after its answer."""
LINGER_BYTES = 1 << 20
"""What a peer may send after the node's answer or close before it is dropped."""
LINGER_PARSED_BYTES = 65536
"""How much of that a closing WebSocket parses, looking for the peer's close: parsing
costs, discarding does not."""


_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, for no time: close() resets the connection."""


def drop(transport: asyncio.Transport) -> None:
    """Drop a peer past the lingering bounds: closed as usual once it has read all the
    node sent, reset while some of it waits unread. Closed then, the socket would stay
    in the kernel for minutes, trying to deliver to a peer that does not read (a flooding
    peer waiting on it all that time), holding the kernel's memory for it."""
    sock = transport.get_extra_info("socket")
    if sock is not None and (transport.get_write_buffer_size() or _unsent(sock.fileno())):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()


def _unsent(descriptor: int) -> int:
    """Bytes the kernel holds for the peer, sent or not, that it has not acknowledged."""
    try:
        answer = fcntl.ioctl(descriptor, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    count: int = struct.unpack("i", answer)[0]
    return count
