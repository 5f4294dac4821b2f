"""Settings: every knob is an environment variable `HUB_<NAME>` with a documented default."""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    Json,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.events import HUB_ONLY
from hub.history import Retention, RetentionRules, TenantBounds
from hub.protocol import is_event_name
from hub.redact import safe_url
from hub.state import StateEvents

NODE_LOST_GRACE = 15.0
"""The contract: a dead node's devices are offline within `heartbeat_timeout` + this. It is
kept for the node's own timeout: a device whose token claims a longer interval has a longer
timeout, so the bound holds for it too; one that claims a shorter interval is still offline
within the node's timeout + this, not within its own."""
DEFAULT_HEARTBEAT_MIN = 5
DEFAULT_HEARTBEAT_MAX = 300
"""The heartbeat intervals a device token may claim unless `HUB_HEARTBEAT_MIN` and
`HUB_HEARTBEAT_MAX` say otherwise, s."""
LONGEST_HEARTBEAT = 3600
"""Highest `HUB_HEARTBEAT_MAX`: a claim of an hour leaves a device silent for three before
it is reaped, and bounds the distinct timeouts a node watches (`hub.liveness`)."""
MIN_SECRET_BYTES = 32
"""An HS256 key shorter than the hash itself is refused (RFC 7518 section 3.2)."""
REAP_ALLOWANCE = 2.0
"""What a survivor may take to reap a dead node and deliver its events."""
DEFAULT_NODE_TTL = 15.0
"""`HUB_NODE_TTL` when it is unset, unless the heartbeat timeout is too short for it."""
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
MAX_KEY_FILE_BYTES = 65536
"""Largest file `HUB_JWT_PUBLIC_KEY` may name: room for its 16 PEM keys, and no more read."""
ORIGIN_RE = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
"""A browser origin: a scheme, a host and perhaps a port, nothing after."""
NOT_SETTINGS = frozenset({"HUB_TOKEN"})
"""`HUB_*` variables other commands read: `hub listen`'s token. Not typos of a setting."""


