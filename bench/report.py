"""The benchmark report: every benchmark in one go, its figures against DESIGN.md's targets.

    make bench-report                         # full sizes (several minutes; a quiet machine)
    make bench-report ARGS=--quick            # small sizes: proves the whole chain works
    .venv/bin/python bench/report.py --no-run # only re-render from bench/results/*.json

Each benchmark runs as it is run by hand, as a subprocess, one after the other (webhook,
drain, freshness, reconcile), its output shown and kept in bench/results/logs/. Their JSON
results are then read from bench/results/ and turned into docs/benchmarks.md (one row per
target: measured, target, ratio, met; the machine, date and commit) and docs/benchmarks.png
(drain throughput and freshness over time). A benchmark that is missing, fails or leaves no
fresh result gets "not run" rows; the report is written regardless.

Ratios are oriented so that >= 1 means the target is met: measured / target for floors,
target / measured for ceilings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeGuard

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
NAMES = ("webhook", "drain", "freshness", "reconcile")
ONE_MILLION = 1_000_000


# --- running the benchmarks --------------------------------------------------------------------


def bench_args(name: str, quick: bool, results: Path, script: Path) -> list[str]:
    """The arguments a benchmark is run with; quick sizes only prove the chain end to end."""
    if name == "webhook":
        args = ["--json", str(results / "webhook.json")]
        if quick:
            args += ["--duration", "3", "--rounds", "1", "--rate-duration", "5"]
            args += ["--pgbench-seconds", "3"]
        return args
    if not quick:
        return []
    if name == "drain":
        return ["--callouts", "5000", "--subscriptions", "1000", "--naive-seconds", "5"]
    if name == "freshness":
        return ["--seconds", "8", "--subscriptions", "1000"]
    # The reconcile benchmark is the newest: use whichever small-size option it offers.
    usage = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--quick" in usage:
        return ["--quick"]
    if "--subscriptions" in usage:
        return ["--subscriptions", "100000"]
    return []


@dataclass
class Outcome:
    name: str
    command: list[str] = field(default_factory=list)
    seconds: float | None = None
    problem: str | None = None  # why there is no result: the "not run" reason


def run_one(name: str, *, quick: bool, results: Path, bench_dir: Path, timeout: float) -> Outcome:
    script = bench_dir / f"{name}.py"
    if not script.exists():
        return Outcome(name, problem=f"{script.name} does not exist")
    command = [sys.executable, str(script), *bench_args(name, quick, results, script)]
    outcome = Outcome(name, command)
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.time()
    with (
        log.open("w") as sink,
        subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own process group: on a timeout, whatever it started goes with it.
            start_new_session=True,
        ) as proc,
    ):
        copier = threading.Thread(target=tee, args=(proc.stdout, sink), daemon=True)
        copier.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            outcome.problem = f"timed out after {timeout:.0f} s (log: {rel(log)})"
        except KeyboardInterrupt:
            stop(proc)
            raise
        copier.join(timeout=10)
    outcome.seconds = time.time() - started
    if outcome.problem is None and proc.returncode != 0:
        outcome.problem = f"exited with {proc.returncode} (log: {rel(log)})"
    result = results / f"{name}.json"
    if outcome.problem is None and (not result.exists() or result.stat().st_mtime < started):
        outcome.problem = f"wrote no {result.name} (log: {rel(log)})"
    return outcome


def tee(stream: IO[str], sink: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        sink.write(line)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT first: a benchmark's finally blocks drop its databases and stop its servers
    (SIGTERM would skip them). Then, if it hangs, its whole process group is killed."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# --- reading results and judging them ----------------------------------------------------------


def load_results(results: Path, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """Each benchmark's JSON, or a string saying why there is none."""
    loaded: dict[str, Any] = {}
    for name in NAMES:
        outcome = outcomes.get(name)
        if outcome is not None and outcome.problem:
            loaded[name] = outcome.problem
            continue
        path = results / f"{name}.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            loaded[name] = f"no {path.name} in {rel(results)}"
        except (OSError, ValueError) as exc:
            loaded[name] = f"{path.name} is unreadable: {exc}"
        else:
            loaded[name] = doc if isinstance(doc, dict) else f"{path.name} is not an object"
    return loaded


