"""``hive round``: list, show, run (or dry-run), cancel and skip distillation rounds."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import typer
from rich.console import Console

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, data_only_stdout, open_store, settings_or_exit
from hive.cli.round_render import TERMINAL, ProgressBar, eval_table, print_plan, print_round, rounds_table, state_text
from hive.cli.schedule import describe, with_schedule
from hive.config import HiveSettings
from hive.rounds.book import RoundNotFound
from hive.rounds.cancel import RoundStateError

app = typer.Typer(help="Distillation rounds: list, show, run (or dry-run), cancel and skip them.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON on stdout.")


@app.command("list")
def list_rounds(as_json: bool = JsonOption) -> None:
    """Every round, oldest first: its state, why it opened, its core versions, learnings and loss.

    A failed round shows its error; when the schedule is blocked by failed rounds, or the hive's last round
    check failed, a line on stderr says so.
    """
    from hive.views import rounds_json

    settings = _hive_or_exit()
    rows = rounds_json(settings)
    _warn_about_schedule(settings)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no rounds yet", err=True)
        return
    Console(soft_wrap=False).print(rounds_table(rows))


@app.command("show")
def show(round_id: str = typer.Argument(..., help="The round, e.g. r0003."), as_json: bool = JsonOption) -> None:
    """One round in full: progress while it runs, the gate's per-skill comparison, and any error."""
    from hive.views import round_json

    try:
        row = round_json(_hive_or_exit(), round_id)
    except RoundNotFound as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_USAGE) from err
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    print_round(row)


@app.command("run")
def run(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go into the round, and why; run nothing."),
    as_json: bool = JsonOption,
    manual: bool | None = typer.Option(None, "--manual/--scheduled", help="The schedule to show in a dry run."),
    min_new: int | None = typer.Option(None, "--min-new", min=0, help="Override HIVE_SCHEDULE__MIN_NEW."),
    every: str | None = typer.Option(None, "--every", help="Override HIVE_SCHEDULE__EVERY_S (90s, 10m, 2h)."),
    min_per_agent: int | None = typer.Option(
        None, "--min-per-agent", min=0, help="Override HIVE_SCHEDULE__MIN_PER_AGENT."
    ),
    max_staleness: str | None = typer.Option(None, "--max-staleness", help="Override HIVE_SCHEDULE__MAX_STALENESS_S."),
) -> None:
    """Run a round now, whatever the schedule says: resume an interrupted round, else distill the new learnings.

    The terminal shows the distillation's steps, loss and ETA. Needs HIVE_KAFKA_BOOTSTRAP to release a core
    that passes the gate (except with --dry-run, which reads the fleet from it when set). Exits 1 when another
    process is running a round, when there is nothing to distill, or when the round fails.
    """
    settings = with_schedule(settings_or_exit(), manual, min_new, every, min_per_agent, max_staleness)
    if dry_run:
        _dry_run(settings, as_json)
        return
    if not settings.kafka.bootstrap:
        typer.echo("HIVE_KAFKA_BOOTSTRAP is not set: a round releases its core on hive.core (use --dry-run)", err=True)
        raise typer.Exit(EXIT_USAGE)
    with data_only_stdout():
        records = _run(settings)
    rows = [_view(settings, record.id) for record in records]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            typer.echo(f"{row['id']}: {state_text(row)}" + (f": {row['error']}" if row["error"] else ""))
            if row["eval"]:
                Console(soft_wrap=False).print(eval_table(row))
    if any(row["state"] == "failed" for row in rows):
        raise typer.Exit(EXIT_FAILURE)


