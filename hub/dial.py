"""How the client reaches a node: a WebSocket first; the event stream when a WebSocket
does not open while the node answers plain HTTP (a proxy that refuses upgrades); and a
WebSocket again now and then, since proxies change and a socket costs less.

Either way the client gets a `Connection`, read and written alike. An answer to the
opening is an `Answer`; only one in the hub's own words (its JSON error body) is the hub
refusing the client, a proxy's page never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from hub.protocol import Transport
from hub.redact import redact_path
from hub.stream_client import StreamConnection, StreamRefused, stream_url

log = logging.getLogger("hub.client")

OPEN_TIMEOUT = 10.0
"""Seconds an opening may take, socket or stream."""
RETRY_AFTER_CAP = 300.0
"""The longest `Retry-After` honoured: a hostile or broken answer cannot park the client."""
CONNECTION_ERRORS = (OSError, WebSocketException, TimeoutError, httpx.HTTPError)
"""What a connection that could not open, or broke, raises."""


class Connection(Protocol):
    """What the client uses of a connection, whatever carries it."""

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str | None: ...

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...

    async def close(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...


@dataclass
class Answer(Exception):
    """The opening was answered with an HTTP status instead of a connection."""

    status: int
    message: str
    code: str | None
    """The hub's error code: None when something else answered (a proxy, another server)."""
    retry_after: float

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


def answer_of(status: int, reason: str, body: bytes, headers: Mapping[str, str]) -> Answer:
    """The status, the hub's message and code when the body is its error, and the
    `Retry-After` (delta-seconds only, at most `RETRY_AFTER_CAP`; 0 when there is none)."""
    message, code = reason, None
    with contextlib.suppress(orjson.JSONDecodeError):
        said = orjson.loads(body or b"")
        error = said.get("error") if isinstance(said, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
            code = error["code"] if isinstance(error.get("code"), str) else None
    value = headers.get("retry-after", "").strip()
    wait = min(float(value[:6]), RETRY_AFTER_CAP) if value.isascii() and value.isdigit() else 0.0
    return Answer(status, message, code, wait)


class Dialer:
    """Opens a client's connections, and remembers which transport gets through."""

    def __init__(self) -> None:
        self.transport = Transport.WEBSOCKET

    async def open(self, url: str, token: str, current: Callable[[], str]) -> Connection:
        """A connection to `url` (`ws://host/v1/ws`) with `token`; `current` is the token
        the session holds later (a refresh replaces it), which a stream's POSTs carry."""
        if self.transport is Transport.STREAM:
            return await _stream(url, token, current)
        try:
            return await _socket(url, token)
        except Answer as answer:
            if answer.code is not None:
                raise
            failed: Exception = answer
        except CONNECTION_ERRORS as error:
            failed = error
        try:
            connection = await _stream(url, token, current)
        except Answer as answer:
            if answer.code is not None:
                raise  # the hub answers over HTTP: its refusal stands
            raise failed from None
        except CONNECTION_ERRORS:
            raise failed from None
        self.transport = Transport.STREAM
        log.warning(
            "a WebSocket to %s did not open (%s) but the event stream did: a proxy that "
            "refuses upgrades? Using the stream, and trying a WebSocket again now and then",
            redact_path(url),
            failed,
        )
        return connection

    async def websocket_again(
        self, stream: Connection, url: str, token: Callable[[], str], every: float
    ) -> None:
        """On the event stream, try a WebSocket every `every` seconds; once one opens, end
        the stream: the next connection is a socket, and resumes every room."""
        while True:
            await asyncio.sleep(every)
            try:
                probe = await _socket(url, token())
            except (Answer, *CONNECTION_ERRORS):
                continue
            await probe.close()
            self.transport = Transport.WEBSOCKET
            log.warning("a WebSocket to %s opens again: leaving the event stream", url)
            await stream.close()
            return


async def _socket(url: str, token: str) -> Connection:
    try:
        return await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            open_timeout=OPEN_TIMEOUT,
        )
    except InvalidStatus as error:
        response = error.response
        raise answer_of(
            response.status_code,
            response.reason_phrase,
            bytes(response.body or b""),
            response.headers,
        ) from None


async def _stream(url: str, token: str, current: Callable[[], str]) -> Connection:
    try:
        return await StreamConnection.open(stream_url(url), token, current, OPEN_TIMEOUT)
    except StreamRefused as refused:
        raise answer_of(refused.status, refused.reason, refused.body, refused.headers) from None


def cut(connection: Connection) -> None:
    """Drop `connection` without a close, as a network would."""
    if isinstance(connection, StreamConnection):
        connection.abort()
    elif isinstance(connection, ClientConnection):
        connection.transport.abort()