@dataclass
class Row:
    figure: str
    target: str
    measured: float | None = None
    unit: str = ""
    ratio: float | None = None
    met: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        if self.measured is None:
            return [self.figure, "not run", self.target, "", "not run", self.note]
        met = {True: "yes", False: "**no**", None: "n/a"}[self.met]
        ratio = "" if self.ratio is None else fmt_ratio(self.ratio)
        value = f"{fmt(self.measured)} {self.unit}".strip()
        return [self.figure, value, self.target, ratio, met, self.note]


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return f"{int(value):,}"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_ratio(value: float) -> str:
    if math.isinf(value):
        return "∞"
    # A far miss keeps two significant digits rather than showing as 0.00.
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def at_least(measured: float, target: float) -> tuple[float, bool]:
    return measured / target, measured >= target


def at_most(measured: float, target: float, *, strict: bool = False) -> tuple[float, bool]:
    ratio = target / measured if measured else math.inf
    return ratio, (measured < target if strict else measured <= target)


Judge = Callable[[dict[str, Any]], list[Row]]


def webhook_rows(doc: dict[str, Any]) -> list[Row]:
    verdict, full, fixed = doc["verdict"], doc["full_speed"], doc["fixed_rate"]["webhook"]
    rate = verdict["accepted_per_s"]
    noop = verdict["ratio_to_noop_fastapi"]
    p99 = verdict["p99_ms_at_fixed_rate"]
    hook = full["webhook"]
    lost = max(0, hook["answered_2xx"] - hook["rows_stored"]) + fixed["lost"]
    unexpected = max(0, hook["rows_stored"] - hook["answered_2xx"]) + fixed["unexpected_rows"]
    answered = hook["answered_2xx"] + fixed["answered_2xx"]
    rows = [
        Row("Webhook: accepted callouts/s (median, full speed)", ">= 4,000", rate, "/s"),
        Row(
            "Webhook: rate / no-op FastAPI endpoint's rate, same run",
            ">= 0.50",
            noop,
            note=f"no-op FastAPI {fmt(full['noop_fastapi']['per_s_median'])}/s",
        ),
        Row(
            f"Webhook: p99 latency at {fmt(fixed['rate'])}/s (open loop)",
            "<= 20 ms",
            p99,
            "ms",
            note=f"p50 {fmt(fixed['p50_ms'])} ms",
        ),
        Row(
            "Webhook: callouts lost (answered 2xx, no inbox row)",
            "0",
            lost,
            met=lost == 0 and unexpected == 0,
            note=f"of {answered:,} answered 2xx; {unexpected} rows without a 2xx",
        ),
    ]
    rows[0].ratio, rows[0].met = at_least(rate, 4000)
    rows[1].ratio, rows[1].met = at_least(noop, 0.5)
    rows[2].ratio, rows[2].met = at_most(p99, 20)
    return rows


def drain_rows(doc: dict[str, Any]) -> list[Row]:
    drained, bound = doc["drain"], doc["bound_subscriptions_per_s"]
    rate = drained["subscriptions_per_s"]
    share = doc["share_429"]
    speedup = doc["speedup_vs_naive_callouts"]
    rows = [
        Row(
            "Drain: subscriptions synced/s",
            f">= 0.9 x bound = {fmt(0.9 * bound)}/s",
            rate,
            "/s",
            note=f"bound (limit / latency) {fmt(bound)}/s; "
            f"{drained['fetched']:,} fetches in {fmt(drained['elapsed_s'])} s",
        ),
        Row(
            "Drain: requests answered 429",
            "< 1%",
            share * 100,
            "%",
            note=f"{drained['throttled']:,} of {drained['requests']:,} requests",
        ),
        Row(
            "Drain: speed-up over the naive worker (callouts/s)",
            ">= 30x",
            speedup,
            "x",
            note=f"naive {doc['naive']['callouts_per_s']:.2f} callouts/s",
        ),
    ]
    rows[0].ratio, rows[0].met = at_least(rate, 0.9 * bound)
    rows[1].ratio, rows[1].met = at_most(share, 0.01, strict=True)
    rows[2].ratio, rows[2].met = at_least(speedup, 30)
    return rows


