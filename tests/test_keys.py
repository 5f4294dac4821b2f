"""Where token keys come from: a JWKS document (rotation, unknown kids, a key server that
is down), several PEM keys, previous HS256 secrets, and clock leeway."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hub.auth import Authenticator, AuthError
from hub.config import Settings
from hub.keys import JWKS_MAX_BYTES, Jwks, pem_keys
from tests.conftest import NodeFactory
from tests.support import SECRET, Client, HubNode, eventually, free_port, token

OLD_SECRET = "the-previous-secret-that-is-long-enough-too"
CLAIMS = {"sub": "d1", "role": "dashboard", "tenant": "acme"}


class JwksServer:
    """A key server on a loopback port of its own: serves `body`, counts the requests, and
    can be started late (the port is chosen, and refused, before)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks.json"
        self.body = b'{"keys": []}'
        self.status = 200
        self.requests = 0
        self.held = threading.Event()
        self.held.set()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    def serve(self, *keys: dict[str, Any]) -> None:
        self.body = orjson.dumps({"keys": list(keys)})

    def start(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                owner.held.wait(10)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.stop()


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    """The public half of `private` as a JWK."""
    if isinstance(private, rsa.RSAPrivateKey):
        made = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        made = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return {**made, "kid": kid, "use": "sig"}


def pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signed(
    private: Any,
    kid: str | None = None,
    *,
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    body = {**CLAIMS, "exp": int(time.time()) + 600, **claims}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, private, algorithm=algorithm, headers=headers)


def hs256_with(secret: bytes, kid: str) -> str:
    """An HS256 token whose HMAC key is `secret`, made by hand: PyJWT refuses to sign with
    what looks like a public key, which is exactly the confusion attack to try."""
    header = jwt.utils.base64url_encode(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}))
    body = {**CLAIMS, "exp": int(time.time()) + 600}
    signing_input = header + b"." + jwt.utils.base64url_encode(orjson.dumps(body))
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()


