"""Presence and the device lifecycle: in this process, or in Redis."""

from hub.presence.base import Member, Place, Presence, Present
from hub.presence.memory import MemoryPresence

__all__ = ["Member", "MemoryPresence", "Place", "Presence", "Present"]
