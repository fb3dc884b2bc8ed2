"""The in-process rate limit counters (``memory://``): the same decisions as ``limits``' own
memory storage, atomic hits on one event loop, and expired counters dropped."""

from __future__ import annotations

import asyncio
import random
import types

import pytest
from limits import parse
from limits.aio.storage import memory as limits_memory
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.platform.local_limits import SWEEP_SECONDS, LocalCounters


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_decisions_match_limits_memory_storage_hit_for_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(1_800_000_000.0)
    # limits' storage reads time.time() from its module; give it the same clock.
    monkeypatch.setattr(limits_memory, "time", types.SimpleNamespace(time=clock))
    theirs = SlidingWindowCounterRateLimiter(limits_memory.MemoryStorage())
    ours = SlidingWindowCounterRateLimiter(LocalCounters(clock))
    item = parse("5/minute")
    rng = random.Random(7)
    refused = 0
    for _ in range(400):
        clock.now += rng.choice([0.0, 0.5, 3.0, 11.0, 29.0, 61.0])
        client = rng.choice(["a", "b"])
        decision = await ours.hit(item, client)
        assert decision == await theirs.hit(item, client)
        refused += not decision
        mine, reference = (
            await ours.get_window_stats(item, client),
            await theirs.get_window_stats(item, client),
        )
        assert mine.remaining == reference.remaining
        # The strategy adds the window's time left to the real time.time(): read twice.
        assert mine.reset_time == pytest.approx(reference.reset_time, abs=0.05)
    assert 0 < refused < 400  # the sequence exercised both answers


async def test_previous_window_counts_by_how_much_of_it_still_overlaps() -> None:
    clock = Clock(60.0 * 1_000_000)  # the start of a one-minute window
    limiter = SlidingWindowCounterRateLimiter(LocalCounters(clock))
    item = parse("10/minute")
    assert all([await limiter.hit(item, "ip") for _ in range(10)])
    assert not await limiter.hit(item, "ip")
    clock.now += 90  # half-way through the next window: the previous one counts as 5
    assert all([await limiter.hit(item, "ip") for _ in range(5)])
    assert not await limiter.hit(item, "ip")


async def test_concurrent_hits_admit_exactly_the_limit() -> None:
    limiter = SlidingWindowCounterRateLimiter(LocalCounters())
    item = parse("50/hour")
    decisions = await asyncio.gather(*(limiter.hit(item, "ip") for _ in range(200)))
    assert decisions.count(True) == 50


async def test_expired_counters_are_dropped_so_memory_holds_two_windows_only() -> None:
    clock = Clock(1_800_000_000.0)
    storage = LocalCounters(clock)
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = parse("3/minute")
    for n in range(1000):
        await limiter.hit(item, f"client-{n}")
    assert len(storage.counters) == 1000
    clock.now += 2 * 60 + SWEEP_SECONDS + 1
    assert await limiter.hit(item, "late")
    assert list(storage.counters) == [item.key_for("late") + f"/{int(clock.now / 60)}"]
    assert (await limiter.get_window_stats(item, "client-0")).remaining == 3


async def test_clear_and_reset_forget_counts() -> None:
    storage = LocalCounters()
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = parse("1/minute")
    assert await limiter.hit(item, "ip")
    assert not await limiter.hit(item, "ip")
    await limiter.clear(item, "ip")
    assert await limiter.hit(item, "ip")
    assert await storage.reset() == 1
    assert await limiter.hit(item, "ip")
