"""Webhook delivery: signatures the reference Standard Webhooks verifier accepts, secrets
sealed at rest, the URLs and addresses the hub refuses to call, one POST against a real
receiver on this machine (plain and TLS), and the wait between tries."""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from cryptography import x509
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hub.errors import ErrorCode, HubError
from hub.webhooks import guard, signing
from hub.webhooks.guard import Refused, check_url, resolve
from hub.webhooks.sealing import Sealer
from hub.webhooks.sender import (
    MAX_DELAY,
    Outcome,
    Sender,
    parse_retry_after,
    retry_delay,
)
from tests.certificates import self_signed
from tests.support import eventually

BODY = orjson.dumps(
    {"type": "device.online", "tenant": "acme", "time": 1, "data": {"device": "lobby-1"}}
)
NAME = "hooks.example"
"""A name no resolver knows: the tests pin it (and OTHER) to an address themselves."""
OTHER = "other.example"


# Signatures


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert signing.new_secret() != secret


def test_the_reference_verifier_accepts_what_the_hub_signs() -> None:
    secret = signing.new_secret()
    headers = signing.headers(secret, "msg_1", int(time.time()), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert headers["content-type"] == "application/json"
    assert Webhook(secret).verify(BODY, headers) == orjson.loads(BODY)


def test_the_signature_is_the_reference_one() -> None:
    secret = signing.new_secret()
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    expected = Webhook(secret).sign("msg_1", when, BODY)
    assert signing.signature(secret, "msg_1", int(when.timestamp()), BODY) == expected


@pytest.mark.parametrize("changed", ["body", "webhook-id", "webhook-timestamp", "secret"])
def test_the_reference_verifier_refuses_anything_changed(changed: str) -> None:
    secret = signing.new_secret()
    now = int(time.time())
    headers = signing.headers(secret, "msg_1", now, BODY)
    body = BODY
    if changed == "body":
        body = BODY.replace(b"lobby-1", b"lobby-2")
    elif changed == "webhook-id":
        headers["webhook-id"] = "msg_2"
    elif changed == "webhook-timestamp":
        headers["webhook-timestamp"] = str(now - 1)
    else:
        secret = signing.new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_a_secret_without_its_prefix_is_refused() -> None:
    bare = signing.new_secret().removeprefix("whsec_")
    with pytest.raises(ValueError, match="whsec_"):
        signing.signature(bare, "msg_1", 1, BODY)


# Sealing


def test_a_sealed_secret_opens_with_the_same_key_and_owner() -> None:
    secret = signing.new_secret()
    sealed = Sealer("k" * 32).seal(secret, "acme/ep_1")
    assert sealed.startswith("v1:")
    assert sealed.isascii()
    assert Sealer("k" * 32).open(sealed, "acme/ep_1") == secret


def test_a_secret_sealed_under_a_rotated_secret_still_opens_but_new_ones_use_the_new() -> None:
    """HUB_JWT_SECRET rotates, the old one in HUB_JWT_PREVIOUS_SECRETS: the endpoints
    registered before keep working."""
    secret = signing.new_secret()
    old = Sealer("o" * 32).seal(secret, "acme/ep_1")
    rotated = Sealer("n" * 32, [b"o" * 32])
    assert rotated.open(old, "acme/ep_1") == secret
    assert Sealer("n" * 32).open(rotated.seal(secret, "acme/ep_1"), "acme/ep_1") == secret
    with pytest.raises(ValueError, match="does not open"):
        Sealer("o" * 32).open(rotated.seal(secret, "acme/ep_1"), "acme/ep_1")


def test_a_sealed_secret_shows_nothing_of_the_secret() -> None:
    sealer = Sealer("k" * 32)
    secret = signing.new_secret()
    first, second = sealer.seal(secret, "acme/ep_1"), sealer.seal(secret, "acme/ep_1")
    assert first != second, "a random nonce for every seal"
    for sealed in (first, second):
        assert secret not in sealed
        assert secret.removeprefix("whsec_")[:16] not in sealed


@pytest.mark.parametrize(
    ("material", "aad"),
    [("another key, long enough for it....", "acme/ep_1"), ("k" * 32, "acme/ep_2")],
    ids=["another key", "another endpoint"],
)
def test_a_sealed_secret_does_not_open_with_another_key_or_owner(material: str, aad: str) -> None:
    sealed = Sealer("k" * 32).seal(signing.new_secret(), "acme/ep_1")
    with pytest.raises(ValueError, match="does not open"):
        Sealer(material).open(sealed, aad)


def _flip_last_byte(sealed: str) -> str:
    raw = bytearray(base64.b64decode(sealed.removeprefix("v1:")))
    raw[-1] ^= 1
    return "v1:" + base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "damage",
    [
        _flip_last_byte,
        lambda sealed: sealed.removeprefix("v1:"),
        lambda sealed: sealed + "!",
        lambda sealed: "v1:" + base64.b64encode(b"short").decode(),
        lambda sealed: "v1:é",
        lambda sealed: "",
    ],
    ids=["tampered", "no version", "not base64", "too short", "not ascii", "empty"],
)
def test_a_damaged_sealed_secret_does_not_open(damage: Callable[[str], str]) -> None:
    sealer = Sealer("k" * 32)
    with pytest.raises(ValueError, match=r"sealed webhook secret|does not open"):
        sealer.open(damage(sealer.seal(signing.new_secret(), "acme/ep_1")), "acme/ep_1")


