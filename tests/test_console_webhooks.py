"""The console's webhooks panel and the broadcast form's reach, in a real Chromium against a
real node: endpoints are listed with their deliveries as they are tried, fail and are sent
again; one registered from the form shows its signing secret once; an admin works on the
tenant its token names; a broadcast says how many sockets each room reached, and that a
room nobody is in reached no one."""

from __future__ import annotations

import base64
import re

import pytest
from playwright.async_api import Page, Request, Route, expect

from tests.conftest import NodeFactory
from tests.support import Client, HubNode, eventually, token
from tests.test_console import open_console
from tests.webhook_receiver import Receiver

RETRY_HOURS = 0.001
"""How long the node retries a message (3.6 s): a failing endpoint's delivery fails within
a test, not after a day."""
SLOW = 20_000
"""Milliseconds to wait for what the panel shows only after the hub has tried, retried
and given up, and the panel has read it again."""


@pytest.fixture(scope="module")
def hooks(module_nodes: NodeFactory) -> HubNode:
    """A node the module's tests share, each in its own `tenant`: webhooks may reach this
    machine, a device's offline is sent at once, and retries run out within seconds."""
    return module_nodes(
        "hooks",
        webhook_allow_private="true",
        webhook_retry_base=0.2,
        webhook_retry_hours=RETRY_HOURS,
        webhook_offline_grace=0,
        broadcast_rate=0,
    )


async def test_the_panel_lists_an_endpoint_with_its_deliveries_and_retries_a_failed_one(
    hooks: HubNode, receiver: Receiver, tenant: str, page: Page
) -> None:
    operator = token("operator", "ops", tenant)
    receiver.status = 503
    description = '<img src=x onerror="alert(1)"> lobby screens'
    answer = hooks.post(
        "/v1/webhooks",
        {"url": receiver.url, "events": ["device.online"], "description": description},
        operator,
    )
    assert answer.status_code == 201, answer.text
    hook = answer.json()["id"]
    device = await Client.connect(hooks, token("device", "player-1", tenant, loc="lobby"))
    try:
        await open_console(page, hooks, operator)
        endpoint = page.locator(f'#webhooks-list .endpoint[data-id="{hook}"]')
        await expect(endpoint.locator(".url")).to_have_text(receiver.url)
        # Text from the hub is shown as text, never as markup.
        await expect(endpoint).to_contain_text(f"device.online · {description}")
        await expect(endpoint.locator("img")).to_have_count(0)

        # Shown as it is tried, then given up, without reloading the page.
        delivery = endpoint.locator("tbody tr").filter(has_text="device.online")
        await expect(delivery).to_have_count(1)
        await expect(delivery).to_have_attribute("data-state", "failed", timeout=SLOW)
        await expect(delivery.locator(".device")).to_have_text("player-1")
        await expect(delivery.locator(".answer")).to_have_text("503")
        tries = int(await delivery.locator(".tries").inner_text())
        assert tries >= 2, "a 503 is retried"
        assert len(receiver.received) == tries
        message = await delivery.get_attribute("data-id")
        assert message == receiver.received[0].headers["webhook-id"]

        receiver.status = 200
        await delivery.get_by_role("button", name="Retry").click()
        await expect(delivery).to_have_attribute("data-state", "delivered", timeout=SLOW)
        await expect(delivery.locator(".answer")).to_have_text("200")
        await expect(delivery.get_by_role("button")).to_have_count(0)
        assert {r.headers["webhook-id"] for r in receiver.received} == {message}

        # A delete is asked twice: the endpoint's secret goes with it.
        remove = endpoint.get_by_role("button", name="Delete")
        await remove.click()
        await expect(remove).to_have_text("Delete for good?")
        await remove.click()
        await expect(endpoint).to_have_count(0)
        await expect(page.locator("#webhooks-list")).to_contain_text("No endpoint is registered")
        listed = hooks.get("/v1/webhooks", operator)
        assert listed.status_code == 200, listed.text
        assert listed.json()["webhooks"] == []
    finally:
        await device.close()


