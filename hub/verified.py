"""Tokens the REST API verified lately, so that the same token again costs a lookup.

Verifying a token comes before its rate limit, and is most of what the hub's own code
spends on a refused request: about 50 µs for HS256, 125 µs for RS256, 200 µs for ES256
on one core, where a remembered token takes under 1 µs and the limit as little. Without
this a client polling with one token, or flooding with it, has every request verified
again before the limit refuses it.

Only a token that verified is remembered (by a digest of it, so a long token costs no
more memory than a short one), and only until its `exp` (with the leeway) or for
`REMEMBERED_SECONDS`, whichever is sooner: a key withdrawn from the JWKS document stops
letting a token in at most that much later. A token that fails is checked every time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from hub.auth import Principal

REMEMBERED_SECONDS = 60.0
MAX_REMEMBERED = 10000
"""Tokens remembered at most; past it the oldest is forgotten first."""

Verify = Callable[[str | None], Awaitable[Principal]]


class VerifiedTokens:
    """`verify`, remembered for the tokens that pass it."""

    __slots__ = ("_known", "_verify")

    def __init__(self, verify: Verify) -> None:
        self._verify = verify
        self._known: dict[bytes, tuple[Principal, float]] = {}
        """Token digest to its principal and the time (`time.time()`) it is good until."""

    async def principal(self, token: str | None) -> Principal:
        """The principal of `token`, or the `AuthError` that `verify` raises for it."""
        if not token:
            return await self._verify(token)
        digest = hashlib.sha256(token.encode()).digest()
        known = self._known.get(digest)
        now = time.time()
        if known is not None:
            if now < known[1]:
                return known[0]
            del self._known[digest]
        principal = await self._verify(token)
        if len(self._known) >= MAX_REMEMBERED:
            del self._known[next(iter(self._known))]
        self._known[digest] = (principal, min(principal.exp, now + REMEMBERED_SECONDS))
        return principal
