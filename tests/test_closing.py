"""Closes and refusals that reach a peer still sending, and pings that cannot grow a node.

Each client here is a raw socket that writes everything it means to send before it reads a
byte, as the outside probe of the hub did.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.frames import Frame, Opcode

from hub.transport import CLOSE_TIMEOUT
from loadtest.wire import RawSocket, open_many
from tests.conftest import NodeFactory
from tests.support import HubNode, eventually, metric, token

UPGRADE = (
    "GET /v1/ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "{headers}\r\n"
)


CHURN_SOCKETS = 400
CHURN_ROUNDS = 5


def upgrade(bearer: str = "", query: str = "", headers: bytes = b"") -> bytes:
    """A WebSocket upgrade request, as bytes (headers may be anything an attacker sends)."""
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    head = UPGRADE.format(query=query, headers=auth).encode("latin-1")
    return head[:-2] + headers + b"\r\n"


def client_frame(opcode: Opcode, payload: bytes) -> bytes:
    """A masked client frame, as RFC 6455 requires of clients."""
    return Frame(opcode, payload).serialize(mask=True)


def everything_read(raw: socket.socket, enough: Callable[[bytes], bool] | None = None) -> bytes:
    """What the node sends until it closes, or until `enough` of it came; a reset before
    the end fails the test."""
    raw.settimeout(15)
    got = b""
    try:
        while (enough is None or not enough(got)) and (chunk := raw.recv(65536)):
            got += chunk
    except ConnectionResetError:
        pytest.fail(f"connection reset after {len(got)} bytes: {got[-200:]!r}")
    finally:
        raw.close()
    return got


def close_code(received: bytes) -> int | None:
    """The code of the close frame at the end of what a server sent, if any."""
    at = received.rfind(b"\x88")
    while at >= 0:
        length = received[at + 1]
        if 2 <= length < 126 and at + 2 + length == len(received):
            code: int = struct.unpack_from("!H", received, at + 2)[0]
            return code
        at = received.rfind(b"\x88", 0, at)
    return None


def closed_by_node(raw: socket.socket) -> int | None:
    """The code of the node's close frame, read as a peer reads (a reset before it fails
    the test). The peer then leaves without its own close frame: the node's wait for it is
    the node's close timeout, not the test's."""
    return close_code(everything_read(raw, lambda got: close_code(got) is not None))


def sent_whole(node: HubNode, data: bytes) -> socket.socket:
    """A raw connection that writes `data` whole before it reads anything."""
    raw = socket.create_connection(("127.0.0.1", node.port), timeout=15)
    with contextlib.suppress(OSError):  # the node may close while the rest is on its way
        raw.sendall(data)
    return raw


def opened(node: HubNode, bearer: str, receive_buffer: int | None = None) -> socket.socket:
    """A raw socket past its handshake (a client sends frames only after the 101); with
    `receive_buffer`, a peer that can take only that much unread (set before it connects,
    so that its window is that small from the start)."""
    raw = socket.socket()
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(15)
    raw.connect(("127.0.0.1", node.port))
    raw.sendall(upgrade(bearer))
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return raw


def sent_after_upgrade(node: HubNode, bearer: str, frames: bytes) -> socket.socket:
    """A socket that writes `frames` whole, past its handshake, before it reads on."""
    raw = opened(node, bearer)
    with contextlib.suppress(OSError):  # the node may close while the rest is on its way
        raw.sendall(frames)
    return raw


def rss_kib(node: HubNode) -> int:
    assert node.process is not None
    status = Path(f"/proc/{node.process.pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1])


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubNode]:
    """One node with the default frame limits, shared by the tests that only read."""
    node = HubNode("strict", log_dir=tmp_path_factory.mktemp("strict"), ping_interval=600)
    node.start()
    yield node
    node.stop()


@pytest.mark.parametrize("round_", range(5))
def test_a_frame_over_the_limit_is_answered_with_a_1009_the_peer_reads(
    strict: HubNode, round_: int
) -> None:
    frame = client_frame(Opcode.TEXT, b"x" * 70_000)
    raw = sent_after_upgrade(strict, token("dashboard", f"big-{round_}"), frame)
    assert closed_by_node(raw) == 1009


def test_frames_past_the_rate_are_answered_with_a_4029_the_peer_reads(strict: HubNode) -> None:
    ping = client_frame(Opcode.TEXT, b'{"op":"ping"}')
    raw = sent_after_upgrade(strict, token("dashboard", "chatty"), ping * 3000)
    assert closed_by_node(raw) == 4029


def test_a_text_frame_that_is_not_utf8_is_closed_1007_without_a_traceback(
    strict: HubNode,
) -> None:
    bad = client_frame(Opcode.TEXT, b'{"op":"ping","ref":"\xff\xfe"}')
    raw = sent_after_upgrade(strict, token("dashboard", "latin"), bad)
    assert closed_by_node(raw) == 1007
    assert "Traceback" not in strict.output()


NOT_UTF8_BODY = b'{"room":"r","event":"a.b","data":{"k":"\xff\xfe"}}'


def _token_of_bytes(payload: bytes) -> str:
    """A token whose payload segment decodes to `payload` (signature of no key)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(b'{"alg":"HS256","typ":"JWT"}')
    return f"{header}.{part(payload)}.{part(b'sig')}"


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (upgrade(headers=b"Authorization: Bearer \xff\xfe\xfd\r\n"), b"401"),
        (upgrade(query="?token=%ff%fe"), b"401"),
        (upgrade(query="?token=\xff\xfe"), b"40"),
        (upgrade(_token_of_bytes(b'{"sub":"\xff\xfe"}')), b"401"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: http://\xff\r\nConnection: close\r\n\r\n",
            b"200",
        ),
        (b"GET /v1/rooms/%ff%fe/history HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"4"),
        (
            b"GET /v1/devices?cursor=%ff&status=\xff HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token("operator", "o").encode() + b"\r\n"
            b"Connection: close\r\n\r\n",
            b"400",
        ),
        (
            b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token("operator", "o").encode() + b"\r\n"
            b"Idempotency-Key: k\xff\r\nContent-Length: 2\r\n\r\n{}",
            b"400",
        ),
        (
            b"POST /v1/broadcast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token("operator", "o").encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(NOT_UTF8_BODY), NOT_UTF8_BODY),
            b"400",
        ),
    ],
    ids=[
        "header",
        "escaped query",
        "raw query",
        "token payload",
        "origin",
        "path",
        "query of a read",
        "idempotency key",
        "body",
    ],
)
def test_invalid_utf8_anywhere_is_refused_cleanly(
    strict: HubNode, request_: bytes, status: bytes
) -> None:
    answer = everything_read(sent_whole(strict, request_))
    assert answer.split(b" ")[1].startswith(status), answer[:300]
    assert "Traceback" not in strict.output()


