"""`zuora-sync`: the one command line for the webhook, the flows, the sandbox and operations.

Exit codes: 0 success; 1 the job ran and found a problem (dead letters, unhealed drift);
2 bad usage or configuration, with one clear line on stderr.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer

from zuora_sync import logs
from zuora_sync.settings import ConfigError, Settings, get_settings

app = typer.Typer(
    name="zuora-sync",
    help="Keep a local cache of Zuora subscriptions exactly in sync with Zuora.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The warehouse database.", no_args_is_help=True)
inbox_app = typer.Typer(help="Look into and replay the callout inbox.", no_args_is_help=True)
zuora_app = typer.Typer(help="Configure a Zuora tenant.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(inbox_app, name="inbox")
app.add_typer(zuora_app, name="zuora")


class UsageError(Exception):
    """Bad usage or configuration: one line on stderr, exit code 2."""


def fail_usage(message: str) -> NoReturn:
    raise UsageError(message)


def settings() -> Settings:
    current = get_settings()
    logs.configure(current.LOG_LEVEL, current.LOG_FORMAT)
    return current


#: `--prefect/--no-prefect`, for the commands that run a flow.
PrefectOption = Annotated[
    bool | None,
    typer.Option(
        "--prefect/--no-prefect",
        help="run as a Prefect flow run (default: when PREFECT_API_URL is set)",
    ),
]


def _use_prefect(choice: bool | None) -> bool:
    import os

    return bool(os.environ.get("PREFECT_API_URL")) if choice is None else choice


def _engine(current: Settings) -> Any:
    from warehouse.db import make_engine

    if current.DATABASE_URL.startswith("sqlite:///"):
        target = Path(current.DATABASE_URL.removeprefix("sqlite:///"))
        if target.name and not target.parent.exists():
            fail_usage(f"DATABASE_URL points into {target.parent}, which does not exist")
    return make_engine(current.DATABASE_URL, pool_size=2)


def _not_built(command: str, issue: int) -> NoReturn:
    fail_usage(f"`{command}` is not built yet (see issue {issue})")


# --- db ----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply the schema migrations to DATABASE_URL (PostgreSQL or SQLite)."""
    from warehouse import migrate

    current = settings()
    engine = _engine(current)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(current.DATABASE_URL, revision)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    where = current.database_url_masked
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: migrated from {before or 'an empty database'} to {after}")


# --- services and flows -----------------------------------------------------------------------


