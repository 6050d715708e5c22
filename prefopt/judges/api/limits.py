"""Request and token rate limits, and the retry schedule, of the ``openai`` judge.

Providers enforce per-minute limits on shorter windows too, so each limit is a token bucket that refills at
``limit / 60`` per second and holds at most one second's worth (never less than one request, or than the request at
hand): requests go out evenly instead of in bursts that earn 429s. Both buckets are shared by the judge's threads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate_per_minute`` units per minute; :meth:`take` blocks until ``amount`` units are available.

    Args:
        rate_per_minute: the limit (None: unlimited).
        clock, sleep: time source and wait (injectable so the schedule can be checked without waiting).
    """

    def __init__(
        self,
        rate_per_minute: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = None if rate_per_minute is None else rate_per_minute / 60.0  # units per second
        self.capacity = None if self.rate is None else max(1.0, self.rate)
        self.level = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, amount: float = 1.0) -> float:
        """Wait until ``amount`` units are available and take them; returns the seconds waited.

        A request larger than the bucket waits until the bucket is full, then drives it negative: the next
        requests wait for what it overdrew.
        """
        if self.rate is None:
            return 0.0
        waited = 0.0
        while True:
            with self.lock:
                self._refill()
                need = min(amount, self.capacity)
                if self.level >= need:
                    self.level -= amount
                    return waited
                delay = (need - self.level) / self.rate
            self.sleep(delay)
            waited += delay

    def give_back(self, amount: float) -> None:
        """Return (``amount`` > 0) or take more (``amount`` < 0) once a request's real size is known."""
        if self.rate is None:
            return
        with self.lock:
            self._refill()
            self.level = min(self.capacity, self.level + amount)


def backoff_delay(attempt: int, base_s: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): the server's Retry-After when it gives one, else
    ``base_s · 2^(attempt-1)`` with full jitter in its upper half, capped at 60 s."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), 60.0)
    ceiling = min(base_s * 2 ** (attempt - 1), 60.0)
    return ceiling * (0.5 + 0.5 * rng.random())