@app.command("cancel")
def cancel(
    round_id: str = typer.Argument(..., help="The round to cancel."),
    wait_s: float = typer.Option(60.0, "--wait", min=0, help="Seconds to wait for the running round to stop."),
    as_json: bool = JsonOption,
) -> None:
    """Cancel an unfinished round: the running job is stopped (its ranks killed) and the round ends ``cancelled``.

    Its learnings go to the next round. Exits 2 for an unknown or finished round, 1 when the process running
    it has not stopped it within --wait seconds (the request stays; it is honoured when it looks).
    """
    from hive.rounds.cancel import cancel_round

    settings = settings_or_exit()
    try:
        cancel_round(settings, round_id)
    except (RoundNotFound, RoundStateError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_USAGE) from err
    deadline = time.monotonic() + wait_s
    row = _view(settings, round_id)
    while row["state"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        row = _view(settings, round_id)
    if as_json:
        typer.echo(json.dumps(row, indent=2))
    else:
        typer.echo(f"{round_id}: {state_text(row)}")
    if row["state"] not in TERMINAL:
        typer.echo(f"round {round_id} has not stopped within {wait_s:g} s; the request stays in place", err=True)
        raise typer.Exit(EXIT_FAILURE)


@app.command("skip")
def skip(
    round_id: str = typer.Argument(..., help="The failed round to move past."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what skipping would do; change nothing."),
    as_json: bool = JsonOption,
) -> None:
    """Skip a failed round: its learnings count as taken, so the next round starts after them.

    For a round that keeps failing over the same learnings (the schedule then says "blocked"). The skipped
    learnings are never distilled, nor replayed. Exits 2 for an unknown round or one that is not failed.
    """
    from hive.rounds.book import RoundBook
    from hive.rounds.cancel import skip_round
    from hive.views import round_view

    settings = _hive_or_exit()
    book = RoundBook(settings.rounds_dir)
    covered_before = book.covered_seq()
    try:
        record = skip_round(settings, round_id, dry_run=dry_run)
    except (RoundNotFound, RoundStateError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_USAGE) from err
    covered_after = max(covered_before, record.upto_seq)
    if as_json:
        payload = {
            "round": round_view(book, record, None),
            "dry_run": dry_run,
            "covered_seq_before": covered_before,
            "covered_seq_after": covered_after,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    verb = "would skip" if dry_run else "skipped"
    typer.echo(
        f"{verb} {round_id}: its learnings seq {record.after_seq + 1}..{record.upto_seq} will not be distilled; "
        f"the next round starts after seq {covered_after}"
    )


# -- helpers -------------------------------------------------------------------------------------------


def _warn_about_schedule(settings: HiveSettings) -> None:
    """Says on stderr what keeps rounds from running by themselves: a failed check, or failed rounds in a row."""
    from hive.rounds.book import RoundBook
    from hive.rounds.last_check import describe_check, read_check

    line = describe_check(read_check(settings.home))
    if line is not None:
        typer.echo(line, err=True)
    book = RoundBook(settings.rounds_dir)
    limit = settings.schedule.max_failed_rounds
    streak = book.failed_streak(book.covered_seq())
    if limit and len(streak) >= limit:
        typer.echo(
            f"the schedule is blocked: {len(streak)} rounds in a row failed over the same learnings; "
            f"see `hive round show {streak[0].id}`, and `hive round skip {streak[0].id}` moves past them",
            err=True,
        )


def _hive_or_exit() -> HiveSettings:
    """The settings, when HIVE_HOME is a hive's directory; exits 1 otherwise (it is probably mistyped)."""
    settings = settings_or_exit()
    if not settings.home.is_dir():
        typer.echo(f"no hive at HIVE_HOME={settings.home}: set HIVE_HOME to the hive's directory", err=True)
        raise typer.Exit(EXIT_FAILURE)
    return settings


def _run(settings: HiveSettings) -> list:
    from kafka.errors import KafkaError

    from hive.cores.registry import CoreRegistry, RegistryError
    from hive.cores.release import round_release
    from hive.rounds.book import NoNewLearnings, RoundError
    from hive.rounds.lock import RoundBusy, round_lock
    from hive.rounds.runner import RoundRunner
    from streams.kafka import make_producer

    store = open_store(settings)
    try:
        producer = make_producer(settings.kafka)
    except KafkaError as err:
        store.close()
        typer.echo(f"cannot reach the broker at {settings.kafka.bootstrap}: {err!r}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    registry = CoreRegistry.from_settings(settings)
    runner = RoundRunner(settings, store, registry, round_release(settings, registry, producer))
    bar = ProgressBar()
    try:
        with round_lock(settings.home) as lock, bar:
            records = runner.run_now(lock, "manual", bar.update)
    except RoundBusy as err:
        typer.echo(f"a round is already running: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except NoNewLearnings as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except (RoundError, RegistryError, KafkaError, OSError) as err:
        # A round that failed is recorded as such (`hive round show`); one never opened left no record.
        typer.echo(f"round failed: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    finally:
        producer.close(timeout=10)
        store.close()
    return records


def _dry_run(settings: HiveSettings, as_json: bool) -> None:
    from hive.cores.registry import CoreRegistry
    from hive.rounds.runner import RoundRunner

    heartbeats = _heartbeats(settings)
    store = open_store(settings)
    try:
        plan = RoundRunner(settings, store, CoreRegistry.from_settings(settings), None).plan(heartbeats)
    finally:
        store.close()
    from hive.rounds.last_check import read_check

    last_check = read_check(settings.home)
    payload = {**plan.to_json(), "schedule_settings": describe(settings.schedule), "last_check": last_check}
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    print_plan(plan, payload["schedule_settings"], last_check)


def _heartbeats(settings: HiveSettings) -> dict[str, datetime] | None:
    """Each agent's newest heartbeat from hive.fleet, or None when no broker is set (the fleet is unknown)."""
    if not settings.kafka.bootstrap:
        return None
    from kafka.errors import KafkaError

    from hive.fleet import read_fleet
    from streams.signing import KeyRingError

    try:
        view = read_fleet(settings)
    except (KafkaError, KeyRingError) as err:
        typer.echo(f"cannot read the fleet from {settings.kafka.bootstrap}: {err!r}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    return view.heartbeat_times()


def _view(settings: HiveSettings, round_id: str) -> dict[str, Any]:
    from hive.views import round_json

    return round_json(settings, round_id)
