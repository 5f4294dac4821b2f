"""The event-stream wire in the test's process: a session on it, its response written
through a recording ASGI `send`, and what is left of both once the client has gone."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from hub import sse
from hub.disconnect import SLOW_CONSUMER
from hub.protocol import websocket_text_frame
from hub.session import Session
from hub.stream import StreamWire
from tests.inprocess import running
from tests.support import token


class Transport(asyncio.WriteTransport):
    """A connection's transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees objects: what a cycle holds stays, as it would until
    a node's next full collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_frames_become_one_sse_message_each_whatever_their_length() -> None:
    payloads = [b'{"n":1}', b'{"x":"' + b"y" * 200 + b'"}', b'{"x":"' + b"z" * 70_000 + b'"}']
    framed = b"".join(websocket_text_frame(payload) for payload in payloads)
    assert sse.messages(framed) == b"".join(b"data: " + p + b"\n\n" for p in payloads)
    assert sse.messages(websocket_text_frame(b"a\nb\r\nc")) == b"data: a\ndata: b\ndata: c\n\n"
    one_chunk = sse.chunk(framed)  # what each stream of a room writes: made once for all
    assert one_chunk == b"%x\r\n%b\r\n" % (len(sse.messages(framed)), sse.messages(framed))
    assert sse.chunk(framed) is one_chunk
    assert sse.chunk(bytes(framed)) == one_chunk  # other frames: made again, the same
    assert sse.close_message(SLOW_CONSUMER) == (
        b'event: close\ndata: {"code":4009,"reason":"slow consumer"}\n\n'
    )


async def test_a_stream_whose_client_went_leaves_nothing_behind(no_collector: None) -> None:
    async with running() as harness:
        sent: list[dict[str, Any]] = []
        gone, welcomed = asyncio.Event(), asyncio.Event()

        async def send(message: Any) -> None:
            sent.append(message)
            if len(sent) == 2:  # the headers, then the welcome
                welcomed.set()

        async def receive() -> Any:
            await gone.wait()
            return {"type": "http.disconnect"}

        principal = await harness._auth.verify(token("device", "d1"))
        transport = Transport()
        wire = StreamWire(principal.sub, principal.tenant, 15.0, 200, transport)
        session = Session(harness._sessions, principal, wire)
        running_session = asyncio.create_task(session.run())
        serving = asyncio.create_task(wire.serve(send, receive))
        await asyncio.wait_for(welcomed.wait(), 5)
        assert sent[0]["status"] == 200
        welcome = orjson.loads(sent[1]["body"].removeprefix(b"data: "))
        assert welcome["stream"]["session"] == wire.id
        wire.write(websocket_text_frame(b'{"n":1}'))
        assert transport.written == [b'f\r\ndata: {"n":1}\n\n\r\n']  # one chunk, straight out

        gone.set()
        await asyncio.gather(running_session, serving)
        del wire, session, running_session, serving
        left = [kept for kept in gc.get_objects() if isinstance(kept, StreamWire | Session)]
        assert left == []
