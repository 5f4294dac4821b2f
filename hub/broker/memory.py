"""The in-process broker: a single node, nothing else running."""

from __future__ import annotations

from collections.abc import Sequence

from hub.broker.base import Broker, Deliver


class MemoryBroker(Broker):
    """Delivers each publish straight to this process's rooms, in the order published."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._keys: set[str] = set()

    async def connect(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def disconnect(self) -> None:
        self._deliver = None
        self._keys.clear()

    async def subscribe(self, key: str) -> None:
        self._keys.add(key)

    async def unsubscribe(self, key: str) -> None:
        self._keys.discard(key)

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        for key, payload in messages:
            if key in self._keys:
                deliver(key, payload)

    @property
    def available(self) -> bool:
        return self._deliver is not None
