"""What a failure of Redis is to the hub, and what follows from it: a request is refused
with `BrokerUnavailable` (its client may retry), and a task that runs in the background
reports the failure, or logs it, and tries again after a `hub.backoff.reconnect_backoff()`
wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from hub.errors import BrokerUnavailable

FAILURES: tuple[type[Exception], ...] = (RedisError, OSError)
"""What a command raises when Redis did not carry it out: the client's errors (a timeout,
a lost connection, a refusal) and those of the socket under it."""


@contextmanager
def unavailable(what: str, *also: type[Exception]) -> Iterator[None]:
    """Refuse the request when Redis fails it (or it raises one of `also`): `what` and
    the error are the refusal's `detail`, for the log."""
    try:
        yield
    except (*FAILURES, *also) as error:
        raise BrokerUnavailable(f"{what}: {error}") from error
