"""The adaptive concurrency bound shared by every caller in a process."""

from __future__ import annotations

import asyncio
import threading

import pytest

from zuora.limiter import AdaptiveLimiter, Feedback, shared_limiter


async def _hammer(limiter: AdaptiveLimiter, tasks: int, hold: float, seen: list[int]) -> None:
    async def one() -> None:
        async with limiter.slot():
            seen.append(limiter.in_flight)
            await asyncio.sleep(hold)

    await asyncio.gather(*(one() for _ in range(tasks)))


async def test_never_more_than_the_limit_in_flight() -> None:
    limiter = AdaptiveLimiter(4)
    seen: list[int] = []
    await _hammer(limiter, 50, 0.005, seen)
    assert max(seen) == 4 and limiter.peak_in_flight == 4 and limiter.in_flight == 0


def test_the_bound_is_shared_across_threads_and_event_loops() -> None:
    limiter = AdaptiveLimiter(3)
    seen: list[int] = []
    threads = [
        threading.Thread(target=lambda: asyncio.run(_hammer(limiter, 20, 0.005, seen)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(seen) == 80 and max(seen) <= 3 and limiter.in_flight == 0


async def test_a_429_cuts_the_limit_once_per_burst_and_success_grows_it_back() -> None:
    limiter = AdaptiveLimiter(20)
    for _ in range(10):
        await limiter.acquire()
    for _ in range(5):  # one burst of 429s is one signal
        limiter.release(Feedback(throttled=True))
    assert limiter.limit == 7  # 70% of the 10 in flight, once
    for _ in range(5):
        limiter.release(Feedback())
    for _ in range(200):
        await limiter.acquire()
        limiter.release(Feedback())
    assert limiter.limit == 20 and limiter.throttles == 5


async def test_the_tenant_limit_header_caps_it_and_no_capacity_left_holds_it() -> None:
    limiter = AdaptiveLimiter(100)
    await limiter.acquire()
    limiter.release(Feedback(tenant_limit=40, tenant_remaining=10))
    assert limiter.limit == 40
    await limiter.acquire()
    limiter.release(Feedback(throttled=True))
    cut = limiter.limit
    for _ in range(100):
        await limiter.acquire()
        limiter.release(Feedback(tenant_limit=40, tenant_remaining=0))
    assert limiter.limit == cut  # Zuora says it is full: do not probe past it


async def test_retry_after_pauses_new_requests() -> None:
    limiter = AdaptiveLimiter(5)
    await limiter.acquire()
    limiter.release(Feedback(throttled=True, retry_after=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with limiter.slot():
        waited = loop.time() - started
    assert waited >= 0.25


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = AdaptiveLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    async with limiter.slot():
        assert limiter.in_flight == 1
    assert limiter.in_flight == 0


def test_one_limiter_per_tenant_per_process() -> None:
    first = shared_limiter("https://tenant-a.example", 7)
    assert shared_limiter("https://tenant-a.example", 7) is first
    assert shared_limiter("https://tenant-b.example", 7) is not first
