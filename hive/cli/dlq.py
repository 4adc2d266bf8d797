"""``hive dlq ls``: the records the hive refused, counted per reason, with the latest ones."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from hive.cli.common import EXIT_USAGE, cell, reading_store, settings_or_exit
from hive.ingest.admit import DESCRIPTIONS, REASONS
from hive.store.interface import DeadLetter
from hive.views import dlq_json, payload_preview

app = typer.Typer(help="Inspect the dead letters: records the hive refused, and why.", no_args_is_help=True)


@app.command("ls")
def ls(
    limit: int = typer.Option(20, "--limit", min=0, help="How many of the latest dead letters to list."),
    reason: str | None = typer.Option(None, "--reason", help=f"Only this reason: {', '.join(REASONS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Count the dead letters per reason and list the latest ones (newest first).

    Read from the hive's own record under HIVE_HOME, which outlives the broker; the same records are
    on the topic hive.learnings.dlq with the original value. The count of quarantined learnings (stored,
    then left out of rounds) follows; `hive learnings ls --quarantined` lists them.
    """
    if reason is not None and reason not in REASONS:
        typer.echo(f"unknown reason {reason!r}; the reasons are: {', '.join(REASONS)}", err=True)
        raise typer.Exit(EXIT_USAGE)
    with reading_store(settings_or_exit()) as store:
        counts = store.dead_letter_counts()
        latest = store.dead_letters(limit, reason) if limit else []
        quarantined = store.quarantine_counts()
    if as_json:
        typer.echo(json.dumps(dlq_json(counts, latest, quarantined), indent=2))
        return
    console = Console(soft_wrap=False)
    console.print(_counts_table(counts))
    if latest:
        console.print(_latest_table(latest))
    if quarantined:
        by_reason = ", ".join(f"{r} {n}" for r, n in quarantined.items())
        console.print(
            f"quarantined learnings: {sum(quarantined.values())} ({by_reason}); "
            "`hive learnings ls --quarantined` lists them",
            markup=False,
        )


def _counts_table(counts: dict[str, int]) -> Table:
    table = Table(title=f"dead letters: {sum(counts.values())}")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("meaning")
    for reason in REASONS:
        if counts.get(reason):
            table.add_row(reason, str(counts[reason]), DESCRIPTIONS[reason])
    for reason in sorted(set(counts) - set(REASONS)):  # written by another version of the hive
        table.add_row(reason, str(counts[reason]), "")
    return table


def _latest_table(latest: list[DeadLetter]) -> Table:
    table = Table(title=f"latest {len(latest)}")
    for name in ("recorded (UTC)", "reason", "source", "key", "size", "detail", "payload"):
        table.add_column(name, justify="right" if name == "size" else "left", overflow="fold")
    for d in latest:
        table.add_row(
            d.recorded_at or "",
            d.reason,
            f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
            cell(d.key or ""),
            "" if d.size < 0 else str(d.size),
            cell(d.detail),
            cell(payload_preview(d.payload_head, d.size)),
        )
    return table
