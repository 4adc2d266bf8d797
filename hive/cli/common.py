"""What the command groups share: the hive's settings and its store opened for reading, with clear exits."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.text import Text

from hive.config import HiveSettings
from hive.cores.registry import CoreRegistry
from hive.store.interface import StoreError
from hive.store.parquet import READ_ERRORS, NoStoreError, ParquetLearningStore, open_read_only

# Exit codes: 1 when the hive's state cannot be read or the service fails, 2 for bad input or settings.
EXIT_FAILURE = 1
EXIT_USAGE = 2


@contextlib.contextmanager
def data_only_stdout() -> Iterator[None]:
    """Sends whatever the work prints to stderr, so that stdout holds only the command's data (``--json``).

    DeepSpeed logs to stdout, and transformers imports it on the first save of a model; a handler made
    inside this block keeps stderr as its stream.
    """
    with contextlib.redirect_stdout(sys.stderr):
        yield


def settings_or_exit() -> HiveSettings:
    """The hive's settings from ``HIVE_*`` variables; a bad value exits 2 naming it."""
    try:
        return HiveSettings()
    except ValidationError as err:
        typer.echo(f"invalid HIVE_* settings: {err}", err=True)
        raise typer.Exit(EXIT_USAGE) from err
    except SettingsError as err:
        # A variable that must hold JSON (a dict or a list) and does not; the cause names the parse error.
        typer.echo(f"invalid HIVE_* settings: {err}: {err.__cause__}", err=True)
        raise typer.Exit(EXIT_USAGE) from err


def open_store(settings: HiveSettings) -> ParquetLearningStore:
    """The learning store under HIVE_HOME, read-only (a running ``hive serve`` may be writing it); exits 1
    when there is none."""
    directory = settings.store_dir
    try:
        return open_read_only(directory)
    except NoStoreError as err:
        typer.echo(
            f"no learning store at {directory}: set HIVE_HOME to the hive's directory (now {settings.home}), "
            "or start `hive serve` to create one",
            err=True,
        )
        raise typer.Exit(EXIT_FAILURE) from err
    except StoreError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(EXIT_FAILURE) from err


@contextlib.contextmanager
def reading_store(settings: HiveSettings) -> Iterator[ParquetLearningStore]:
    """``open_store``, closed afterwards; a read that fails is a clear error and exit code 1."""
    store = open_store(settings)
    try:
        yield store
    except READ_ERRORS as err:
        typer.echo(f"cannot read the learning store: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    finally:
        store.close()


def open_registry(settings: HiveSettings) -> CoreRegistry:
    """The core registry under HIVE_HOME; exits 1 when the hive has none (HIVE_HOME is probably wrong)."""
    if not settings.has_registry():
        typer.echo(
            f"no core registry at {settings.mlflow_db}: set HIVE_HOME to the hive's directory (now {settings.home}), "
            "or start `hive serve` to create one",
            err=True,
        )
        raise typer.Exit(EXIT_FAILURE)
    return CoreRegistry.from_settings(settings)


def cell(text: str, limit: int | None = None) -> Text:
    """``text`` for a table cell, as shown: control characters made visible and no rich markup, since
    learnings and dead letters are whatever an agent (or an attacker) sent."""
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return Text(shown)


@contextlib.contextmanager
def serving_cores(settings: HiveSettings, listen: str | None = None) -> Iterator[str | None]:
    """Runs the core server on ``listen`` (default ``HIVE_CORES__LISTEN``) for the block; yields its URL, or
    None when there is nothing to serve on. An address that cannot be bound exits 1."""
    listen = listen or settings.cores.listen
    if listen is None:
        yield None
        return
    from hive.cores.server import CoreServer

    try:
        server = CoreServer(settings, listen)
    except OSError as err:
        typer.echo(f"cannot serve cores on {listen}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    server.start()
    typer.echo(f"serving released cores at {server.url}/cores/", err=True)
    if settings.cores.base_url is None:
        typer.echo(
            "HIVE_CORES__BASE_URL is not set: releases name file:// paths on this host, not this server; set it "
            "to the address agents reach this server by",
            err=True,
        )
    try:
        yield server.url
    finally:
        server.stop()