def test_a_sealer_needs_key_material() -> None:
    with pytest.raises(ValueError, match="empty"):
        Sealer("")


# URLs


@pytest.mark.parametrize(
    ("url", "expected", "authority"),
    [
        ("https://example.com", ("https", "example.com", 443, "/"), "example.com"),
        ("HTTP://Example.COM:8080/a/b?c=d&e", ("http", "example.com", 8080, "/a/b?c=d&e"), None),
        ("http://example.com:80/", ("http", "example.com", 80, "/"), "example.com"),
        ("https://example.com:80/", ("https", "example.com", 80, "/"), "example.com:80"),
        ("http://example.com?only=query", ("http", "example.com", 80, "/?only=query"), None),
        ("http://example.com/?", ("http", "example.com", 80, "/"), None),
        ("http://example.com:/x", ("http", "example.com", 80, "/x"), None),
        ("https://[2606:4700::1111]:8443/", ("https", "2606:4700::1111", 8443, "/"), None),
        ("https://[2606:4700::1111]/", ("https", "2606:4700::1111", 443, "/"), None),
        ("https://xn--strae-oqa.de/hook", ("https", "xn--strae-oqa.de", 443, "/hook"), None),
        ("https://example.com./", ("https", "example.com.", 443, "/"), None),
        ("https://1.2.3.4/", ("https", "1.2.3.4", 443, "/"), None),
        ("https://example.com/caf%C3%A9", ("https", "example.com", 443, "/caf%C3%A9"), None),
        (
            "https://example.com/café?q=é",
            ("https", "example.com", 443, "/caf%C3%A9?q=%C3%A9"),
            None,
        ),
    ],
)
def test_a_webhook_url_is_split_into_what_is_connected_to(
    url: str, expected: tuple[str, str, int, str], authority: str | None
) -> None:
    target = check_url(url)
    assert (target.scheme, target.host, target.port, target.target) == expected
    assert target.url == url
    if authority is not None:
        assert target.authority == authority


def test_the_host_header_of_an_address_and_a_port() -> None:
    assert check_url("http://[::1]:8080/").authority == "[::1]:8080"
    assert check_url("https://[::1]/").authority == "[::1]"
    assert check_url("http://1.2.3.4:81/").authority == "1.2.3.4:81"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (None, "must be a string"),
        (b"https://example.com", "must be a string"),
        ("https://example.com/" + "a" * 2029, "longer than 2048"),
        ("ftp://example.com/", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("//example.com/hook", "http:// or https://"),
        ("https://", "no host"),
        ("https:///path", "no host"),
        ("https://user:pass@example.com/", "user name or password"),
        ("https://user@example.com/", "user name or password"),
        ("https://example.com@127.0.0.1/", "user name or password"),
        ("https://example.com\\@127.0.0.1/", "user name or password"),
        ("https://example.com/#top", "fragment"),
        ("https://example.com/#", "fragment"),
        ("https://example.com:0/", "1 to 65535"),
        ("https://example.com:65536/", "malformed"),
        ("https://example.com:http/", "malformed"),
        ("https://example.com:+80/", "malformed"),
        ("https://example.com:-1/", "malformed"),
        ("https://[::1/", "malformed"),
        ("https://[example.com]/", "IPv6"),
        ("https://[fe80::1%25eth0]/", "IPv6"),
        ("https://exa mple.com/", "whitespace or control"),
        ("https://example.com/a b", "whitespace or control"),
        (" https://example.com/", "whitespace or control"),
        ("https://example.com/\n", "whitespace or control"),
        ("https://example.com/\t", "whitespace or control"),
        ("https://example.com/\x00", "whitespace or control"),
        ("https://example.com/\x7f", "whitespace or control"),
        ("https://example.com/\u00a0", "whitespace or control"),
        ("https://example.com/\u2028", "whitespace or control"),
        ("https://straße.de/", "xn--"),
        ("https://münchen.example/", "xn--"),
        ("https://ex*mple.com/", "not a valid name"),
        ("https://example..com/", "not a valid name"),
        ("https://" + "a" * 64 + ".com/", "not a valid name"),
        ("https://" + "a." * 127 + "com/", "not a valid name"),
    ],
)
def test_a_bad_webhook_url_is_refused_saying_why(url: Any, says: str) -> None:
    with pytest.raises(HubError) as refused:
        check_url(url)
    assert refused.value.code == ErrorCode.BAD_REQUEST
    assert says in refused.value.message


