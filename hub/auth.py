"""Tokens to principals, and a principal's rights over rooms."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import translate
from typing import TYPE_CHECKING, Any

import jwt

from hub.config import DEFAULT_HEARTBEAT_MAX, DEFAULT_HEARTBEAT_MIN, Settings
from hub.errors import ErrorCode, HubError
from hub.keys import Key, Keyring, NoKey
from hub.protocol import is_room, is_tenant

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

STATUS_ROOM = "status"
SUB_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
HEARTBEAT_BOUNDS = (DEFAULT_HEARTBEAT_MIN, DEFAULT_HEARTBEAT_MAX)
"""The heartbeat intervals a device token may claim on a node with the default settings."""


class Role(StrEnum):
    """What a token's holder is; it decides the default rights."""

    DEVICE = "device"
    DASHBOARD = "dashboard"
    OPERATOR = "operator"
    ADMIN = "admin"


class AuthError(Exception):
    """A token is refused: `status` is 401 (no valid token) or 403 (valid but not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def refusal(self) -> HubError:
        """The refusal a client is told: `unauthorized` (401) or `forbidden` (403)."""
        code = ErrorCode.UNAUTHORIZED if self.status == 401 else ErrorCode.FORBIDDEN
        return HubError(code, self.message)


def bearer(connection: HTTPConnection, *, query: bool = False) -> str | None:
    """The request's bearer token: its `Authorization` header, or (`query`, for sockets,
    which browsers cannot give headers) its `?token=`."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.query_params.get("token") if query else None


