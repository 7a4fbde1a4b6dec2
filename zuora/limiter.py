"""A process-wide, adaptive bound on concurrent requests to one Zuora tenant.

Zuora limits concurrent requests per tenant (40 by default) and answers 429 past the limit.
Every caller in a process shares one `AdaptiveLimiter` per tenant, so a drain, a reconcile
and a setup command running side by side cannot add up past the bound.

The bound adapts (additive increase, multiplicative decrease):
- a 429 cuts it to 70% of what was in flight, at most once per second (one burst of 429s
  is one signal), and `Retry-After` pauses new requests for that long;
- a success raises it by 1/limit (about +1 per round of requests), but never past the
  configured maximum nor past the tenant's own `Concurrency-Limit-Limit`, and not at all
  while Zuora reports no concurrency left (`Concurrency-Limit-Remaining: 0`), so a client
  alone on a tenant settles at the limit without probing beyond it.

It is thread-safe and loop-agnostic: waiters from any event loop (Prefect may run async
work on more than one) are woken with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

DECREASE_FACTOR = 0.7
DECREASE_COOLDOWN_SECONDS = 1.0
MAX_PAUSE_SECONDS = 60.0
SAFETY_POLL_SECONDS = 5.0  # waiters re-check this often even if no wake-up reached them


@dataclass
class Feedback:
    """What one response said about the tenant's capacity."""

    throttled: bool = False
    retry_after: float | None = None
    tenant_limit: int | None = None
    tenant_remaining: int | None = None


class AdaptiveLimiter:
    def __init__(
        self,
        max_concurrency: int,
        *,
        min_concurrency: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.min_concurrency = min(min_concurrency, max_concurrency)
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = float(max_concurrency)
        self._ceiling = max_concurrency
        self._in_flight = 0
        self._paused_until = 0.0
        self._last_decrease = -DECREASE_COOLDOWN_SECONDS
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._granted: set[asyncio.Future[None]] = set()
        self.peak_in_flight = 0
        self.throttles = 0

    @property
    def limit(self) -> int:
        return max(self.min_concurrency, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] | None = None
        try:
            while True:
                with self._lock:
                    if future is not None and future in self._granted:
                        self._granted.discard(future)
                        return  # a releaser handed its slot over to us
                    pause = self._paused_until - self._clock()
                    if future is None and pause <= 0:
                        if self._in_flight < self.limit and not self._waiters:
                            self._take()
                            return
                        future = loop.create_future()
                        self._waiters.append((loop, future))
                    elif future is not None:
                        self._wake()  # a pause may have ended with nobody left to release
                if future is None:
                    await asyncio.sleep(min(pause, MAX_PAUSE_SECONDS))
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), timeout=SAFETY_POLL_SECONDS)
        except asyncio.CancelledError:
            with self._lock:
                if future is not None and future in self._granted:
                    self._granted.discard(future)
                    self._in_flight -= 1
                    self._wake()
                elif future is not None:
                    self._discard(future)
            raise

    def release(self, feedback: Feedback | None = None) -> None:
        with self._lock:
            self._in_flight -= 1
            paused_before = self._paused_until
            if feedback is not None:
                self._adapt(feedback)
            self._wake()
            resume_in = self._paused_until - self._clock()
            if self._paused_until > paused_before and resume_in > 0:
                self._resume_after(resume_in)

    def _resume_after(self, delay: float) -> None:
        # Waiters sleep until woken; when a pause starts, make sure someone wakes them as
        # it ends, even if no request is left in flight to release a slot by then.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop: the waiters' safety poll covers it
        loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        with self._lock:
            self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Callable[[Feedback], None]]:
        """Hold a slot; call the yielded function with the response's feedback."""
        await self.acquire()
        said: list[Feedback] = []
        try:
            yield said.append
        finally:
            self.release(said[-1] if said else None)

    def _take(self) -> None:
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    def _wake(self) -> None:
        # Called with the lock held: hand free slots to the oldest waiters, unless paused.
        if self._paused_until > self._clock():
            return
        while self._waiters and self._in_flight < self.limit:
            loop, future = self._waiters.popleft()
            if future.done():
                continue
            self._take()
            self._granted.add(future)
            loop.call_soon_threadsafe(_resolve, future)

    def _discard(self, future: asyncio.Future[None]) -> None:
        self._waiters = deque((lp, f) for lp, f in self._waiters if f is not future)

    def _adapt(self, feedback: Feedback) -> None:
        now = self._clock()
        if feedback.tenant_limit:
            self._ceiling = max(
                self.min_concurrency, min(self.max_concurrency, feedback.tenant_limit)
            )
            self._limit = min(self._limit, float(self._ceiling))
        if feedback.throttled:
            self.throttles += 1
            if now - self._last_decrease >= DECREASE_COOLDOWN_SECONDS:
                self._last_decrease = now
                base = min(self._limit, float(self._in_flight + 1))
                self._limit = max(float(self.min_concurrency), base * DECREASE_FACTOR)
            if feedback.retry_after:
                pause = min(feedback.retry_after, MAX_PAUSE_SECONDS)
                self._paused_until = max(self._paused_until, now + pause)
            return
        if feedback.tenant_remaining is not None and feedback.tenant_remaining <= 0:
            return  # at the tenant's limit right now: hold, do not probe past it
        self._limit = min(float(self._ceiling), self._limit + 1.0 / max(self._limit, 1.0))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_shared: dict[str, AdaptiveLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(tenant_key: str, max_concurrency: int) -> AdaptiveLimiter:
    """The one limiter of this process for a tenant (its base URL), created on first use."""
    with _shared_lock:
        limiter = _shared.get(tenant_key)
        if limiter is None or limiter.max_concurrency != max_concurrency:
            limiter = _shared[tenant_key] = AdaptiveLimiter(max_concurrency)
        return limiter