def freshness_rows(doc: dict[str, Any]) -> list[Row]:
    note = f"{doc['in_cache']:,} of {doc['sent']:,} callouts reached the cache"
    if doc["p95_s"] is None:
        return [Row("Freshness: callout to cache, p95", "<= 2 s", note=note)]
    p95 = doc["p95_s"]
    row = Row(
        "Freshness: callout to cache, p95",
        "<= 2 s",
        p95,
        "s",
        note=f"p50 {fmt(doc['p50_s'])} s; {note}",
    )
    row.ratio, row.met = at_most(p95, 2.0)
    if doc["in_cache"] < doc["sent"]:
        row.met = False
    return [row]


def reconcile_rows(doc: dict[str, Any]) -> list[Row]:
    subs = int(doc["subscriptions"])
    full_size = subs >= ONE_MILLION
    # Time and memory grow with the data set: a smaller run says nothing about the 1M target.
    size_note = "" if full_size else f"{subs:,} subscriptions, not 1,000,000: not judged"
    rows = [
        Row(
            f"Reconcile: full diff of {subs:,} subscriptions",
            "<= 20 s at 1,000,000",
            doc["total_s"],
            "s",
            note=size_note,
        ),
        Row(
            "Reconcile: peak memory",
            "<= 1,024 MB at 1,000,000",
            doc["peak_rss_mb"],
            "MB",
            note=size_note,
        ),
        Row(
            "Reconcile: time / time of merely reading both sides",
            "<= 2",
            doc["ratio"],
            note=f"reading both sides {fmt(doc['floor_s'])} s",
        ),
    ]
    rows[0].ratio, rows[0].met = at_most(doc["total_s"], 20)
    rows[1].ratio, rows[1].met = at_most(doc["peak_rss_mb"], 1024)
    rows[2].ratio, rows[2].met = at_most(doc["ratio"], 2)
    if not full_size:
        rows[0].met = rows[1].met = None
    return rows


# Each benchmark's rows when it did not run: the same figures, so the table keeps its shape.
PLACEHOLDERS: dict[str, list[tuple[str, str]]] = {
    "webhook": [
        ("Webhook: accepted callouts/s (median, full speed)", ">= 4,000"),
        ("Webhook: rate / no-op FastAPI endpoint's rate, same run", ">= 0.50"),
        ("Webhook: p99 latency at 1,000/s (open loop)", "<= 20 ms"),
        ("Webhook: callouts lost (answered 2xx, no inbox row)", "0"),
    ],
    "drain": [
        ("Drain: subscriptions synced/s", ">= 0.9 x (limit / latency)"),
        ("Drain: requests answered 429", "< 1%"),
        ("Drain: speed-up over the naive worker (callouts/s)", ">= 30x"),
    ],
    "freshness": [("Freshness: callout to cache, p95", "<= 2 s")],
    "reconcile": [
        ("Reconcile: full diff of 1,000,000 subscriptions", "<= 20 s"),
        ("Reconcile: peak memory", "<= 1,024 MB"),
        ("Reconcile: time / time of merely reading both sides", "<= 2"),
    ],
}
JUDGES: dict[str, Judge] = {
    "webhook": webhook_rows,
    "drain": drain_rows,
    "freshness": freshness_rows,
    "reconcile": reconcile_rows,
}


