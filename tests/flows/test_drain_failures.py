"""How a drain run reports losing its database: one line, as the CLI and the run log want."""

from __future__ import annotations

import asyncio

import pytest

from flows.drain import DrainAborted, Drainer
from tests.faults.harness import free_port
from warehouse.db import make_engine
from zuora.client import ZuoraClient


def test_a_database_that_is_gone_aborts_the_run_with_a_one_line_reason() -> None:
    # Nothing listens there: the first claim fails the way a stopped server fails it.
    engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/gone")

    async def run() -> None:
        async with ZuoraClient("http://127.0.0.1:9", "id", "secret") as zuora:
            await Drainer(engine, zuora).run()

    with pytest.raises(DrainAborted) as aborted:
        asyncio.run(run())
    engine.dispose()
    message = str(aborted.value)
    assert message.startswith("the drain stopped: connection to server at")
    assert "\n" not in message and "sqlalche.me" not in message and "[SQL" not in message
