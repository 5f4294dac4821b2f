"""The browser side, served by every node: the client module players and dashboards
import, the same client as a classic script for older screens (`client.legacy.js`, built by
`scripts/build-clients`), and the operators' console. Plain files from `hub/web/`, read once
at start."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB = Path(__file__).parent / "web"
JAVASCRIPT = "text/javascript; charset=utf-8"
TYPESCRIPT = "application/typescript"
ANYWHERE = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"}
"""The client module is public code: any page, wherever it is served from, may import it
(a module script is fetched in CORS mode)."""
CONSOLE = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
"""The console runs with an operator's token: nothing from elsewhere runs in it, it sends
nothing elsewhere, and no other site may frame it."""


class _File:
    """One file's bytes, read at start, answered with fixed headers."""

    def __init__(self, name: str, media_type: str, headers: dict[str, str]) -> None:
        self._body = (WEB / name).read_bytes()
        self._media_type = media_type
        self._headers = headers

    async def serve(self, _request: Request) -> Response:
        return Response(self._body, media_type=self._media_type, headers=self._headers)


def routes() -> list[Route | Mount]:
    return [
        Route("/client.js", _File("client.js", JAVASCRIPT, ANYWHERE).serve),
        Route("/client.legacy.js", _File("client.legacy.js", JAVASCRIPT, ANYWHERE).serve),
        Route("/client.d.ts", _File("client.d.ts", TYPESCRIPT, ANYWHERE).serve),
        Route("/client.legacy.d.ts", _File("client.legacy.d.ts", TYPESCRIPT, ANYWHERE).serve),
        Route("/console", _File("console.html", "text/html; charset=utf-8", CONSOLE).serve),
        Mount("/console", _Assets(directory=WEB / "console")),
    ]


class _Assets(StaticFiles):
    """The console's scripts and styles, with the console's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(CONSOLE)
        return response
