"""``hive inspect round|diff|probe``: what each agent contributed, what two cores do differently, and why."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from hive.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    data_only_stdout,
    open_registry,
    open_store,
    settings_or_exit,
)
from hive.cli.inspect_render import print_diff, print_probe, print_round
from hive.config import HiveSettings
from hive.inspect.common import (
    InspectInputError,
    InspectStateError,
    load_specialist,
    load_verified_core,
    resolve_skills,
)
from hive.inspect.cores import check_prompt, diff_cores, probe_model
from hive.inspect.round import leave_one_out, load_round, round_contributions
from hive.rounds.book import RoundBook
from hive.store.interface import StoreError

app = typer.Typer(
    help="Inspect the merged knowledge: each agent's contribution to a round, core diffs, and probes.",
    no_args_is_help=True,
)

JsonOption = typer.Option(False, "--json", help="Print JSON on stdout (messages and progress go to stderr).")
VERSION_RE = re.compile(r"^v?(\d+)$")


@contextmanager
def _exits() -> Iterator[None]:
    """Maps inspect errors to the CLI's exit codes: 2 for bad input, 1 for state that cannot be read."""
    try:
        with data_only_stdout():
            yield
    except InspectInputError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_USAGE) from err
    except (InspectStateError, StoreError, sqlite3.Error, OSError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_FAILURE) from err


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _book(settings: HiveSettings) -> RoundBook:
    # A hive without rounds (HIVE_HOME mistyped, most likely) is refused with that said, not as "unknown round".
    if not settings.rounds_dir.is_dir():
        typer.echo(f"no rounds under {settings.rounds_dir}: set HIVE_HOME to the hive's directory", err=True)
        raise typer.Exit(EXIT_FAILURE)
    return RoundBook(settings.rounds_dir)


def _version(text: str) -> int:
    match = VERSION_RE.match(text.strip())
    if match is None:
        typer.echo(f"bad core version {text!r}: use a number such as 3 or v3", err=True)
        raise typer.Exit(EXIT_USAGE)
    return int(match.group(1))


# -- hive inspect round -------------------------------------------------------------------------------