def test_a_url_of_2048_characters_is_taken() -> None:
    url = "https://example.com/" + "a" * 2028
    assert len(url) == 2048
    assert check_url(url).target == "/" + "a" * 2028


# Addresses

REFUSED = {
    "127.0.0.1": "a loopback address 127.0.0.1",
    "127.255.0.9": "a loopback address",
    "[::1]": "a loopback address ::1",
    "0.0.0.0": "an unspecified address",
    "[::]": "an unspecified address",
    "10.0.0.5": "a private address 10.0.0.5",
    "172.16.0.1": "a private address",
    "192.168.1.1": "a private address",
    "169.254.169.254": "a link-local address 169.254.169.254",
    "[fe80::1]": "a link-local address",
    "100.64.0.1": "a shared (carrier-grade NAT) address",
    "224.0.0.1": "a multicast address",
    "239.1.2.3": "a multicast address",
    "[ff02::1]": "a multicast address",
    "240.0.0.1": "a private address",
    "255.255.255.255": "a private address",
    "0.1.2.3": "a private address",
    "192.0.2.1": "a private address",
    "198.18.0.1": "a private address",
    "[fc00::1]": "a private address",
    "[2001:db8::1]": "a private address",
    "[fec0::1]": "a site-local address",
    "[::ffff:127.0.0.1]": "a loopback address 127.0.0.1 (as ::ffff:",
    "[::ffff:10.0.0.5]": "a private address 10.0.0.5",
    "[::ffff:169.254.169.254]": "a link-local address 169.254.169.254",
    "[::127.0.0.1]": "a loopback address 127.0.0.1",
    "[::10.0.0.5]": "a private address 10.0.0.5",
    "[64:ff9b::7f00:1]": "a loopback address 127.0.0.1",
    "[64:ff9b::a00:5]": "a private address 10.0.0.5",
    "[64:ff9b:1::a00:5]": "a local-use NAT64 address",
    "[2002:7f00:1::]": "a 6to4 tunnel to a loopback address 127.0.0.1",
    "[2002:a00:5::1]": "a 6to4 tunnel to a private address 10.0.0.5",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]": "a private address",  # Teredo
    "[::1:2:3]": "a reserved address",
}


@pytest.mark.parametrize(("host", "kind"), REFUSED.items())
async def test_a_host_that_is_not_public_is_refused_naming_why(host: str, kind: str) -> None:
    target = check_url(f"https://{host}:8443/hook")
    with pytest.raises(Refused) as refused:
        await resolve(target, allow_private=False)
    assert isinstance(refused.value, HubError)
    assert refused.value.code == ErrorCode.BAD_REQUEST
    assert kind in refused.value.message
    assert refused.value.message.startswith(f"webhook host {target.host} is ")
    assert refused.value.message.endswith("; set HUB_WEBHOOK_ALLOW_PRIVATE=true to allow")
    assert await resolve(target, allow_private=True) == target.host


@pytest.mark.parametrize(
    "host",
    ["1.1.1.1", "[2606:4700::1111]", "[::ffff:8.8.8.8]", "[64:ff9b::808:808]", "[2002:808:808::]"],
)
async def test_a_public_address_is_connected_to_as_it_is(host: str) -> None:
    target = check_url(f"https://{host}/")
    assert await resolve(target, allow_private=False) == target.host


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "localhost"])
async def test_a_loopback_address_in_any_spelling_is_refused_as_resolved(host: str) -> None:
    with pytest.raises(Refused, match=r"resolves to a loopback address 127\.0\.0\.1"):
        await resolve(check_url(f"http://{host}/"), allow_private=False)