async def refusal(node: HubNode, bearer: str) -> tuple[int, str]:
    """The status and message of a refused handshake."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            node.ws_url, additional_headers={"Authorization": f"Bearer {bearer}"}, compression=None
        )
    response = refused.value.response
    return response.status_code, orjson.loads(response.body or b"{}")["error"]["message"]


async def welcomed(node: HubNode, bearer: str) -> bool:
    client = await Client.connect(node, bearer)
    await client.close()
    return bool(client.welcome["sub"] == CLAIMS["sub"])


def verifies(node: HubNode, bearer: str) -> bool:
    """Whether the node takes the token (a dashboard reading a room it may read)."""
    answer = node.get("/v1/rooms/r/history", bearer)
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


# A real node and a real key server.


async def test_a_rotated_jwks_key_verifies_without_a_restart(
    hub_node: NodeFactory, jwks: JwksServer
) -> None:
    first, second = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    jwks.serve(jwk(first, "A"))
    jwks.start()
    node = hub_node("jwks", jwt_jwks_url=jwks.url, jwt_jwks_refetch=1)
    assert await welcomed(node, signed(first, "A"))
    jwks.serve(jwk(second, "B"))
    rotated = signed(second, "B", algorithm="ES256")
    await eventually(lambda: verifies(node, rotated), 10, "kid B to verify after the rotation")
    assert await welcomed(node, rotated)
    # The document was fetched again whole: kid A, withdrawn, no longer verifies.
    assert await refusal(node, signed(first, "A")) == (
        401,
        "invalid token: no JWKS key has its kid",
    )


async def test_unknown_kids_do_not_make_the_node_hammer_the_key_server(
    hub_node: NodeFactory, jwks: JwksServer
) -> None:
    key = rsa_key()
    jwks.serve(jwk(key, "A"))
    jwks.start()
    node = hub_node("jwks", jwt_jwks_url=jwks.url)
    assert jwks.requests == 1
    forged = [signed(key, uuid.uuid4().hex) for _ in range(200)]
    refusals = await asyncio.gather(*(refusal(node, bearer) for bearer in forged))
    assert set(refusals) == {(401, "invalid token: no JWKS key has its kid")}
    assert jwks.requests <= 2
    assert await welcomed(node, signed(key, "A"))


async def test_a_node_starts_while_its_key_server_is_down_and_verifies_once_it_is_up(
    hub_node: NodeFactory, jwks: JwksServer
) -> None:
    key = rsa_key()
    jwks.serve(jwk(key, "A"))
    node = hub_node("jwks", jwt_jwks_url=jwks.url, jwt_jwks_refetch=1)
    status, message = await refusal(node, signed(key, "A"))
    assert status == 401
    assert "unavailable" in message
    assert "JWKS" in node.output()
    assert "could not be fetched" in node.output()
    jwks.start()
    await eventually(lambda: verifies(node, signed(key, "A")), 10, "the keys once the server is up")
    assert await welcomed(node, signed(key, "A"))


async def test_every_pem_key_of_the_setting_verifies(hub_node: NodeFactory, tmp_path: Path) -> None:
    keys: list[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = [
        rsa_key(),
        ec.generate_private_key(ec.SECP256R1()),
        rsa_key(),
    ]
    path = tmp_path / "keys.pem"
    path.write_text("\n".join(pem(key) for key in keys))
    node = hub_node("pems", jwt_public_key=str(path))
    for key, algorithm in zip(keys, ["RS256", "ES256", "RS256"], strict=True):
        assert await welcomed(node, signed(key, algorithm=algorithm))
    assert (await refusal(node, signed(rsa_key())))[0] == 401
    assert (await refusal(node, token("dashboard", "d1"))) == (
        401,
        "invalid token: alg must be ES256 or RS256",
    )


async def test_the_previous_secret_verifies_during_a_rotation(hub_node: NodeFactory) -> None:
    node = hub_node("rotating", jwt_previous_secrets=orjson.dumps([OLD_SECRET]).decode())
    assert await welcomed(node, token("dashboard", "d1"))
    assert await welcomed(node, token("dashboard", "d1", secret=OLD_SECRET))
    other = token("dashboard", "d1", secret="yet-another-secret-that-is-long-enough")
    assert (await refusal(node, other)) == (401, "invalid token: Signature verification failed")


async def test_leeway_takes_tokens_within_the_clock_skew(hub_node: NodeFactory) -> None:
    strict, lenient = hub_node("strict"), hub_node("lenient", jwt_leeway=30)
    now = int(time.time())
    expired = jwt.encode({**CLAIMS, "exp": now - 5}, SECRET, algorithm="HS256")
    early = jwt.encode({**CLAIMS, "exp": now + 600, "nbf": now + 5}, SECRET, algorithm="HS256")
    assert await refusal(strict, expired) == (401, "token expired")
    assert (await refusal(strict, early))[0] == 401
    assert await welcomed(lenient, expired)
    # The socket lives until exp plus the leeway, not closed at once as expired.
    client = await Client.connect(lenient, expired)
    assert (await client.request("ping"))["type"] == "pong"
    await client.close()
    assert await welcomed(lenient, early)
    long_ago = jwt.encode({**CLAIMS, "exp": now - 60}, SECRET, algorithm="HS256")
    assert await refusal(lenient, long_ago) == (401, "token expired")


# The key source in this process, against the same key server.


async def test_concurrent_unknown_kids_share_one_fetch(jwks: JwksServer) -> None:
    jwks.serve(jwk(rsa_key(), "A"))
    jwks.start()
    keys = Jwks(jwks.url, refetch=0)
    await keys.refresh()  # no background refresher: with refetch=0 it never rests
    try:
        found = await asyncio.gather(*(keys.key(uuid.uuid4().hex) for _ in range(200)))
        assert found == [None] * 200
        assert jwks.requests == 2
    finally:
        await keys.stop()


async def test_refetches_are_at_most_one_per_interval(jwks: JwksServer) -> None:
    jwks.serve(jwk(rsa_key(), "A"))
    jwks.start()
    keys = Jwks(jwks.url, refetch=3600)
    await keys.start()
    try:
        for _ in range(20):
            assert await keys.key(uuid.uuid4().hex) is None
        assert await keys.key("A") is not None
        assert jwks.requests == 1
    finally:
        await keys.stop()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"not json"),
        (200, b"[]"),
        (200, b'{"keys": "nope"}'),
        (200, b'{"keys": [{"kty": "RSA", "alg": ["RS256"], "n": "x", "e": "AQAB"}]}'),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "A"}]}'),
        (200, b'{"keys": [{"kty": "RSA", "alg": "none", "kid": "A"}]}'),
        (200, b" " * (JWKS_MAX_BYTES + 1)),
        (500, b"{}"),
        (
            200,
            orjson.dumps({"keys": [{**RSAAlgorithm.to_jwk(rsa_key(), as_dict=True), "kid": "A"}]}),
        ),
    ],
)
async def test_a_bad_answer_leaves_the_keys_unavailable(
    jwks: JwksServer, status: int, body: bytes
) -> None:
    jwks.status, jwks.body = status, body
    jwks.start()
    keys = Jwks(jwks.url, refetch=3600)
    await keys.start()
    try:
        assert not keys.available
        assert await keys.key("A") is None
    finally:
        await keys.stop()


async def test_a_fetch_never_blocks_the_event_loop(jwks: JwksServer) -> None:
    jwks.serve(jwk(rsa_key(), "A"))
    jwks.start()
    keys = Jwks(jwks.url, refetch=0)
    await keys.refresh()  # no background refresher: with refetch=0 it never rests
    try:
        jwks.held.clear()
        looking = asyncio.create_task(keys.key("B"))
        # The key server holds its answer until this loop, still running, lets it go.
        await eventually(lambda: jwks.requests == 2, 10, "the refetch to reach the server")
        assert not looking.done()
        jwks.held.set()
        assert await looking is None
    finally:
        jwks.held.set()
        await keys.stop()


async def test_a_key_server_down_at_start_is_retried_in_the_background(
    jwks: JwksServer,
) -> None:
    jwks.serve(jwk(rsa_key(), "A"))
    keys = Jwks(jwks.url, refetch=1)
    await keys.start()
    try:
        assert not keys.available
        jwks.start()
        await eventually(lambda: keys.available, 10, "a retry to fetch the keys")
        assert await keys.key("A") is not None
    finally:
        await keys.stop()


async def test_a_failed_refetch_keeps_the_keys_it_had(jwks: JwksServer) -> None:
    jwks.serve(jwk(rsa_key(), "A"))
    jwks.start()
    keys = Jwks(jwks.url, refetch=0)
    await keys.refresh()  # no background refresher: with refetch=0 it never rests
    try:
        jwks.body = b"garbage"
        assert await keys.key("B") is None
        assert jwks.requests == 2
        assert await keys.key("A") is not None
    finally:
        await keys.stop()


async def test_jwks_tokens_of_another_algorithm_or_key_are_refused(jwks: JwksServer) -> None:
    key = rsa_key()
    shared = b"a-symmetric-key-the-document-should-never-serve!"
    symmetric = {"kty": "oct", "kid": "H", "k": jwt.utils.base64url_encode(shared).decode()}
    jwks.serve(jwk(key, "A"), symmetric)
    jwks.start()
    auth = Authenticator(Settings(jwt_jwks_url=jwks.url))
    await auth.start()
    try:
        assert (await auth.verify(signed(key, "A"))).sub == "d1"
        refused = [
            signed(None, "A", algorithm="none"),
            signed(shared, "H", algorithm="HS256"),
            hs256_with(pem(key).encode(), "A"),
            signed(key, None),
            signed(rsa_key(), "A"),
        ]
        for bearer in refused:
            with pytest.raises(AuthError) as error:
                await auth.verify(bearer)
            assert error.value.status == 401, bearer
    finally:
        await auth.stop()


# Settings and static keys.


def test_pem_keys_reads_every_block_of_a_text() -> None:
    text = f"rotation:\n{pem(rsa_key())}\n{pem(ec.generate_private_key(ec.SECP256R1()))}"
    assert [key.algorithm for key in pem_keys(text)] == ["RS256", "ES256"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no block here", "holds no PEM block"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "is not a PEM public key"),
        (
            pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "at least 2048",
        ),
        (pem(ec.generate_private_key(ec.SECP384R1())), "neither an RSA nor an EC P-256 key"),
        ("".join([pem(ec.generate_private_key(ec.SECP256R1()))] * 17), "more than 16 keys"),
    ],
)
def test_bad_pem_keys_are_refused_at_start(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pem_keys(text)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jwt_previous_secrets": "old-secret,other"}, "Invalid JSON"),
        ({"jwt_previous_secrets": '{"a": "b"}'}, "valid list"),
        ({"jwt_previous_secrets": '["too-short"]'}, "at least 32 bytes"),
        ({"jwt_leeway": 301}, "less than or equal to 300"),
        ({"jwt_jwks_url": "file:///etc/keys.json"}, "should match pattern"),
        ({"jwt_jwks_refetch": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_key_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(jwt_secret=SECRET, **values)


def test_a_jwks_url_alone_is_enough() -> None:
    assert Settings(jwt_jwks_url="https://keys.example/jwks.json").jwt_secret is None
