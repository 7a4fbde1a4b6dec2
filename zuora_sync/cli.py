"""`zuora-sync`: the one command line for the webhook, the flows, the sandbox and operations.

Exit codes: 0 success; 1 the job ran and found a problem (dead letters, unhealed drift);
2 bad usage or configuration, with one clear line on stderr.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn

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
    batch_size: Annotated[int, typer.Option(help="rows claimed at a time", min=1)] = 500,
    window: Annotated[
        float,
        typer.Option(help="seconds to keep draining; 0 drains until empty, then exits", min=0),
    ] = 0,
) -> None:
    """Run the drain flow once: inbox -> Zuora -> cache. Exit 1 if rows went dead."""
    settings()
    _not_built("drain", issue=5)


@app.command()
def reconcile(
    full: Annotated[bool, typer.Option("--full", help="diff every subscription")] = False,
    since: Annotated[
        str | None, typer.Option(help="diff what changed in Zuora since this ISO 8601 time")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report only, enqueue nothing")
    ] = False,
    no_heal: Annotated[
        bool, typer.Option("--no-heal", help="enqueue drift but do not drain")
    ] = False,
) -> None:
    """Diff the cache against Zuora's query API, report the drift and heal it."""
    if full and since:
        fail_usage("--full and --since exclude each other")
    settings()
    _not_built("reconcile", issue=6)


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8900,
    subscriptions: Annotated[int, typer.Option(help="seeded subscriptions", min=0)] = 1000,
    seed: Annotated[int, typer.Option(help="random seed of the data set")] = 1,
) -> None:
    """Run the simulated Zuora tenant on loopback."""
    settings()
    _not_built("sandbox", issue=3)


@app.command()
def demo() -> None:
    """Run the whole pipeline end to end on embedded defaults and tell what happened."""
    from warehouse import migrate

    current = settings()
    engine = _engine(current)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(current.DATABASE_URL)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(f"warehouse: {current.database_url_masked}")
    if before is None:
        typer.echo(f"  schema created at revision {after}")
    else:
        typer.echo(f"  schema {'already at' if before == after else 'moved to'} revision {after}")
    typer.echo("  tables: callout_inbox, zuora_subscriptions, zuora_rate_plans,")
    typer.echo("          zuora_rate_plan_charges, sync_runs")
    typer.echo("The sandbox, webhook and flows join this demo as their issues land.")


@zuora_app.command("setup-callout")
def setup_callout(
    env: Annotated[str, typer.Option(help="tenant profile: dev, staging, production, or a name")],
    callout_url: Annotated[
        str | None, typer.Option(help="the webhook URL Zuora should call (overrides the profile)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be sent")] = False,
) -> None:
    """Create or update the custom event trigger and callout notification in a tenant."""
    settings()
    _not_built("zuora setup-callout", issue=7)


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
    """Entry point: map configuration and usage errors to exit code 2 with one line."""
    try:
        app()
    except (ConfigError, UsageError) as exc:
        print(f"zuora-sync: {exc}", file=sys.stderr)
        sys.exit(2)
