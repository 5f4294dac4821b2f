"""Refusals a client is told about: one code and message, as an `error` frame on a socket
or as a JSON body with its HTTP status over REST."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import orjson


class ErrorCode(StrEnum):
    """The `code` of an `error` frame or REST error body."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"


HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}
CODE_OF_STATUS = {status: code for code, status in HTTP_STATUS.items()}
"""The code of an HTTP error the router raises (unknown path, wrong method)."""

Ref = int | str | None


class HubError(Exception):
    """A refusal: `code` and `message` are what the client sees. `ref` is set only where
    the error is raised while the request's own `ref` is not known yet (parsing)."""

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after: float | None = None, ref: Ref = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.ref = ref


class BrokerUnavailable(HubError):
    """The broker cannot take the request now; nothing was published or subscribed.

    The client is told only that it may retry; what went wrong (`detail`) is for the log.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, "broker unavailable, retry")
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def error_frame(error: HubError, ref: Ref) -> bytes:
    """The `error` frame that answers the request `ref` on a socket."""
    return orjson.dumps({"type": "error", "ref": ref, "code": error.code, "message": error.message})


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def rest_refusal(error: HubError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The HTTP status, body and headers that answer a REST request refused with `error`."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return HTTP_STATUS[error.code], error_body(error.code, error.message), headers
