"""``hive learnings count|ls``: what the learning store under HIVE_HOME holds."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hive.cli.common import EXIT_FAILURE, cell, open_store, settings_or_exit
from hive.store import StoreError
from streams.events import Learning

app = typer.Typer(help="Inspect the learnings the hive has stored.", no_args_is_help=True)

PREVIEW_CHARS = 40

AgentOption = typer.Option(None, "--agent", help="Only this agent's learnings.")
SkillOption = typer.Option(None, "--skill", help="Only learnings of this skill.")
JsonOption = typer.Option(False, "--json", help="Print JSON on stdout.")


@app.command("count")
def count(agent: str | None = AgentOption, skill: str | None = SkillOption, as_json: bool = JsonOption) -> None:
    """Count the stored learnings (and their distinct ids, which must be equal)."""
    store = open_store(settings_or_exit())
    try:
        n, unique = store.count(agent, skill), store.unique_ids(agent, skill)
    except (StoreError, sqlite3.Error) as err:
        typer.echo(f"cannot read the learning store: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"count": n, "unique_ids": unique, "agent": agent, "skill": skill}))
        return
    scope = " ".join(f"{k} {v}" for k, v in (("agent", agent), ("skill", skill)) if v is not None)
    typer.echo(f"{n} learnings ({unique} unique ids){' for ' + scope if scope else ''}")


@app.command("ls")
def ls(
    agent: str | None = AgentOption,
    skill: str | None = SkillOption,
    limit: int = typer.Option(20, "--limit", min=1, help="How many learnings to list."),
    after_seq: int | None = typer.Option(
        None, "--after-seq", min=0, help="List from this seq onwards (oldest first) instead of the newest ones."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List stored learnings: the newest ones by default, oldest of them first; each with its seq."""
    store = open_store(settings_or_exit())
    try:
        if after_seq is None:
            rows = store.tail(limit, agent, skill)
        else:
            rows = store.read_with_seq(after_seq=after_seq, agent_id=agent, skill=skill, limit=limit)
    except (StoreError, sqlite3.Error, OSError) as err:
        typer.echo(f"cannot read the learning store: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([learning_json(seq, x) for seq, x in rows], indent=2))
        return
    if not rows:
        typer.echo("no learnings match", err=True)
        return
    Console(soft_wrap=False).print(_table(rows))


def learning_json(seq: int, learning: Learning) -> dict[str, Any]:
    """One stored learning as ``hive learnings ls --json`` prints it (and the dashboard serves it)."""
    return {"seq": seq, **learning.model_dump(mode="json")}


def _table(rows: list[tuple[int, Learning]]) -> Table:
    table = Table()
    for name in ("seq", "agent", "skill", "core", "created", "reward", "teacher", "signed", "prompt", "answer"):
        table.add_column(name, justify="right" if name in ("seq", "core", "reward") else "left")
    for seq, x in rows:
        reward = "" if x.feedback.reward is None else f"{x.feedback.reward:.2f}"
        teacher = "" if x.teacher is None else f"k={x.teacher.k} over {x.teacher.over}"
        table.add_row(
            str(seq),
            x.agent_id,
            cell(x.skill),
            f"v{x.core_version}",
            x.created_at.isoformat(timespec="seconds"),
            reward,
            teacher,
            "yes" if x.signature else "no",
            cell(x.prompt, PREVIEW_CHARS),
            cell(x.learned_answer(), PREVIEW_CHARS),
        )
    return table
