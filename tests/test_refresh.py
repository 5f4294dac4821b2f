"""Token refresh on a live socket: the `expiring` notice, the `refresh` op, and HubClient's
token provider."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from websockets.exceptions import ConnectionClosed

from hub.client import HubClient
from hub.protocol import Close
from tests.conftest import NodeFactory
from tests.support import Client, HubNode, eventually, metric, token

NOTICE = 2.0


@pytest.fixture(scope="module")
def node(module_nodes: NodeFactory) -> HubNode:
    """One node with a short notice for the tests that use it: its start was most of each
    one's time. A refresh touches only its own socket; each test keeps to a tenant of its
    own and reads the refresh counter as a difference."""
    return module_nodes("refreshing", refresh_notice=NOTICE)


async def _frame_of_type(client: Client, kind: str, timeout: float = 10) -> dict[str, object]:
    while True:
        frame = await client.recv(timeout)
        if frame.get("type") == kind:
            return frame


async def test_a_refresh_keeps_a_socket_past_its_first_tokens_exp(node: HubNode) -> None:
    tenant = "refresh-kept"
    refreshes = metric(node, "hub_token_refreshes_total")
    first = token("device", "p1", tenant, ttl=3)
    client = await Client.connect(node, first)
    notice = await _frame_of_type(client, "expiring")
    assert isinstance(notice["exp"], int)
    assert notice["exp"] - time.time() <= NOTICE + 0.5
    answer = await client.request("refresh", token=token("device", "p1", tenant, ttl=60))
    assert answer["type"] == "ack"
    assert isinstance(answer["exp"], int)
    assert answer["exp"] > time.time() + 50
    assert metric(node, "hub_token_refreshes_total") - refreshes == 1
    await asyncio.sleep(3.5)  # past the first token's exp
    assert (await client.request("ping"))["type"] == "pong"
    await client.close()


async def test_a_socket_not_refreshed_is_noticed_once_and_closed_at_exp(node: HubNode) -> None:
    client = await Client.connect(node, token("dashboard", "d1", "refresh-unrefreshed", ttl=2))
    notice = await _frame_of_type(client, "expiring")  # less than the notice left: at once
    assert notice["type"] == "expiring"
    assert await client.closed_with(timeout=10) == Close.POLICY


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"sub": "p2"}, "same sub"),
        ({"role": "dashboard"}, "same sub"),
        ({"tenant": "globex"}, "same sub"),
        ({"loc": "hall"}, "same sub"),
        ({"groups": ["g2"]}, "same sub"),
    ],
)
async def test_a_refresh_naming_another_principal_is_forbidden(
    node: HubNode, claims: dict[str, object], says: str
) -> None:
    changed = next(iter(claims))
    base: dict[str, object] = {
        "role": "device",
        "sub": "p1",
        "tenant": f"refresh-{changed}",  # a tenant of each case's own
        "loc": "lobby",
        "groups": ["g1"],
    }
    client = await Client.connect(node, token(**base))  # type: ignore[arg-type]
    other = token(**{**base, **claims, "ttl": 60})  # type: ignore[arg-type]
    answer = await client.request("refresh", token=other)
    assert (answer["type"], answer["code"]) == ("error", "forbidden")
    assert says in answer["message"]
    assert (await client.request("ping"))["type"] == "pong"
    await client.close()


async def test_a_token_that_does_not_verify_changes_nothing(node: HubNode) -> None:
    tenant = "refresh-unverified"
    client = await Client.connect(node, token("dashboard", "d1", tenant, ttl=3))
    for bad in (
        "not-a-jwt",
        token("dashboard", "d1", tenant, secret="another-secret-of-32-bytes-or-more!"),
    ):
        answer = await client.request("refresh", token=bad)
        assert (answer["type"], answer["code"]) == ("error", "forbidden")
        assert answer["message"].startswith("token refused")
    malformed = await client.request("refresh", token="")
    assert (malformed["type"], malformed["code"]) == ("error", "bad_request")
    assert await client.closed_with(timeout=10) == Close.POLICY  # the first exp still holds


async def test_the_rights_of_a_refreshed_token_apply_to_later_requests(node: HubNode) -> None:
    tenant = "refresh-rights"
    client = await Client.connect(node, token("dashboard", "d1", tenant, rooms=["a:*"]))
    refused = await client.request("subscribe", room="b:x")
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    answer = await client.request("refresh", token=token("dashboard", "d1", tenant, rooms=["b:*"]))
    assert answer["type"] == "ack"
    assert (await client.request("subscribe", room="b:x"))["type"] == "ack"
    assert (await client.request("subscribe", room="a:y"))["code"] == "forbidden"
    await client.close()


async def test_hub_client_refreshes_with_its_async_provider(node: HubNode) -> None:
    tenant = "refresh-provider"
    calls: list[float] = []

    async def fresh() -> str:
        calls.append(time.time())
        # The first token lives 3 s, the ones after a minute.
        return token("device", "p1", tenant, ttl=3 if len(calls) == 1 else 60)

    seen: list[dict[str, object]] = []
    client = HubClient([node.ws_url], fresh, on_event=seen.append)
    running = asyncio.create_task(client.run())
    await asyncio.wait_for(client.connected.wait(), 10)
    welcome = client.welcome
    await eventually(lambda: len(calls) >= 2, 10, "the provider to be asked on `expiring`")
    await asyncio.sleep(3)  # past the first token's exp: the same socket still serves
    assert client.welcome is welcome
    answer = node.broadcast(token("operator", "o", tenant), room="device:p1", event="x.n", data={})
    assert answer.status_code == 202
    await eventually(lambda: len(seen) == 1, 10, "the event on the refreshed socket")
    assert client.welcome is welcome
    await client.stop()
    await asyncio.wait_for(running, 10)


async def test_no_notice_is_sent_when_the_notice_is_off(hub_node: NodeFactory) -> None:
    node = hub_node("unnoticed", refresh_notice=0)
    client = await Client.connect(node, token("dashboard", "d1", ttl=2))
    frames: list[dict[str, object]] = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            frames.append(await client.recv(10))
    assert frames == []
    assert client.ws.close_code == Close.POLICY


async def test_a_provider_that_gives_the_same_token_again_is_not_asked_in_a_loop(
    node: HubNode,
) -> None:
    """The hub notices a token with less than HUB_REFRESH_NOTICE left at once: handing it
    the same token again would be noticed again, and again."""
    same = token("device", "p9", "refresh-same-token", ttl=3)
    asked = 0

    def provider() -> str:
        nonlocal asked
        asked += 1
        return same

    client = HubClient([node.ws_url], provider)
    running = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 5)
        await asyncio.sleep(1.5)
        assert asked <= 3  # the handshake, the one notice, and perhaps a reconnect
    finally:
        await client.stop()
        await running
