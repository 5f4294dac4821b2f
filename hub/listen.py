"""`hub listen`: print rooms' events as JSON lines, resuming across reconnects, and end
with one line naming the cause when the hub refuses for good.

Rooms come from `--room`; a device's own rooms come with the welcome, so a device token
needs no `--room`, any other token does (a usage error, exit 2, before connecting). A
room's current state comes first, each event flagged `"state": true`; `--ack-commands`
makes a device acknowledge each `command` event it prints (`received`, then `done`).
Transient trouble (an unreachable node, a drain, a full node) is one warning line on
stderr per attempt, then a retry with backoff; a permanent refusal (a bad token, a
forbidden room) is `hub: refused: ...` and exit 1. When nobody reads stdout any more
(`hub listen | head -1`), it ends at once, quietly, with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import jwt
import orjson

if TYPE_CHECKING:
    from hub.client import Event, HubClient

DEFAULT_URL = "ws://127.0.0.1:8000/v1/ws"


def add_listen(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `hub listen` with the command line's subcommands."""
    watch = commands.add_parser(
        "listen",
        help="print rooms' events as JSON lines, resuming across reconnects",
        description="Print rooms' events as JSON lines on stdout, resuming across "
        "reconnects. A device token needs no --room: its own rooms come with the welcome. "
        "A refusal for good (bad token, forbidden room) exits 1 with one line.",
    )
    watch.add_argument("--room", action="append", default=[], help="a room (repeat)")
    watch.add_argument(
        "--url",
        action="append",
        default=None,
        help=f"socket URL (repeat for several nodes) [{DEFAULT_URL}]",
    )
    watch.add_argument("--token", help="bearer token [HUB_TOKEN]")
    watch.add_argument(
        "--ack-commands",
        action="store_true",
        help="as a device, send a received and a done receipt for each command event",
    )
    watch.set_defaults(func=functools.partial(listen, usage=watch))


def listen(args: argparse.Namespace, usage: argparse.ArgumentParser) -> None:
    bearer = args.token or os.environ.get("HUB_TOKEN")
    if not bearer:
        usage.error("give --token or set HUB_TOKEN")
    if not args.room and _role(bearer) not in ("device", None):
        usage.error("give --room: only a device's token brings rooms of its own")
    # Here, not at the top: every `hub serve` loads this module, and none needs a client.
    from hub.client import HubClient, Refused

    _log_to_stderr()
    done = False

    async def show(event: Event) -> None:
        nonlocal done
        try:
            sys.stdout.write(orjson.dumps(event).decode() + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (`hub listen | head -1`)
            done = True
            await client.stop()

    def lost(room: str) -> None:
        sys.stderr.write(f"hub: events of {room} may be missing (recovered: false)\n")

    try:
        client = HubClient(
            args.url or [DEFAULT_URL],
            bearer,
            rooms=args.room,
            on_event=show,
            on_lost=lost,
            acknowledge_commands=args.ack_commands,
        )
    except ValueError as error:
        usage.error(str(error))
    try:
        done = asyncio.run(_run(client)) or done
    except Refused as refusal:
        sys.exit(f"hub: refused: {refusal}")
    except KeyboardInterrupt:
        pass
    if done:
        # Nobody reads stdout any more: let the interpreter's last flush go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _run(client: HubClient) -> bool:
    """Run `client` until it ends; True when it ended because nobody reads stdout."""
    stopping: list[asyncio.Task[None]] = []

    def unread() -> None:
        stopping.append(asyncio.create_task(client.stop()))

    with _watching_reader(unread):
        await client.run()
    return bool(stopping)


@contextlib.contextmanager
def _watching_reader(gone: Callable[[], None]) -> Iterator[None]:
    """Call `gone` once the pipe on stdout has lost its reader (`hub listen | head -1`
    after its line), not at the next write, which a quiet room may not bring for hours.
    The kernel marks a pipe's write end in error when its last reader goes, and a watch
    for reading sees only that. Stdout that is not a pipe (a terminal, a file) is not
    watched: a terminal would wake it for every key typed."""
    try:
        stdout = sys.stdout.fileno()
        piped = stat.S_ISFIFO(os.fstat(stdout).st_mode)
    except (OSError, ValueError):
        piped = False
    if not piped:
        yield
        return
    loop = asyncio.get_running_loop()

    def once() -> None:
        loop.remove_reader(stdout)
        gone()

    loop.add_reader(stdout, once)
    try:
        yield
    finally:
        loop.remove_reader(stdout)


def _role(bearer: str) -> str | None:
    """The `role` claim as the token states it, unverified (the hub verifies it); None
    when the token cannot be read, so that the hub's own answer names the problem."""
    with contextlib.suppress(jwt.PyJWTError):
        claims = jwt.decode(bearer, options={"verify_signature": False})
        role = claims.get("role")
        return role if isinstance(role, str) else ""
    return None


class _Line(logging.Formatter):
    """`hub: warning: ...`, one line, no traceback: what a person at a terminal reads."""

    def format(self, record: logging.LogRecord) -> str:
        return f"hub: {record.levelname.lower()}: {record.getMessage()}"


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Line())
    client_log = logging.getLogger("hub.client")
    client_log.addHandler(handler)
    client_log.setLevel(logging.WARNING)
    client_log.propagate = False
