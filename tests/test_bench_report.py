"""The benchmark report, from result files written here: no benchmark is really run.

The JSON shapes are the ones bench/webhook.py, bench/drain.py, bench/freshness.py and
bench/reconcile.py write; the figures are made up so that some targets are met and some not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def webhook_result(rate: float = 4400.0, lost: int = 0) -> dict[str, Any]:
    return {
        "machine": {"cpus": 2, "load_before": 0.5, "load_after": 0.7},
        "full_speed": {
            "webhook": {"per_s_median": rate, "answered_2xx": 40_000, "rows_stored": 40_000},
            "noop_fastapi": {"per_s_median": 8000.0},
            "noop_asgi": {"per_s_median": 20_000.0},
        },
        "fixed_rate": {
            "webhook": {
                "rate": 1000.0,
                "p50_ms": 2.0,
                "p99_ms": 25.0,
                "answered_2xx": 15_000,
                "rows_stored": 15_000 - lost,
                "lost": lost,
                "unexpected_rows": 0,
            }
        },
        "pgbench": {"single_row_per_s": 3300.0, "batched_rows_per_s": 28_000.0},
        "verdict": {
            "accepted_per_s": rate,
            "ratio_to_noop_fastapi": rate / 8000.0,
            "p99_ms_at_fixed_rate": 25.0,
        },
    }


def drain_result() -> dict[str, Any]:
    per_second = [{"second": s, "subscriptions": 150, "callouts": 1500} for s in range(60)]
    return {
        "callouts": 100_000,
        "subscriptions": 10_000,
        "bound_subscriptions_per_s": 160.0,
        "drain": {
            "elapsed_s": 66.7,
            "subscriptions_per_s": 150.0,
            "callouts_per_s": 1500.0,
            "fetched": 10_000,
            "requests": 10_000,
            "throttled": 200,
            "per_second": per_second,
        },
        "naive": {"callouts_per_s": 3.0},
        "ratio_to_bound": 150.0 / 160.0,
        "share_429": 0.02,
        "speedup_vs_naive_callouts": 50.0,
    }


def freshness_result() -> dict[str, Any]:
    samples = [
        {"sent": 1_700_000_000 + i / 20, "freshness_s": 0.5 + (i % 10) / 10} for i in range(200)
    ]
    return {"sent": 200, "in_cache": 200, "p50_s": 0.9, "p95_s": 1.4, "samples": samples}


def reconcile_result(subscriptions: int = 1_000_000) -> dict[str, Any]:
    return {
        "subscriptions": subscriptions,
        "total_s": 25.0,
        "floor_s": 10.0,
        "ratio": 2.5,
        "peak_rss_mb": 800.0,
    }


def write(results: Path, **docs: Any) -> None:
    results.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        text = doc if isinstance(doc, str) else json.dumps(doc)
        (results / f"{name}.json").write_text(text)


def rows_of(markdown: str) -> dict[str, list[str]]:
    """The report's table, by figure: [measured, target, ratio, met, notes]."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] != "Figure":
            rows[cells[0]] = cells[1:]
    return rows


def render(tmp_path: Path, *extra: str) -> tuple[dict[str, list[str]], str, Path]:
    out, png = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "benchmarks.png"
    args = [
        "--no-run",
        "--results",
        str(tmp_path / "results"),
        "--out",
        str(out),
        "--png",
        str(png),
    ]
    code = report.main([*args, *extra])
    assert code == 0
    text = out.read_text()
    return rows_of(text), text, png