async def test_an_endpoint_registered_from_the_form_shows_its_secret_once(
    hooks: HubNode, receiver: Receiver, tenant: str, page: Page
) -> None:
    operator = token("operator", "ops", tenant)
    await open_console(page, hooks, operator)
    await expect(page.locator("#webhooks-list")).to_contain_text("No endpoint is registered")
    await page.fill("#wh-url", receiver.url)
    await page.uncheck('#webhook-form input[value="device.offline"]')
    await page.fill("#wh-description", "front desk")
    await page.click("#wh-register")

    shown = page.locator("#webhook-secret")
    await expect(shown).to_be_visible()
    await expect(shown).to_contain_text("it will not be shown again")
    await expect(page.locator("#wh-secret-url")).to_have_text(receiver.url)
    secret = await page.locator("#wh-secret").inner_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+=*", secret), secret
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    await expect(page.locator("#wh-url")).to_have_value("")  # the form is ready for another

    (listed,) = hooks.get("/v1/webhooks", operator).json()["webhooks"]
    assert listed["url"] == receiver.url
    assert listed["events"] == ["device.online"]
    assert "secret" not in listed
    endpoint = page.locator(f'#webhooks-list .endpoint[data-id="{listed["id"]}"]')
    await expect(endpoint).to_contain_text("device.online · front desk")
    assert secret not in await page.locator("#webhooks-list").inner_text()

    # The secret shown is the one the hub signs with.
    device = await Client.connect(hooks, token("device", "desk-1", tenant))
    try:
        await eventually(lambda: bool(receiver.delivered("device.online")), 10, "its webhook")
        (online,) = receiver.verified(secret)  # the reference verifier raises unless signed so
        assert online["data"]["device"] == "desk-1"
        delivered = endpoint.locator('tbody tr[data-state="delivered"]')
        await expect(delivered).to_have_count(1, timeout=SLOW)
    finally:
        await device.close()

    await page.click("#wh-secret-done")
    await expect(shown).to_be_hidden()
    assert secret not in await page.content()
    await page.goto(f"{hooks.url}/healthz")
    await open_console(page, hooks, operator)  # a new page: nothing shows it again
    await expect(endpoint).to_be_visible()
    assert secret not in await page.content()


async def test_a_broadcast_shows_each_rooms_reach_and_says_when_it_is_nobody(
    hooks: HubNode, tenant: str, page: Page
) -> None:
    operator = token("operator", "ops", tenant)
    devices = [
        await Client.connect(hooks, token("device", f"lobby-{n}", tenant, loc="lobby"))
        for n in (1, 2)
    ]
    try:
        await eventually(
            lambda: len(hooks.presence("location:lobby", operator)) == 2, 10, "both in the lobby"
        )
        await open_console(page, hooks, operator)
        await page.fill("#bc-rooms", "location:lobby, location:lobbby")
        await page.fill("#broadcast-form input[name=content_id]", "spring")
        await page.click("#bc-send")
        result = page.locator("#broadcast-result")
        await expect(result).to_contain_text("202 accepted")
        lobby = result.locator('.room-line[data-room="location:lobby"]')
        typo = result.locator('.room-line[data-room="location:lobbby"]')
        await expect(lobby.locator(".reach")).to_have_text("reach 2")
        await expect(typo.locator(".reach")).to_have_attribute("data-reach", "0")
        await expect(typo.locator(".reach")).to_contain_text("nobody is subscribed to this room")
        await expect(lobby.locator("code")).to_have_text(re.compile(r"location:lobby: \d+-\d+"))

        # An older node answers without reach: the ids are shown alone.
        async def without_reach(route: Route, request: Request) -> None:
            answer = await route.fetch()
            body = await answer.json()
            del body["reach"]
            await route.fulfill(response=answer, json=body)

        await page.route("**/v1/broadcast", without_reach)
        await page.fill("#broadcast-form input[name=content_id]", "summer")
        await page.click("#bc-send")
        await expect(result.locator(".reach")).to_have_count(0)
        await expect(result).to_contain_text("202 accepted")
        await expect(result.locator(".room-line")).to_have_count(2)
        await expect(lobby.locator("code")).to_have_text(re.compile(r"location:lobby: \d+-\d+"))
    finally:
        for device in devices:
            await device.close()


async def test_a_dashboards_console_leaves_webhooks_to_operators(
    hooks: HubNode, tenant: str, page: Page
) -> None:
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    await open_console(page, hooks, token("dashboard", "wall", tenant))
    await expect(page.locator("#webhooks-message")).to_contain_text("operators and admins")
    await expect(page.locator("#wh-register")).to_be_disabled()
    assert not [url for url in asked if "/v1/webhooks" in url]


async def test_an_admins_console_manages_the_webhooks_of_the_tenant_it_names(
    hooks: HubNode, receiver: Receiver, tenant: str, page: Page
) -> None:
    operator = token("operator", "ops", tenant)
    answer = hooks.post(
        "/v1/webhooks", {"url": receiver.url, "events": ["device.online"]}, operator
    )
    assert answer.status_code == 201, answer.text
    await open_console(page, hooks, token("admin", "root", tenant))
    await expect(page.locator(f'.endpoint[data-id="{answer.json()["id"]}"]')).to_be_visible()
    await page.fill("#wh-url", receiver.url)
    await page.click("#wh-register")
    await expect(page.locator("#wh-secret")).to_contain_text("whsec_")
    await expect(page.locator("#webhooks-list .endpoint")).to_have_count(2)
    # The form's registration went to the tenant the admin's token names.
    listed = hooks.get("/v1/webhooks", operator).json()["webhooks"]
    assert sorted(len(hook["events"]) for hook in listed) == [1, 2]
