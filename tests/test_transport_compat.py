"""What hub/transport.py takes from uvicorn's private sans-I/O WebSocket protocol still exists.

`HubWebSocketProtocol` subclasses `WebSocketsSansIOProtocol`, which is no public API: an
uvicorn release may rename or drop any of it without notice. These tests name the missing
piece when that happens, rather than leave it to a socket that misbehaves under load. The
lists below are checked against hub/transport.py itself, so a new use there must be added.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.metadata
import inspect
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

ROOT = Path(__file__).resolve().parent.parent
TRANSPORT_PY = ROOT / "hub" / "transport.py"
MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
BASE = "WebSocketsSansIOProtocol"
VERSION = importlib.metadata.version("uvicorn")

OVERRIDDEN = {
    "__init__",
    "connection_lost",
    "handle_connect",
    "send",
    "keepalive_timeout",
    "shutdown",
}
"""Methods hub overrides and calls through `super()`."""

REPLACED = {"data_received", "handle_events", "send_receive_event_to_app", "receive"}
"""Methods hub replaces whole: uvicorn must still call them, as they are."""

CALLED = {
    "handle_pong",
    "handle_close",
    "handle_cont",
    "handle_text",
    "handle_bytes",
    "schedule_ping",
}
"""uvicorn's methods that hub calls on `self`."""

OWN_VERBS = {
    "write",
    "buffered",
    "drained",
    "keepalive",
    "close",
    "_closing",
    "cause",
    "peer",
    "read",
    "_took",
    "_parse",
    "_answer_ping",
    "_refuse_frame",
    "_linger",
    "_sent_close",
    "_unread",
    "_lingered",
    "_reading",
    "_resume",
}
"""Methods and attributes hub adds: uvicorn must not have (and so use) its own of the same
name."""

INSTANCE_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "scope": dict,
    "transport": asyncio.Transport,
    "close_sent": bool,
    "handshake_complete": bool,
    "handshake_initiated": bool,
    "queue": asyncio.Queue,
    "loop": asyncio.AbstractEventLoop,
    "conn": ServerProtocol,
    "read_paused": bool,
    "close_timer": (asyncio.TimerHandle, type(None)),
    "writable": asyncio.Event,
    "frames": list,
    "curr_msg_data_type": str,
    "ping_interval": (float, int, type(None)),
    "ping_timer": (asyncio.TimerHandle, type(None)),
}
"""State of an accepted socket that hub reads or sets, and what it must be."""

CONN_METHODS = {"send_close", "send_pong", "data_to_send", "receive_data", "events_received"}
"""What hub calls on `conn`, the websockets `ServerProtocol`."""

CONN_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "close_sent": (object, type(None)),
    "parser_exc": (Exception, type(None)),
    "events": list,
    "parser": types.GeneratorType,
}
"""What hub reads on `conn` (and `PongsWithheld` appends its pings to)."""

