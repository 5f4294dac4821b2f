"""Requests for stream sessions between nodes, and which node holds each session:
`base` (the interface), `memory` (a node alone), `redis` (a cluster), imported only by
the composition root when the node has a Redis."""

from hub.mailbox.base import Mailbox, OnRequest, no_sessions
from hub.mailbox.memory import Exchange, MemoryMailbox

__all__ = ["Exchange", "Mailbox", "MemoryMailbox", "OnRequest", "no_sessions"]
