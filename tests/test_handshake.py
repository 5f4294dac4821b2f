"""Refusals happen at the handshake, as HTTP responses: never an accepted socket."""

from __future__ import annotations

import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import NodeFactory
from tests.support import SECRET, Client, HubNode, eventually, token


async def _refused(node: HubNode, headers: dict[str, str], query: str = "") -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused:
        await connect(node.ws_url + query, additional_headers=headers, compression=None)
    response = refused.value.response
    error = orjson.loads(response.body or b"{}")["error"]
    assert set(error) == {"code", "message"}
    return response.status_code, error["code"]


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_no_token_is_401(refusing: HubNode) -> None:
    assert await _refused(refusing, {}) == (401, "unauthorized")


async def test_malformed_token_is_401(refusing: HubNode) -> None:
    assert await _refused(refusing, _bearer("not-a-jwt")) == (401, "unauthorized")


async def test_expired_token_is_401(refusing: HubNode) -> None:
    claims = {"sub": "p1", "role": "device", "tenant": "acme", "exp": int(time.time()) - 60}
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    assert await _refused(refusing, _bearer(expired)) == (401, "unauthorized")


async def test_token_without_exp_is_401(refusing: HubNode) -> None:
    forever = jwt.encode({"sub": "p1", "role": "device", "tenant": "acme"}, SECRET)
    assert await _refused(refusing, _bearer(forever)) == (401, "unauthorized")


async def test_token_signed_with_another_secret_is_401(refusing: HubNode) -> None:
    forged = token("device", "p1", secret="another-secret-that-is-long-enough-for-it")
    assert await _refused(refusing, _bearer(forged)) == (401, "unauthorized")


async def test_bad_token_in_the_query_is_401(refusing: HubNode) -> None:
    assert await _refused(refusing, {}, "?token=nope") == (401, "unauthorized")


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "robot"},
        {"tenant": None},
        {"groups": "not-a-list"},
    ],
)
async def test_genuine_but_unusable_token_is_403(
    refusing: HubNode, claims: dict[str, object]
) -> None:
    base: dict[str, object] = {"sub": "p1", "role": "device", "tenant": "acme"}
    base.update(claims)
    base = {key: value for key, value in base.items() if value is not None}
    base["exp"] = int(time.time()) + 60
    unusable = jwt.encode(base, SECRET, algorithm="HS256")
    assert await _refused(refusing, _bearer(unusable)) == (403, "forbidden")


async def test_token_in_the_query_works_and_never_reaches_the_log(single: HubNode) -> None:
    secret_token = token("dashboard", "d1")
    client = await Client.connect(single, secret_token, query=True)
    assert client.welcome["sub"] == "d1"
    await client.close()
    await eventually(lambda: "[accepted]" in single.output(), 5, "the accept log line")
    log = single.output()
    assert secret_token not in log
    assert "token=[redacted]" in log


async def test_rs256_tokens_verify_with_the_public_key(hub_node: NodeFactory) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    node = hub_node("rsa", jwt_public_key=public.decode())
    claims = {"sub": "p1", "role": "device", "tenant": "acme", "exp": int(time.time()) + 60}
    signed = jwt.encode(claims, key, algorithm="RS256")
    client = await Client.connect(node, signed)
    assert client.welcome["sub"] == "p1"
    await client.close()
    assert await _refused(node, _bearer(token("device", "p1"))) == (401, "unauthorized")
    # A key of another kind than the token's algorithm is a refused token, not a 500.
    es256 = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    assert await _refused(node, _bearer(es256)) == (401, "unauthorized")
    answer = node.get("/v1/rooms/r/history", es256)
    assert answer.status_code == 401, answer.text
    # exp as a string of digits is not a NumericDate.
    stringly = jwt.encode({**claims, "exp": str(claims["exp"])}, key, algorithm="RS256")
    assert await _refused(node, _bearer(stringly)) == (401, "unauthorized")
