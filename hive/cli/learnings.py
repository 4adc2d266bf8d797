"""``hive learnings count|ls``: what the learning store under HIVE_HOME holds."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from hive.cli.common import cell, reading_store, settings_or_exit
from hive.store.interface import Quarantined
from hive.views import learning_json, quarantined_json
from streams.events import Learning

app = typer.Typer(help="Inspect the learnings the hive has stored.", no_args_is_help=True)

PREVIEW_CHARS = 40

AgentOption = typer.Option(None, "--agent", help="Only this agent's learnings.")
SkillOption = typer.Option(None, "--skill", help="Only learnings of this skill.")
JsonOption = typer.Option(False, "--json", help="Print JSON on stdout.")


@app.command("count")
def count(agent: str | None = AgentOption, skill: str | None = SkillOption, as_json: bool = JsonOption) -> None:
    """Count the stored learnings (and their distinct ids, which must be equal)."""
    with reading_store(settings_or_exit()) as store:
        n, unique = store.count(agent, skill), store.unique_ids(agent, skill)
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
    quarantined: bool = typer.Option(
        False, "--quarantined", help="List the quarantined learnings instead: those no round takes in, and why."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List stored learnings: the newest ones by default, oldest of them first; each with its seq.

    With --quarantined: the learnings that rounds leave out (a skill the hive cannot load, a stored JSON
    that no longer parses, one the distill job could not use), newest quarantine first, with the reason.
    """
    if quarantined:
        _ls_quarantined(limit, agent, skill, after_seq, as_json)
        return
    with reading_store(settings_or_exit()) as store:
        if after_seq is None:
            rows = store.tail(limit, agent, skill)
        else:
            rows = store.read_with_seq(after_seq=after_seq, agent_id=agent, skill=skill, limit=limit)
    if as_json:
        typer.echo(json.dumps([learning_json(seq, x) for seq, x in rows], indent=2))
        return
    if not rows:
        typer.echo("no learnings match", err=True)
        return
    Console(soft_wrap=False).print(_table(rows))


def _ls_quarantined(limit: int, agent: str | None, skill: str | None, after_seq: int | None, as_json: bool) -> None:
    with reading_store(settings_or_exit()) as store:
        # Filtered here: the quarantine is small, and a filter must not cut the limit short.
        rows = [
            q
            for q in store.quarantined(after_seq=after_seq or 0)
            if (agent is None or q.agent_id == agent) and (skill is None or q.skill == skill)
        ][:limit]
        counts = store.quarantine_counts()
    if as_json:
        typer.echo(json.dumps([quarantined_json(q) for q in rows], indent=2))
        return
    total = sum(counts.values())
    by_reason = ", ".join(f"{reason} {n}" for reason, n in counts.items())
    typer.echo(f"{total} quarantined learnings" + (f" ({by_reason})" if by_reason else ""), err=True)
    if rows:
        Console(soft_wrap=False).print(_quarantine_table(rows))


def _quarantine_table(rows: list[Quarantined]) -> Table:
    table = Table()
    for name in ("seq", "agent", "skill", "reason", "round", "recorded (UTC)", "detail"):
        table.add_column(name, justify="right" if name == "seq" else "left", overflow="fold")
    for q in rows:
        table.add_row(
            str(q.seq),
            q.agent_id,
            cell(q.skill),
            cell(q.reason),
            q.round_id or "",
            q.recorded_at or "",
            cell(q.detail),
        )
    return table


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