def check_secret(secret: str) -> None:
    """Refuse an HS256 secret anyone could guess: the hub at start, and `hub token`."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"HUB_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section "
            "3.2): anyone who guesses it mints admin tokens"
        )


def _read_key_file(path: str) -> str:
    """The text of the file `HUB_JWT_PUBLIC_KEY` names: a regular file (opened without
    waiting, since a FIFO would block the start), at most `MAX_KEY_FILE_BYTES`, UTF-8."""
    where = "HUB_JWT_PUBLIC_KEY is neither PEM text (-----BEGIN PUBLIC KEY-----) nor"
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ValueError(f"{where} a regular file")
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ValueError(f"{where} a readable file ({error.strerror or error})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(f"HUB_JWT_PUBLIC_KEY names a file over {MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValueError("HUB_JWT_PUBLIC_KEY names a file that is not PEM text") from None


def _listed(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def _longest_node_ttl(heartbeat_timeout: float) -> float:
    """The longest `HUB_NODE_TTL` whose node-death bound (4/3 of it, plus `REAP_ALLOWANCE`)
    stays within `heartbeat_timeout + NODE_LOST_GRACE`: in tenths of a second, rounded down
    and one tenth less, so that float rounding cannot take the bound over."""
    longest = (heartbeat_timeout + NODE_LOST_GRACE - REAP_ALLOWANCE) * 3 / 4
    return (math.floor(longest * 10) - 1) / 10


class RoomRetention(BaseModel):
    """One rule of `HUB_HISTORY_ROOMS`: what the rooms under a prefix keep; a field left out
    is `HUB_HISTORY_SIZE` / `HUB_HISTORY_TTL`. Strict, so that `"100"` or `true` is refused
    instead of read as a number, and a misspelt field is refused instead of ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    size: int | None = Field(None, ge=0)
    ttl: float | None = Field(None, gt=0)

    def within(self, default: Retention) -> Retention:
        return Retention(
            default.size if self.size is None else self.size,
            default.ttl if self.ttl is None else self.ttl,
        )


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Keepalive:
    """One device's heartbeat interval and what follows from it: how long it may stay
    silent before it is closed with 4008, and how often the hub pings its socket."""

    interval: float
    timeout: float
    ping: float


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where Redis is: the URL (one server, or a cluster's seeds, comma-separated), and
    whether it is a cluster or a master that Sentinels name."""

    url: str
    cluster: bool = False
    sentinels: Sequence[tuple[str, int]] = ()
    master: str = "mymaster"


class Settings(BaseSettings):
    """The hub's configuration; the field descriptions are what `hub serve --help` prints."""

    model_config = SettingsConfigDict(
        env_prefix="HUB_", frozen=True, extra="ignore", allow_inf_nan=False
    )

    redis_url: str | None = Field(
        None, description="Redis for a cluster (redis://host:port/db); unset = single node"
    )
    redis_cluster: bool = Field(
        False,
        description="HUB_REDIS_URL names seed nodes of a Redis Cluster (one URL or several, "
        "comma-separated)",
    )
    redis_sentinels: str | None = Field(
        None,
        description="Sentinels (host:port, comma-separated) that name the Redis master; "
        "HUB_REDIS_URL then only gives the database and credentials",
    )
    redis_sentinel_master: str = Field(
        "mymaster", min_length=1, description="the master's name the Sentinels know it by"
    )
    jwt_secret: str | None = Field(None, description="HS256 secret that verifies tokens")
    jwt_public_key: str | None = Field(
        None, description="PEM public key (text or file path) for RS256/ES256 tokens"
    )
    jwt_issuer: str | None = Field(None, description="required `iss` claim, when set")
    jwt_audience: str | None = Field(None, description="required `aud` claim, when set")
    jwt_jwks_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="JWKS document (https://...) whose keys, chosen by the token's kid, "
        "verify RS256/ES256 tokens",
    )
    jwt_jwks_refetch: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="fewest seconds between two fetches of the JWKS document, however many "
        "tokens with an unknown kid arrive",
    )
    jwt_previous_secrets: Json[
        Annotated[list[Annotated[bytes, Field(min_length=MIN_SECRET_BYTES)]], Field(max_length=8)]
    ] = Field(
        [],
        validate_default=False,
        description='HS256 secrets still accepted during a rotation, a JSON list: ["old-secret"]',
    )
    jwt_leeway: float = Field(
        0, ge=0, le=300, description="seconds of clock skew allowed on exp, nbf and iat"
    )
    node_id: str = Field(default_factory=_default_node_id, description="this node's id")
    host: str = Field("127.0.0.1", min_length=1, description="address to bind (--host wins)")
    port: int = Field(
        8000,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("HUB_PORT", "PORT"),
        description="port to bind; PORT too, as platforms set it (--port wins)",
    )
    heartbeat_interval: float = Field(
        15.0,
        gt=0,
        description="device heartbeat interval, s, unless the device's token claims its own "
        "(`heartbeat`, within HUB_HEARTBEAT_MIN and HUB_HEARTBEAT_MAX)",
    )
    heartbeat_timeout: float = Field(
        45.0,
        gt=0,
        description="device heartbeat timeout, s; a device that claims its own interval gets "
        "a timeout in the same ratio to it (45/15: three intervals)",
    )
    heartbeat_min: int = Field(
        DEFAULT_HEARTBEAT_MIN,
        ge=1,
        le=LONGEST_HEARTBEAT,
        description="shortest heartbeat interval a device token may claim (`heartbeat`, whole "
        "seconds); its timeout and ping interval keep the node's ratios to "
        "HUB_HEARTBEAT_INTERVAL",
    )
    heartbeat_max: int = Field(
        DEFAULT_HEARTBEAT_MAX,
        ge=1,
        le=LONGEST_HEARTBEAT,
        description="longest heartbeat interval a device token may claim, s (at most 3600); "
        "a token outside the bounds is refused with 401",
    )
    node_ttl: float = Field(
        DEFAULT_NODE_TTL,
        gt=0,
        description="seconds a node stays registered in Redis without refreshing; a node "
        "silent for longer is declared dead and its devices reported offline, within "
        "HUB_HEARTBEAT_TIMEOUT + 15 s whatever interval they claim: unset, it is shorter "
        "when that needs it (a timeout under 7.2 s)",
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="how long a SIGTERM drain spreads its 1012 closes over, s"
    )
    unready_seconds: float = Field(
        5.0,
        ge=0,
        description="least time between SIGTERM and the node's listener closing: /readyz "
        "answers 503 and REST is served meanwhile, so that a load balancer's health checks "
        "see the node leave before it stops answering; the drain counts towards it, s",
    )
    handover_seconds: float = Field(
        10.0,
        ge=0,
        description="how long a device closed by a drain may take to reconnect to another "
        "node before it is reported offline, s",
    )
    max_connections: int = Field(
        18000,
        ge=1,
        description="sockets on this node before new ones are refused with 1013; lowered, "
        "with HUB_MAX_PENDING_REQUESTS, when both do not fit the open-file limit",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a request's headers may take to arrive (408 after)"
    )
    max_header_bytes: int = Field(
        16384, ge=1024, description="largest request headers; a line over 8192 is refused too (431)"
    )
    max_pending_requests: int = Field(
        1000,
        ge=1,
        description="connections that may wait for their request headers at once, kept-alive "
        "ones between requests included; past it the one waiting longest is dropped (408)",
    )
    max_sockets_per_sub: int = Field(
        16,
        ge=0,
        description="sockets one token subject (tenant and sub) may hold on a node; past it "
        "the handshake is refused with 429 (0 = no limit)",
    )
    max_sockets_per_tenant: int = Field(
        0,
        ge=0,
        description="sockets one tenant may hold on a node; past it the handshake is refused "
        "with 429 (0 = no limit)",
    )
    max_token_ttl: float = Field(
        0,
        ge=0,
        description="longest a token may still be valid when presented, s: tokens whose exp "
        "is further away are refused (0 = no limit)",
    )
    refresh_notice: float = Field(
        60.0,
        ge=0,
        description="seconds before a socket's token expires that the hub sends `expiring` "
        "once, for the client to `refresh` it",
    )
    connect_rate: float = Field(
        50.0, ge=0, description="WebSocket handshakes per second per client IP (0 = off)"
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="proxies (comma-separated addresses, or *) whose X-Forwarded-For "
        "names the client",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="also serve /metrics, without the stats key, here"
    )
    ping_interval: float = Field(
        20.0,
        gt=0,
        description="WebSocket ping interval, s; a device that claims its own heartbeat "
        "interval is pinged in the same ratio to it",
    )
    ping_timeout: float = Field(20.0, gt=0, description="WebSocket pong deadline, s")
    max_frame_bytes: int = Field(65536, ge=1024, description="largest client frame before 1009")
    max_event_bytes: int = Field(
        65536, ge=256, description="largest encoded event the hub fans out (too_large / 413)"
    )
    send_queue_bytes: int = Field(
        524288, ge=4096, description="bytes queued to one socket before it is closed with 4009"
    )
    client_rate: float = Field(
        50.0, ge=0, description="frames per second one socket may send (0 = off)"
    )
    client_burst: int = Field(100, ge=1, description="frames a socket may send in one burst")
    heartbeat_rate: float = Field(
        1.0,
        gt=0,
        description="heartbeats per second one device socket may send, with a burst of 5; "
        "past it heartbeats are refused (rate_limited) and not published",
    )
    max_heartbeat_bytes: int = Field(
        2048, ge=256, description="largest encoded device.heartbeat event (too_large)"
    )
    max_rooms_per_socket: int = Field(
        500, ge=10, description="rooms one socket may be in, its own rooms included (too_large)"
    )
    history_size: int = Field(1000, ge=0, description="events kept per room (0 = no history)")
    history_ttl: float = Field(86400.0, gt=0, description="seconds an event is kept")
    history_rooms: Json[dict[str, RoomRetention]] | None = Field(
        None,
        description='per room-prefix retention, JSON: {"status": {"size": 100, "ttl": 600}}',
    )
    read_rate: float = Field(
        20.0,
        ge=0,
        description="REST reads (history, presence, stats) per second per token, with a "
        "burst of as many (0 = off)",
    )
    redis_read_connections: int = Field(
        32,
        ge=1,
        description="Redis connections a node uses for clients' reads; publishes and "
        "presence have their own",
    )
    tenant_publish_bytes: float = Field(
        1048576,
        ge=0,
        description="encoded bytes one tenant may publish per second, all nodes together "
        "(0 = off); past it publishes are refused with rate_limited / 429",
    )
    tenant_publish_burst: float = Field(
        8388608, ge=65536, description="bytes one tenant may publish in one burst"
    )
    tenant_history_rooms: int = Field(
        10000,
        ge=0,
        description="rooms of one tenant that may hold history at once (0 = off); a publish "
        "to one more is refused with rate_limited / 429",
    )
    broadcast_rate: float = Field(
        100.0, ge=0, description="REST broadcasts per second per operator token (0 = off)"
    )
    idempotency_ttl: float = Field(
        86400.0,
        gt=0,
        le=604800,
        description="seconds a broadcast's Idempotency-Key is remembered, with its answer",
    )
    state_events: str = Field(
        "content.update,playlist.update",
        description="events that are a room's current state, comma-separated: the newest of "
        "each name is kept and handed to every subscriber (`x.signage.*` names all x.signage "
        "events; empty = none)",
    )
    state_ttl: float = Field(
        2592000.0, gt=0, description="seconds a room's state event is kept when none replaces it"
    )
    fleet_ttl: float = Field(
        2592000.0,
        gt=0,
        description="seconds an offline device stays in GET /v1/devices after it was last seen",
    )
    receipt_rate: float = Field(
        10.0,
        gt=0,
        description="delivery receipts per second one socket may send, with a burst of 20; "
        "past it receipts are refused (rate_limited)",
    )
    max_receipt_bytes: int = Field(
        2048, ge=256, description="largest encoded delivery.receipt event (too_large)"
    )
    webhook_allow_private: bool = Field(
        False,
        description="whether webhook URLs may resolve to loopback, private or link-local addresses",
    )
    webhook_retry_hours: float = Field(
        24.0, gt=0, le=168, description="hours a webhook message is retried before it fails"
    )
    webhook_retry_base: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="seconds before a webhook message's first retry; each next waits about "
        "twice as long (with jitter), at most an hour",
    )
    webhook_offline_grace: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="seconds a device may be gone before its device.offline webhook is sent",
    )
    webhook_max_endpoints: int = Field(
        10, ge=1, le=1000, description="webhook endpoints one tenant may register"
    )
    webhook_max_pending: int = Field(
        10000,
        ge=10,
        description="undelivered messages kept per webhook endpoint; past it the oldest fail",
    )
    webhook_key: str | None = Field(
        None,
        min_length=32,
        description="key that encrypts webhook secrets at rest (at least 32 characters); "
        "unset = derived from HUB_JWT_SECRET",
    )
    cors_origins: str = Field(
        "",
        description="origins whose pages may call the REST API from a browser, "
        "comma-separated (https://ops.example.com), or * for any; empty = none",
    )
    stats_key: str | None = Field(
        None, description="bearer key that may read /v1/stats and /metrics"
    )
    gc_threshold: int = Field(
        50000, ge=700, description="allocations between young-generation collections"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="log level: critical, error, warning, info, debug or trace"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text, or one JSON object a line"
    )
    otel_endpoint: str | None = Field(
        None,
        description="OpenTelemetry collector (OTLP/HTTP, http://collector:4318) the node "
        "sends traces to; unset (and no OTEL_EXPORTER_OTLP_ENDPOINT) = no tracing",
    )
    otel_sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of traces started here that are kept (a caller's traceparent "
        "decides for its request); unset = OTEL_TRACES_SAMPLER, else every trace",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: str) -> str:
        for origin in _listed(origins):
            if origin != "*" and ORIGIN_RE.fullmatch(origin) is None:
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port] with no path "
                    "(https://ops.example.com), or *"
                )
        return origins

    @property
    def cors(self) -> list[str]:
        """The origins of `HUB_CORS_ORIGINS`."""
        return _listed(self.cors_origins)

    @field_validator("otel_endpoint")
    @classmethod
    def _collector(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (http://collector:4318)")
        return url

    @field_validator("state_events")
    @classmethod
    def _state_names(cls, names: str) -> str:
        for name in _listed(names):
            event = name.removesuffix(".*")
            if not is_event_name(event) or event in HUB_ONLY:
                raise ValueError(
                    f"{name!r} is not an event a client publishes: give event names like "
                    "content.update or x.screen, or a prefix like x.screen.*"
                )
        return names

    @model_validator(mode="after")
    def _needs_a_key(self) -> Settings:
        if not self.jwt_secret and not self.jwt_public_key and not self.jwt_jwks_url:
            raise ValueError(
                "set HUB_JWT_SECRET (HS256), or HUB_JWT_PUBLIC_KEY or HUB_JWT_JWKS_URL "
                "(RS256/ES256)"
            )
        if self.jwt_secret:
            check_secret(self.jwt_secret)
        return self

    @model_validator(mode="after")
    def _public_key_reads(self) -> Settings:
        """A key file that cannot be read is refused now, not at the first token."""
        _ = self.public_key_pem
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        from redis.connection import parse_url

        for part in url.split(","):
            if not part.startswith(REDIS_SCHEMES):
                raise ValueError(
                    "must start with redis://, rediss:// or unix:// (redis://host:6379/0)"
                )
            try:
                parse_url(part)  # type: ignore[no-untyped-call]
            except ValueError as error:
                raise ValueError(f"is not a Redis URL: {error}") from None
        return url

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, sentinels: str | None) -> str | None:
        if sentinels is not None:
            _addresses(sentinels)
        return sentinels

    @model_validator(mode="after")
    def _one_redis_kind(self) -> Settings:
        url = self.redis_url
        if self.redis_cluster and url is None:
            raise ValueError("HUB_REDIS_CLUSTER needs HUB_REDIS_URL: the cluster's seed nodes")
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("HUB_REDIS_CLUSTER and HUB_REDIS_SENTINELS exclude each other")
        if url is not None and "," in url and not self.redis_cluster:
            raise ValueError("HUB_REDIS_URL names several servers only with HUB_REDIS_CLUSTER")
        return self

    @property
    def redis(self) -> Deployment | None:
        """Where Redis is; None for a node alone."""
        if self.redis_sentinels is not None:
            return Deployment(
                self.redis_url or "redis://localhost/0",
                sentinels=_addresses(self.redis_sentinels),
                master=self.redis_sentinel_master,
            )
        if self.redis_url is None:
            return None
        return Deployment(self.redis_url, cluster=self.redis_cluster)

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, level: Any) -> Any:
        return level.lower() if isinstance(level, str) else level

    @model_validator(mode="before")
    @classmethod
    def _fit_node_ttl(cls, values: Any) -> Any:
        """An unset `HUB_NODE_TTL` is `DEFAULT_NODE_TTL`, or shorter when the heartbeat
        timeout is too short for it to keep the node-death bound (`_timeouts_fit`): a short
        timeout alone never makes the node refuse to start. An invalid timeout is left to
        its own field's validation."""
        if not isinstance(values, dict) or values.get("node_ttl") is not None:
            return values
        default = cls.model_fields["heartbeat_timeout"].default
        try:
            timeout = float(values.get("heartbeat_timeout", default))
        except (TypeError, ValueError):
            return values
        if not 0 < timeout < math.inf:
            return values
        return {**values, "node_ttl": min(DEFAULT_NODE_TTL, _longest_node_ttl(timeout))}

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Settings:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("HUB_HEARTBEAT_TIMEOUT must be longer than HUB_HEARTBEAT_INTERVAL")
        if self.redis and self.node_death_bound > self.heartbeat_timeout + NODE_LOST_GRACE:
            raise ValueError(
                "HUB_NODE_TTL is too long: a dead node's devices must be reported offline "
                f"within HUB_HEARTBEAT_TIMEOUT + {NODE_LOST_GRACE:g} s, and that takes up to "
                f"4/3 of HUB_NODE_TTL + {REAP_ALLOWANCE:g} s"
            )
        return self

    @model_validator(mode="after")
    def _claims_fit(self) -> Settings:
        """The node's own interval need not lie within the bounds: they say what a token
        may claim, and a node may beat its unclaiming devices more or less often."""
        if self.heartbeat_min > self.heartbeat_max:
            raise ValueError("HUB_HEARTBEAT_MIN must not be more than HUB_HEARTBEAT_MAX")
        return self

    @cached_property
    def _own_keepalive(self) -> Keepalive:
        return Keepalive(self.heartbeat_interval, self.heartbeat_timeout, self.ping_interval)

    def keepalive(self, claim: int | None) -> Keepalive:
        """A device's keepalive: the node's, or, for a token's `heartbeat` claim, that
        interval with a timeout and a ping interval in the node's ratios to its own."""
        if claim is None:
            return self._own_keepalive
        interval = self.heartbeat_interval
        return Keepalive(
            claim, claim * self.heartbeat_timeout / interval, claim * self.ping_interval / interval
        )

    @property
    def heartbeat_bounds(self) -> tuple[int, int]:
        """The heartbeat intervals a device token may claim, both included."""
        return self.heartbeat_min, self.heartbeat_max

    @property
    def shortest_heartbeat_timeout(self) -> float:
        """The shortest silence any device of the node is allowed."""
        return min(self.heartbeat_timeout, self.keepalive(self.heartbeat_min).timeout)

    @property
    def longest_heartbeat_timeout(self) -> float:
        """The longest silence any device of the node is allowed."""
        return max(self.heartbeat_timeout, self.keepalive(self.heartbeat_max).timeout)

    @property
    def tenant_bounds(self) -> TenantBounds:
        return TenantBounds(
            self.tenant_publish_bytes, self.tenant_publish_burst, self.tenant_history_rooms
        )

    @property
    def node_refresh(self) -> float:
        """How often a node refreshes its registration and looks for dead nodes."""
        return self.node_ttl / 3

    @property
    def node_death_bound(self) -> float:
        """Longest time from a node's death to its devices' `device.offline` events."""
        return self.node_ttl + self.node_refresh + REAP_ALLOWANCE

    @cached_property
    def public_key_pem(self) -> str | None:
        """The public key's PEM text, read from the file when the setting names one."""
        key = self.jwt_public_key
        if key is None or key.lstrip().startswith("-----BEGIN"):
            return key
        return _read_key_file(key)

    @property
    def summary(self) -> str:
        """What the node runs with, for its start-up line; never a secret: a URL shows its
        password as ***."""
        redis = self.redis
        if redis is None:
            broker = "in-process broker (this node alone)"
        else:
            if redis.sentinels:
                where = f"master {redis.master!r} of Sentinels {self.redis_sentinels}"
            else:
                kind = "Redis Cluster " if redis.cluster else ""
                where = kind + ",".join(safe_url(part) for part in redis.url.split(","))
            broker = f"Redis broker {where} (node TTL {self.node_ttl:g} s)"
        history = f"history {self.history_size} events for {self.history_ttl:g} s"
        if self.history_rooms:
            history += f" (other rules for {len(self.history_rooms)} room prefixes)"
        return (
            f"{broker}; auth {self._auth_mode}; {history}; at most {self.max_connections} "
            f"sockets and {self.max_pending_requests} connections waiting for their headers, "
            f"frames of {self.max_frame_bytes} B, events of {self.max_event_bytes} B, "
            f"{self.send_queue_bytes} B queued per socket; heartbeat every "
            f"{self.heartbeat_interval:g} s, timeout {self.heartbeat_timeout:g} s, tokens may "
            f"claim {self.heartbeat_min} to {self.heartbeat_max} s"
        )

    @property
    def _auth_mode(self) -> str:
        keys = []
        if self.jwt_public_key is not None:
            inline = self.jwt_public_key.lstrip().startswith("-----BEGIN")
            keys.append("PEM public keys" + ("" if inline else f" from {self.jwt_public_key}"))
        if self.jwt_jwks_url is not None:
            keys.append(f"JWKS {safe_url(self.jwt_jwks_url)}")
        if keys:
            return "RS256/ES256 with " + " and ".join(keys)
        previous = len(self.jwt_previous_secrets)
        return "HS256 secret" + (f" and {previous} previous ones" if previous else "")

    @cached_property
    def state(self) -> StateEvents:
        """Which events are a room's state (`HUB_STATE_EVENTS`), kept `HUB_STATE_TTL`."""
        return StateEvents(_listed(self.state_events), self.state_ttl)

    @cached_property
    def retention(self) -> RetentionRules:
        """Retention per room: `HUB_HISTORY_SIZE` / `HUB_HISTORY_TTL`, and the rules of
        `HUB_HISTORY_ROOMS` by room-name prefix."""
        default = Retention(self.history_size, self.history_ttl)
        rules = self.history_rooms or {}
        return RetentionRules(
            default, {prefix: rule.within(default) for prefix, rule in rules.items()}
        )


