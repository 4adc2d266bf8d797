"""``hive serve``: the hive as a long-running service: ingest, the fleet view, and rounds when they are due."""

from __future__ import annotations

import logging

import typer

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, serving_cores, settings_or_exit
from hive.cli.schedule import describe, with_schedule
from hive.serve_loop import ServeBusy, StopSignal, exclusive, open_hive, run_until_stopped


def serve(
    rounds: bool = typer.Option(
        True, "--rounds/--no-rounds", help="Run distillation rounds when due; --no-rounds: ingest and fleet only."
    ),
    round_check_s: float = typer.Option(5.0, "--round-check-s", min=0.1, help="Seconds between round checks."),
    round_retry_s: float = typer.Option(
        300.0, "--round-retry-s", min=0.0, help="Seconds to wait after a failed round before trying again."
    ),
    manual: bool | None = typer.Option(
        None, "--manual/--scheduled", help="Manual: open rounds only through `hive round run` [HIVE_SCHEDULE__MANUAL]."
    ),
    min_new: int | None = typer.Option(
        None, "--min-new", min=0, help="Open a round at N new learnings; 0 = off [HIVE_SCHEDULE__MIN_NEW, 1500]."
    ),
    every: str | None = typer.Option(
        None,
        "--every",
        help="Open a round this long after the last one (90s, 10m, 2h); 0 = off [HIVE_SCHEDULE__EVERY_S].",
    ),
    min_per_agent: int | None = typer.Option(
        None,
        "--min-per-agent",
        min=0,
        help="Open a round when every active agent has M new learnings; 0 = off [HIVE_SCHEDULE__MIN_PER_AGENT].",
    ),
    max_staleness: str | None = typer.Option(
        None,
        "--max-staleness",
        help="Open a round when the oldest new learning is older than this; 0 = off [HIVE_SCHEDULE__MAX_STALENESS_S].",
    ),
) -> None:
    """Run the hive until SIGTERM or Ctrl-C: ingest learnings, follow the fleet, and run rounds when due.

    Needs HIVE_KAFKA_BOOTSTRAP (host:port,...); keeps all its state under HIVE_HOME. With HIVE_CORES__LISTEN
    (host:port) it also serves released cores over HTTP(S) to agents on other hosts. Exits 0 after a
    clean stop, 1 when the service fails, 2 for bad settings.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # kafka-python narrates every connection and group step at INFO; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = with_schedule(settings_or_exit(), manual, min_new, every, min_per_agent, max_staleness)
    if not settings.kafka.bootstrap:
        typer.echo(
            "HIVE_KAFKA_BOOTSTRAP is not set: hive serve needs a Kafka broker (host:port[,host:port...])", err=True
        )
        raise typer.Exit(EXIT_USAGE)
    # Imported here so that `hive --help` stays fast: the service pulls in torch and the Kafka clients.
    from kafka.errors import KafkaError

    from agents.core_files import CoreDirError
    from agents.skills import SkillLoadError, skill_catalog
    from hive.cores.files import core_dir
    from hive.cores.pretrained import ModelSourceError, core_source
    from hive.cores.registry import RegistryError
    from hive.cores.release import ReleaseError
    from hive.ingest.auth import keyring
    from hive.store.interface import StoreError
    from streams.signing import KeyRingError

    try:
        keyring(settings.ingest)  # refuse a malformed key now rather than on the first learning
    except KeyRingError as err:
        typer.echo(f"invalid HIVE_INGEST__* settings: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err
    try:
        skill_catalog(settings.skills)  # a plugin that does not load is a settings error, not a crash later
    except SkillLoadError as err:
        typer.echo(f"invalid HIVE_SKILLS: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err
    if not core_dir(settings, 0).exists():
        try:
            # A new hive builds core v0 from HIVE_MODEL__PATH: a model not prepared, or one refused, is a setting.
            core_source(settings.model.path, settings.model_cache_dir)
        except (ModelSourceError, CoreDirError) as err:
            typer.echo(f"invalid HIVE_MODEL__PATH: {err}", err=True)
            raise typer.Exit(EXIT_USAGE) from err
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        typer.echo(f"cannot create HIVE_HOME {settings.home}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    stop = StopSignal()
    stop.install()
    try:
        with exclusive(settings.home), serving_cores(settings):
            try:
                hive = open_hive(settings, rounds)
            except KafkaError as err:
                typer.echo(f"cannot reach the broker at {settings.kafka.bootstrap}: {err!r}", err=True)
                raise typer.Exit(EXIT_FAILURE) from err
            except StoreError as err:
                typer.echo(f"cannot open the learning store: {err}", err=True)
                raise typer.Exit(EXIT_FAILURE) from err
            except (RegistryError, ReleaseError) as err:
                typer.echo(f"cannot release the first core: {err}", err=True)
                raise typer.Exit(EXIT_FAILURE) from err
            except (ModelSourceError, CoreDirError) as err:
                typer.echo(f"cannot build core v0: {err}", err=True)
                raise typer.Exit(EXIT_USAGE) from err
            failure = run_until_stopped(hive, stop, rounds, round_check_s, round_retry_s, describe(settings.schedule))
    except ServeBusy as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    if failure is not None:
        typer.echo(f"hive serve failed: {failure}", err=True)
        raise typer.Exit(EXIT_FAILURE)
