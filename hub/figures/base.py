"""The figures board: each node posts its own figures, and reads everyone's."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Board(ABC):
    """Rather than asking every node (a fan-in that fails when one node hangs), each node
    posts its figures every few seconds and any node reads them all from here."""

    @abstractmethod
    async def post(self, figures: dict[str, Any]) -> None:
        """Make this node's latest figures (`stats.Figures.as_json`) visible to every node."""

    @abstractmethod
    async def read(self) -> list[dict[str, Any]]:
        """The latest figures of every live node, this one included."""