@app.command("round")
def round_(
    round_id: str = typer.Argument(..., help="The round, e.g. r0002 (see `hive round list`)."),
    loo: bool = typer.Option(
        False, "--leave-one-out", help="Attribute accuracy to each agent: one extra distillation per agent."
    ),
    steps: int | None = typer.Option(
        None, "--steps", min=1, help="Distill steps of each leave-one-out run (default: the round's own)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Each agent's contribution to a round: learnings, teacher weight, KD loss before/after, accuracy deltas."""
    if steps is not None and not loo:
        typer.echo("--steps applies only with --leave-one-out", err=True)
        raise typer.Exit(EXIT_USAGE)
    settings = settings_or_exit()
    book = _book(settings)
    with _exits():
        record = load_round(book, round_id)
        report = round_contributions(book, record)
        if loo:
            report["leave_one_out"] = _leave_one_out(book, record, steps)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    print_round(report)


def _leave_one_out(book: RoundBook, record: Any, steps: int | None) -> dict[str, Any]:
    agents = len(record.per_agent) or None
    with _progress() as progress:
        overall = progress.add_task("leave-one-out", total=agents, info="")
        current: dict[str, TaskID] = {}

        def on_agent(agent: str, source: str) -> None:
            done = len(current)
            progress.update(overall, completed=done, info=f"{agent}: {source}")
            # A cached or base run has no steps to show; it is done as soon as it is named.
            finished = source != "run"
            current[agent] = progress.add_task(
                f"  without {agent}", total=1 if finished else None, completed=int(finished), info=source
            )

        def on_progress(step: int, total: int, loss: float) -> None:
            task = current[list(current)[-1]]
            progress.update(task, completed=step, total=total, info=f"loss {loss:.4f}")

        result = leave_one_out(book, record, steps, on_agent=on_agent, on_progress=on_progress)
        progress.update(overall, completed=agents, info="done")
    for agent, run in result["runs"].items():
        if run["source"] == "cached":
            typer.echo(f"{agent}: cached (reused {book.path(record.id)}/loo/{agent}/out/metrics.json)", err=True)
    return result


# -- hive inspect diff --------------------------------------------------------------------------------


@app.command("diff")
def diff(
    version_a: str = typer.Argument(..., metavar="VA", help="Core version A, e.g. 1 or v1."),
    version_b: str = typer.Argument(..., metavar="VB", help="Core version B."),
    skills: list[str] = typer.Option(
        [], "--skill", help="A skill to compare (repeatable; default: every skill a released round taught)."
    ),
    examples: int = typer.Option(3, "--examples", min=0, help="Differing outputs to show per skill."),
    tasks: int | None = typer.Option(None, "--tasks", min=1, help="Held-out tasks per skill (default: the gate's)."),
    as_json: bool = JsonOption,
) -> None:
    """Per-skill accuracy of cores A and B on the gate's held-out tasks, and outputs that differ."""
    va, vb = _version(version_a), _version(version_b)
    settings = settings_or_exit()
    n = tasks or settings.gate.eval_tasks
    seed = settings.gate.inspect_seed
    with _exits():
        taught = RoundBook(settings.rounds_dir).taught_skills()
        chosen = resolve_skills(settings, skills, taught)
        registry = open_registry(settings)
        core_a = load_verified_core(settings, registry, va)
        core_b = load_verified_core(settings, registry, vb)
        with _progress() as progress:
            task = progress.add_task(f"v{va} vs v{vb}", total=len(chosen), info="")
            result = diff_cores(
                core_a.model,
                core_b.model,
                chosen,
                n,
                seed,
                examples,
                on_skill=lambda name: progress.update(task, advance=1, info=name),
                codecs=(core_a.codec, core_b.codec),
            )
    report = {"a": va, "b": vb, "tasks": n, "seed": seed, "skills": result}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    print_diff(report)


# -- hive inspect probe -------------------------------------------------------------------------------


@app.command("probe")
def probe(
    prompt: str = typer.Argument(..., help="The prompt, as a skill would pose it (e.g. 'add 12 30')."),
    cores: list[str] = typer.Option([], "--core", help="A core version to probe (repeatable)."),
    agents: list[str] = typer.Option(
        [], "--agent", help="An agent whose specialist (its newest adapter in the store) to probe (repeatable)."
    ),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Next-token probabilities to show per model."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="Longest greedy output."),
    as_json: bool = JsonOption,
) -> None:
    """Greedy outputs side by side, with each model's top-k probabilities for the first answer token."""
    if not cores and not agents:
        typer.echo("name at least one model: --core V and/or --agent A (both repeatable)", err=True)
        raise typer.Exit(EXIT_USAGE)
    versions = [_version(v) for v in cores]
    settings = settings_or_exit()
    columns: list[dict[str, Any]] = []
    with _exits():
        if versions:
            registry = open_registry(settings)
            for version in versions:
                core = load_verified_core(settings, registry, version)
                check_prompt(prompt, core.codec)
                columns.append(
                    {"label": f"core v{version}", "kind": "core", "core_version": version}
                    | probe_model(core.model, prompt, top_k, max_new_tokens, core.codec)
                )
        if agents:
            store = open_store(settings)
            try:
                registry = open_registry(settings)
                specialists = [load_specialist(settings, registry, store, agent) for agent in agents]
            finally:
                store.close()
            for sp in specialists:
                check_prompt(prompt, sp.codec)
                columns.append(
                    {
                        "label": f"{sp.agent_id} (on v{sp.core_version})",
                        "kind": "specialist",
                        "agent": sp.agent_id,
                        "core_version": sp.core_version,
                        "adapter": sp.uri,
                        "sha256": sp.sha256,
                    }
                    | probe_model(sp.model, prompt, top_k, max_new_tokens, sp.codec)
                )
    report = {"prompt": prompt, "top_k": top_k, "models": columns}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    print_probe(report)
