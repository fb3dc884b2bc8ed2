"""In-process counters for ``limits``' sliding window counter strategy (``memory://``).

``limits``' own async memory storage starts an expiry task on nearly every hit, and that task
walks every key it holds: the cost of one hit grew with the number of clients seen in the last
two windows (12 us per hit with one client, 86 us with 20,000, ``bench/NOTES.md``). Here expired
counters are dropped by one sweep at most every ``SWEEP_SECONDS``, so a hit costs the same with one
client or many, and memory still holds only the counters of the last two windows (plus at most
one sweep interval).

Guarantees: the counts and windows of ``limits``' memory storage (same keys, same weighting of the
previous window); no call awaits anything, so on one event loop every hit is atomic: concurrent
hits never admit more than the limit, and none is refused by a lost race.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from math import floor

from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow

SWEEP_SECONDS = 10.0


class LocalCounters(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """Counters in a dict: key -> [count, expires_at]; one process only."""

    STORAGE_SCHEME = None  # not a URI scheme of its own: RateLimiter uses it for memory://

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self.counters: dict[str, list[float]] = {}
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def _count(self, key: str, now: float) -> int:
        entry = self.counters.get(key)
        return 0 if entry is None or entry[1] <= now else int(entry[0])

    def _add(self, key: str, expiry: float, amount: int, now: float) -> int:
        if now >= self._next_sweep:
            self.counters = {k: e for k, e in self.counters.items() if e[1] > now}
            self._next_sweep = now + SWEEP_SECONDS
        entry = self.counters.get(key)
        if entry is None or entry[1] <= now:
            entry = self.counters[key] = [0, now + expiry]
        entry[0] += amount
        return int(entry[0])

    def _window(self, key: str, expiry: int, now: float) -> tuple[str, int, float, int, float]:
        """The current window's key, then the counts and time left of both windows."""
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous = self._count(previous_key, now)
        previous_ttl = 0.0 if previous == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return current_key, previous, previous_ttl, self._count(current_key, now), current_ttl

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self._add(key, expiry, amount, self.clock())

    async def get(self, key: str) -> int:
        return self._count(key, self.clock())

    async def get_expiry(self, key: str) -> float:
        now = self.clock()
        entry = self.counters.get(key)
        return now if entry is None or entry[1] <= now else entry[1]

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self.counters)
        self.counters.clear()
        return count

    async def clear(self, key: str) -> None:
        self.counters.pop(key, None)

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        if amount > limit:
            return False
        now = self.clock()
        current_key, previous, previous_ttl, current, _ = self._window(key, expiry, now)
        if floor(previous * previous_ttl / expiry + current) + amount > limit:
            return False
        # A new counter lives two windows: it is the previous window's count in the next one.
        self._add(current_key, 2 * expiry, amount, now)
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        _, previous, previous_ttl, current, current_ttl = self._window(key, expiry, self.clock())
        return previous, previous_ttl, current, current_ttl

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        for window_key in self.sliding_window_keys(key, expiry, self.clock()):
            self.counters.pop(window_key, None)
