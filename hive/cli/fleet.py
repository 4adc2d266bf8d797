"""``hive fleet``: each agent's running core, last heartbeat, lag and version skew, read from ``hive.fleet``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, cell, settings_or_exit
from hive.config import HiveSettings
from hive.cores.registry import RegistryError
from hive.fleet import FleetReadError, FleetView, read_fleet
from hive.fleet_saved import SavedViewError, load_view
from hive.views import ACTIVE_S, fleet_json
from streams.signing import KeyRingError


def fleet(
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout (messages go to stderr)."),
    timeout: float = typer.Option(
        10.0, "--timeout", min=0.5, help="Seconds allowed to read the heartbeats from the broker."
    ),
    active_s: float = typer.Option(
        ACTIVE_S,
        "--active-s",
        min=0.0,
        help="An agent whose last heartbeat is older than this is listed but left out of the summary.",
    ),
) -> None:
    """Show each agent's core version, last heartbeat (time and age), lag and version skew.

    Lag is the learnings the agent holds in its spool, waiting for the broker. Skew is the agent's core
    version minus the champion's. The summary counts the active agents per version, and the largest skew.
    A heartbeat counts only when its agent passes the hive's HIVE_INGEST__* rules (signed with its key,
    not revoked) and it was not sent further in the future than HIVE_INGEST__MAX_CLOCK_SKEW_S.

    Without a broker (HIVE_KAFKA_BOOTSTRAP unset, or unreachable) it shows the hive's last-known fleet view,
    which `hive serve` and `hive demo` save under HIVE_HOME, and says as of when ("source": "saved" in --json).
    """
    settings = settings_or_exit()
    as_of: datetime | None = None
    if not settings.kafka.bootstrap:
        view, as_of = _saved_or_exit(settings, "HIVE_KAFKA_BOOTSTRAP is not set", EXIT_USAGE)
    else:
        try:
            view = read_fleet(settings, timeout)
        except FleetReadError as err:
            view, as_of = _saved_or_exit(settings, err.args[0] if err.args else repr(err), EXIT_FAILURE)
        except KeyRingError as err:
            typer.echo(f"invalid HIVE_INGEST__* settings: {err}", err=True)
            raise typer.Exit(EXIT_USAGE) from err
    report = fleet_json(view, _champion(settings), now=as_of, active_s=active_s)
    report["source"] = "broker" if as_of is None else "saved"
    report["as_of"] = (as_of or datetime.now(UTC)).isoformat()
    if view.rejected:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(view.rejected_by_reason.items()))
        typer.echo(f"{view.rejected} heartbeats were not counted ({reasons}); the log says why", err=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if not report["agents"]:
        typer.echo("no agent has sent a heartbeat", err=True)
        return
    console = Console(soft_wrap=False)
    console.print(_table(report))
    versions = ", ".join(f"v{v}: {n}" for v, n in report["versions"].items()) or "none active"
    champion = "none" if report["champion"] is None else f"v{report['champion']}"
    console.print(f"champion {champion}; active agents per core: {versions}; max skew {report['max_skew']}")


def _saved_or_exit(settings: HiveSettings, why: str, code: int) -> tuple[FleetView, datetime]:
    """The hive's last-known fleet view, said to be one; exits with ``code`` and ``why`` when there is none."""
    try:
        saved = load_view(settings)
    except SavedViewError as err:
        typer.echo(f"{why}; and the last-known fleet view cannot be read: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    if saved is None:
        typer.echo(
            f"{why}: the fleet is read from the broker (HIVE_KAFKA_BOOTSTRAP), and this hive saved no "
            f"fleet view under {settings.home}",
            err=True,
        )
        raise typer.Exit(code)
    age = (datetime.now(UTC) - saved.as_of).total_seconds()
    typer.echo(
        f"{why}: showing the hive's last-known fleet view, as of {saved.as_of.isoformat(timespec='seconds')} "
        f"({_ago(age)} ago); ages below are as of then",
        err=True,
    )
    return saved.view, saved.as_of


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _champion(settings: HiveSettings) -> int | None:
    """The champion core version, or None when the hive has no registry (yet) under HIVE_HOME."""
    if not settings.has_registry():
        typer.echo(f"no core registry at {settings.home}: skew is not shown", err=True)
        return None
    from mlflow.exceptions import MlflowException  # imported here: mlflow is slow to import

    from hive.cores.registry import CoreRegistry

    try:
        return CoreRegistry.from_settings(settings).champion_version()
    except (MlflowException, RegistryError) as err:
        typer.echo(f"cannot read the champion from the core registry: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err


def _table(report: dict[str, Any]) -> Table:
    table = Table(title=f"fleet: {len(report['agents'])} agents")
    for name in ("agent", "skill", "core", "skew", "state", "last heartbeat (UTC)", "age s", "lag"):
        table.add_column(name, justify="right" if name in ("core", "skew", "age s", "lag") else "left")
    for agent in report["agents"]:
        skew = agent["skew"]
        table.add_row(
            cell(agent["agent_id"]),
            cell(agent["skill"], 30),
            str(agent["core_version"]),
            "" if skew is None else f"{skew:+d}",
            agent["state"] if agent["active"] else f"{agent['state']} (gone)",
            agent["last_heartbeat"][:19],
            f"{agent['heartbeat_age_s']:.1f}",
            "" if agent["lag"] is None else str(agent["lag"]),
            style=None if agent["active"] else "dim",
        )
    return table
