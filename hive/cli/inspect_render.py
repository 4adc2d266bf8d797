"""How ``hive inspect round|diff|probe`` print their reports for a person: rich tables on stdout."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hive.cli.common import cell

EXAMPLE_CHARS = 40


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def print_round(report: dict[str, Any]) -> None:
    console = Console(soft_wrap=False)
    candidate = report["candidate_version"]
    target = f"v{candidate}" if candidate is not None else "no core"
    console.print(
        Text(
            f"round {report['round']} ({report['state']}): v{report['base_version']} -> {target}, "
            f"{report['learnings']} learnings"
        )
    )
    if not report["per_agent_metrics"]:
        typer.echo(
            "this round's distill job did not report per-agent figures (made before they existed): n/a", err=True
        )
    agents = Table(title="contribution per agent")
    for name in ("agent", "learnings", "weight", "KD before", "KD after", "skills", "accuracy delta"):
        agents.add_column(name, justify="right" if name in ("learnings", "weight", "KD before", "KD after") else "left")
    for agent, row in report["agents"].items():
        before, after = row["kd_before"], row["kd_after"]
        if before is None and row["ce_before"] is not None:
            # An agent that shipped no teacher signal taught by cross-entropy on its verified answers.
            kd = (f"ce {_num(row['ce_before'])}", f"ce {_num(row['ce_after'])}")
        else:
            kd = (_num(before), _num(after))
        agents.add_row(
            cell(agent),
            str(row["learnings"]),
            _num(row["weight"]),
            *kd,
            cell(", ".join(f"{s} ({n})" for s, n in row["skills"].items())),
            cell(", ".join(f"{s} {_num(d, signed=True)}" for s, d in row["deltas"].items())),
        )
    console.print(agents)
    evals = Table(title="held-out accuracy: champion -> candidate")
    for name in ("skill", "champion", "candidate", "delta"):
        evals.add_column(name, justify="left" if name == "skill" else "right")
    for skill, row in report["eval"].items():
        evals.add_row(cell(skill), _num(row["champion"]), _num(row["candidate"]), _num(row["delta"], signed=True))
    console.print(evals)
    loo = report["leave_one_out"]
    if loo is not None:
        table = Table(
            title=(f"leave-one-out attribution ({_baseline(loo)} minus eval without the agent; {loo['steps']} steps)")
        )
        table.add_column("agent")
        table.add_column("run")
        for skill in report["skills"]:
            table.add_column(skill, justify="right")
        for agent, values in loo["attribution"].items():
            table.add_row(
                cell(agent),
                loo["runs"][agent]["source"],
                *(_num(values.get(s), signed=True) for s in report["skills"]),
            )
        console.print(table)


def print_diff(report: dict[str, Any]) -> None:
    console = Console(soft_wrap=False)
    a, b = report["a"], report["b"]
    table = Table(title=f"held-out accuracy, {report['tasks']} tasks per skill (seed {report['seed']})")
    for name in ("skill", f"v{a}", f"v{b}", "delta", "outputs differ"):
        table.add_column(name, justify="left" if name == "skill" else "right")
    for skill, row in report["skills"].items():
        table.add_row(
            cell(skill), _num(row["a"]), _num(row["b"]), _num(row["delta"], signed=True), str(row["differing"])
        )
    console.print(table)
    shown = [(skill, ex) for skill, row in report["skills"].items() for ex in row["examples"]]
    if not shown:
        return
    examples = Table(title="outputs that differ")
    for name in ("skill", "prompt", "reference", f"v{a}", f"v{b}", "right"):
        examples.add_column(name)
    for skill, ex in shown:
        examples.add_row(
            cell(skill),
            cell(ex["prompt"], EXAMPLE_CHARS),
            cell(ex["reference"], EXAMPLE_CHARS),
            cell(ex["output_a"], EXAMPLE_CHARS),
            cell(ex["output_b"], EXAMPLE_CHARS),
            {"A": f"v{a}", "B": f"v{b}"}.get(ex["right"], ex["right"]),
        )
    console.print(examples)


def print_probe(report: dict[str, Any]) -> None:
    table = Table(title=Text(f"probe: {report['prompt']!r}"))
    table.add_column("")
    for column in report["models"]:
        table.add_column(cell(column["label"]))
    table.add_row("output", *(cell(c["output"]) for c in report["models"]))
    for rank in range(report["top_k"]):
        values = []
        for column in report["models"]:
            top = column["top_k"]
            values.append(
                Text(f"{top[rank]['token']} ({top[rank]['id']}) {top[rank]['prob']:.3f}")
                if rank < len(top)
                else Text("")
            )
        table.add_row(f"top {rank + 1}", *values)
    Console(soft_wrap=False).print(table)


def _baseline(loo: dict[str, Any]) -> str:
    reference = loo.get("reference") or {}
    if reference.get("source") == "round":
        return "round eval"
    return f"eval of all learnings at the same steps ({reference.get('source', '?')})"