def pin(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """This loop's resolver answers `answers` for their names (a name with no addresses does
    not resolve) and asks the system for the others; the names it was asked, in order."""
    loop = asyncio.get_running_loop()
    system = loop.getaddrinfo
    asked: list[str] = []

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in answers:
            return await system(host, port, *args, **kwargs)
        if not answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, port, 0, 0) if ":" in address else (address, port),
            )
            for address in answers[host]
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def test_a_name_is_connected_to_at_its_first_address(monkeypatch: pytest.MonkeyPatch) -> None:
    pin(monkeypatch, {NAME: ["8.8.8.8", "2606:4700::1111", "1.1.1.1"]})
    target = check_url(f"https://{NAME}/")
    assert await resolve(target, allow_private=False) == "8.8.8.8"


async def test_a_name_with_a_public_and_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin(monkeypatch, {NAME: ["1.1.1.1", "10.0.0.5"]})
    with pytest.raises(Refused) as refused:
        await resolve(check_url(f"https://{NAME}/"), allow_private=False)
    assert refused.value.message == (
        f"webhook host {NAME} resolves to a private address 10.0.0.5; "
        "set HUB_WEBHOOK_ALLOW_PRIVATE=true to allow"
    )
    assert await resolve(check_url(f"https://{NAME}/"), allow_private=True) == "1.1.1.1"


async def test_a_name_resolving_to_a_mapped_loopback_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin(monkeypatch, {NAME: ["::ffff:127.0.0.1"]})
    with pytest.raises(Refused, match=r"a loopback address 127\.0\.0\.1"):
        await resolve(check_url(f"https://{NAME}/"), allow_private=False)


async def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pin(monkeypatch, {NAME: []})
    with pytest.raises(Refused, match=f"webhook host {NAME} does not resolve"):
        await resolve(check_url(f"https://{NAME}/"), allow_private=True)


async def test_a_name_too_slow_to_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def never(*args: Any, **kwargs: Any) -> list[Any]:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    monkeypatch.setattr(loop, "getaddrinfo", never)
    monkeypatch.setattr(guard, "RESOLVE_TIMEOUT", 0.1)
    with pytest.raises(Refused, match=r"did not resolve within 0\.1 s"):
        await resolve(check_url(f"https://{NAME}/"), allow_private=True)


# One POST


@pytest.fixture(autouse=True)
def _proxies_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies set in the environment, which the sender must not use: through these, every
    attempt below would fail."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")