def _patterns(globs: Iterable[str]) -> re.Pattern[str] | None:
    globs = list(globs)
    if not globs:
        return None
    return re.compile("|".join(f"(?:{translate(glob)})" for glob in globs))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end, and what they may touch."""

    sub: str
    role: Role
    tenant: str | None
    exp: float
    loc: str | None = None
    groups: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    heartbeat: int | None = None
    """A device's own heartbeat interval, s (its token's `heartbeat`); None: the node's."""
    _rooms_re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _publish_re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rooms_re", _patterns(self.rooms))
        object.__setattr__(self, "_publish_re", _patterns(self.publish))

    @property
    def auto_rooms(self) -> tuple[str, ...]:
        """The rooms a device is put in at connect."""
        if self.role is not Role.DEVICE:
            return ()
        rooms = [f"device:{self.sub}", "devices"]
        if self.loc is not None:
            rooms.append(f"location:{self.loc}")
        rooms.extend(f"group:{group}" for group in self.groups)
        return tuple(rooms)

    def may_subscribe(self, room: str) -> bool:
        if self.role is Role.DEVICE:
            if room == STATUS_ROOM:
                return False
            if room in self.auto_rooms:
                return True
            return self._rooms_re is not None and self._rooms_re.match(room) is not None
        return self._rooms_re is None or self._rooms_re.match(room) is not None

    def same_identity(self, other: Principal) -> bool:
        """Whether `other` is the same principal, as a refreshed token must be: its rights
        (`rooms`, `publish`) and its expiry may differ, not who or where it is."""
        return (self.sub, self.role, self.tenant, self.loc, self.groups) == (
            other.sub,
            other.role,
            other.tenant,
            other.loc,
            other.groups,
        )

    def may_publish(self, room: str) -> bool:
        return self._publish_re is not None and self._publish_re.match(room) is not None

    def tenant_for(self, named: str | None) -> str:
        """The tenant a request acts in: the principal's own, or one an admin names."""
        if named is None or named == self.tenant:
            if self.tenant is None:
                raise HubError(
                    ErrorCode.BAD_REQUEST, "tenant is required: admins without one must name it"
                )
            return self.tenant
        if self.role is not Role.ADMIN:
            raise HubError(ErrorCode.FORBIDDEN, "only admins may name another tenant")
        return named

    def check_subscribe(self, room: str) -> None:
        if not self.may_subscribe(room):
            raise HubError(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {room}")

    def check_read(self, room: str) -> None:
        """Reading a room over REST (history, presence): what subscribing allows, but not
        for devices, which only ever see their own rooms live."""
        if self.role is Role.DEVICE:
            raise HubError(ErrorCode.FORBIDDEN, "devices do not read rooms over REST")
        if not self.may_subscribe(room):
            raise HubError(ErrorCode.FORBIDDEN, f"not allowed to read {room}")

    def check_fleet(self) -> None:
        """The fleet (`GET /v1/devices`) is for people: dashboards, operators, admins."""
        if self.role is Role.DEVICE:
            raise HubError(ErrorCode.FORBIDDEN, "devices do not list the fleet")

    def check_publish(self, room: str) -> None:
        if not self.may_publish(room):
            raise HubError(ErrorCode.FORBIDDEN, f"not allowed to publish to {room}")

    def check_broadcast(self) -> None:
        if self.role not in (Role.OPERATOR, Role.ADMIN):
            raise HubError(ErrorCode.FORBIDDEN, "only operators and admins broadcast")

    def check_stats(self) -> None:
        if self.role not in (Role.OPERATOR, Role.ADMIN):
            raise HubError(ErrorCode.FORBIDDEN, "stats are for operators and admins")

    def check_webhooks(self) -> None:
        """A tenant's webhook endpoints carry its secrets: operators and admins only."""
        if self.role not in (Role.OPERATOR, Role.ADMIN):
            raise HubError(ErrorCode.FORBIDDEN, "webhooks are for operators and admins")

    def check_heartbeat(self) -> None:
        if self.role is not Role.DEVICE or self.tenant is None:
            raise HubError(ErrorCode.FORBIDDEN, "only devices send heartbeats")


class Authenticator:
    """Verifies tokens with PyJWT and turns their claims into a `Principal`; `keys.Keyring`
    says which keys a token may verify with."""

    def __init__(self, settings: Settings) -> None:
        self._keys = Keyring(settings)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway
        self._max_ttl = settings.max_token_ttl
        self._heartbeats = settings.heartbeat_bounds

    async def start(self) -> None:
        """Fetch the keys that come from the network (a JWKS document), and keep them fresh."""
        await self._keys.start()

    async def stop(self) -> None:
        await self._keys.stop()

    async def verify(self, token: str | None, *, socket: bool = False) -> Principal:
        """The principal of `token`; `socket` says where it came from, for the message
        when there is none (only sockets take `?token=`)."""
        if not token:
            where = (
                "Authorization: Bearer <jwt> or ?token=<jwt>"
                if socket
                else "Authorization: Bearer <jwt>"
            )
            raise AuthError(401, f"a token is required: {where}")
        try:
            keys = await self._keys.candidates(jwt.get_unverified_header(token))
        except jwt.PyJWTError as error:
            raise AuthError(401, f"invalid token: {error}") from None
        except NoKey as error:
            raise AuthError(401, str(error)) from None
        claims = self._decode(token, keys)
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise AuthError(401, "invalid token: exp must be a number (NumericDate)")
        if self._max_ttl and exp - time.time() > self._max_ttl:
            raise AuthError(401, f"token lives longer than {self._max_ttl:g} s (HUB_MAX_TOKEN_TTL)")
        principal = principal_from_claims(claims, self._heartbeats)
        # A socket lives as long as its token would still verify here: exp plus the leeway.
        return replace(principal, exp=principal.exp + self._leeway) if self._leeway else principal

    def _decode(self, token: str, keys: list[Key]) -> dict[str, Any]:
        """The claims of the first key whose signature matches; the signature is checked
        before any claim, so only a bad signature moves on to the next key."""
        required = ["exp"]
        if self._issuer is not None:
            required.append("iss")
        if self._audience is not None:
            required.append("aud")
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.material,
                    algorithms=[key.algorithm],
                    issuer=self._issuer,
                    audience=self._audience,
                    leeway=self._leeway,
                    options={"require": required, "verify_aud": self._audience is not None},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise AuthError(401, "token expired") from None
            except jwt.PyJWTError as error:
                # Every verification failure, a key of the wrong kind for the token's
                # algorithm included, is the caller's token being refused.
                raise AuthError(401, f"invalid token: {error}") from None
            return claims
        raise AuthError(401, "invalid token: Signature verification failed")


def _str_list(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AuthError(403, f"claim {name!r} must be a list of strings")
    return tuple(value)


def _heartbeat(claims: Mapping[str, Any], role: Role, bounds: tuple[int, int]) -> int | None:
    """A device's claimed heartbeat interval: a whole number of seconds within `bounds`
    (null is no claim). Anything else is refused with 401, as the contract has it, and so
    is a claim on a token of another role, which sends no heartbeats: a token minted wrong
    is told at once rather than taking an interval it would never use."""
    value = claims.get("heartbeat")
    if value is None:
        return None
    if role is not Role.DEVICE:
        raise AuthError(401, "claim 'heartbeat' is for device tokens only")
    least, most = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise AuthError(
            401,
            f"claim 'heartbeat' must be a whole number of seconds from {least} to {most} "
            "(HUB_HEARTBEAT_MIN to HUB_HEARTBEAT_MAX)",
        )
    return value


def principal_from_claims(
    claims: Mapping[str, Any], heartbeats: tuple[int, int] = HEARTBEAT_BOUNDS
) -> Principal:
    """Check the hub's own claims; a token that fails here is genuine but unusable (403),
    but for a `heartbeat` claim outside `heartbeats` (401)."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError(403, "claim 'sub' is required")
    if SUB_RE.fullmatch(sub) is None:
        raise AuthError(403, "claim 'sub' must be 1 to 256 characters, none of them a control")
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise AuthError(403, "claim 'role' must be device, dashboard, operator or admin") from None
    tenant = claims.get("tenant")
    if tenant is None and role is not Role.ADMIN:
        raise AuthError(403, "claim 'tenant' is required")
    if tenant is not None and not is_tenant(tenant):
        raise AuthError(403, "claim 'tenant' must match ^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    loc = claims.get("loc")
    if loc is not None and not isinstance(loc, str):
        raise AuthError(403, "claim 'loc' must be a string")
    principal = Principal(
        sub=sub,
        role=role,
        tenant=tenant,
        exp=float(claims.get("exp", time.time())),
        loc=loc,
        groups=_str_list(claims, "groups"),
        rooms=_str_list(claims, "rooms"),
        publish=_str_list(claims, "publish"),
        heartbeat=_heartbeat(claims, role, heartbeats),
    )
    for room in principal.auto_rooms:
        if not is_room(room):
            raise AuthError(403, f"claims make an invalid room name {room!r}")
    return principal


def issue_token(
    secret: str,
    *,
    sub: str,
    role: Role,
    tenant: str | None,
    ttl: float,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token, for trying the hub out and for tests."""
    claims: dict[str, Any] = {"sub": sub, "role": role.value, "exp": int(time.time() + ttl)}
    if tenant is not None:
        claims["tenant"] = tenant
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")
