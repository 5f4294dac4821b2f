"""A sender's reservations on a token bucket: the burst goes at once, then each frame waits
its turn at the rate, and waiting repays the debt."""

from __future__ import annotations

import time

import pytest

from hub.ratelimit import TokenBucket


def test_reservations_past_the_burst_wait_their_turn_at_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    bucket = TokenBucket(rate=10.0, burst=2.0)
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    now[0] += 0.2  # the reservations' waits are over: the debt is repaid, nothing more
    assert bucket.reserve() == pytest.approx(0.1)
    now[0] += 10.0  # a long quiet refills the burst, and no more
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])
    assert bucket.take() == pytest.approx(0.2)  # a refusing taker sees the same debt
