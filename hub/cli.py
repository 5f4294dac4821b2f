"""`hub serve`, `hub token`, and `hub listen` (hub/listen.py): the command line.

What the command line refuses, it refuses in one line on stderr and exit status 2, before
anything starts: bad settings, a key that does not load, an address it cannot listen on,
a token the hub would refuse.
"""

from __future__ import annotations

import argparse
import gc
import logging
import logging.config
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import jwt
from pydantic import ValidationError

from hub import __version__
from hub.auth import HEARTBEAT_BOUNDS, AuthError, Role, issue_token, principal_from_claims
from hub.config import Settings, check_secret, problems, unknown_variables
from hub.descriptors import TooFewFiles, fitted
from hub.listen import add_listen
from hub.logs import uvicorn_log_config

WS_PROTOCOL = "hub.transport:HubWebSocketProtocol"
HTTP_PROTOCOL = "hub.http:HubHttpProtocol"


def _fail(message: str) -> NoReturn:
    """Say what is wrong in one line and exit 2, the status of a usage error."""
    print(f"hub: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


Warn = Callable[[str], None]


def _warn(message: str) -> None:
    print(f"hub: warning: {message}", file=sys.stderr)


def _warn_of_unknown_variables(warn: Warn = _warn) -> None:
    for line in unknown_variables(os.environ):
        warn(line)


def _warner(settings: Settings) -> Warn:
    """Where `hub serve` warns once its settings are known: as every later line is written,
    so that with `HUB_LOG_FORMAT=json` the node writes nothing but JSON lines."""
    if settings.log_format == "text":
        return _warn
    logging.config.dictConfig(uvicorn_log_config(settings))
    return logging.getLogger("hub").warning


def _settings_table() -> str:
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else "hostname-pid"
        shown = "unset" if default is None else default
        lines.append(f"  HUB_{name.upper():<24} {field.description} [default: {shown}]")
    return "\n".join(lines)


def _refuse(error: ValidationError) -> NoReturn:
    *others, last = problems(error)
    for line in others:
        print(f"hub: {line}", file=sys.stderr)
    _fail(last)


def _check_public_keys(settings: Settings) -> None:
    """Load the PEM keys as the node will (hub/keys.py), so a key that does not load is
    one line now, not a traceback from every worker."""
    if settings.public_key_pem is not None:
        from hub.keys import pem_keys

        try:
            pem_keys(settings.public_key_pem)
        except ValueError as error:
            _fail(str(error))


def _fit_open_files(settings: Settings) -> None:
    """Raise the soft open-file limit, which the workers inherit, and refuse a limit that
    leaves no room for connections; each worker lowers its caps to what fits, and says so
    (hub/descriptors.py)."""
    try:
        fitted(settings)
    except TooFewFiles as error:
        _fail(str(error))


def _check_listen(host: str, port: int) -> None:
    """Bind every address `host` names once, as uvicorn will, and let go: uvicorn binds
    only after the node has started, and would log that it started before it dies."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        _fail(f"cannot listen on {shown}: {reason[:1].lower()}{reason[1:]}")


def _check_tracing(settings: Settings) -> None:
    """Tracing asked for without OpenTelemetry installed is one line now."""
    from hub.tracing import TracingUnavailable, check_tracing

    try:
        check_tracing(settings)
    except TracingUnavailable as error:
        _fail(str(error))


def serve(args: argparse.Namespace) -> None:
    try:
        settings = Settings()
    except ValidationError as error:
        _warn_of_unknown_variables()
        _refuse(error)
    warn = _warner(settings)
    _warn_of_unknown_variables(warn)
    _check_public_keys(settings)
    _check_tracing(settings)
    host = settings.host if args.host is None else args.host
    port = settings.port if args.port is None else args.port
    if args.workers > 1:
        if settings.redis is None:
            _fail("--workers > 1 needs HUB_REDIS_URL: workers share rooms through Redis")
        if "HUB_NODE_ID" in os.environ:
            _fail("HUB_NODE_ID names one node; leave it unset with --workers > 1")
        if settings.metrics_port is not None:
            _fail("HUB_METRICS_PORT is one port; leave it unset with --workers > 1")
    _fit_open_files(settings)
    _check_listen(host, port)
    if args.workers > 1:
        gc.enable()  # this process only watches its workers, each a node of its own
    import uvicorn

    uvicorn.run(
        "hub.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        loop="uvloop",
        http=HTTP_PROTOCOL,
        ws=WS_PROTOCOL,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(settings),
        lifespan="on",
    )


def token(args: argparse.Namespace) -> None:
    """Print a token, unless the hub would refuse it: then the hub's own reason."""
    _warn_of_unknown_variables()
    secret = os.environ.get("HUB_JWT_SECRET")
    if not secret:
        _fail("set HUB_JWT_SECRET to sign tokens")
    try:
        check_secret(secret)
    except ValueError as error:
        _fail(str(error))
    extra: dict[str, object] = {}
    if args.loc is not None:
        extra["loc"] = args.loc
    for claim in ("groups", "rooms", "publish"):
        if getattr(args, claim):
            extra[claim] = getattr(args, claim)
    bounds = HEARTBEAT_BOUNDS
    if args.heartbeat is not None:
        extra["heartbeat"] = args.heartbeat
        bounds = _heartbeat_bounds()
    minted = issue_token(
        secret, sub=args.sub, role=Role(args.role), tenant=args.tenant, ttl=args.ttl, extra=extra
    )
    try:
        principal_from_claims(jwt.decode(minted, secret, algorithms=["HS256"]), bounds)
    except AuthError as error:
        _fail(f"the hub would refuse this token: {error.message}")
    print(minted)


def _heartbeat_bounds() -> tuple[int, int]:
    """The intervals the hub started from this environment lets a token claim: its
    settings read as `hub serve` reads them, refused as it refuses them."""
    try:
        return Settings().heartbeat_bounds
    except ValidationError as error:
        _refuse(error)


def _whole_seconds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1 or more)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="hub", description="A real-time WebSocket hub.")
    root.add_argument("--version", action="version", version=f"hub {__version__}")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "serve",
        help="run a node",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--host", help="address to bind [HUB_HOST, else 127.0.0.1]")
    run.add_argument("--port", type=_port, help="port to bind [HUB_PORT or PORT, else 8000]")
    run.add_argument("--workers", type=_workers, default=1, help="worker processes [1]")
    run.set_defaults(func=serve)

    tok = commands.add_parser("token", help="print a token signed with HUB_JWT_SECRET")
    tok.add_argument("--role", required=True, choices=[role.value for role in Role])
    tok.add_argument("--sub", required=True, help="principal id")
    tok.add_argument("--tenant", help="tenant (required except for admin)")
    tok.add_argument("--loc", help="a device's location id")
    tok.add_argument("--group", dest="groups", action="append", help="a device group (repeat)")
    tok.add_argument("--room", dest="rooms", action="append", help="room pattern (repeat)")
    tok.add_argument("--publish", action="append", help="publishable room pattern (repeat)")
    tok.add_argument("--ttl", type=_seconds, default=3600, help="seconds until expiry [3600]")
    tok.add_argument(
        "--heartbeat",
        type=_whole_seconds,
        help="a device's own heartbeat interval, s, within HUB_HEARTBEAT_MIN and "
        "HUB_HEARTBEAT_MAX [the node's]",
    )
    tok.set_defaults(func=token)

    add_listen(commands)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.func is not serve:
        # Off since `python -m hub` began (hub/__main__.py): a node starts without it, and
        # its lifespan turns it on (`hub.process.tune_collector`); every other command now.
        gc.enable()
    args.func(args)