def test_json_strings_that_are_no_unicode_are_a_bad_request(strict: HubNode) -> None:
    lone = client_frame(Opcode.TEXT, b'{"op":"subscribe","ref":1,"room":"\\udc80"}')
    raw = sent_after_upgrade(strict, token("dashboard", "lone"), lone)
    answer = b""
    while b'"type":"error"' not in answer:
        answer += raw.recv(65536)
    raw.close()
    assert b'"code":"bad_request"' in answer
    assert "Traceback" not in strict.output()


def test_an_upgrade_with_a_200_kb_authorization_header_is_answered_431(strict: HubNode) -> None:
    request_ = upgrade(headers=b"Authorization: Bearer " + b"a" * 200_000 + b"\r\n")
    answer = everything_read(sent_whole(strict, request_))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


async def test_a_ping_flood_that_never_reads_barely_grows_the_node(
    hub_node: NodeFactory,
) -> None:
    """40 MiB of 125-byte pings, 500 a write, from a socket that never reads: the node
    stops answering at the socket's frame budget, closes it, and reads no further than
    its lingering bounds."""
    node = hub_node("flooded", ping_interval=600)
    before = rss_kib(node)
    raw = opened(node, token("dashboard", "pinger"))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    burst = client_frame(Opcode.PING, b"p" * 125) * 500
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):  # the node drops the socket while it floods
        for _ in range((40 << 20) // len(burst)):
            await loop.sock_sendall(raw, burst)
    raw.close()
    grown = rss_kib(node) - before
    assert grown < 4096, f"the node grew by {grown} KiB under the flood"
    await eventually(
        lambda: metric(node, 'hub_messages_dropped_total{reason="rate_limited"}') > 0,
        10,
        "the pings past the budget to be counted",
    )


def test_a_peer_that_stopped_reading_is_reset_after_the_close_timeout(strict: HubNode) -> None:
    """Pings past the rate from a peer that reads nothing: the node closes, and once
    `CLOSE_TIMEOUT` has passed with its pongs still unread, resets the connection. Closed
    instead, the socket stayed in the kernel for minutes, trying to deliver them, while a
    flooding peer waited on it (the ping flood above took 108 s instead of 1)."""
    raw = opened(strict, token("dashboard", "mute"), receive_buffer=4096)
    raw.sendall(client_frame(Opcode.PING, b"p" * 125) * 2000)
    # Not a wait for something to happen: the peer must read nothing until the node has
    # given up on it, which is all there is to observe.
    time.sleep(CLOSE_TIMEOUT + 2)
    with pytest.raises(ConnectionResetError):
        _read_to_end(raw)  # after a plain close: every pong, then the close, then the end
    raw.close()


def _read_to_end(raw: socket.socket) -> None:
    while raw.recv(65536):
        pass


async def test_sockets_that_come_and_go_leave_nothing_behind(hub_node: NodeFactory) -> None:
    """A socket and its session are tied in cycles that a node collects only rarely (it
    tunes its collector for long-lived sockets): closed, they must go by reference counts,
    or every reconnect grows the node by what a socket holds."""
    node = hub_node("churn")
    tokens = [token("device", f"churn-{i}") for i in range(CHURN_SOCKETS)]
    sizes = []
    for _ in range(CHURN_ROUNDS):
        sockets = await open_many(
            RawSocket, [node.port], range(CHURN_SOCKETS), tokens.__getitem__, 60
        )
        for opened in sockets:
            opened.transport.close()
        await eventually(
            lambda: metric(node, 'hub_connections{role="device"}') == 0, 10, "the sockets to go"
        )
        sizes.append(rss_kib(node))
    grown = sizes[-1] - sizes[1]  # the first round warms the node up
    assert grown < CHURN_SOCKETS, f"{CHURN_ROUNDS - 2} rounds grew the node by {grown} KiB"
