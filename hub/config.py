"""Settings: every knob is an environment variable `HUB_<NAME>` with a documented default."""

from __future__ import annotations

import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.history import TenantBounds

NODE_LOST_GRACE = 15.0
"""The contract: a dead node's devices are offline within `heartbeat_timeout` + this."""
MIN_SECRET_BYTES = 32
"""An HS256 key shorter than the hash itself is refused (RFC 7518 section 3.2)."""
REAP_ALLOWANCE = 2.0
"""What a survivor may take to reap a dead node and deliver its events."""


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """The hub's configuration; the field descriptions are what `hub serve --help` prints."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    redis_url: str | None = Field(
        None, description="Redis for a cluster (redis://host:port/db); unset = single node"
    )
    jwt_secret: str | None = Field(None, description="HS256 secret that verifies tokens")
    jwt_public_key: str | None = Field(
        None, description="PEM public key (text or file path) for RS256/ES256 tokens"
    )
    jwt_issuer: str | None = Field(None, description="required `iss` claim, when set")
    jwt_audience: str | None = Field(None, description="required `aud` claim, when set")
    node_id: str = Field(default_factory=_default_node_id, description="this node's id")
    heartbeat_interval: float = Field(15.0, gt=0, description="device heartbeat interval, s")
    heartbeat_timeout: float = Field(45.0, gt=0, description="device heartbeat timeout, s")
    node_ttl: float = Field(
        15.0,
        gt=0,
        description="seconds a node stays registered in Redis without refreshing; a node "
        "silent for longer is declared dead and its devices reported offline",
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="how long a SIGTERM drain spreads its 1012 closes over, s"
    )
    handover_seconds: float = Field(
        10.0,
        ge=0,
        description="how long a device closed by a drain may take to reconnect to another "
        "node before it is reported offline, s",
    )
    max_connections: int = Field(
        20000, ge=1, description="sockets on this node before new ones are refused with 1013"
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
        description="connections that may wait for their request headers at once; past it "
        "the one waiting longest is dropped (408)",
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
    ping_interval: float = Field(20.0, gt=0, description="WebSocket ping interval, s")
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
    history_rooms: str | None = Field(
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
    stats_key: str | None = Field(
        None, description="bearer key that may read /v1/stats and /metrics"
    )
    gc_threshold: int = Field(
        50000, ge=700, description="allocations between young-generation collections"
    )
    log_level: str = Field("info", description="uvicorn log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text, or one JSON object a line"
    )

    @model_validator(mode="after")
    def _needs_a_key(self) -> Settings:
        if not self.jwt_secret and not self.jwt_public_key:
            raise ValueError("set HUB_JWT_SECRET (HS256) or HUB_JWT_PUBLIC_KEY (RS256/ES256)")
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"HUB_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section "
                "3.2): anyone who guesses it mints admin tokens"
            )
        return self

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Settings:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("HUB_HEARTBEAT_TIMEOUT must be longer than HUB_HEARTBEAT_INTERVAL")
        if self.redis_url and self.node_death_bound > self.heartbeat_timeout + NODE_LOST_GRACE:
            raise ValueError(
                "HUB_NODE_TTL is too long: a dead node's devices must be reported offline "
                f"within HUB_HEARTBEAT_TIMEOUT + {NODE_LOST_GRACE:g} s, and that takes up to "
                f"4/3 of HUB_NODE_TTL + {REAP_ALLOWANCE:g} s"
            )
        return self

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
        return Path(key).read_text()
