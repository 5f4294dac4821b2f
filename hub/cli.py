"""`hub serve`, `hub token`: the command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from hub.auth import Role, issue_token
from hub.config import Settings

WS_PROTOCOL = "hub.transport:HubWebSocketProtocol"
HTTP_PROTOCOL = "hub.http:HubHttpProtocol"


def _settings_table() -> str:
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else "hostname-pid"
        shown = "unset" if default is None else default
        lines.append(f"  HUB_{name.upper():<24} {field.description} [default: {shown}]")
    return "\n".join(lines)


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            (f"HUB_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "") + e["msg"]
            for e in error.errors()
        )
        sys.exit(f"hub: bad settings: {problems}")


FILES_BESIDES_SOCKETS = 100
"""Open files a node needs beyond its sockets: listeners, Redis, logs, the interpreter."""


def _raise_file_limit(max_connections: int) -> None:
    """Every socket is an open file: take all the process may have (the hard limit), and
    say so when that cannot hold `HUB_MAX_CONNECTIONS` sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < max_connections + FILES_BESIDES_SOCKETS:
        print(
            f"hub: warning: the open-file limit ({hard}) is too low for "
            f"HUB_MAX_CONNECTIONS={max_connections}: raise it (ulimit -Hn, the container's "
            "nofile) or lower HUB_MAX_CONNECTIONS, else sockets fail before 1013",
            file=sys.stderr,
        )


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = _load_settings()
    _raise_file_limit(settings.max_connections)
    if args.workers > 1:
        if settings.redis_url is None:
            sys.exit("hub: --workers > 1 needs HUB_REDIS_URL: workers share rooms through Redis")
        if "HUB_NODE_ID" in os.environ:
            sys.exit("hub: HUB_NODE_ID names one node; leave it unset with --workers > 1")
        if settings.metrics_port is not None:
            sys.exit("hub: HUB_METRICS_PORT is one port; leave it unset with --workers > 1")
    uvicorn.run(
        "hub.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
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
        lifespan="on",
    )


def token(args: argparse.Namespace) -> None:
    secret = os.environ.get("HUB_JWT_SECRET")
    if not secret:
        sys.exit("hub: set HUB_JWT_SECRET to sign tokens")
    extra: dict[str, object] = {}
    if args.loc:
        extra["loc"] = args.loc
    for claim in ("groups", "rooms", "publish"):
        if getattr(args, claim):
            extra[claim] = getattr(args, claim)
    print(
        issue_token(
            secret,
            sub=args.sub,
            role=Role(args.role),
            tenant=args.tenant,
            ttl=args.ttl,
            extra=extra,
        )
    )


def listen(args: argparse.Namespace) -> None:
    import asyncio

    import orjson

    from hub.client import Event, HubClient

    bearer = args.token or os.environ.get("HUB_TOKEN")
    if not bearer:
        sys.exit("hub: give --token or set HUB_TOKEN")

    def show(event: Event) -> None:
        sys.stdout.write(orjson.dumps(event).decode() + "\n")
        sys.stdout.flush()

    def lost(room: str) -> None:
        sys.stderr.write(f"hub: events of {room} may be missing (recovered: false)\n")

    client = HubClient(args.url, bearer, rooms=args.room, on_event=show, on_lost=lost)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(client.run())


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="hub", description="A real-time WebSocket hub.")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "serve",
        help="run a node",
        epilog=_settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--host", default="127.0.0.1", help="address to bind [127.0.0.1]")
    run.add_argument("--port", type=int, default=8000, help="port to bind [8000]")
    run.add_argument("--workers", type=int, default=1, help="worker processes [1]")
    run.set_defaults(func=serve)

    tok = commands.add_parser("token", help="print a token signed with HUB_JWT_SECRET")
    tok.add_argument("--role", required=True, choices=[role.value for role in Role])
    tok.add_argument("--sub", required=True, help="principal id")
    tok.add_argument("--tenant", help="tenant (required except for admin)")
    tok.add_argument("--loc", help="a device's location id")
    tok.add_argument("--group", dest="groups", action="append", help="a device group (repeat)")
    tok.add_argument("--room", dest="rooms", action="append", help="room pattern (repeat)")
    tok.add_argument("--publish", action="append", help="publishable room pattern (repeat)")
    tok.add_argument("--ttl", type=float, default=3600, help="seconds until expiry [3600]")
    tok.set_defaults(func=token)

    watch = commands.add_parser(
        "listen", help="print a room's events as JSON lines, resuming across reconnects"
    )
    watch.add_argument("--room", action="append", default=[], help="a room (repeat)")
    watch.add_argument(
        "--url",
        action="append",
        default=None,
        help="socket URL (repeat for several nodes) [ws://127.0.0.1:8000/v1/ws]",
    )
    watch.add_argument("--token", help="bearer token [HUB_TOKEN]")
    watch.set_defaults(func=listen)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "url", ()) is None:
        args.url = ["ws://127.0.0.1:8000/v1/ws"]
    args.func(args)
