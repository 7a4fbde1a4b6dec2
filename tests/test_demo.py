"""`zuora-sync demo` as a user runs it: a child process on embedded defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from warehouse.models import subscriptions


def test_the_demo_tells_the_whole_story_and_ends_with_cache_equal_to_zuora(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "ZUORA_"))}
    # A real deployment's settings in the environment must not leak into the demo.
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/nowhere"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zuora_sync",
            "demo",
            "--subscriptions",
            "60",
            "--database",
            str(database),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    story = done.stdout
    chapters = re.findall(r"^\[\s*[\d.]+s\] (\d+)\. ", story, flags=re.MULTILINE)
    assert chapters == [str(n) for n in range(1, len(chapters) + 1)] and len(chapters) >= 8
    assert "cache == Zuora: " in story
    assert "second run: " in story and "unchanged" in story.split("second run: ")[1].split("\n")[0]
    assert "the tenant fired 5 callouts; the webhook stored 5" in story

    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        live = conn.scalar(
            select(func.count())
            .select_from(subscriptions)
            .where(subscriptions.c.deleted_at.is_(None))
        )
        gone = conn.scalar(
            select(func.count())
            .select_from(subscriptions)
            .where(subscriptions.c.deleted_at.is_not(None))
        )
        sources = dict(
            conn.execute(text("SELECT source, count(*) FROM callout_inbox GROUP BY source")).all()
        )
    engine.dispose()
    assert (live, gone) == (59, 1)
    assert sources["callout"] == 5 and sources["reconcile"] >= 60 + 3
