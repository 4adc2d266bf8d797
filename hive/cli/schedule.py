"""The schedule's command-line overrides (``hive serve``, ``hive round run --dry-run``): durations and triggers."""

from __future__ import annotations

import re

import typer

from hive.cli.common import EXIT_USAGE
from hive.config import HiveSettings, ScheduleSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h`` or ``1d``; ValueError for anything else."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number of seconds, or 90s, 10m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def _duration_or_exit(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        typer.echo(f"{option}: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err


def with_schedule(
    settings: HiveSettings,
    manual: bool | None = None,
    min_new: int | None = None,
    every: str | None = None,
    min_per_agent: int | None = None,
    max_staleness: str | None = None,
) -> HiveSettings:
    """The settings with the options given on the command line in place of ``HIVE_SCHEDULE__*``."""
    update: dict[str, object] = {}
    if manual is not None:
        update["manual"] = manual
    if min_new is not None:
        update["min_new"] = min_new
    if every is not None:
        update["every_s"] = _duration_or_exit("--every", every)
    if min_per_agent is not None:
        update["min_per_agent"] = min_per_agent
    if max_staleness is not None:
        update["max_staleness_s"] = _duration_or_exit("--max-staleness", max_staleness)
    if not update:
        return settings
    return settings.model_copy(update={"schedule": settings.schedule.model_copy(update=update)})


def describe(schedule: ScheduleSettings) -> str:
    """The schedule in a few words, for logs and the dry run."""
    if schedule.manual:
        return "manual"
    parts = []
    if schedule.min_new:
        parts.append(f"at {schedule.min_new} new learnings")
    if schedule.every_s:
        parts.append(f"every {schedule.every_s:g} s")
    if schedule.min_per_agent:
        parts.append(f"when every active agent has {schedule.min_per_agent}")
    if schedule.max_staleness_s:
        parts.append(f"when a learning waits {schedule.max_staleness_s:g} s")
    return " or ".join(parts) if parts else "no trigger on"
