"""The event stream's bytes (Server-Sent Events), made from the WebSocket frames every
session writes.

A session frames its messages once, as WebSocket text frames, whatever carries them: an
event is framed once per node for all its receivers. A stream unframes them again and
writes each as one SSE message whose `data:` line is the frame's JSON, exactly as a
socket would have received it.
"""

from __future__ import annotations

import orjson

from hub.disconnect import Disconnect

COMMENT = b":\n\n"
"""Written when nothing else was for a heartbeat interval: proxies keep an idle stream, and
the client knows the node is there."""
_DATA = b"data: "
_END = b"\n\n"


def messages(frames: bytes) -> bytes:
    """Each unmasked server text frame in `frames` as one SSE message.

    The hub's JSON has no line breaks (orjson writes none); a payload that had some would
    be split into several `data:` lines, which the client joins with the same breaks.
    """
    out: list[bytes] = []
    at, end = 0, len(frames)
    while at < end:
        size = frames[at + 1] & 0x7F
        at += 2
        if size == 126:
            size = int.from_bytes(frames[at : at + 2], "big")
            at += 2
        elif size == 127:
            size = int.from_bytes(frames[at : at + 8], "big")
            at += 8
        payload = frames[at : at + size]
        at += size
        if b"\n" in payload or b"\r" in payload:
            lines = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            payload = b"\ndata: ".join(lines)
        out.append(_DATA + payload + _END)
    return b"".join(out)


def close_message(cause: Disconnect) -> bytes:
    """The stream's last message: why the hub ends the session, in a socket's close codes."""
    body = orjson.dumps({"code": int(cause.code), "reason": cause.reason})
    return b"event: close\n" + _DATA + body + _END


def chunked(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk: once a stream's headers are out, it writes its
    messages to the connection itself."""
    return b"%x\r\n%b\r\n" % (len(data), data)


_last: tuple[bytes, bytes] = (b"", b"")
"""The frames last made into a chunk, and the chunk: a room's fan-out writes the same
frames object to each member, so each stream of the room takes the chunk made for the
first (holding the frames here keeps their identity from being reused)."""


def chunk(frames: bytes) -> bytes:
    """`frames` as one chunk of SSE messages, made once for all the streams of a room."""
    global _last
    if frames is not _last[0]:
        _last = (frames, chunked(messages(frames)))
    return _last[1]
