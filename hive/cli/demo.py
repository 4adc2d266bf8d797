"""``hive demo``: the whole loop on embedded defaults, with progress and a before/after table."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hive.demo import DemoError, DemoPlan, Reporter


class ConsoleReporter(Reporter):
    """Progress bars and phase messages on stderr; the data goes to stdout."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._learn: TaskID | None = None
        self._distill: TaskID | None = None

    def phase(self, message: str) -> None:
        self.console.log(message)

    def learning(self, done: int, total: int, stored: int) -> None:
        if self._learn is None:
            self.progress.start()
            self._learn = self.progress.add_task("agents learning", total=total, info="")
        self.progress.update(self._learn, completed=done, info=f"{stored} learnings stored")

    def distilling(self, step: int, total: int, loss: float) -> None:
        if self._distill is None:
            self._distill = self.progress.add_task("distilling", total=total, info="")
        self.progress.update(self._distill, completed=step, info=f"loss {loss:.4f}")

    def close(self) -> None:
        self.progress.stop()


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Sends everything written to fd 1 to stderr meanwhile: libraries (DeepSpeed's logger among
    them) print to stdout, which must carry only the report."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _table(report: dict) -> Table:
    skills = report["skills"]
    rounds = len(report["rounds"])
    table = Table(
        title=f"accuracy on held-out tasks: before round 1 -> after round {rounds} (core v{report['core_version']})"
    )
    table.add_column("agent")
    table.add_column("core")
    for skill in skills:
        table.add_column(skill, justify="center")
    for agent in report["agents"]:
        cells = []
        for skill in skills:
            cell = f"{agent['before'].get(skill, 0):.2f} -> {agent['after'].get(skill, 0):.2f}"
            cells.append(f"[bold]{cell}[/bold] *" if skill == agent["skill"] else cell)
        table.add_row(agent["id"], f"v{agent['core_version']}", *cells)
    table.caption = "* the skill the agent was deployed to"
    return table


def demo(
    model: str | None = typer.Option(
        None,
        help="Core v0: tiny, smollm2-135m (after `hive model prepare smollm2-135m`) or a local model directory. "
        "Default: HIVE_MODEL__PATH, else tiny.",
    ),
    agents_skills: str | None = typer.Option(
        None,
        "--skills",
        help="One agent per skill, comma-separated: built-in names or module:attr. "
        "Default: capital,morse,add on tiny; capital,codes,zorbish on a pretrained model.",
    ),
    learn_steps: int | None = typer.Option(None, min=1, help="On-the-job steps per agent (300; 60 pretrained)."),
    distill_steps: int | None = typer.Option(None, min=1, help="Distill steps per round (600; 90 pretrained)."),
    rounds: int = typer.Option(2, min=1, help="Rounds; after each, every agent rebases and learns on the new core."),
    relearn_steps: int | None = typer.Option(
        None, min=0, help="On-the-job steps per agent after each swap (150; 30 pretrained)."
    ),
    later_skill: str | None = typer.Option(
        None, help="The new material agent-1 meets after round 1 (default next; 'none' for none)."
    ),
    reset: bool = typer.Option(False, help="Delete HIVE_HOME first even if the demo did not make it."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Run the whole loop: broker, core v0, agents learning, ingest, DeepSpeed rounds, releases, report.

    After each round every agent swaps to the new core, reports what it knows, and learns on the job again; from
    round 2 on, agent-1 learns a skill none of them had (--later-skill), which round 2 spreads to the others.
    """
    # Imported here: the hive's settings and services pull in torch and Kafka clients.

    from agents.core_files import CoreDirError
    from hive.config import HiveSettings
    from hive.cores.pretrained import ModelSourceError, core_source
    from hive.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    # kafka-python warns whenever its IO loop is slow, which a CPU busy with training makes it;
    # harmless here, and it would scroll the progress bars away.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    console = Console(stderr=True)
    settings = HiveSettings()
    plan = DemoPlan.for_model(model or settings.model.path)
    overrides: dict[str, Any] = {
        "skills": [s for s in agents_skills.split(",") if s] if agents_skills is not None else None,
        "learn_steps": learn_steps,
        "distill_steps": distill_steps,
        "rounds": rounds,
        "relearn_steps": relearn_steps,
    }
    if later_skill is not None:
        overrides["later_skill"] = None if later_skill.lower() == "none" else later_skill
    try:
        plan = dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None or k == "later_skill"})
    except ValueError as err:
        typer.echo(f"demo failed: {err}", err=True)
        raise typer.Exit(2) from err
    try:
        # Core v0 is built from the plan's model: a model not prepared, or one refused, is a setting, said
        # before the broker and the agents start.
        core_source(plan.model, settings.model_cache_dir)
        with _stdout_to_stderr():
            report = run_demo(settings, plan, ConsoleReporter(console), reset=reset)
    except DemoError as err:
        console.print(f"[red]demo failed:[/red] {err}")
        raise typer.Exit(1) from err
    except (ModelSourceError, CoreDirError) as err:
        # Core v0 is built from HIVE_MODEL__PATH: a model not prepared, or one refused, is a setting.
        # Plain text: a long path must never be cut short by the console's wrapping.
        typer.echo(f"demo failed: invalid HIVE_MODEL__PATH: {err}", err=True)
        raise typer.Exit(2) from err
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    Console().print(_table(report))
    s = report["summary"]
    later = s.get("later_skill")
    if later is not None:
        spread = " -> ".join(f"{x:.2f}" for x in later["others_after_round"])
        typer.echo(f"{later['skill']}, learned by {later['agent']} after round 1: the others after each round {spread}")
    typer.echo(
        f"cross-skill accuracy: {s['cross_skill_before']:.2f} -> {s['cross_skill_after']:.2f} "
        f"(+{s['cross_skill_gain']:.2f}); round {report['round']['id']}: {report['round']['learnings']} learnings, "
        f"{report['round']['wall_s']} s; demo {report['wall_s']} s; report: {settings.home / 'demo' / 'report.json'}"
    )
