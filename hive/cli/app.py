"""Assembles the ``hive`` command from its groups; nothing else lives here."""

from __future__ import annotations

import typer

from hive import __version__
from hive.cli import (
    agent,
    bench,
    core,
    demo,
    dlq,
    fleet,
    inspect,
    learnings,
    model,
    round,
    schemas,
    serve,
    topics,
    ui,
    up,
)

app = typer.Typer(
    name="hive",
    help="hive-mind: agents learn on the job; the hive distills the fleet into one shared core.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(agent.app, name="agent")
app.add_typer(bench.app, name="bench")
app.add_typer(core.app, name="core")
app.command("demo")(demo.demo)
app.add_typer(dlq.app, name="dlq")
app.command("fleet")(fleet.fleet)
app.add_typer(inspect.app, name="inspect")
app.add_typer(learnings.app, name="learnings")
app.add_typer(model.app, name="model")
app.add_typer(round.app, name="round")
app.add_typer(schemas.app, name="schemas")
app.command("serve")(serve.serve)
app.add_typer(topics.app, name="topics")
app.command("ui")(ui.ui)
app.command("up")(up.up)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hive-mind {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """hive-mind: agents learn on the job; the hive distills the fleet into one shared core."""


def main() -> None:
    app()