@dataclass
class Received:
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that answers by path, keeps connections alive, and
    records what it was sent and which TLS server names it was asked for.

    Not tests/webhook_receiver.py's endpoint: these tests look at one POST on the wire, so
    each answer is written byte for byte (a `Retry-After`, a redirect, an answer too long
    to read, none at all), connections are counted, and TLS is served."""

    port: int = 0
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    """The connections open now."""

    ANSWERS: ClassVar[dict[str, bytes]] = {
        "/ok": b"HTTP/1.1 204 No Content\r\n\r\n",
        "/busy": b"HTTP/1.1 500 Oops\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        "/gone": b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n",
        "/moved": b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n",
        "/big": b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n" + bytes(4194304),
    }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in head[1:] if line)
                headers = {name.lower(): value for name, value in headers.items()}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                target = head[0].split(" ")[1]
                self.requests.append(Received(target, headers, body))
                if target == "/silent":
                    await reader.read()  # until the sender gives up
                    return
                writer.write(self.ANSWERS[target])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def start(self, tls: ssl.SSLContext | None = None) -> asyncio.Server:
        if tls is not None:
            tls.sni_callback = lambda _socket, name, _context: self.server_names.append(name)
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def stop(self, server: asyncio.Server) -> None:
        server.close()
        for writer in list(self.writers):
            writer.close()
        await server.wait_closed()


@pytest.fixture
async def receiver() -> Any:
    receiver = Receiver()
    server = await receiver.start()
    yield receiver
    await receiver.stop(server)


@pytest.fixture
async def sender() -> Any:
    sender = Sender(allow_private=True, timeout=0.5)
    yield sender
    await sender.close()


async def _send(sender: Sender, url: str, secret: str = "") -> Outcome:
    return await sender.send(url, secret or signing.new_secret(), "msg_1", BODY, int(time.time()))


async def test_a_2xx_is_delivered_signed_as_the_reference_verifier_checks(
    sender: Sender, receiver: Receiver
) -> None:
    secret = signing.new_secret()
    outcome = await _send(sender, f"http://127.0.0.1:{receiver.port}/ok", secret)
    assert outcome == Outcome(204, None, None)
    assert outcome.delivered
    assert not outcome.gone
    [request] = receiver.requests
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("signage-hub/")
    assert Webhook(secret).verify(request.body, request.headers) == orjson.loads(BODY)


async def test_a_500_is_not_delivered_and_its_retry_after_is_read(
    sender: Sender, receiver: Receiver
) -> None:
    outcome = await _send(sender, f"http://127.0.0.1:{receiver.port}/busy")
    assert outcome == Outcome(500, 7.0, None)
    assert not outcome.delivered
    assert not outcome.gone


async def test_a_410_says_the_endpoint_is_gone(sender: Sender, receiver: Receiver) -> None:
    outcome = await _send(sender, f"http://127.0.0.1:{receiver.port}/gone")
    assert outcome.status == 410
    assert outcome.gone
    assert not outcome.delivered


async def test_a_redirect_is_not_followed(sender: Sender, receiver: Receiver) -> None:
    outcome = await _send(sender, f"http://127.0.0.1:{receiver.port}/moved")
    assert outcome.status == 302
    assert not outcome.delivered
    assert [request.target for request in receiver.requests] == ["/moved"]


async def test_a_receiver_that_never_answers_times_out(sender: Sender, receiver: Receiver) -> None:
    outcome = await _send(sender, f"http://127.0.0.1:{receiver.port}/silent")
    assert outcome == Outcome(None, None, "no answer within 0.5 s")
    assert len(receiver.requests) == 1


async def test_a_long_answer_is_read_no_further_than_its_start(
    sender: Sender, receiver: Receiver
) -> None:
    assert (await _send(sender, f"http://127.0.0.1:{receiver.port}/big")).delivered
    assert (await _send(sender, f"http://127.0.0.1:{receiver.port}/ok")).delivered
    assert receiver.connections == 2, "the connection of an answer left unread is closed"


async def test_the_connection_is_kept_for_the_next_message(
    sender: Sender, receiver: Receiver
) -> None:
    for _ in range(3):
        assert (await _send(sender, f"http://127.0.0.1:{receiver.port}/ok")).delivered
    assert receiver.connections == 1


async def test_a_name_is_connected_to_at_its_checked_address_and_named_in_host(
    sender: Sender, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = pin(monkeypatch, {NAME: ["127.0.0.1"]})
    outcome = await _send(sender, f"http://{NAME}:{receiver.port}/ok")
    assert outcome.delivered
    assert asked[0] == NAME
    assert receiver.requests[0].headers["host"] == f"{NAME}:{receiver.port}"


async def test_a_loopback_url_is_refused_without_connecting(receiver: Receiver) -> None:
    sender = Sender(allow_private=False, timeout=0.5)
    try:
        outcome = await _send(sender, f"http://127.0.0.1:{receiver.port}/ok")
    finally:
        await sender.close()
    assert outcome.status is None
    assert not outcome.delivered
    assert outcome.error is not None
    assert "a loopback address 127.0.0.1" in outcome.error
    assert "HUB_WEBHOOK_ALLOW_PRIVATE" in outcome.error
    assert receiver.connections == 0


async def test_a_name_that_turns_private_is_refused_when_connecting(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin(monkeypatch, {NAME: ["127.0.0.1"]})
    sender = Sender(allow_private=False, timeout=0.5)
    try:
        outcome = await _send(sender, f"http://{NAME}:{receiver.port}/ok")
    finally:
        await sender.close()
    assert outcome.error is not None
    assert f"webhook host {NAME} resolves to a loopback" in outcome.error
    assert receiver.connections == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/", "http:// or https://"),
        (f"http://{NAME}/ok", f"webhook host {NAME} does not resolve"),
    ],
)
async def test_a_url_that_cannot_be_called_is_a_failed_attempt(
    sender: Sender, monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    pin(monkeypatch, {NAME: []})
    outcome = await _send(sender, url)
    assert outcome.status is None
    assert outcome.error is not None
    assert says in outcome.error


async def test_a_closed_port_is_a_failed_attempt(sender: Sender) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    outcome = await _send(sender, f"http://127.0.0.1:{port}/ok")
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("ConnectError")
    assert len(outcome.error) <= 200


def _tls(directory: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for `name` only, and a client
    context that trusts it (and nothing else)."""
    cert_pem, key_pem = self_signed(name, x509.DNSName(name))
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server, ssl.create_default_context(cadata=cert_pem.decode())


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> Any:
    """A receiver serving TLS with a certificate for NAME, and a client context trusting it."""
    server_context, client_context = _tls(tmp_path, NAME)
    receiver = Receiver()
    server = await receiver.start(server_context)
    yield receiver, client_context
    await receiver.stop(server)


