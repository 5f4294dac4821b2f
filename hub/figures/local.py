"""This node's figures, gathered from its parts when asked (`/v1/stats`, `/metrics`), and
posted to the board every few seconds for the cluster's."""

from __future__ import annotations

import asyncio
from typing import Any

from hub.broker import Broker
from hub.figures.base import Board
from hub.rooms import Rooms
from hub.sockets import Sockets
from hub.stats import ROLES, Figures, Rates, Tally, tenant_share

STATS_SECONDS = 2.0
"""How often a node samples its message rates and shares its figures with the cluster."""


class LocalFigures:
    """Reads the figures off the parts that keep them: nothing is counted twice."""

    def __init__(
        self,
        node_id: str,
        sockets: Sockets,
        rooms: Rooms,
        tally: Tally,
        broker: Broker,
        board: Board,
    ) -> None:
        self._node_id = node_id
        self._sockets = sockets
        self._rooms = rooms
        self._tally = tally
        self._broker = broker
        self._board = board
        self._rates = Rates(tally)

    def __call__(self) -> Figures:
        sockets = self._sockets
        queued, queued_sockets = sockets.backlog()
        tally = self._tally
        return Figures(
            node=self._node_id,
            connections=sockets.by_role(),
            rooms=len(self._rooms),
            messages=tally.totals(),
            per_second=self._rates.per_second,
            dropped=dict(tally.dropped),
            queue_bytes=queued,
            queued_sockets=queued_sockets,
            max_connections=sockets.max_connections,
            draining=sockets.draining,
            broker_up=self._broker.available,
            tenants=self._tenants(),
            transports=sockets.by_transport(),
        )

    def _tenants(self) -> dict[str, dict[str, Any]]:
        """Each tenant's share of this node: the tenants with a socket or a message here."""
        tally, sockets = self._tally, self._sockets.by_tenant()
        transports = self._sockets.tenant_transports()
        rooms = self._rooms.by_tenant()
        idle = dict.fromkeys(ROLES, 0)
        return {
            tenant: tenant_share(
                sockets.get(tenant, idle),
                rooms[tenant],
                tally.tenants_in[tenant],
                tally.tenants_out[tenant],
                transports.get(tenant),
            )
            for tenant in {*sockets, *tally.tenants_in, *tally.tenants_out}
        }

    async def share(self) -> None:
        """Sample the rates and post the figures, every `STATS_SECONDS`, until cancelled."""
        while True:
            await asyncio.sleep(STATS_SECONDS)
            self._rates.sample()
            await self._board.post(self().as_json())
