"""Lua scripts on Redis: registered as the deployment runs them, loaded again where Redis
lost them (a restart empties its script cache), and called in pipelines by their hash."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from hub.redis.clients import RedisClient


def dialect(script: str, sharded: bool) -> str:
    """`script` as a cluster runs it: room events over sharded pub/sub."""
    return script.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',") if sharded else script


def register(client: RedisClient, script: str, sharded: bool) -> AsyncScript:
    """`script` on `client`, in the deployment's `dialect`; called on its own, it loads
    itself into a Redis that lacks it."""
    return client.register_script(dialect(script, sharded))


async def load(client: RedisClient, scripts: Iterable[AsyncScript]) -> None:
    """Load `scripts` into Redis, for the calls that name them by their hash alone (in a
    pipeline), which fail where Redis lost them."""
    for script in scripts:
        await client.script_load(script.script)


def new_epoch() -> str:
    """A fresh history epoch, which a script uses only where a room's history has none."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of a script by its hash."""

    script: AsyncScript
    slot: str
    """A key of the slot the script works in, for a cluster to route it by."""
    args: Sequence[Any]


async def call_all(client: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """Every reply (or its error) of `calls`, sent in order in one pipeline; those Redis
    answers NOSCRIPT (it lost the scripts: a restart) are sent once more after loading
    their scripts again."""
    results = await _pipeline(client, calls)
    lost = [at for at, result in enumerate(results) if isinstance(result, NoScriptError)]
    if lost:
        await load(client, {id(calls[at].script): calls[at].script for at in lost}.values())
        again = await _pipeline(client, [calls[at] for at in lost])
        for at, result in zip(lost, again, strict=True):
            results[at] = result
    return results


async def _pipeline(client: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.execute_command("EVALSHA", call.script.sha, 1, call.slot, *call.args)
    results: list[Any] = await pipe.execute(raise_on_error=False)
    return results
