"""An open-loop HTTP load generator: requests at a fixed rate, latency from the schedule.

wrk (the one Debian ships) only runs closed-loop: each connection waits for an answer before
it sends again, so a slow answer delays the following requests and their waiting is never
counted ("coordinated omission"). Here request i is due at `start + i / rate` whatever
happened before; its latency runs from that due time to its answer, so a stall shows up in
every request that queued behind it. A pool of keep-alive connections (HTTP/1.1, one request
in flight each) takes due requests in order.

At 1,000 requests/s this costs a small part of one core; the benchmark runs it against a
no-op server too, which shows the floor it adds to the measured latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    """What a run saw. `latencies` are seconds from due time to the answer, per request."""

    rate: float
    duration: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    ok_ids: list[str] = field(default_factory=list)
    errors: int = 0
    max_send_lag: float = 0.0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


RequestFactory = Callable[[int], tuple[str, bytes]]  # index -> (id, raw HTTP request)


async def _send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(
    url: str, make_request: RequestFactory, *, rate: float, duration: float, connections: int = 64
) -> Result:
    """Send `rate * duration` requests on schedule; wait for every answer."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    total = int(rate * duration)
    result = Result(rate=rate, duration=duration)
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                slot = await due.get()
                if slot is None:
                    return
                index, due_at = slot
                ident, raw = make_request(index)
                try:
                    status, _ = await _send(reader, writer, raw)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies.append(time.perf_counter() - due_at)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    result.ok_ids.append(ident)
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # let the connections open before the clock starts
    start = time.perf_counter()
    for index in range(total):
        due_at = start + index / rate
        wait = due_at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            result.max_send_lag = max(result.max_send_lag, -wait)
        due.put_nowait((index, due_at))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return result
