"""The webhook endpoints of the REST API: a tenant's endpoints and their delivery logs.

The handlers check who asks and what the request names; `hub.webhooks.service.Webhooks`
does the rest, and says what is wrong with a body it refuses."""

from __future__ import annotations

import re

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hub.auth import Principal, bearer
from hub.bodies import MAX_WEBHOOK_DELIVERIES
from hub.errors import ErrorCode, HubError
from hub.limits import Limit
from hub.protocol import check_tenant, load_object
from hub.rest import parse_limit, read_body, within_rate
from hub.verified import VerifiedTokens
from hub.webhooks.service import Webhooks

WEBHOOK_BODY_BYTES = 8192
"""A registration is a URL, a few event names and a description."""
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What an endpoint's or a message's id looks like: anything else is no such thing."""


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _tenant_of(principal: Principal, named: object) -> str:
    return principal.tenant_for(None if named is None else check_tenant(named))


def _named(request: Request, field: str, what: str) -> str:
    value: str = request.path_params[field]
    if NAME_RE.fullmatch(value) is None:
        raise HubError(ErrorCode.NOT_FOUND, f"no such {what}")
    return value


class WebhookRoutes:
    """`/v1/webhooks` and below, for operators of a tenant and admins naming one."""

    def __init__(self, tokens: VerifiedTokens, reads: Limit | None, webhooks: Webhooks) -> None:
        self._tokens = tokens
        self._reads = reads
        self._webhooks = webhooks

    async def _principal(self, request: Request) -> Principal:
        """Who asks, when they may manage webhooks, within their read rate: checked before
        anything of the request is read."""
        principal = await self._tokens.principal(bearer(request))
        principal.check_webhooks()
        await within_rate(self._reads, principal)
        return principal

    async def _tenant(self, request: Request) -> str:
        """The tenant the caller may manage webhooks of: its own, or one an admin names."""
        return _tenant_of(await self._principal(request), request.query_params.get("tenant"))

    async def collection(self, request: Request) -> Response:
        """`/v1/webhooks`: one route for both methods, so that a third is answered 405 with
        both in `Allow`."""
        if request.method == "POST":
            return await self.register(request)
        return await self.listed(request)

    async def register(self, request: Request) -> Response:
        principal = await self._principal(request)
        fields = load_object(await read_body(request, WEBHOOK_BODY_BYTES), "body")
        tenant = _tenant_of(principal, fields.get("tenant"))
        endpoint, secret = await self._webhooks.register(
            tenant, fields.get("url"), fields.get("events"), fields.get("description")
        )
        return _json({**endpoint.as_json(), "secret": secret}, 201)

    async def listed(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        endpoints = await self._webhooks.endpoints(tenant)
        return _json({"webhooks": [endpoint.as_json() for endpoint in endpoints]})

    async def remove(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        if not await self._webhooks.remove(tenant, _named(request, "id", "webhook")):
            raise HubError(ErrorCode.NOT_FOUND, "no such webhook")
        return Response(status_code=204)

    async def deliveries(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        endpoint = _named(request, "id", "webhook")
        limit = parse_limit(
            request.query_params.get("limit"), MAX_WEBHOOK_DELIVERIES, MAX_WEBHOOK_DELIVERIES
        )
        listed = await self._webhooks.deliveries(tenant, endpoint, limit)
        if listed is None:
            raise HubError(ErrorCode.NOT_FOUND, "no such webhook")
        return _json({"webhook": endpoint, "deliveries": [d.as_json() for d in listed]})

    async def retry(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        endpoint = _named(request, "id", "webhook")
        message = _named(request, "message", "message")
        if not await self._webhooks.retry(tenant, endpoint, message):
            raise HubError(ErrorCode.NOT_FOUND, "no such webhook or message")
        return _json({"id": message, "state": "pending"}, 202)
