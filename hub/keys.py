"""Where the keys that verify tokens come from: HS256 secrets, PEM public keys, and a JWKS
document that is fetched at start, refreshed, and fetched again for an unknown `kid`."""

from __future__ import annotations

import asyncio
import http.client
import logging
import re
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWKSet

from hub.config import Settings
from hub.tasks import cancel

log = logging.getLogger("hub.keys")

ASYMMETRIC = ("RS256", "ES256")
"""The algorithms of public keys; a token's `alg` must be one its keys can check."""
MAX_PUBLIC_KEYS = 16
"""PEM keys in `HUB_JWT_PUBLIC_KEY`: a token that verifies with none costs one check each."""
MIN_RSA_BITS = 2048
"""Shorter RSA keys are refused at start (PyJWT would warn on every token otherwise)."""
JWKS_TIMEOUT = 5.0
"""Longest a JWKS fetch may take, connection to last byte."""
JWKS_MAX_BYTES = 262144
"""Largest JWKS document read; a key server that sends more is answering wrongly."""
JWKS_MAX_AGE = 300.0
"""The document is fetched again this often anyway, so a withdrawn key stops verifying."""
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
_LOGGED_ERROR_CHARS = 300


class NoKey(Exception):
    """No key can check this token: the reason, for a 401."""


@dataclass(frozen=True, slots=True)
class Key:
    """One key and the one algorithm it verifies; `material` is what `jwt.decode` takes."""

    algorithm: str
    material: Any


def pem_keys(text: str) -> list[Key]:
    """Every public key in a text of PEM blocks (RSA: RS256, EC P-256: ES256)."""
    blocks = [found[0] for found in _PEM_BLOCK.finditer(text)]
    if not blocks:
        raise ValueError("HUB_JWT_PUBLIC_KEY holds no PEM block (-----BEGIN PUBLIC KEY-----)")
    if len(blocks) > MAX_PUBLIC_KEYS:
        raise ValueError(f"HUB_JWT_PUBLIC_KEY holds more than {MAX_PUBLIC_KEYS} keys")
    return [_pem_key(number, block) for number, block in enumerate(blocks, 1)]


def _pem_key(number: int, block: str) -> Key:
    where = f"HUB_JWT_PUBLIC_KEY key {number}"
    try:
        key = load_pem_public_key(block.encode())
    except ValueError as error:
        raise ValueError(f"{where} is not a PEM public key: {error}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{where} is an RSA key of {key.key_size} bits: at least 2048")
        return Key("RS256", key)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return Key("ES256", key)
    raise ValueError(f"{where} is neither an RSA nor an EC P-256 key (RS256 / ES256)")


def parse_jwks(body: bytes) -> dict[str, Key]:
    """The signing keys of a JWKS document by `kid`: RS256 and ES256 public keys only, so a
    document that also lists symmetric or private keys can never make them accepted."""
    try:
        document = orjson.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        keyset = PyJWKSet.from_dict(document)
    except Exception as error:
        # What PyJWT raises depends on what the document holds (a TypeError for an `alg`
        # that is a list, NotImplementedError for `alg: none`): all of it is a bad document.
        raise ValueError(f"not a usable JWKS document: {error}") from None
    keys: dict[str, Key] = {}
    for jwk in keyset:
        if _signs(jwk) and isinstance(jwk.key_id, str):
            keys.setdefault(jwk.key_id, Key(jwk.algorithm_name, jwk))
    if not keys:
        raise ValueError("the JWKS document has no RS256 or ES256 public key with a kid")
    return keys


