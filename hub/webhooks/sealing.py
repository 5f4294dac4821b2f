"""Webhook secrets encrypted at rest: a copy of Redis (a backup, a replica, a dump) does not
let its reader sign messages as the hub."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1:"
"""Prefix of a sealed secret: another scheme, or another key derivation, would take another."""
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_INFO = b"signage-hub webhook secrets v1"
"""HKDF's context: the key derived from HUB_JWT_SECRET for this differs from any other."""


class Sealer:
    """Seals and opens secrets with AES-GCM under a key derived from `material` (the
    setting HUB_WEBHOOK_KEY, else HUB_JWT_SECRET).

    `aad` names what the secret belongs to ("<tenant>/<endpoint id>"): it is authenticated
    with the ciphertext, so a sealed secret copied onto another endpoint does not open.
    `previous` materials only open what they sealed (HUB_JWT_PREVIOUS_SECRETS while
    HUB_JWT_SECRET rotates), newest first.
    """

    def __init__(self, material: str | bytes, previous: Sequence[str | bytes] = ()) -> None:
        if not material:
            raise ValueError("the key material of webhook secrets is empty")
        self._aead = _aead(material)
        self._openers = [self._aead, *(_aead(older) for older in previous if older)]

    def seal(self, secret: str, aad: str) -> str:
        """`secret` encrypted for storage, as ASCII; a random nonce makes every seal of the
        same secret differ."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), aad.encode())
        return VERSION + base64.b64encode(sealed).decode("ascii")

    def open(self, sealed: str, aad: str) -> str:
        """The secret `seal` was given; ValueError when `sealed` is not one this key sealed
        for `aad`, or was changed since."""
        if not sealed.startswith(VERSION):
            raise ValueError("not a sealed webhook secret")
        try:
            raw = base64.b64decode(sealed.removeprefix(VERSION), validate=True)
        except ValueError:  # not base64, or not ASCII
            raise ValueError("not a sealed webhook secret") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise ValueError("not a sealed webhook secret")
        nonce, ciphertext = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        for aead in self._openers:
            try:
                return aead.decrypt(nonce, ciphertext, aad.encode()).decode()
            except InvalidTag:
                continue
        raise ValueError("the webhook secret does not open: another key, or changed")


def _aead(material: str | bytes) -> AESGCM:
    raw = material.encode() if isinstance(material, str) else material
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(raw))
