"""Every node's latest figures, where any node can read them for `/v1/stats`."""

from hub.figures.base import Board
from hub.figures.memory import MemoryBoard

__all__ = ["Board", "MemoryBoard"]
