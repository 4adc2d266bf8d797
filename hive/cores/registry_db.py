"""The core registry's MLflow database: importing MLflow quietly, and creating its SQLite file whole."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from streams.durable import fsync_dir

SQLITE_PREFIX = "sqlite:///"


def import_mlflow():
    """The ``mlflow`` module, imported on first use, with its database-migration chatter quieted."""
    # `import mlflow` takes ~3 s and agent processes must start without it, so only the hive's
    # registry calls pay for it.
    import mlflow

    # A fresh SQLite file logs "Creating initial MLflow database tables..." and "Updating database
    # tables" at INFO. MLFLOW_LOGGING_LEVEL cannot silence them here: it is read once, at import, and
    # transformers' save_pretrained often imported mlflow already (via deepspeed.autotuning). So quiet
    # that one logger, keeping its warnings and errors, unless the user chose a level.
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return mlflow


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other URI."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    return Path(tracking_uri.removeprefix(SQLITE_PREFIX)).resolve()


def _sidecars(path: Path) -> list[Path]:
    """``path`` and the journal files SQLite may leave beside it."""
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))]


def ensure_database(db: Path) -> bool:
    """Creates the MLflow SQLite database ``db`` whole, or leaves an existing one alone; True when it created it.

    MLflow migrates a new database in place, over dozens of transactions: a start killed among them left a
    half-migrated file that every later start refused (``table _alembic_tmp_endpoints already exists``,
    "out-of-date database schema"). So the tables are made in a temp file beside ``db``, which is fsynced and
    renamed into place: ``db`` either does not exist or is whole. The temp file of a killed start is removed
    and made again; a lock file keeps two first starts from building it at once.
    """
    if db.is_file():
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    with (db.parent / f".{db.name}.lock").open("a") as lock:
        # Held until the rename: another process that waited finds the whole database and returns.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if db.is_file():
            return False
        tmp = db.parent / f".{db.name}.creating"
        for leftover in _sidecars(tmp):
            leftover.unlink(missing_ok=True)
        _migrate(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, db)
        fsync_dir(db.parent)
    return True


def _migrate(path: Path) -> None:
    """Creates MLflow's tables in the SQLite file ``path`` and upgrades them to the installed MLflow's schema."""
    import_mlflow()
    import sqlalchemy

    # What MLflow's tracking and registry stores run on a database without tables (SqlAlchemyStore.__init__);
    # called on an engine of our own, so no store caches an engine on the temp file's URI.
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(f"{SQLITE_PREFIX}{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