def test_table_has_a_row_per_target_with_ratios_oriented_so_one_is_met(tmp_path: Path) -> None:
    write(
        tmp_path / "results",
        webhook=webhook_result(),
        drain=drain_result(),
        freshness=freshness_result(),
        reconcile={**reconcile_result(), "pull_s": 8.5, "mode": "full"},
    )
    rows, text, png = render(tmp_path)

    assert len(rows) == 11
    assert rows["Webhook: accepted callouts/s (median, full speed)"][:4] == [
        "4,400 /s",
        ">= 4,000",
        "1.10",
        "yes",
    ]
    assert rows["Webhook: rate / no-op FastAPI endpoint's rate, same run"][2:4] == ["1.10", "yes"]
    # A ceiling: target / measured, below 1 when missed.
    assert rows["Webhook: p99 latency at 1,000/s (open loop)"][:4] == [
        "25 ms",
        "<= 20 ms",
        "0.80",
        "**no**",
    ]
    assert rows["Webhook: callouts lost (answered 2xx, no inbox row)"][0] == "0"
    assert rows["Webhook: callouts lost (answered 2xx, no inbox row)"][3] == "yes"
    assert rows["Drain: subscriptions synced/s"][1:4] == [">= 0.9 x bound = 144/s", "1.04", "yes"]
    assert rows["Drain: requests answered 429"][:4] == ["2 %", "< 1%", "0.50", "**no**"]
    assert rows["Drain: speed-up over the naive worker (callouts/s)"][2:4] == ["1.67", "yes"]
    assert rows["Freshness: callout to cache, p95"][:4] == ["1.40 s", "<= 2 s", "1.43", "yes"]
    assert rows["Reconcile: full diff of 1,000,000 subscriptions"][2:4] == ["0.80", "**no**"]
    assert rows["Reconcile: peak memory"][2:4] == ["1.28", "yes"]
    assert rows["Reconcile: time / time of merely reading both sides"][2:4] == ["0.80", "**no**"]
    assert "Targets met: 7 of 11 judged; 0 rows not run" in text
    assert "Sizes: unknown (results not written by bench/report.py)" in text
    # Beside the targets: the ceilings measured in the same runs, and what else reconcile wrote.
    assert (
        "| Webhook: pgbench, the same INSERT, rows/s at 1 / 50 rows per commit"
        " | 3,300 / 28,000 (webhook / 1-row pgbench 1.33) |"
    ) in text
    assert "| Drain: callouts/s (drain / naive worker) | 1,500 / 3 |" in text
    assert "| Reconcile: pull_s | 8.50 |" in text
    assert "| Reconcile: mode | full |" in text
    assert "![Drain throughput and freshness over time](benchmarks.png)" in text
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_missing_or_broken_results_are_not_run_rows(tmp_path: Path) -> None:
    write(
        tmp_path / "results",
        webhook=webhook_result(lost=3),
        drain={"callouts": 10},  # written by something else: lacks the figures
        freshness="{not json",
    )
    rows, text, png = render(tmp_path)

    assert len(rows) == 11
    lost = rows["Webhook: callouts lost (answered 2xx, no inbox row)"]
    assert lost[0] == "3" and lost[3] == "**no**"
    for figure, cells in rows.items():
        if figure.startswith("Webhook"):
            continue
        assert cells[0] == "not run" and cells[3] == "not run", figure
    assert "drain.json lacks a figure" in rows["Drain: subscriptions synced/s"][4]
    assert "freshness.json is unreadable" in rows["Freshness: callout to cache, p95"][4]
    assert "no reconcile.json" in rows["Reconcile: peak memory"][4]
    assert "7 rows not run" in text
    # The plot is still drawn, saying what is missing.
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_a_smaller_reconcile_run_is_shown_but_not_judged_against_the_million(
    tmp_path: Path,
) -> None:
    write(tmp_path / "results", reconcile=reconcile_result(subscriptions=100_000))
    rows, _, _ = render(tmp_path)

    total = rows["Reconcile: full diff of 100,000 subscriptions"]
    assert total[0] == "25 s" and total[3] == "n/a"
    assert "not 1,000,000: not judged" in total[4]
    assert rows["Reconcile: peak memory"][3] == "n/a"
    # The ratio to the read floor does not depend on the size.
    assert rows["Reconcile: time / time of merely reading both sides"][3] == "**no**"


def test_benchmarks_that_fail_or_are_missing_leave_not_run_rows(tmp_path: Path) -> None:
    results, scripts = tmp_path / "results", tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "webhook.py").write_text("import sys\nprint('no database')\nsys.exit(3)\n")
    (scripts / "freshness.py").write_text("print('finished, wrote nothing')\n")
    canned = json.dumps(reconcile_result())
    (scripts / "reconcile.py").write_text(
        f"from pathlib import Path\nPath({str(results / 'reconcile.json')!r}).write_text({canned!r})\n"
    )
    out, png = tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    args = ["--results", str(results), "--out", str(out), "--png", str(png)]

    assert report.main([*args, "--bench-dir", str(scripts)]) == 0

    rows = rows_of(out.read_text())
    assert "exited with 3" in rows["Webhook: p99 latency at 1,000/s (open loop)"][4]
    assert "drain.py does not exist" in rows["Drain: requests answered 429"][4]
    assert "wrote no freshness.json" in rows["Freshness: callout to cache, p95"][4]
    assert rows["Reconcile: peak memory"][:4] == [
        "800 MB",
        "<= 1,024 MB at 1,000,000",
        "1.28",
        "yes",
    ]
    assert "no database" in (results / "logs" / "webhook.log").read_text()
    first = out.read_text()
    assert "Commit: unknown" not in first and "- Sizes: full" in first

    # Rendering again from the files keeps what the run knew: why a benchmark gave nothing,
    # even though an older result would be lying there.
    write(results, webhook=webhook_result())
    assert report.main(["--no-run", *args]) == 0
    again = out.read_text()
    assert "exited with 3" in rows_of(again)["Webhook: p99 latency at 1,000/s (open loop)"][4]
    assert f"Commit: {report.commit()}" in again


def test_bad_usage_is_one_error_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        report.main(["--only", "webhook,nonsense", "--results", str(tmp_path)])
    assert exit_.value.code == 2
    assert "unknown benchmark(s): nonsense" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
