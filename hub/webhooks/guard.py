"""Which URLs the hub posts webhooks to: well-formed http(s) ones whose host is a public
address, so that registering an endpoint cannot make the hub call its own network (Redis, a
cloud's metadata service, an admin port) on someone's behalf."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from hub.errors import ErrorCode, HubError

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0
"""Seconds a name may take to resolve before the URL is refused."""
DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOW_HINT = "set HUB_WEBHOOK_ALLOW_PRIVATE=true to allow"

_NAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*\.?")
_MAX_NAME = 253
_PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))
"""What stays as it is in a request target; anything else is percent-encoded."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")

_KINDS: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("a loopback address", lambda address: address.is_loopback),
    ("an unspecified address", lambda address: address.is_unspecified),
    ("a link-local address", lambda address: address.is_link_local),
    ("a multicast address", lambda address: address.is_multicast),
    ("a shared (carrier-grade NAT) address", lambda address: address in _SHARED),
    ("a local-use NAT64 address", lambda address: address in _LOCAL_NAT64),
    ("a private address", lambda address: address.is_private),
    ("a reserved address", lambda address: address.is_reserved),
    (
        "a site-local address",
        lambda address: isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
    ),
    ("a non-public address", lambda address: not address.is_global),
)
"""What makes an address one the hub does not call unless allowed, in the order asked."""

_CARRIERS = (
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
)
"""IPv6 forms that only carry an IPv4 address in their last 32 bits: reaching one is reaching
that IPv4 address, which alone decides."""


class Refused(HubError):
    """The URL's host is, or resolves to, an address the hub does not call; a REST handler
    lets it through as a 400 `bad_request`."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message)


@dataclass(frozen=True)
class Target:
    """A checked webhook URL, in the parts a request is made of."""

    url: str
    scheme: str
    host: str
    """The host as connected to: an ASCII name in lowercase, or an IP address without
    brackets."""
    port: int
    target: str
    """Path and query, "/" when the URL has no path."""

    @property
    def authority(self) -> str:
        """The `Host` header: the host, bracketed when IPv6, with the port unless default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def check_url(url: Any) -> Target:
    """The parts of `url`, or HubError `bad_request` saying what is wrong with it.

    A host that is not ASCII is refused: write an internationalized name in its xn-- form,
    which then is exactly the name resolved (IDNA 2003, Python's codec, and IDNA 2008, what
    browsers use, encode some names differently).
    """
    if not isinstance(url, str):
        raise _bad("the webhook url must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise _bad(f"the webhook url is longer than {MAX_URL_LENGTH} characters")
    if any(character.isspace() or not character.isprintable() for character in url):
        raise _bad("the webhook url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _bad(f"the webhook url is malformed: {error}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise _bad("the webhook url must start with http:// or https://")
    if "@" in parts.netloc:
        raise _bad("the webhook url must not carry a user name or password")
    if "#" in url:
        raise _bad("the webhook url must not have a fragment (#...)")
    if port == 0:
        raise _bad("the webhook url's port must be 1 to 65535")
    host = _host(parts.netloc, parts.hostname or "")
    target = quote(parts.path or "/", safe=_PRINTABLE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PRINTABLE)
    scheme = parts.scheme
    return Target(url, scheme, host, DEFAULT_PORTS[scheme] if port is None else port, target)


async def resolve(target: Target, allow_private: bool) -> str:
    """The one IP address to connect to for `target`, or Refused."""
    return await resolve_address(target.host, target.port, allow_private)


async def resolve_address(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host` (a name or an IP address), or Refused.

    Every address a name resolves to must be allowed, not only the one used: a name that
    answers with a public and a private address is refused. The check is on what the
    resolver answered, so forms such as `127.1`, `2130706433` or `0177.0.0.1` are judged as
    the address they mean.
    """
    literal = _address(host) is not None
    addresses = [host] if literal else await _lookup(host, port)
    if not allow_private:
        for address in addresses:
            objection = _objection(ipaddress.ip_address(address))
            if objection is not None:
                verb = "is" if literal else "resolves to"
                raise Refused(f"webhook host {host} {verb} {objection}; {ALLOW_HINT}")
    return addresses[0]


async def _lookup(host: str, port: int) -> list[str]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            answers = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except TimeoutError:
        raise Refused(f"webhook host {host} did not resolve within {RESOLVE_TIMEOUT:g} s") from None
    except socket.gaierror as error:
        raise Refused(f"webhook host {host} does not resolve: {error}") from None
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def _objection(address: IPAddress) -> str | None:
    """Why the hub does not call `address` ("a private address 10.0.0.5"), or None."""
    carried = _carried(address)
    if carried is not None:
        objection = _objection(carried)
        return None if objection is None else f"{objection} (as {address})"
    for kind, applies in _KINDS:
        if applies(address):
            return f"{kind} {address}"
    return _tunnelled(address)


def _carried(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form only carries (:: and ::1 are IPv6's own)."""
    if not isinstance(address, ipaddress.IPv6Address) or int(address) <= 1:
        return None
    if any(address in carrier for carrier in _CARRIERS):
        return ipaddress.IPv4Address(address.packed[12:])
    return None


def _tunnelled(address: IPAddress) -> str | None:
    """The objection to the IPv4 address a 6to4 address leads to, if any. (Teredo's
    2001::/32 is not public itself, so it is refused without looking inside.)"""
    inner = address.sixtofour if isinstance(address, ipaddress.IPv6Address) else None
    objection = None if inner is None else _objection(inner)
    return None if objection is None else f"{address}, a 6to4 tunnel to {objection}"


def _host(netloc: str, hostname: str) -> str:
    if not hostname:
        raise _bad("the webhook url has no host")
    if not hostname.isascii():
        raise _bad(
            "the webhook url's host must be ASCII: write an internationalized name in its "
            "xn-- (punycode) form"
        )
    if netloc.startswith("["):
        if not isinstance(_address(hostname), ipaddress.IPv6Address) or "%" in hostname:
            raise _bad(f"the webhook url's host [{hostname}] is not an IPv6 address")
        return hostname
    if len(hostname) > _MAX_NAME or not _NAME.fullmatch(hostname):
        raise _bad(f"the webhook url's host {hostname} is not a valid name or address")
    return hostname


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _bad(message: str) -> HubError:
    return HubError(ErrorCode.BAD_REQUEST, message)