async def test_https_to_a_pinned_name_asks_for_and_verifies_that_name(
    tls_receiver: tuple[Receiver, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, trusted = tls_receiver
    pin(monkeypatch, {NAME: ["127.0.0.1"]})
    sender = Sender(allow_private=True, timeout=2, verify=trusted)
    try:
        outcome = await _send(sender, f"https://{NAME}:{receiver.port}/ok")
        by_address = await _send(sender, f"https://127.0.0.1:{receiver.port}/ok")
    finally:
        await sender.close()
    assert outcome.delivered
    assert receiver.server_names[0] == NAME
    assert receiver.requests[0].headers["host"] == f"{NAME}:{receiver.port}"
    assert by_address.status is None
    assert by_address.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in by_address.error, "the certificate names NAME only"


async def test_a_connection_verified_for_one_name_is_not_reused_for_another(
    tls_receiver: tuple[Receiver, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, trusted = tls_receiver
    pin(monkeypatch, {NAME: ["127.0.0.1"], OTHER: ["127.0.0.1"]})
    sender = Sender(allow_private=True, timeout=2, verify=trusted)
    try:
        assert (await _send(sender, f"https://{NAME}:{receiver.port}/ok")).delivered
        other = await _send(sender, f"https://{OTHER}:{receiver.port}/ok")
    finally:
        await sender.close()
    assert other.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in other.error
    assert [request.headers["host"] for request in receiver.requests] == [f"{NAME}:{receiver.port}"]


async def test_a_tls_handshake_past_the_deadline_fails_and_closes_its_connection(
    sender: Sender, receiver: Receiver
) -> None:
    outcome = await _send(sender, f"https://127.0.0.1:{receiver.port}/ok")  # a plain receiver
    assert outcome == Outcome(None, None, "no answer within 0.5 s")
    await eventually(lambda: not receiver.writers, 2, "the connection closed")


# Retry-After and the wait between tries


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (b"7", 7.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("86400", MAX_DELAY),
        ("9" * 400, MAX_DELAY),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("\u00b2", None),
    ],
)
def test_retry_after_in_seconds(value: bytes | str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_a_date() -> None:
    now = 1_800_000_000.0
    ahead = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(ahead, now=now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 86400, usegmt=True), now=now) == (
        MAX_DELAY
    )
    naive = email.utils.formatdate(now + 30).rsplit(" ", 1)[0] + " -0000"
    assert parse_retry_after(naive, now=now) == 30.0
    late = parse_retry_after(email.utils.formatdate(time.time() + 60, usegmt=True))
    assert late is not None
    assert 55 <= late <= 60


def test_the_wait_doubles_from_the_base() -> None:
    waits = [retry_delay(attempt, 5.0, None, rand=lambda: 1.0) for attempt in range(1, 8)]
    assert waits == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]


def test_the_wait_is_at_most_an_hour() -> None:
    for attempt in (11, 12, 50, 10_000):
        assert retry_delay(attempt, 5.0, None, rand=lambda: 1.0) == MAX_DELAY
    assert retry_delay(1, 7200.0, None, rand=lambda: 1.0) == MAX_DELAY


def test_the_wait_is_drawn_between_half_and_all_of_it() -> None:
    assert retry_delay(3, 5.0, None, rand=lambda: 0.0) == 10.0
    assert retry_delay(3, 5.0, None, rand=lambda: 0.5) == 15.0
    waits = {retry_delay(3, 5.0, None) for _ in range(200)}
    assert all(10.0 <= wait <= 20.0 for wait in waits)
    assert len(waits) > 100, "jittered"


def test_a_longer_retry_after_wins_within_an_hour() -> None:
    assert retry_delay(1, 5.0, 60.0, rand=lambda: 1.0) == 60.0
    assert retry_delay(4, 5.0, 7.0, rand=lambda: 1.0) == 40.0, "a shorter one does not"
    assert retry_delay(1, 5.0, 86400.0, rand=lambda: 1.0) == MAX_DELAY


def test_the_wait_counts_failed_attempts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        retry_delay(0, 5.0, None)
