"""The client's side of the event stream: for a client whose WebSocket opens fail while the
node answers HTTP (a proxy that refuses upgrades), a connection with the part of a
`websockets` connection that `hub.client` uses.

Frames come as the stream's SSE messages; frames go as POSTs, one at a time and in order,
each carrying every frame sent while the one before was on its way (at most
`MAX_POST_FRAMES`). When the hub ends the session its `close` event ends the connection as
a close frame would, with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from hub.protocol import MAX_POST_FRAMES

STREAM_PATH = "/v1/stream"
POST_TIMEOUT = 30.0
RETRY_FIRST = 0.1
RETRY_LAST = 2.0
"""The first and the longest wait between two tries of a POST."""
_JSON = "application/json"
ABNORMAL = 1006
"""The close code of a stream that ended without the hub's `close` event."""
_OK = frozenset({1000, 1001})


class StreamRefused(Exception):
    """`GET /v1/stream` answered with something else than a stream."""

    def __init__(self, status: int, reason: str, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers


def stream_url(socket_url: str) -> str:
    """`ws://host:port/v1/ws` to `http://host:port/v1/stream` (wss to https)."""
    parts = urlsplit(socket_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, STREAM_PATH, "", ""))


class StreamConnection:
    """One event-stream session, read and written like a socket."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        response: httpx.Response,
        base: str,
        token: Callable[[], str],
    ) -> None:
        self._http = http
        self._response = response
        self._base = base
        self._token = token
        """The token the session holds now: a refresh replaces the opening's."""
        self._lines = response.aiter_lines()
        self._outbox: list[tuple[str, asyncio.Future[None]]] = []
        self._posting: asyncio.Task[None] | None = None
        self._post_url: str | None = None
        self._aborting: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""

    @classmethod
    async def open(
        cls, url: str, token: str, current: Callable[[], str], timeout: float
    ) -> StreamConnection:
        """Open the stream at `url` (`http(s)://host/v1/stream`) with `token`, its POSTs
        then carrying `current()`; `StreamRefused` when it answers anything but a stream."""
        http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None))
        try:
            request = http.build_request(
                "GET",
                url,
                headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
            )
            response = await http.send(request, stream=True)
            kind = response.headers.get("content-type", "")
            if response.status_code != 200 or not kind.startswith("text/event-stream"):
                body = await response.aread()
                await response.aclose()
                raise StreamRefused(
                    response.status_code, response.reason_phrase, body[:4096], response.headers
                )
        except BaseException:
            await http.aclose()
            raise
        parts = urlsplit(url)
        return cls(http, response, urlunsplit((parts.scheme, parts.netloc, "", "", "")), current)

    async def recv(self) -> str:
        """The next frame's text; raises as a closed socket does once the stream ends."""
        data: list[str] = []
        event = "message"
        try:
            async for line in self._lines:
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line == "" and data:
                    text = "\n".join(data)
                    if event == "close":
                        self._closed_by_hub(text)
                        break
                    if self._post_url is None:
                        self._post_url = self._base + orjson.loads(text)["stream"]["post"]
                    return text
                # comments (`:`) keep the stream alive, and say nothing
        except httpx.HTTPError:
            pass
        raise self._closed()

    def _closed_by_hub(self, text: str) -> None:
        close = orjson.loads(text)
        self.close_code = int(close.get("code", ABNORMAL))
        self.close_reason = str(close.get("reason", ""))

    def _closed(self) -> ConnectionClosedOK | ConnectionClosedError:
        if self.close_code is None:
            self.close_code = ABNORMAL
        frame = Close(self.close_code, self.close_reason) if self.close_code != ABNORMAL else None
        if self.close_code in _OK:
            return ConnectionClosedOK(frame, None)
        return ConnectionClosedError(frame, None)

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedOK:
                return

    async def send(self, text: str) -> None:
        """Send a frame, returning once the POST that carried it was taken."""
        if self.close_code is not None or self._post_url is None:
            raise self._closed()
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((text, sent))
        if self._posting is None or self._posting.done():
            self._posting = asyncio.create_task(self._post_all())
        await sent

    async def _post_all(self) -> None:
        """POST what waits, a batch at a time, until nothing does."""
        while self._outbox:
            batch, self._outbox = self._outbox[:MAX_POST_FRAMES], self._outbox[MAX_POST_FRAMES:]
            body = "[" + ",".join(text for text, _ in batch) + "]"
            try:
                await self._post(body.encode())
            except Exception as error:
                for _, sent in [*batch, *self._outbox]:
                    if not sent.done():
                        sent.set_exception(error)
                self._outbox = []
                return
            for _, sent in batch:
                if not sent.done():
                    sent.set_result(None)

    async def _post(self, body: bytes) -> None:
        """POST until the session takes the frames. What may pass (the session has not
        read the frames before yet, a node or the balancer in front of it failing, a
        connection lost on the way) is tried again, up to `POST_TIMEOUT`; the session
        gone or the token refused ends the connection."""
        assert self._post_url is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POST_TIMEOUT
        wait = RETRY_FIRST
        while True:
            headers = {"Authorization": f"Bearer {self._token()}", "Content-Type": _JSON}
            status, retry_after = 0, None
            try:
                answer = await self._http.post(
                    self._post_url, content=body, headers=headers, timeout=POST_TIMEOUT
                )
                status, retry_after = answer.status_code, answer.headers.get("retry-after")
            except httpx.HTTPError:
                pass
            if status == 202:
                return
            if status and status != 429 and status < 500:
                self.close_reason = f"POST answered {status}"
                break
            if self.close_code is not None or loop.time() + wait > deadline:
                self.close_reason = f"POST not taken within {POST_TIMEOUT:g} s"
                break
            await asyncio.sleep(_seconds(retry_after) if retry_after else wait)
            wait = min(wait * 2, RETRY_LAST)
        await self.close()
        raise self._closed()

    async def close(self) -> None:
        """End the session: the hub sees the stream's connection end."""
        with contextlib.suppress(httpx.HTTPError):
            await self._response.aclose()
        await self._http.aclose()

    def abort(self) -> None:
        """Drop the stream as a network would (for tests of a client's recovery)."""
        self._aborting = asyncio.get_running_loop().create_task(self.close())


def _seconds(value: Any) -> float:
    try:
        return min(max(float(value), 0.05), 5.0)
    except (TypeError, ValueError):
        return 1.0