_PLAINER = {
    "dict_type": "Input should be a JSON object",
    "model_type": "Input should be a JSON object",
}
"""pydantic's messages that name Python types where a variable's reader needs JSON's."""


def problems(error: ValidationError) -> list[str]:
    """What is wrong with the settings, one line per problem, each naming the variable to
    fix and saying what it must be, without pydantic's framing; never the value given,
    since some are secrets."""
    lines = []
    for problem in error.errors():
        cause = problem.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, Exception) else problem["msg"]
        message = _PLAINER.get(problem["type"], message)
        loc = problem["loc"]
        if loc:
            where = _variable(str(loc[0])) + "".join(
                f"[{orjson.dumps(part).decode()}]" for part in loc[1:]
            )
            if not message.startswith(where):
                message = f"{where}: {message}"
        lines.append(" ".join(message.split()))
    return lines


def _variable(name: str) -> str:
    """The environment variable behind a field, or behind one of its aliases (the one set)."""
    for field_name, field in Settings.model_fields.items():
        aliases = field.validation_alias
        if isinstance(aliases, AliasChoices):
            choices = [str(choice) for choice in aliases.choices]
            if name in (field_name, *choices):
                present = {variable.upper() for variable in os.environ}
                return next((c for c in choices if c.upper() in present), choices[0])
    return f"HUB_{name.upper()}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each `HUB_*` variable that is no setting, with the closest real name:
    settings ignore unknown variables, so a misspelt one would otherwise change nothing,
    silently."""
    known = [f"HUB_{name.upper()}" for name in Settings.model_fields]
    lines = []
    for variable in sorted(environ):
        name = variable.upper()
        if name.startswith("HUB_") and name not in known and name not in NOT_SETTINGS:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"{variable} is not a setting{hint}")
    return lines


def _addresses(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port` as pairs."""
    pairs = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part.strip()!r} is not host:port (10.0.0.1:26379)")
        pairs.append((host, int(port)))
    return pairs
