"""Browser pages of other origins calling the REST API: Starlette's `CORSMiddleware`, whose
refusals say why.

Starlette refuses a preflight with a plain-text "Disallowed CORS origin", and a browser
shows the page only that the request failed. Here a refused preflight is answered with
the hub's error body, naming what was refused and `HUB_CORS_ORIGINS`, and is logged: any
page may send thousands, so the log gets the first at once and then a line every
`LOG_EVERY` seconds at most, counting the others. With `HUB_CORS_ORIGINS` empty every
preflight is refused that way, and other requests pass untouched.

A request from an unlisted origin that needs no preflight is answered as usual: it cannot
carry a token (`Authorization` makes a preflight), so it reads nothing a token guards, and
the browser hides the answer from the page whatever it says. While `HUB_CORS_ORIGINS`
lists origins it is logged the same way, unless it came from the node's own pages (the
console) or the route serves every origin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.errors import ErrorCode, HubError
from hub.rest import refusal_response

log = logging.getLogger("hub.cors")

SETTING = "HUB_CORS_ORIGINS"
METHODS = ("GET", "POST")
HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "traceparent")
EXPOSED = ("Idempotent-Replayed", "Retry-After")
MAX_AGE = 600
"""Seconds a browser may keep a preflight's answer."""
LOG_EVERY = 10.0
"""Seconds between two log lines about refused origins, however many come."""
MAX_SHOWN = 200
"""The longest origin, method or header list repeated in an answer or a log line."""


class Cors(CORSMiddleware):
    """Cross-origin access to the REST API for the origins of `HUB_CORS_ORIGINS`, with
    refusals in the hub's error body, told to the log now and then."""

    def __init__(self, app: ASGIApp, origins: list[str], told: Seldom | None = None) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=METHODS,
            allow_headers=HEADERS,
            expose_headers=EXPOSED,
            max_age=MAX_AGE,
        )
        self._listed = bool(origins)
        self._told = told or Seldom()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._listed:
            await super().__call__(scope, receive, send)
        elif _preflight(scope):
            await self.preflight_response(Headers(scope=scope))(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        error = HubError(ErrorCode.BAD_REQUEST, self._why(request_headers))
        origin = _shown(request_headers["origin"])
        self._told.tell(f"refused a cross-origin preflight from {origin}: {error.message}")
        refusal = refusal_response(error)
        for name, value in answer.headers.items():
            if name.startswith("access-control-") or name == "vary":
                refusal.headers[name] = value
        return refusal

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        if message["type"] == "http.response.start" and self._hidden(message, request_headers):
            origin = _shown(request_headers["origin"])
            self._told.tell(
                f"answered a request from origin {origin}, which {SETTING} does not list: "
                "the browser hides the answer from the page"
            )
        await super().send(message, send, request_headers)

    def _why(self, request: Headers) -> str:
        """What of a preflight is refused, in the words of the settings."""
        origin = _shown(request["origin"])
        reasons = []
        if not self.is_allowed_origin(origin=request["origin"]):
            if self._listed:
                reasons.append(f"origin {origin} is not in {SETTING}")
            else:
                reasons.append(
                    f"origin {origin} may not call this node: {SETTING} is empty, so no "
                    "page of another origin may"
                )
        method = request["access-control-request-method"]
        if method not in self.allow_methods:
            allowed = ", ".join(METHODS)
            reasons.append(f"method {_shown(method)} is not allowed across origins ({allowed})")
        asked = request.get("access-control-request-headers", "")
        names = [name.strip() for name in asked.split(",") if name.strip()]
        refused = [name for name in names if name.lower() not in self.allow_headers]
        if refused:
            allowed, shown = ", ".join(HEADERS), _shown(", ".join(refused))
            reasons.append(f"headers {shown} are not allowed across origins ({allowed})")
        if "access-control-request-private-network" in request:
            reasons.append("a public page may not call a node on a private network")
        return "; ".join(reasons)

    def _hidden(self, message: Message, request: Headers) -> bool:
        """Whether the browser will hide this answer from a page of another origin. The
        node's own pages send their Origin too (the console's POSTs): the browser says
        so in `Sec-Fetch-Site`, and older ones name the host the request went to, unless
        a proxy renamed it."""
        origin = request.get("origin")
        if origin is None or self.is_allowed_origin(origin=origin):
            return False
        if "access-control-allow-origin" in Headers(raw=message["headers"]):
            return False  # a route every page may read (the client module, the probe)
        if request.get("sec-fetch-site") == "same-origin":
            return False
        return origin.partition("://")[2] != request.get("host")


class Seldom:
    """Lines about what any page can cause: the first at once, then one every `every`
    seconds at most, each saying how many were left out since the last."""

    def __init__(self, every: float = LOG_EVERY, now: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._now = now
        self._quiet_until = float("-inf")
        self._left_out = 0

    def tell(self, text: str) -> None:
        now = self._now()
        if now < self._quiet_until:
            self._left_out += 1
            return
        more = f" ({self._left_out} more since the last such line)" if self._left_out else ""
        log.info("%s%s", text, more)
        self._left_out = 0
        self._quiet_until = now + self._every


def _preflight(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "OPTIONS":
        return False
    headers = Headers(scope=scope)
    return "origin" in headers and "access-control-request-method" in headers


def _shown(text: str) -> str:
    """Something a page sent, short and printable, for an answer or a log line."""
    printable = "".join(char if char.isprintable() else "?" for char in text)
    return printable if len(printable) <= MAX_SHOWN else printable[: MAX_SHOWN - 3] + "..."
