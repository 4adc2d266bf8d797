"""``hive core list|promote|release|rollback|key|serve``: which registered core the fleet runs, canaries, the key
releases are signed with, and the server agents on other hosts fetch cores from."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from kafka import errors as kafka_errors
from rich.console import Console
from rich.table import Table

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, cell, open_registry, serving_cores, settings_or_exit
from hive.config import HiveSettings
from hive.cores.registry import CoreIntegrityError, CoreRegistry, RegistryError, UnknownVersionError
from hive.cores.release import ReleaseError, ReleasePlan, parse_agent_ids
from hive.views import cores_json
from streams import topics
from streams.kafka import DEFAULT_PARTITIONS, create_topics, make_producer

if TYPE_CHECKING:
    from kafka import KafkaProducer

app = typer.Typer(help="Release control: list cores, promote, canary-release and roll back.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON on stdout (messages go to stderr).")
DryRunOption = typer.Option(False, "--dry-run", help="Show what would happen; change and publish nothing.")
VersionArgument = typer.Argument(..., min=0, help="The core version (the hive's numbering, from 0).")
# Fail in seconds, not kafka-python's 30 s, when the broker is not there.
BOOTSTRAP_TIMEOUT_MS = 10_000
DEFAULT_CORE_LISTEN = "127.0.0.1:8470"


@app.command("list")
def list_cores(as_json: bool = JsonOption) -> None:
    """List the registered cores, oldest first, with aliases, releases and per-skill accuracy.

    The accuracy comes from the rounds: across cores it is the knowledge matrix. Needs no broker.
    """
    from mlflow.exceptions import MlflowException  # imported here: mlflow is slow to import

    settings = settings_or_exit()
    registry = open_registry(settings)
    try:
        rows = cores_json(settings, registry)
    except (MlflowException, RegistryError, OSError, ValueError, TypeError) as err:
        # OSError/ValueError/TypeError: a round record that cannot be read or does not fit RoundRecord.
        typer.echo(f"cannot read the cores: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no cores are registered yet", err=True)
        return
    Console(soft_wrap=False).print(_cores_table(rows))


@app.command("promote")
def promote(version: int = VersionArgument, as_json: bool = JsonOption, dry_run: bool = DryRunOption) -> None:
    """Make core V the champion and release it to the whole fleet (the same as `hive core release V`).

    The old champion becomes `previous`. Promoting the champion again publishes it again: use it to
    retry a release whose publish failed, or to end a canary.
    """
    _run_release(lambda s, r, p: _release_core(s, r, p, version, None, dry_run), dry_run, as_json)


@app.command("release")
def release(
    version: int = VersionArgument,
    canary: str | None = typer.Option(
        None,
        "--canary",
        help="Comma-separated agent ids: release V to these agents only; the champion stays. "
        "Without it, V becomes champion and reaches every agent.",
    ),
    as_json: bool = JsonOption,
    dry_run: bool = DryRunOption,
) -> None:
    """Release core V: to the agents named by --canary first, then (without --canary) to every agent."""
    targets: list[str] | None = None
    if canary is not None:
        try:
            targets = parse_agent_ids([part.strip() for part in canary.split(",") if part.strip()])
        except ValueError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(EXIT_USAGE) from err
    _run_release(lambda s, r, p: _release_core(s, r, p, version, targets, dry_run), dry_run, as_json)


@app.command("rollback")
def rollback(as_json: bool = JsonOption, dry_run: bool = DryRunOption) -> None:
    """Make the champion before the current one champion again, and release it to the whole fleet.

    Repeat it to go further back. A failed publish changes nothing, so running it again is safe.
    """
    from hive.cores.release import rollback as do_rollback

    _run_release(lambda s, r, p: do_rollback(s, r, p, dry_run=dry_run), dry_run, as_json)


@app.command("serve")
def serve_cores(
    listen: str = typer.Option(
        None, "--listen", help="host:port to serve on [HIVE_CORES__LISTEN; default 127.0.0.1:8470]."
    ),
) -> None:
    """Serve released cores over HTTP(S) to agents on other hosts, until Ctrl-C.

    Answers GET /cores/v<N>/manifest.json (the manifest each release signs) and /cores/v<N>/<file>, with Range
    requests; nothing else under HIVE_HOME. HTTPS with HIVE_CORES__TLS_CERT_FILE and HIVE_CORES__TLS_KEY_FILE.
    Releases name these URLs when HIVE_CORES__BASE_URL is this server's address. `hive serve` does the same
    when HIVE_CORES__LISTEN is set. Needs no broker.
    """
    import signal
    import threading

    from hive.config import listen_address

    settings = settings_or_exit()
    address = listen or settings.cores.listen or DEFAULT_CORE_LISTEN
    try:
        listen_address(address)
    except ValueError as err:
        typer.echo(f"--listen: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with serving_cores(settings, address):
        stop.wait()


@app.command("key")
def key(
    fingerprint_only: bool = typer.Option(False, "--fingerprint", help="Print only the key's fingerprint."),
) -> None:
    """Print the hive's release public key (PEM), the key agents pin; make the key first if none exists yet.

    The fingerprint (sha256 of the raw key, 16 hex digits) goes to stderr, or alone to stdout with
    --fingerprint. Needs no broker.
    """
    from hive.cores.release_key import release_key
    from streams.release_signing import ReleaseKeyError, fingerprint, public_key_pem

    settings = settings_or_exit()
    try:
        public = release_key(settings).public_key()
    except ReleaseKeyError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except OSError as err:
        typer.echo(f"cannot write the release key under {settings.home}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    if fingerprint_only:
        typer.echo(fingerprint(public))
        return
    typer.echo(public_key_pem(public).decode("ascii"), nl=False)
    typer.echo(f"fingerprint {fingerprint(public)}; written to {settings.release_public_key_path}", err=True)


def _release_core(
    settings: HiveSettings,
    registry: CoreRegistry,
    producer: KafkaProducer | None,
    version: int,
    targets: list[str] | None,
    dry_run: bool,
) -> ReleasePlan:
    from hive.cores.release import release_core

    return release_core(settings, registry, producer, version, canary=targets, dry_run=dry_run)


def _run_release(
    act: Callable[[HiveSettings, CoreRegistry, KafkaProducer | None], ReleasePlan], dry_run: bool, as_json: bool
) -> None:
    """Runs one release with the hive's settings, registry and (unless a dry run) a producer; maps errors
    to exit codes: 2 for an unknown version or a missing broker address, 1 for anything else that fails."""
    from mlflow.exceptions import MlflowException  # imported here: mlflow is slow to import

    settings = settings_or_exit()
    if not dry_run and not settings.kafka.bootstrap:
        typer.echo("a release is published on the broker: set HIVE_KAFKA_BOOTSTRAP (or use --dry-run)", err=True)
        raise typer.Exit(EXIT_USAGE)
    registry = open_registry(settings)
    producer = None
    try:
        if not dry_run:
            try:
                producer = make_producer(settings.kafka, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
                # The hive creates its topics when it starts; a release to a broker it has not seen yet must
                # not leave hive.core to the broker's auto-creation defaults.
                create_topics(settings.kafka, {topics.CORE: DEFAULT_PARTITIONS[topics.CORE]})
            except kafka_errors.KafkaError as err:
                typer.echo(f"cannot reach the broker at {settings.kafka.bootstrap}: {err}", err=True)
                raise typer.Exit(EXIT_FAILURE) from err
        plan = act(settings, registry, producer)
    except UnknownVersionError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_USAGE) from err
    except CoreIntegrityError as err:
        typer.echo(f"refusing to release: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except (RegistryError, ReleaseError, MlflowException) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except kafka_errors.KafkaError as err:
        typer.echo(f"the release was not published (nothing was changed): {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    except OSError as err:
        typer.echo(f"cannot read the core's files: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    finally:
        if producer is not None:
            producer.close(timeout=10)
    if as_json:
        typer.echo(json.dumps(plan.to_json(), indent=2))
    else:
        typer.echo(plan.describe())


def _cores_table(rows: list[dict[str, Any]]) -> Table:
    skills = sorted({skill for row in rows for skill in row["eval"]})
    table = Table(title=f"cores: {len(rows)}")
    for name in ("core", "aliases", "released to", "round", "created (UTC)", "sha256"):
        table.add_column(name, justify="right" if name == "core" else "left")
    for skill in skills:
        table.add_column(skill, justify="right")
    for row in rows:
        if row["released_at"] is None:
            released = ""
        elif row["released_to"] is None:
            released = "fleet"
        else:
            released = ",".join(row["released_to"])
        evals = row["eval"]
        table.add_row(
            str(row["core_version"]),
            ", ".join(row["aliases"]),
            cell(released, 40),
            cell(row["round_id"] or ""),
            (row["created"] or "")[:19],
            (row["sha256"] or "")[:12],
            *(f"{evals[s]:.2f}" if s in evals else "" for s in skills),
        )
    return table