@app.command()
def webhook(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="worker processes: one per core the webhook has to itself "
            "(see docs/zuora_callouts.md, 'Serving')",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Serve the Zuora callout receiver (POST /api/v1/zuora/callouts/sync_subscription)."""
    from webhook.serve import serve

    serve(settings(), host=host, port=port, workers=workers)


@app.command()
def drain(
    batch_size: Annotated[
        int,
        typer.Option(
            help="subscriptions claimed at a time, each with all its callouts", min=1, max=5000
        ),
    ] = 500,
    window: Annotated[
        float,
        typer.Option(help="seconds to keep draining; 0 drains until empty, then exits", min=0),
    ] = 0,
    prefect: PrefectOption = None,
) -> None:
    """Run the drain flow once: inbox -> Zuora -> cache. Exit 1 if rows went dead."""
    import asyncio

    from flows.drain import DrainAborted, DrainOptions

    current = settings()
    _engine(current).dispose()  # a clear error for a bad DATABASE_URL before anything starts
    use_prefect = _use_prefect(prefect)
    try:
        if use_prefect:
            from flows.drain_callouts import drain_callouts

            summary = asyncio.run(drain_callouts(batch_size=batch_size, window_seconds=window))
        else:
            from flows.runner import run_drain

            options = DrainOptions.from_settings(
                current, batch_size=batch_size, window_seconds=window
            )
            summary = asyncio.run(run_drain(current, options)).as_dict()
    except DrainAborted as exc:
        typer.echo(f"zuora-sync: {exc}", err=True)
        raise typer.Exit(1) from None
    _print_summary("drain", summary)
    if summary["dead"]:
        typer.echo(
            f"{summary['dead']} row(s) went to the dead letter: "
            "`zuora-sync inbox list --status dead`, then `zuora-sync inbox replay`",
            err=True,
        )
        raise typer.Exit(1)


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    typer.echo(f"{title} summary")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        typer.echo(f"  {key:<16} {'-' if value is None else value}")


@app.command()
def reconcile(
    full: Annotated[bool, typer.Option("--full", help="diff every subscription")] = False,
    since: Annotated[
        str | None,
        typer.Option(help="diff what changed in Zuora since this ISO 8601 time (UTC if no offset)"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report only: enqueue and mark nothing")
    ] = False,
    no_heal: Annotated[
        bool, typer.Option("--no-heal", help="report and record the run, but heal nothing")
    ] = False,
    no_drain: Annotated[
        bool,
        typer.Option("--no-drain", help="enqueue the drift, leave it to the scheduled drain"),
    ] = False,
    prefect: PrefectOption = None,
) -> None:
    """Diff the cache against Zuora's query API, print the drift report and heal it.

    Incremental by default (what changed since the last clean run, or a full run when there
    is none yet). Exit 1 when drift was found and not healed.
    """
    import asyncio
    from datetime import datetime

    if full and since:
        fail_usage("--full and --since exclude each other")
    moment: datetime | None = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
        except ValueError:
            fail_usage(f"--since is not an ISO 8601 time: {since!r}")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment > datetime.now(UTC):
            fail_usage("--since is in the future")
    current = settings()
    _engine(current).dispose()  # a clear error for a bad DATABASE_URL before anything starts
    mode: Literal["full", "incremental"] = "full" if full else "incremental"
    options: dict[str, Any] = {
        "since": moment,
        "dry_run": dry_run,
        "heal": not no_heal,
        "drain": not no_drain,
    }
    use_prefect = _use_prefect(prefect)
    from flows.reconcile import ReconcileError
    from zuora.errors import ZuoraError
    from zuora.query import QueryError

    try:
        if use_prefect:
            from flows.reconcile_subscriptions import reconcile_subscriptions

            summary = asyncio.run(reconcile_subscriptions(mode=mode, **options))
            _print_summary("reconcile", summary)
            ok = bool(summary["ok"])
        else:
            from flows.reconcile import run_reconcile

            report = asyncio.run(run_reconcile(current, mode=mode, **options))
            typer.echo(report.render_text())
            ok = report.ok
    except (ReconcileError, QueryError) as exc:
        fail_usage(str(exc))
    except ZuoraError as exc:
        typer.echo(f"zuora-sync: reconcile failed talking to Zuora: {exc}", err=True)
        raise typer.Exit(1) from None
    if not ok:
        typer.echo(
            "drift was left unhealed: run `zuora-sync reconcile` without --dry-run/--no-heal, "
            "or see `zuora-sync inbox list --source reconcile`",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def sandbox(
    port: Annotated[
        int, typer.Option(help="TCP port; 0 picks a free one", min=0, max=65535)
    ] = 8900,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    subscriptions: Annotated[int, typer.Option(help="seeded subscriptions", min=0)] = 1000,
    seed: Annotated[int, typer.Option(help="random seed of the data set")] = 1,
    tenant_id: Annotated[str, typer.Option(help="tenant id in the OAuth token scope")] = "10000719",
    custom_fields: Annotated[
        str | None,
        typer.Option(help="subscription custom fields (default: ZUORA_TRACKED_FIELDS)"),
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="latency added to each API request")] = 0.0,
    latency_jitter_ms: Annotated[float, typer.Option(help="plus uniform 0..jitter")] = 0.0,
    spike_rate: Annotated[float, typer.Option(help="share of requests with a spike")] = 0.0,
    spike_ms: Annotated[float, typer.Option(help="extra latency of a spike")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="share answered 500/502/503")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="share held past the timeout")] = 0.0,
    timeout_hold: Annotated[float, typer.Option(help="seconds a timed-out request is held")] = 60.0,
    drop_callouts: Annotated[float, typer.Option(help="share of changes firing nothing")] = 0.0,
    concurrency_limit: Annotated[int, typer.Option(help="concurrent API requests")] = 40,
    rate_limit: Annotated[int, typer.Option(help="requests per window; 0 = off")] = 50_000,
    rate_window: Annotated[int, typer.Option(help="rate-limit window in seconds")] = 60,
    callout_retry_interval: Annotated[
        float, typer.Option(help="seconds between callout attempts (Zuora: 1800)")
    ] = 1800.0,
    callout_attempts: Annotated[int, typer.Option(help="callout attempts, 1-5", min=1, max=5)] = 3,
    max_output_rows: Annotated[int, typer.Option(help="Data Query output cap")] = 500_000,
    token_ttl: Annotated[float, typer.Option(help="OAuth token lifetime, seconds")] = 3600.0,
    utc_offset: Annotated[str, typer.Option(help="tenant time zone as a UTC offset")] = "+00:00",
    old_id: Annotated[
        str, typer.Option(help="GET by an old version id answers: latest | version")
    ] = "latest",
    amend_events: Annotated[
        str, typer.Option(help="amendments look like: insert_and_update | insert | update")
    ] = "insert_and_update",
    cache_dir: Annotated[
        Path | None, typer.Option(help="cache of built data sets (ZUORA_SANDBOX_CACHE_DIR)")
    ] = None,
    workers: Annotated[int, typer.Option(help="Data Query worker processes", min=1)] = 2,
    gzip: Annotated[
        bool, typer.Option("--gzip", help="gzip big responses when asked, as Zuora does")
    ] = False,
) -> None:
    """Run the simulated Zuora tenant until Ctrl-C."""
    import socket

    import uvicorn
    from pydantic import ValidationError

    from zuora.sandbox.app import create_app
    from zuora.sandbox.config import Faults, SandboxConfig
    from zuora_sync.settings import SANDBOX_CLIENT_SECRET

    current = settings()
    fields = (
        tuple(f.strip() for f in custom_fields.split(",") if f.strip())
        if custom_fields is not None
        else current.ZUORA_TRACKED_FIELDS
    )
    if old_id not in ("latest", "version"):
        fail_usage("--old-id must be latest or version")
    try:
        config = SandboxConfig(
            subscriptions=subscriptions,
            seed=seed,
            tenant_id=tenant_id,
            custom_fields=fields,
            client_id=current.ZUORA_CLIENT_ID.get_secret_value(),
            client_secret=current.ZUORA_CLIENT_SECRET.get_secret_value(),
            concurrency_limit=concurrency_limit,
            rate_limit_per_window=rate_limit,
            rate_limit_window_s=rate_window,
            callout_retry_interval_s=callout_retry_interval,
            callout_max_attempts=callout_attempts,
            dataquery_max_output_rows=max_output_rows,
            token_ttl_s=token_ttl,
            tenant_utc_offset=utc_offset,
            old_id_returns_latest=old_id == "latest",
            amend_events=amend_events,
            cache_dir=cache_dir or current.ZUORA_SANDBOX_CACHE_DIR,
            dataquery_workers=workers,
            gzip_responses=gzip,
            faults=Faults(
                latency_ms=latency_ms,
                latency_jitter_ms=latency_jitter_ms,
                spike_rate=spike_rate,
                spike_ms=spike_ms,
                error_rate=error_rate,
                timeout_rate=timeout_rate,
                timeout_hold_s=timeout_hold,
                callout_drop_rate=drop_callouts,
            ),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail_usage(f"sandbox option {where}: {first['msg']}")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        fail_usage(f"cannot listen on {host}:{port}: {exc.strerror}")
    bound = sock.getsockname()[1]
    if subscriptions >= config.cache_min_subscriptions:
        typer.echo(
            f"preparing {subscriptions:,} subscriptions (built once, then cached in "
            f"{config.cache_dir}) ..."
        )
    app_ = create_app(config)
    url = f"http://{host}:{bound}"
    typer.echo(
        f"Zuora sandbox (tenant {tenant_id}, {subscriptions:,} subscriptions, seed {seed}) "
        f"listening on {url}"
    )
    secret = (
        config.client_secret
        if config.client_secret == SANDBOX_CLIENT_SECRET
        else "<your ZUORA_CLIENT_SECRET>"
    )
    typer.echo("Point the project at it with:")
    typer.echo(f"  export ZUORA_BASE_URL={url}")
    typer.echo(f"  export ZUORA_CLIENT_ID={config.client_id}")
    typer.echo(f"  export ZUORA_CLIENT_SECRET={secret}")
    typer.echo(f"  export ZUORA_TRACKED_FIELDS={','.join(fields)}")
    typer.echo(f"Admin endpoints: {url}/_sandbox/ (see docs/sandbox.md). Ctrl-C stops it.")
    sys.stdout.flush()
    server = uvicorn.Server(
        uvicorn.Config(app_, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    )
    server.run(sockets=[sock])


@app.command()
def demo(
    subscriptions: Annotated[
        int, typer.Option(help="subscriptions in the simulated tenant", min=40, max=20_000)
    ] = 200,
    database: Annotated[
        Path, typer.Option(help="the demo's own SQLite file, recreated on each run")
    ] = Path("zuora_sync_demo.db"),
) -> None:
    """Run both paths end to end on embedded defaults (SQLite, an in-process sandbox) and tell
    what happened. Exit 1 if the cache does not end equal to Zuora."""
    from zuora_sync.demo import DemoFailed, DemoOptions, run_demo

    try:
        run_demo(DemoOptions(subscriptions=subscriptions, database=database), out=typer.echo)
    except DemoFailed as exc:
        typer.echo(f"zuora-sync demo: FAILED: {exc}", err=True)
        raise typer.Exit(1) from None


@zuora_app.command("setup-callout")
def setup_callout(
    env: Annotated[str, typer.Option(help="tenant profile: dev, staging, production, or a name")],
    callout_url: Annotated[
        str | None, typer.Option(help="the webhook URL Zuora should call (overrides the profile)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be sent")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="then edit a tracked field in this (non-production) tenant and wait for its "
            "callout in callout_inbox (DATABASE_URL)",
        ),
    ] = False,
    verify_timeout: Annotated[
        float, typer.Option(help="seconds --verify waits for the callout", min=1, max=3600)
    ] = 120.0,
) -> None:
    """Create or update the custom event trigger and callout notification in a tenant.

    Callout credentials come from CALLOUT_USERNAME and CALLOUT_PASSWORD in the environment;
    Zuora's from ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET. See docs/zuora_callouts.md.
    """
    import asyncio

    from zuora.callout_setup import SetupError, setup_callout
    from zuora.errors import ZuoraAuthError, ZuoraError

    current = settings()
    try:
        result = asyncio.run(
            setup_callout(
                current,
                env=env,
                callout_url=callout_url,
                dry_run=dry_run,
                verify=verify,
                verify_timeout=verify_timeout,
                echo=lambda line: typer.echo(line, err=True),
            )
        )
    except SetupError as exc:
        typer.echo(f"zuora-sync: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except ZuoraAuthError as exc:
        typer.echo(f"zuora-sync: Zuora refused the credentials: {exc}", err=True)
        raise typer.Exit(2) from None
    except ZuoraError as exc:
        typer.echo(f"zuora-sync: Zuora refused a request: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.render_text())
    if not result.ok:
        raise typer.Exit(1)


# --- monitoring --------------------------------------------------------------------------------


@app.command()
def status(
    max_oldest_pending: Annotated[
        float, typer.Option(help="alert when the oldest pending row is older (seconds)")
    ] = 300,
    max_dead: Annotated[int, typer.Option(help="alert when more rows than this are dead")] = 0,
    max_drain_age: Annotated[
        float, typer.Option(help="alert when the last successful drain ended longer ago (s)")
    ] = 600,
    max_reconcile_age: Annotated[
        float,
        typer.Option(help="alert when the last successful reconcile ended longer ago (s)"),
    ] = 26 * 3600,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Inbox depth, dead letters, last drain and reconcile; exit 1 past a threshold."""
    from zuora_sync.status import collect, render

    engine = _engine(settings())
    try:
        report = collect(
            engine,
            max_oldest_pending=max_oldest_pending,
            max_dead=max_dead,
            max_drain_age=max_drain_age,
            max_reconcile_age=max_reconcile_age,
        )
    finally:
        engine.dispose()
    typer.echo(json.dumps(report, default=str, indent=2) if as_json else render(report))
    if report["alerts"]:
        raise typer.Exit(1)


# --- inbox -------------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@inbox_app.command("stats")
def inbox_stats(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Counts by status and the age of the oldest pending row."""
    from warehouse import inbox
    from warehouse.db import read_only

    engine = _engine(settings())
    with read_only(engine) as conn:
        found = inbox.stats(conn)
    engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "counts": found.counts,
                    "oldest_pending_age_seconds": found.oldest_pending_age_seconds,
                    "expired_leases": found.expired_leases,
                }
            )
        )
        return
    for status, count in found.counts.items():
        typer.echo(f"{status:<11} {count}")
    typer.echo(f"{'oldest':<11} {_age(found.oldest_pending_age_seconds)} (pending or processing)")
    if found.expired_leases:
        typer.echo(f"{'expired':<11} {found.expired_leases} lease(s) past expiry")


@inbox_app.command("list")
def inbox_list(
    status: Annotated[str | None, typer.Option(help="pending, processing, done or dead")] = None,
    source: Annotated[str | None, typer.Option(help="callout, reconcile or replay")] = None,
    subscription: Annotated[str | None, typer.Option(help="a subscription number or id")] = None,
    limit: Annotated[int, typer.Option(help="rows shown, newest first", min=1, max=10_000)] = 50,
) -> None:
    """List inbox rows, newest first."""
    from warehouse import inbox
    from warehouse.db import read_only

    engine = _engine(settings())
    try:
        with read_only(engine) as conn:
            rows = inbox.list_rows(
                conn, status=status, source=source, subscription=subscription, limit=limit
            )
    except ValueError as exc:
        fail_usage(str(exc))
    finally:
        engine.dispose()
    typer.echo(
        f"{'id':>8}  {'status':<10} {'source':<9} {'att':>3}  {'subscription':<14} received / error"
    )
    for row in rows:
        key = row.subscription_number or row.subscription_id or ""
        received = row.received_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        error = f"  {row.last_error[:80]}" if row.last_error else ""
        typer.echo(
            f"{row.id:>8}  {row.status:<10} {row.source:<9} {row.attempts:>3}  {key:<14} "
            f"{received}{error}"
        )


@inbox_app.command("replay")
def inbox_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="row ids to replay")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="replay every dead row")] = False,
) -> None:
    """Queue dead (or done) rows again; the originals record the replay."""
    from warehouse import inbox

    if not ids and not dead:
        fail_usage("name row ids to replay, or --dead for every dead row")
    engine = _engine(settings())
    try:
        with engine.begin() as conn:
            new_ids = inbox.replay(conn, ids or (), all_dead=dead)
    finally:
        engine.dispose()
    if ids and len(new_ids) < len(ids):
        typer.echo(
            f"replayed {len(new_ids)} of {len(ids)} rows; the others are not dead or done, "
            "or were replayed already",
            err=True,
        )
    typer.echo(
        f"queued {len(new_ids)} replay row(s){': ' if new_ids else ''}"
        + ", ".join(str(i) for i in new_ids)
    )


def main() -> None:
    """Entry point: map configuration and usage errors to exit code 2 with one line, and a
    warehouse that cannot be reached to exit code 1 with one line (no traceback)."""
    from sqlalchemy.exc import OperationalError

    try:
        app()
    except (ConfigError, UsageError) as exc:
        print(f"zuora-sync: {exc}", file=sys.stderr)
        sys.exit(2)
    except OperationalError as exc:
        # The driver's first line names what failed, without the statement or a password.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        print(f"zuora-sync: the warehouse cannot be reached: {reason}", file=sys.stderr)
        sys.exit(1)
