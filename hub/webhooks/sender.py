"""One POST of one webhook message, and the wait before the next try of one that failed.

Connections are made to the address `guard` checked, at the moment it checked it: a name
that resolves to a public address for the check and to a private one for the connect (DNS
rebinding) reaches nothing private. The pool under `Sender` resolves and checks in its
network backend, so the URL, the `Host` header, TLS's server name and certificate check,
and the pool's keep-alive connections all stay keyed by the endpoint's name: a connection
opened and verified for one name is never reused for another that shares its address.
httpx has no hook there, so the pool is httpcore's own, the one under httpx.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore

from hub import __version__
from hub.errors import HubError
from hub.webhooks import guard, signing

TIMEOUT = 15.0
"""Seconds one attempt may take, from resolving the name to the end of the answer."""
MAX_CONNECTIONS = 64
KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept: common servers close theirs after 5 s or more."""
MAX_ANSWER_BYTES = 64 * 1024
"""Bytes of an answer's body read (and dropped): past them its connection is closed rather
than drained."""
MAX_POOLS = 1024
"""Endpoint URLs with a pool of their own at once; the pool of the one used longest ago
goes."""
MAX_ERROR_CHARS = 200
MAX_DELAY = 3600.0
"""Seconds at most between two attempts, whatever the backoff or `Retry-After` say."""
USER_AGENT = f"signage-hub/{__version__} webhooks"


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: the answer's status, or `error` when there was none."""

    status: int | None
    retry_after: float | None
    """Seconds the receiver asked to wait (`Retry-After`), within [0, MAX_DELAY]."""
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """The receiver said the endpoint no longer exists (410): it is removed."""
        return self.status == 410


class Sender:
    """Posts messages over one pool of connections shared by every endpoint.

    No redirect is followed (a 3xx is a failed attempt: the URL registered is the one
    called), no cookie is kept, no proxy setting of the environment is read. `verify`
    replaces the trusted certificate authorities (certifi's by default).
    """

    def __init__(
        self,
        allow_private: bool,
        timeout: float = TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        ssl_context = httpcore.default_ssl_context() if verify is None else verify
        network = _Checked(allow_private)

        def pool() -> httpcore.AsyncConnectionPool:
            return httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY,
                retries=0,  # the engine retries, later, with backoff
                network_backend=network,
            )

        self._pools = _Pools(pool)

    async def send(
        self, url: str, secret: str, msg_id: str, body: bytes, timestamp: int
    ) -> Outcome:
        """Post `body` to `url`, signed; never raises for what the network or the receiver
        did, which the Outcome tells."""
        signed = signing.headers(secret, msg_id, timestamp, body)
        try:
            target = guard.check_url(url)
            async with asyncio.timeout(self._timeout):
                return await self._post(target, signed, body)
        except HubError as refusal:
            return _failed(refusal.message)
        except (TimeoutError, httpcore.TimeoutException):
            return _failed(f"no answer within {self._timeout:g} s")
        except (
            OSError,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
        ) as error:
            return _failed(f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        await self._pools.close()

    async def _post(self, target: guard.Target, signed: dict[str, str], body: bytes) -> Outcome:
        url = httpcore.URL(
            scheme=target.scheme, host=target.host, port=target.port, target=target.target
        )
        headers = [("Host", target.authority), ("User-Agent", USER_AGENT), *signed.items()]
        extensions = {"timeout": self._timeouts}
        pool = self._pools.of(target.url)
        async with pool.stream(
            "POST", url, headers=headers, content=body, extensions=extensions
        ) as answer:
            received = 0
            async for chunk in answer.aiter_stream():
                received += len(chunk)
                if received >= MAX_ANSWER_BYTES:
                    break
        wait = next(
            (value for name, value in answer.headers if name.lower() == b"retry-after"), None
        )
        return Outcome(answer.status, parse_retry_after(wait), None)


class _Pools:
    """A connection pool per endpoint URL, the least recently used closed past
    `MAX_POOLS`: a pool looks at every connection it holds (polling each socket) for every
    request, so one pool for all endpoints made each post cost them all, while an
    endpoint's own holds the few its sends in flight use."""

    def __init__(self, make: Callable[[], httpcore.AsyncConnectionPool]) -> None:
        self._make = make
        self._pools: OrderedDict[str, httpcore.AsyncConnectionPool] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def of(self, url: str) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = self._make()
            if len(self._pools) > MAX_POOLS:
                _, oldest = self._pools.popitem(last=False)
                closing = asyncio.create_task(oldest.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        else:
            self._pools.move_to_end(url)
        return pool

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` value asks to wait (delta-seconds or an HTTP-date), within
    [0, MAX_DELAY]; None when absent or not understood."""
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if text.isdigit() and text.isascii():
        return min(float(text), MAX_DELAY)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, from a source that does not say its zone
        when = when.replace(tzinfo=datetime.UTC)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_DELAY)


def retry_delay(
    attempt: int,
    base: float,
    retry_after: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt `attempt + 1`, `attempt` having failed.

    The wait doubles from `base` up to MAX_DELAY, and is drawn between half of that and all
    of it, so that endpoints which failed together are not all retried at once. A longer
    `Retry-After` from the receiver wins, still within MAX_DELAY.
    """
    if attempt < 1:
        raise ValueError("attempt counts failed attempts, from 1")
    backoff = min(base * 2.0 ** min(attempt - 1, 64), MAX_DELAY) * (0.5 + rand() / 2)
    if retry_after is not None and retry_after > backoff:
        return min(retry_after, MAX_DELAY)
    return backoff


def _failed(error: str) -> Outcome:
    return Outcome(None, None, error[:MAX_ERROR_CHARS])


class _Checked(httpcore.AsyncNetworkBackend):
    """Opens each connection to the address `guard` allowed for the host, checked then.
    (The pool makes one try per connection, so it never asks this backend to sleep.)"""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await guard.resolve_address(host, port, self._allow_private)
        stream = await self._network.connect_tcp(
            address, port, timeout, local_address, socket_options
        )
        return _Closing(stream)


class _Closing(httpcore.AsyncNetworkStream):
    """A connection closed when its TLS handshake is cancelled (the attempt's deadline):
    httpcore closes it on a failed handshake, not on a cancelled one."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            return await self._stream.start_tls(ssl_context, server_hostname, timeout)
        except asyncio.CancelledError:
            await self._stream.aclose()
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
