"""``hive schemas export``: the event contract as JSON Schema files for clients in any language."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The event schemas (Learning, Heartbeat, CoreRelease) as JSON Schema.", no_args_is_help=True)


@app.command("export")
def export(
    out: Path = typer.Option(Path("docs/schemas"), "--out", help="Directory to write the schema files into."),
) -> None:
    """Write learning/heartbeat/core-release .schema.json and learning.example.json; print their paths."""
    from hive.schemas import export_schemas

    try:
        paths = export_schemas(out)
    except OSError as err:
        typer.echo(f"cannot write the schemas to {out}: {err}", err=True)
        raise typer.Exit(1) from err
    for path in paths:
        typer.echo(str(path))