HANDSHAKE = (
    b"GET /v1/ws HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def _relies(what: str) -> str:
    return f"uvicorn {VERSION}: {what}, which hub/transport.py relies on"


def _base() -> type[Any]:
    try:
        module = importlib.import_module(MODULE)
    except ImportError as error:
        pytest.fail(_relies(f"there is no module {MODULE} ({error})"))
    base = getattr(module, BASE, None)
    if not isinstance(base, type):
        pytest.fail(_relies(f"{MODULE} no longer has {BASE}"))
    return base


class _Uses(ast.NodeVisitor):
    """What one class body takes from `self`, `self.conn` and `super()`."""

    def __init__(self) -> None:
        self.on_self: set[str] = set()
        self.on_conn: set[str] = set()
        self.through_super: set[str] = set()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        value = node.value
        if isinstance(value, ast.Name) and value.id == "self":
            self.on_self.add(node.attr)
        elif (
            isinstance(value, ast.Attribute)
            and isinstance(value.value, ast.Name)
            and value.value.id == "self"
            and value.attr == "conn"
        ):
            self.on_conn.add(node.attr)
        elif (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "super"
        ):
            self.through_super.add(node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(self, "name", default)
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "self"
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            self.on_self.add(node.args[1].value)
        self.generic_visit(node)


def _hub_class() -> ast.ClassDef:
    tree = ast.parse(TRANSPORT_PY.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "HubWebSocketProtocol":
            return node
    raise AssertionError("hub/transport.py has no class HubWebSocketProtocol")


def test_uvicorn_is_pinned_to_a_tested_range_and_installed_within_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [pin] = [
        Requirement(spec) for spec in project["dependencies"] if Requirement(spec).name == "uvicorn"
    ]
    assert any(clause.operator in ("<", "<=", "==", "~=") for clause in pin.specifier), (
        f"pyproject.toml pins {pin} with no upper bound: hub/transport.py subclasses a "
        "private uvicorn class, so allow only releases this test has run against"
    )
    assert pin.specifier.contains(Version(VERSION), prereleases=True), (
        f"uvicorn {VERSION} is installed, outside the tested range {pin.specifier} in "
        "pyproject.toml: reinstall from requirements/dev.lock (scripts/install)"
    )


def test_these_lists_cover_everything_hub_transport_takes_from_uvicorn() -> None:
    hub_class = _hub_class()
    uses = _Uses()
    uses.visit(hub_class)
    defined = {
        node.name
        for node in hub_class.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    } | {
        node.target.id
        for node in hub_class.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    unlisted = uses.on_self - defined - set(INSTANCE_ATTRIBUTES) - OVERRIDDEN - REPLACED - CALLED
    assert not unlisted, (
        f"hub/transport.py now uses self.{', self.'.join(sorted(unlisted))} from uvicorn: "
        "add it to INSTANCE_ATTRIBUTES in tests/test_transport_compat.py"
    )
    assert uses.on_conn - {"__class__"} <= CONN_METHODS | set(CONN_ATTRIBUTES), (
        f"hub/transport.py now calls self.conn.{', self.conn.'.join(sorted(uses.on_conn))}: "
        "add it to CONN_METHODS in tests/test_transport_compat.py"
    )
    assert uses.through_super == OVERRIDDEN, (
        f"hub/transport.py calls super().{', super().'.join(sorted(uses.through_super))}: "
        "make OVERRIDDEN in tests/test_transport_compat.py say the same"
    )
    assert defined == OVERRIDDEN | REPLACED | OWN_VERBS, (
        f"HubWebSocketProtocol defines {', '.join(sorted(defined))}: "
        "sort each into OVERRIDDEN, REPLACED or OWN_VERBS in tests/test_transport_compat.py"
    )


@pytest.mark.parametrize("name", sorted(CALLED))
def test_each_method_hub_calls_is_still_there(name: str) -> None:
    if not callable(getattr(_base(), name, None)):
        pytest.fail(_relies(f"{BASE} no longer has `{name}`"))


def test_websockets_still_answers_pings_in_recv_frame_and_keeps_events() -> None:
    """`PongsWithheld` takes pings out of `recv_frame`, and appends them to `events`."""
    from hub.transport import PongsWithheld

    arguments = list(inspect.signature(ServerProtocol.recv_frame).parameters)
    assert arguments == ["self", "frame"], _relies("ServerProtocol.recv_frame changed")
    conn = PongsWithheld()
    conn.receive_data(HANDSHAKE)
    [request] = conn.events_received()
    assert isinstance(request, Request)
    conn.send_response(conn.accept(request))
    conn.data_to_send()
    conn.receive_data(b"\x89\x80abcd")  # a masked, empty ping
    assert conn.data_to_send() == [], "websockets answered a ping itself"
    [ping] = conn.events_received()
    assert isinstance(ping, Frame)
    assert ping.opcode is Opcode.PING


@pytest.mark.parametrize("name", sorted(OVERRIDDEN | REPLACED))
def test_each_overridden_method_is_still_there_with_the_same_arguments(name: str) -> None:
    from hub.transport import HubWebSocketProtocol

    base = _base()
    theirs = getattr(base, name, None)
    if not callable(theirs):
        pytest.fail(_relies(f"{BASE} no longer has `{name}`"))
    ours = getattr(HubWebSocketProtocol, name)
    their_arguments = list(inspect.signature(theirs).parameters)
    our_arguments = list(inspect.signature(ours).parameters)
    assert len(their_arguments) == len(our_arguments), _relies(
        f"{BASE}.{name} now takes ({', '.join(their_arguments)}), not "
        f"({', '.join(our_arguments)}) as hub's override does"
    )
    assert inspect.iscoroutinefunction(theirs) == inspect.iscoroutinefunction(ours), _relies(
        f"{BASE}.{name} changed between a coroutine and a plain method"
    )


@pytest.mark.parametrize("name", sorted(OWN_VERBS))
def test_no_method_of_uvicorn_is_shadowed_by_one_of_hubs_own(name: str) -> None:
    assert not hasattr(_base(), name), (
        f"uvicorn {VERSION}: {BASE} now has a `{name}` of its own, which hub/transport.py's "
        f"`{name}` replaces for uvicorn too: check what uvicorn expects of it"
    )


@pytest.mark.parametrize("name", sorted(CONN_METHODS))
def test_the_websockets_protocol_still_has_what_hub_calls(name: str) -> None:
    assert callable(getattr(ServerProtocol, name, None)), _relies(
        f"websockets {importlib.metadata.version('websockets')}: ServerProtocol (the "
        f"protocol's `conn`) no longer has `{name}`"
    )


class _Wire(asyncio.Transport):
    """Just enough of a socket for one handshake, keeping what is written to it."""

    def __init__(self) -> None:
        super().__init__(extra={"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 80)})
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _accept(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})


async def test_an_accepted_socket_has_the_state_hub_reads_and_the_wire_in_its_scope() -> None:
    """The attributes hub uses that uvicorn sets on an instance, not on the class, as it
    has them once a handshake went through (`scope` is only set then)."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from hub.transport import WIRE_EXTENSION, HubWebSocketProtocol

    assert issubclass(HubWebSocketProtocol, _base())
    config = Config(app=_accept, ws=HubWebSocketProtocol, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    protocol = HubWebSocketProtocol(
        config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
    )
    wire = _Wire()
    protocol.connection_made(wire)
    protocol.data_received(HANDSHAKE)
    await asyncio.wait_for(asyncio.gather(*state.tasks), 5)
    assert wire.sent.startswith(b"HTTP/1.1 101"), bytes(wire.sent)

    for name, kind in INSTANCE_ATTRIBUTES.items():
        if not hasattr(protocol, name):
            pytest.fail(_relies(f"{BASE} no longer has `{name}`"))
        value = getattr(protocol, name)
        assert isinstance(value, kind), _relies(
            f"{BASE}.{name} is now a {type(value).__name__}, not a {kind}"
        )
    for name, kind in CONN_ATTRIBUTES.items():
        value = getattr(protocol.conn, name, AttributeError)
        assert isinstance(value, kind), _relies(f"ServerProtocol.{name} is missing or changed")
    assert "extensions" in protocol.scope, _relies(f"{BASE}'s scope has no `extensions`")
    writer: object = protocol.scope["extensions"][WIRE_EXTENSION]
    assert writer is protocol