def judge(loaded: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name in NAMES:
        doc = loaded.get(name, "not asked for")
        problem = doc if isinstance(doc, str) else None
        if problem is None:
            try:
                rows.extend(JUDGES[name](doc))
                continue
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                problem = f"{name}.json lacks a figure: {type(exc).__name__} {exc}"
        rows.extend(Row(figure, target, note=problem) for figure, target in PLACEHOLDERS[name])
    return rows


def context(loaded: dict[str, Any]) -> list[tuple[str, str]]:
    """Figures from the same runs that no target names but that explain the ones it does:
    the ceilings measured beside the webhook, the drain's bound and sizes, and so on."""
    found: list[tuple[str, str]] = []

    def add(name: str, label: str, value: Callable[[dict[str, Any]], str]) -> None:
        doc = loaded.get(name)
        if isinstance(doc, dict):
            with contextlib.suppress(KeyError, TypeError, ValueError, ZeroDivisionError):
                found.append((label, value(doc)))

    add(
        "webhook",
        "Webhook: pgbench, the same INSERT, rows/s at 1 / 50 rows per commit",
        lambda d: (
            f"{fmt(d['pgbench']['single_row_per_s'])} / "
            f"{fmt(d['pgbench']['batched_rows_per_s'])} (webhook / 1-row pgbench "
            f"{d['full_speed']['webhook']['per_s_median'] / d['pgbench']['single_row_per_s']:.2f})"
        ),
    )
    add(
        "webhook",
        "Webhook: no-op plain ASGI app, requests/s",
        lambda d: fmt(d["full_speed"]["noop_asgi"]["per_s_median"]),
    )
    add(
        "webhook",
        "Webhook: full speed p50 / p99, ms",
        lambda d: (
            f"{fmt(d['full_speed']['webhook']['p50_ms_median'])} / "
            f"{fmt(d['full_speed']['webhook']['p99_ms_median'])}"
        ),
    )
    add(
        "webhook",
        "Webhook: CPU per callout, webhook + PostgreSQL, us",
        lambda d: (
            f"{fmt(d['full_speed']['webhook']['server_cpu_us_per_request'])} + "
            f"{fmt(d['full_speed']['webhook']['database_cpu_us_per_request'])}"
        ),
    )
    add(
        "webhook",
        "Webhook: generator floor at the fixed rate (no-op), p99 ms",
        lambda d: fmt(d["fixed_rate"]["noop_asgi"]["p99_ms"]),
    )
    add(
        "drain",
        "Drain: backlog and sandbox",
        lambda d: (
            f"{d['callouts']:,} callouts over {d['subscriptions']:,} subscriptions; "
            f"latency {fmt(d['latency_ms'])} ms, concurrency limit {d['limit']}, "
            f"peak seen {d['sandbox_peak_concurrency']}"
        ),
    )
    add(
        "drain",
        "Drain: callouts/s (drain / naive worker)",
        lambda d: f"{fmt(d['drain']['callouts_per_s'])} / {fmt(d['naive']['callouts_per_s'])}",
    )
    add(
        "freshness",
        "Freshness: trickle and Zuora latency",
        lambda d: (
            f"{fmt(d['rate'])} callouts/s for {fmt(d['seconds'])} s; "
            f"latency {fmt(d['latency_ms'])} ms per GET"
        ),
    )
    add("freshness", "Freshness: max, s", lambda d: fmt(d["max_s"]))
    known = {"subscriptions", "total_s", "floor_s", "ratio", "peak_rss_mb"}
    reconcile = loaded.get("reconcile")
    if isinstance(reconcile, dict):
        add("reconcile", "Reconcile: reading both sides only, s", lambda d: fmt(d["floor_s"]))
        # Whatever else the reconcile benchmark measures, as it names it.
        for key, value in reconcile.items():
            if key in known:
                continue
            if is_number(value):
                found.append((f"Reconcile: {key}", fmt(value)))
            elif isinstance(value, str):
                found.append((f"Reconcile: {key}", value))
    return found


# --- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_pressure() -> float | None:
    """Share of the last minute some task waited for a CPU (Linux PSI), in percent."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg60=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def load() -> dict[str, Any]:
    return {"load": list(os.getloadavg()), "cpu_pressure": cpu_pressure()}


def commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = [
        line
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith(("docs/benchmarks.", "bench/results/"))
    ]
    return sha + (" with uncommitted changes" if changed else "")


# --- the document and the plot -----------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = ["Figure", "Measured", "Target", "Ratio (>= 1 met)", "Met", "Notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def render(
    rows: Sequence[Row],
    *,
    machine: dict[str, Any],
    outcomes: dict[str, Outcome],
    quick: bool | None,
    plot_name: str | None,
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    met = sum(r.met is True for r in rows)
    judged = sum(r.met is not None for r in rows)
    not_run = sum(r.measured is None for r in rows)
    before, after = machine.get("before", {}), machine.get("after", {})
    size = {
        True: "quick (small sizes: a smoke run, not a measurement)",
        False: "full",
        None: "unknown (results not written by bench/report.py)",
    }[quick]
    out = [
        "# Benchmarks",
        "",
        'Where the project stands against the targets in DESIGN.md ("Targets"). Generated by',
        "`bench/report.py`; do not edit by hand. To produce it again (several minutes, on a quiet",
        "machine: other work on the cores shows in every figure):",
        "",
        "```sh",
        "make bench-report                 # every benchmark at full size, then this page",
        "make bench-report ARGS=--quick    # small sizes, to check the chain end to end",
        ".venv/bin/python bench/report.py --no-run   # this page again from bench/results/*.json",
        "```",
        "",
        "Each benchmark can also be run by hand (`bench/webhook.py`, `bench/drain.py`,",
        "`bench/freshness.py`, `bench/reconcile.py`); their docstrings say what they measure.",
        "Ratios are measured / target for floors and target / measured for ceilings, so a ratio",
        ">= 1 means the target is met.",
        "",
        f"- Date: {machine.get('date', '?')}",
        f"- Commit: {machine.get('commit', '?')}",
        f"- Sizes: {size}",
        f"- Machine: {machine.get('cores', '?')} cores, {machine.get('cpu', '?')}; "
        f"Python {machine.get('python', '?')}",
        f"- Load average (1, 5, 15 min) before: {fmt_load(before)}; after: {fmt_load(after)}",
        f"- Targets met: {met} of {judged} judged; {not_run} rows not run",
        "",
        table(rows),
        "",
    ]
    if extra:
        out += ["Beside the targets, from the same runs:", "", "| Figure | Value |", "|---|---|"]
        out += [f"| {label} | {value} |" for label, value in extra]
        out.append("")
    ran = [o for o in outcomes.values() if o.command]
    if ran:
        out += ["Commands run:", ""]
        for o in ran:
            took = f" ({o.seconds:.0f} s)" if o.seconds is not None else ""
            shown = [rel(Path(a)) if Path(a).is_absolute() else a for a in o.command[1:]]
            out.append(f"- `python {' '.join(shown)}`{took}")
        out.append("")
    if plot_name:
        out += [
            f"![Drain throughput and freshness over time]({plot_name})",
            "",
            "Top: subscriptions the drain synced in each second, beside the sandbox's bound "
            "(concurrency limit / latency). Bottom: each callout's freshness (sent to the webhook "
            "until its subscription was in the cache) by when it was sent, with p50, p95 and the "
            "2 s target.",
            "",
        ]
    return "\n".join(out)


def fmt_load(sample: dict[str, Any]) -> str:
    if not sample.get("load"):
        return "?"
    text = ", ".join(f"{v:.2f}" for v in sample["load"])
    if sample.get("cpu_pressure") is not None:
        text += f" (CPU pressure {sample['cpu_pressure']:.0f}%)"
    return text


def plot(loaded: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), constrained_layout=True)
    try:
        drain = series_of(loaded, "drain")
        points = drain["drain"]["per_second"]
        if not points:
            raise ValueError("the drain synced nothing")
        bound = float(drain["bound_subscriptions_per_s"])
        seconds = [p["second"] for p in points]
        top.step(seconds, [p["subscriptions"] for p in points], where="post", label="synced/s")
        top.axhline(bound, color="grey", linestyle="--", label=f"bound {bound:.0f}/s")
        top.axhline(0.9 * bound, color="red", linestyle=":", label=f"target {0.9 * bound:.0f}/s")
        top.set_xlabel("seconds since the drain started")
        top.set_ylabel("subscriptions synced per second")
        top.legend(loc="best")
        top.set_ylim(0, 1.1 * max([bound, *(p["subscriptions"] for p in points)]))
    except (KeyError, TypeError, ValueError) as exc:
        unavailable(top, exc)
    top.set_title("Drain throughput")

    try:
        fresh = series_of(loaded, "freshness")
        samples = fresh["samples"]
        if not samples:
            raise ValueError("no callout reached the cache")
        start = min(s["sent"] for s in samples)
        times = [s["sent"] - start for s in samples]
        lags = [s["freshness_s"] for s in samples]
        bottom.plot(times, lags, ".", markersize=3, label="one callout")
        p50, p95 = float(fresh["p50_s"]), float(fresh["p95_s"])
        bottom.axhline(p50, color="green", linestyle="-", label=f"p50 {p50:.2f} s")
        bottom.axhline(p95, color="orange", linestyle="-", label=f"p95 {p95:.2f} s")
        bottom.axhline(2.0, color="red", linestyle=":", label="target p95 2 s")
        bottom.set_xlabel("seconds since the first callout was sent")
        bottom.set_ylabel("callout to cache, s")
        bottom.legend(loc="best")
        bottom.set_ylim(0, 1.1 * max(2.0, *lags))
    except (KeyError, TypeError, ValueError) as exc:
        unavailable(bottom, exc)
    bottom.set_title("Freshness")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


class NotRun(ValueError):
    """A benchmark gave no result; its message is why."""


def series_of(loaded: dict[str, Any], name: str) -> dict[str, Any]:
    doc = loaded.get(name)
    if not isinstance(doc, dict):
        raise NotRun(doc or f"no {name}.json")
    return doc


def unavailable(ax: Any, exc: Exception) -> None:
    if isinstance(exc, NotRun):
        text = f"not run: {exc}"
    elif isinstance(exc, KeyError):
        text = f"no time series in the result (it lacks {exc})"
    else:
        text = f"nothing to draw: {exc}"
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def this_machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "before": load(),
    }


def read_run(path: Path) -> tuple[dict[str, Any], dict[str, Outcome], bool | None]:
    """The machine, outcomes and sizes of the run that wrote the results, when it was
    bench/report.py; results written by hand carry none, and say so."""
    try:
        doc = json.loads(path.read_text())
        outcomes = {name: Outcome(**o) for name, o in doc["outcomes"].items()}
        return dict(doc["machine"]), outcomes, bool(doc["quick"])
    except (OSError, ValueError, KeyError, TypeError):
        unknown = "unknown (results not written by bench/report.py)"
        return {"date": unknown, "commit": unknown, "cores": "?", "cpu": "?"}, {}, None


# --- the command -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--no-run", action="store_true", help="do not run anything; report the results there"
    )
    parser.add_argument(
        "--only",
        default=",".join(NAMES),
        help=f"benchmarks to run, comma-separated (default: {','.join(NAMES)})",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON results are read from (default bench/results/, where the "
        "benchmarks write them)",
    )
    parser.add_argument("--bench-dir", type=Path, default=BENCH, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=DOC, help="the markdown report")
    parser.add_argument("--png", type=Path, default=PLOT, help="the plot")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds one benchmark may take"
    )
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
    if args.no_run and args.quick:
        parser.error("--quick sizes the runs; with --no-run nothing runs")

    run_file = args.results / "run.json"
    if args.no_run:
        machine, outcomes, quick = read_run(run_file)
    else:
        quick = args.quick
        machine = this_machine()
        outcomes = {}
        args.results.mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            if name not in only:
                outcomes[name] = Outcome(name, problem="not asked for (--only)")
                continue
            outcomes[name] = run_one(
                name,
                quick=args.quick,
                results=args.results,
                bench_dir=args.bench_dir,
                timeout=args.timeout,
            )
        machine["after"] = load()
        # What --no-run needs to render this run again: where, when, and what failed.
        run_file.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "quick": quick,
                    "outcomes": {name: asdict(o) for name, o in outcomes.items()},
                },
                indent=2,
            )
        )
    loaded = load_results(args.results, outcomes)
    rows = judge(loaded)
    plot(loaded, args.png)
    link = os.path.relpath(args.png.resolve(), args.out.resolve().parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        render(
            rows,
            machine=machine,
            outcomes=outcomes,
            quick=quick,
            plot_name=link,
            extra=context(loaded),
        )
    )
    print(f"\n{table(rows)}\n\nwrote {rel(args.out)} and {rel(args.png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
