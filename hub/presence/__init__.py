"""Presence and the device lifecycle: in this process, or in Redis."""

from hub.presence.base import MemberRecord, Place, Presence, Present
from hub.presence.memory import MemoryPresence

__all__ = ["MemberRecord", "MemoryPresence", "Place", "Presence", "Present"]