def _signs(jwk: PyJWK) -> bool:
    public = isinstance(jwk.key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return public and jwk.algorithm_name in ASYMMETRIC and jwk.public_key_use in (None, "sig")


def download(url: str) -> dict[str, Key]:
    """Fetch and parse the document, blocking: run it in a thread. The whole fetch is
    bounded by `JWKS_TIMEOUT` and the body by `JWKS_MAX_BYTES`."""
    deadline = time.monotonic() + JWKS_TIMEOUT
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=JWKS_TIMEOUT) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > JWKS_MAX_BYTES:
            raise ValueError(f"the document is over {JWKS_MAX_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > JWKS_MAX_BYTES:
                raise ValueError(f"the document is over {JWKS_MAX_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the document took over {JWKS_TIMEOUT:g} s")
            chunks.append(chunk)
    return parse_jwks(b"".join(chunks))


class Jwks:
    """The keys of a JWKS document, fetched again at most once per `refetch` seconds
    however many tokens ask (so a client sending unknown kids cannot make the hub hammer
    the key server), and by one fetch at a time that every waiting token shares. The
    network is only touched in a worker thread; a failed fetch keeps the keys it had."""

    def __init__(self, url: str, refetch: float) -> None:
        self._url = url
        self._refetch = refetch
        self._keys: dict[str, Key] | None = None
        self._attempted = -float("inf")
        self._failing = False
        self._fetching: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether a document was ever fetched."""
        return self._keys is not None

    async def start(self) -> None:
        """Fetch the document once, then keep it fresh in the background; a key server
        that is down now is retried every `refetch` seconds."""
        await self.refresh()
        self._refresher = asyncio.create_task(self._keep_fresh(), name="jwks")

    async def stop(self) -> None:
        await cancel([self._refresher, self._fetching])

    async def key(self, kid: str) -> Key | None:
        """The key with this kid, fetching the document again when none has it."""
        if self._keys is None or kid not in self._keys:
            await self.refresh()
        return None if self._keys is None else self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch again, or wait for the fetch under way; nothing when the last one began
        less than `refetch` seconds ago."""
        if self._fetching is None:
            if time.monotonic() - self._attempted < self._refetch:
                return
            self._fetching = asyncio.create_task(self._fetch(), name="jwks-fetch")
        await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        self._attempted = time.monotonic()
        try:
            keys = await asyncio.to_thread(download, self._url)
        except (OSError, ValueError, http.client.HTTPException) as error:
            reason = str(error)[:_LOGGED_ERROR_CHARS] or type(error).__name__
            state = "keeping the keys it had" if self._keys else "tokens are refused until then"
            log.warning(
                "JWKS %s could not be fetched (%s): retrying within %g s, %s",
                self._url,
                reason,
                self._refetch,
                state,
            )
            self._failing = True
        else:
            if self._keys is None or self._failing:
                log.info("JWKS %s fetched: %d keys", self._url, len(keys))
            self._keys = keys
            self._failing = False
        finally:
            self._fetching = None

    async def _keep_fresh(self) -> None:
        while True:
            age = self._refetch if self._failing else max(JWKS_MAX_AGE, self._refetch)
            await asyncio.sleep(max(0.0, self._attempted + age - time.monotonic()))
            await self.refresh()


class Keyring:
    """Every key a token may verify with, chosen from the token's header.

    With public keys (PEM, JWKS or both) tokens are RS256/ES256 only, even when an HS256
    secret is also set (it then only signs `hub token`); otherwise HS256 with the secret
    and the previous ones still accepted during a rotation.
    """

    def __init__(self, settings: Settings) -> None:
        url = settings.jwt_jwks_url
        self._jwks = Jwks(url, settings.jwt_jwks_refetch) if url is not None else None
        pem = settings.public_key_pem
        if pem is not None:
            self._static = pem_keys(pem)
        elif self._jwks is None:
            assert settings.jwt_secret is not None
            secrets = [settings.jwt_secret.encode(), *settings.jwt_previous_secrets]
            self._static = [Key("HS256", secret) for secret in secrets]
        else:
            self._static = []
        self._algorithms = frozenset(
            [key.algorithm for key in self._static] + list(ASYMMETRIC if self._jwks else ())
        )

    async def start(self) -> None:
        if self._jwks is not None:
            await self._jwks.start()

    async def stop(self) -> None:
        if self._jwks is not None:
            await self._jwks.stop()

    async def candidates(self, header: dict[str, Any]) -> list[Key]:
        """The keys to try on a token with this (unverified) header, the one its kid names
        first; `NoKey` when there is none."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise NoKey(f"invalid token: alg must be {' or '.join(sorted(self._algorithms))}")
        keys = [key for key in self._static if key.algorithm == alg]
        if self._jwks is None:
            return keys
        kid = header.get("kid")
        named = await self._jwks.key(kid) if isinstance(kid, str) else None
        if named is not None:
            return [named, *keys]
        if keys:
            return keys
        if not self._jwks.available:
            raise NoKey("the keys that verify tokens are unavailable (JWKS); try again shortly")
        if kid is None:
            raise NoKey("invalid token: its header has no kid, which names its JWKS key")
        raise NoKey("invalid token: no JWKS key has its kid")
