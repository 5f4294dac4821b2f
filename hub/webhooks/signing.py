"""Standard Webhooks signatures: what a receiver checks to know a message came from the hub
unchanged, and not replayed long after (it checks the timestamp too)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Random bytes in a new secret: the contract asks for at least 24."""


def new_secret() -> str:
    """A new endpoint secret, in the form Standard Webhooks libraries take as it is."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` of `body`: the id and timestamp are signed with it, so a
    captured message cannot be replayed under another id or time."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers that carry the message's identity and signature with `body`."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX}")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
