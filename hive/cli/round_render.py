"""How ``hive round`` prints rounds and the dry run's plan for a person: tables, lines and the progress bar."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from hive.cli.common import cell
from hive.rounds.last_check import describe_check

if TYPE_CHECKING:
    from hive.rounds.runner import RoundPlan

TERMINAL = ("released", "rejected", "failed", "cancelled", "skipped")


def rounds_table(rows: list[dict[str, Any]]) -> Table:
    """``hive round list``: one line per round."""
    table = Table()
    for name in (
        "round",
        "state",
        "trigger",
        "core",
        "learnings",
        "agents",
        "steps",
        "loss",
        "wall",
        "opened",
        "error",
    ):
        table.add_column(name, justify="right" if name in ("learnings", "agents", "steps", "loss", "wall") else "left")
    for row in rows:
        table.add_row(
            row["id"],
            state_text(row),
            cell(row["trigger"] or "", 30),
            f"v{row['base_version']} -> v{row['candidate_version']}"
            if row["candidate_version"] is not None
            else f"v{row['base_version']}",
            str(row["learnings"]),
            str(len(row["per_agent"])),
            _steps(row),
            "" if row["distill"].get("final_loss") is None else f"{row['distill']['final_loss']:.4f}",
            f"{row['wall_s']:.0f} s" if row["wall_s"] else "",
            _when(row["created_at"]),
            cell((row["error"] or "").split("\n", 1)[0], 60),
        )
    return table


def screen_text(screen: dict[str, Any] | None) -> str | None:
    """What the distill job's screen (``distill.screen``) left out, in a line; None for a round run without it."""
    if not screen:
        return None
    if not screen.get("enabled"):
        return "off"
    excluded = screen.get("excluded", [])
    if not excluded:
        screened = sum(1 for skills in screen.get("agents", {}).values() for g in skills.values() if g.get("screened"))
        return f"nothing left out ({screened} agent-skill groups screened)"
    return "; ".join(
        f"left out {e['agent']}'s {e['learnings']} learnings of {e['skill']} "
        f"(the base agrees with {e['agreement']:.2f} of them, below {e['floor']:.2f})"
        for e in excluded
    )


def print_round(row: dict[str, Any]) -> None:
    """``hive round show``: one round in full."""
    console = Console(soft_wrap=False)
    console.print(f"[bold]{row['id']}[/bold]  {state_text(row)}  opened {_when(row['created_at'])}")
    console.print(
        f"base core v{row['base_version']}, candidate "
        f"{'v' + str(row['candidate_version']) if row['candidate_version'] is not None else 'none'}; "
        f"learnings seq {row['after_seq'] + 1}..{row['upto_seq']} ({row['learnings']}); "
        f"trigger: {row['trigger'] or '-'}; resumed {row['resumes']} times"
        + (f"; quarantined {row['quarantined']} learnings" if row.get("quarantined") else ""),
        markup=False,
    )
    console.print("per agent: " + ", ".join(f"{a} {n}" for a, n in sorted(row["per_agent"].items())), markup=False)
    if row["progress"]:
        console.print(f"progress: {_progress_text(row['progress'])}", markup=False)
    distill = {k: v for k, v in row["distill"].items() if k != "screen"}
    if distill:
        console.print("distill: " + ", ".join(f"{k} {v}" for k, v in distill.items()), markup=False)
    screen = screen_text(row["distill"].get("screen"))
    if screen:
        console.print(f"screen: {screen}", markup=False)
    if row["eval"] or row["champion_eval"]:
        console.print(eval_table(row))
    for reason in row["gate_reasons"]:
        console.print(f"gate: {reason}", markup=False)
    if row["error"]:
        console.print(f"error: {row['error']}", markup=False)


def print_plan(plan: RoundPlan, schedule_settings: str, last_check: dict[str, Any] | None) -> None:
    """``hive round run --dry-run``: what a run would do, the last round check and the schedule's verdict."""
    console = Console(soft_wrap=False)
    console.print(f"would {plan.action}: {plan.reason}", markup=False)
    if plan.action == "open":
        console.print(
            f"round {plan.round_id} from core v{plan.base_version}: learnings seq {plan.after_seq + 1}..{plan.upto_seq}"
            f", plus {plan.replay} replayed; evaluating {', '.join(plan.skills_evaluated)}",
            markup=False,
        )
        console.print("per agent: " + ", ".join(f"{a} {n}" for a, n in plan.per_agent.items()), markup=False)
        console.print("per skill: " + ", ".join(f"{s} {n}" for s, n in plan.per_skill.items()), markup=False)
        console.print("distill: " + ", ".join(f"{k} {v}" for k, v in plan.distill.items()), markup=False)
    if plan.quarantined:
        console.print(f"left out: {plan.quarantined} quarantined learnings (`hive learnings ls --quarantined`)")
    for reason, n in plan.would_quarantine.items():
        console.print(f"would quarantine: {n} learnings ({reason})", markup=False)
    check = describe_check(last_check)
    if check is not None:
        console.print(check, markup=False)
    decision = plan.schedule
    console.print(
        f"schedule ({schedule_settings}): {'due' if decision['due'] else 'not due'}: {decision['reason']}",
        markup=False,
    )
    for trigger in decision["triggers"]:
        console.print(
            f"  {trigger['name']}: {'fired' if trigger['fired'] else 'no'}: {trigger['detail']}", markup=False
        )


class ProgressBar:
    """Steps, loss and ETA of the running distillation, on stderr (stdout stays for --json)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("distilling"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("step {task.completed}/{task.total}  loss {task.fields[loss]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, step: int, total: int, loss: float) -> None:
        if self.task is None:
            self.task = self.progress.add_task("distill", total=total, loss="?")
        self.progress.update(self.task, completed=step, total=total, loss=f"{loss:.4f}")


def state_text(row: dict[str, Any]) -> str:
    state = row["display_state"]
    if row.get("cancel_requested") and row["state"] not in TERMINAL:
        state += " (cancel requested)"
    if row.get("progress") and row["display_state"] == "distilling":
        state += f" {_progress_text(row['progress'])}"
    return state


def _progress_text(progress: dict[str, Any]) -> str:
    if "step" not in progress:
        return str(progress.get("error", "?"))
    eta = progress.get("eta_s")
    return (
        f"step {progress['step']}/{progress['total']} loss {progress['loss']:.4f} "
        f"ETA {'?' if eta is None else f'{eta:.0f} s'}"
    )


def _steps(row: dict[str, Any]) -> str:
    if row["distill"].get("steps") is not None:
        return str(row["distill"]["steps"])
    progress = row.get("progress") or {}
    return f"{progress['step']}/{progress['total']}" if "step" in progress else ""


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def eval_table(row: dict[str, Any]) -> Table:
    table = Table(title="held-out accuracy per skill")
    for name in ("skill", f"v{row['base_version']} (base)", "candidate", "delta"):
        table.add_column(name, justify="left" if name == "skill" else "right")
    for skill in sorted(set(row["eval"]) | set(row["champion_eval"])):
        before, after = row["champion_eval"].get(skill), row["eval"].get(skill)
        delta = "" if before is None or after is None else f"{after - before:+.3f}"
        table.add_row(
            cell(skill),
            "" if before is None else f"{before:.3f}",
            "" if after is None else f"{after:.3f}",
            delta,
        )
    return table
