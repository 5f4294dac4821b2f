"""Full-jitter exponential backoff, for anything that reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Delays drawn uniformly from [0, min(cap, base * 2**attempt)]; `reset` after a success.

    Full jitter spreads a crowd of reconnecting clients evenly instead of in waves.
    """

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
