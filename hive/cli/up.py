"""``hive up``: the embedded broker, ``hive serve``, agents and the dashboard, kept running until Ctrl-C."""

from __future__ import annotations

import dataclasses
import signal
import threading

import typer

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, settings_or_exit


def up(
    model: str | None = typer.Option(
        None, help="Core v0 of a new hive: tiny, smollm2-135m or a local model directory [HIVE_MODEL__PATH, tiny]."
    ),
    agents_skills: str | None = typer.Option(
        None, "--skills", help="One agent per skill, comma-separated (default: capital,morse,add on tiny)."
    ),
    cores_port: int = typer.Option(0, "--cores-port", min=0, max=65535, help="Port of the core server; 0: free."),
    ui_port: int = typer.Option(8765, "--ui-port", min=0, max=65535, help="Port of the dashboard; 0: free."),
) -> None:
    """Bring a whole hive up on this machine and keep it running until Ctrl-C: the embedded broker (unless
    HIVE_KAFKA_BOOTSTRAP names one), `hive serve` serving cores over HTTP, one agent per skill learning on the job
    round after round, and the dashboard. Prints their addresses. Logs go to HIVE_HOME/up/; the state stays under
    HIVE_HOME, and `hive up` started again goes on from it.
    """
    from agents.skills import SkillLoadError
    from hive.demo import DemoPlan
    from hive.up import HiveUp, UpError

    settings = settings_or_exit()
    model_path = model or settings.model.path
    plan = DemoPlan.for_model(model_path)
    try:
        if agents_skills:
            plan = dataclasses.replace(plan, skills=[s for s in agents_skills.split(",") if s])
        plan.skill_names()
    except (ValueError, SkillLoadError) as err:
        typer.echo(f"--skills: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    hive = HiveUp(settings, plan, cores_port, ui_port)
    failure = None
    try:
        addresses = hive.start(lambda message: typer.echo(message, err=True))
        typer.echo(
            f"the hive is up (Ctrl-C stops it):\n"
            f"  dashboard   {addresses.dashboard}\n"
            f"  broker      {addresses.broker}   (export HIVE_KAFKA_BOOTSTRAP={addresses.broker} for hive fleet)\n"
            f"  cores       {addresses.cores}\n"
            f"  agents      {', '.join(addresses.agents)}\n"
            f"  HIVE_HOME   {addresses.home}   (logs in {addresses.home / 'up'})"
        )
        while not stop.wait(1.0):
            for news in hive.check():
                typer.echo(news, err=True)
    except UpError as err:
        failure = str(err)
    finally:
        typer.echo("stopping the agents, the dashboard, hive serve and the broker", err=True)
        hive.stop()
    if failure is not None:
        typer.echo(f"hive up failed: {failure}", err=True)
        raise typer.Exit(EXIT_FAILURE)
