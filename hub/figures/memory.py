"""The board of a single node: its own figures are the cluster's."""

from __future__ import annotations

from typing import Any

from hub.figures.base import Board


class MemoryBoard(Board):
    """Keeps the one node's latest figures in this process."""

    def __init__(self) -> None:
        self._figures: dict[str, Any] | None = None

    async def post(self, figures: dict[str, Any]) -> None:
        self._figures = figures

    async def read(self) -> list[dict[str, Any]]:
        return [] if self._figures is None else [self._figures]
