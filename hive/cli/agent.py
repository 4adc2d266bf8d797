"""``hive agent run``: one agent process, deployed to one skill."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

app = typer.Typer(help="Run agents.", no_args_is_help=True)


@app.command("run")
def run(
    agent_id: str = typer.Option(..., "--id", help="The agent's id (letters, digits, . _ -)."),
    skill: str = typer.Option(..., help="The skill it is deployed to: a built-in name or module:attribute."),
    eval_skills: str = typer.Option("", help="Comma-separated skills it evaluates itself on when it reports."),
    learn_steps: int = typer.Option(300, min=0, help="On-the-job learning steps on its first core."),
    relearn_steps: int | None = typer.Option(
        None, min=0, help="On-the-job steps after each core swap (default: --learn-steps; 0: only serve)."
    ),
    later_skills: str = typer.Option(
        "", help="Comma-separated skills it works after its 1st, 2nd, ... core swap (the last one stays): new material."
    ),
    batch_size: int = typer.Option(32, help="Tasks worked per learning step."),
    publish_per_step: int = typer.Option(8, help="Learnings published per step."),
    eval_tasks: int = typer.Option(100, help="Held-out tasks per skill in a self-evaluation."),
    home: Path | None = typer.Option(
        None, help="Where the agent keeps its cores and specialist [env HIVE_AGENT_HOME]."
    ),
) -> None:
    """Work tasks, learn on the job, publish learnings and heartbeats, and follow released cores: after every
    core swap, learn on the new core again.

    Learnings wait in a spool on disk until the broker acks them, so the agent keeps working while the
    broker is down. Stops cleanly on SIGTERM or Ctrl-C, sending what it can first.
    """
    # Imported here so that `hive --help` stays fast: torch and transformers load in seconds.
    from pydantic import ValidationError

    from agents.config import AgentSettings
    from agents.runtime import AgentRuntime
    from agents.skills import SkillLoadError
    from agents.spool import SpoolLocked
    from streams.config import KafkaSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    kafka = KafkaSettings()
    if not kafka.bootstrap:
        typer.echo("HIVE_KAFKA_BOOTSTRAP is not set: an agent needs a broker to reach the hive", err=True)
        raise typer.Exit(2)
    try:
        settings = AgentSettings(
            agent_id=agent_id,
            skill=skill,
            eval_skills=[s for s in eval_skills.split(",") if s],
            learn_steps=learn_steps,
            relearn_steps=relearn_steps,
            later_skills=[s for s in later_skills.split(",") if s],
            batch_size=batch_size,
            publish_per_step=publish_per_step,
            eval_tasks=eval_tasks,
        )
        if home is not None:
            settings = settings.model_copy(update={"home": home})
        runtime = AgentRuntime(settings, kafka)
    except (ValidationError, SkillLoadError) as err:
        typer.echo(f"invalid agent settings: {err}", err=True)
        raise typer.Exit(2) from err
    except SpoolLocked as err:
        typer.echo(f"{err}: stop that agent, or give this one another --id or --home", err=True)
        raise typer.Exit(2) from err
    except (ValueError, OSError) as err:
        # A malformed signing key (HIVE_AGENT_SIGNING_KEY), an unreadable key file, or a home it cannot write.
        typer.echo(f"cannot start agent {agent_id}: {err}", err=True)
        raise typer.Exit(2) from err
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.run(stop)
