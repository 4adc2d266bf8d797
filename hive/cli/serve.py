"""``hive serve``: the hive as a long-running service: ingest, the fleet view, and rounds when they are due."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import typer

from hive.cli.common import EXIT_FAILURE, EXIT_USAGE, settings_or_exit
from hive.cli.schedule import describe, with_schedule
from hive.rounds.last_check import record_check

if TYPE_CHECKING:
    from hive.service import Hive

log = logging.getLogger("hive.serve")

LOCK_FILE = "serve.lock"
# How often the main thread looks at the background threads' health; rounds have their own interval.
HEALTH_CHECK_S = 0.5


class _Stop:
    """The first SIGTERM/SIGINT asks the service to stop; during a round it also interrupts the round."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.in_round = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.event.set()
        if self.in_round:
            # The launcher kills its whole process group on any interruption, so no DeepSpeed rank
            # outlives the service; waiting for the round instead could take up to distill.timeout_s.
            raise KeyboardInterrupt


@contextlib.contextmanager
def _exclusive(home: Path) -> Iterator[IO[str]]:
    """Holds ``HIVE_HOME/serve.lock`` so that one process at a time writes the store.

    An flock is released by the kernel when its holder dies, even by SIGKILL: a restart never
    finds a stale lock.
    """
    path = home / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            typer.echo(f"another hive serve (pid {holder}) is already running with HIVE_HOME={home}", err=True)
            raise typer.Exit(EXIT_FAILURE) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle


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

    Needs HIVE_KAFKA_BOOTSTRAP (host:port,...); keeps all its state under HIVE_HOME. Exits 0 after a
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

    from agents.skills import SkillLoadError, skill_catalog
    from hive.cores.registry import RegistryError
    from hive.cores.release import ReleaseError
    from hive.ingest.ingestor import keyring
    from hive.service import Hive
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
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        typer.echo(f"cannot create HIVE_HOME {settings.home}: {err}", err=True)
        raise typer.Exit(EXIT_FAILURE) from err
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    with _exclusive(settings.home):
        try:
            hive = Hive(settings)
            # An ingest-only hive (--no-rounds) leaves releases to the one that runs rounds.
            first = hive.announce() if rounds else None
        except KafkaError as err:
            typer.echo(f"cannot reach the broker at {settings.kafka.bootstrap}: {err!r}", err=True)
            raise typer.Exit(EXIT_FAILURE) from err
        except StoreError as err:
            typer.echo(f"cannot open the learning store: {err}", err=True)
            raise typer.Exit(EXIT_FAILURE) from err
        except (RegistryError, ReleaseError) as err:
            typer.echo(f"cannot release the first core: {err}", err=True)
            raise typer.Exit(EXIT_FAILURE) from err
        if first is not None:
            log.info("a new hive: released core v%d to the fleet", first.version)
        hive.start()
        log.info(
            "serving: broker %s, HIVE_HOME %s, rounds %s",
            settings.kafka.bootstrap,
            settings.home.resolve(),
            f"checked every {round_check_s:g} s ({describe(settings.schedule)})" if rounds else "off",
        )
        try:
            failure = _loop(hive, stop, rounds, round_check_s, round_retry_s)
        finally:
            hive.stop()
        totals = hive.ingestor.totals
        log.info(
            "stopped: %d polled, %d stored, %d duplicates, %d dead-lettered, %d unsigned",
            totals.polled,
            totals.stored,
            totals.duplicates,
            totals.dead_lettered,
            totals.unsigned,
        )
    if failure is not None:
        typer.echo(f"hive serve failed: {failure}", err=True)
        raise typer.Exit(EXIT_FAILURE)


def _loop(hive: Hive, stop: _Stop, rounds: bool, round_check_s: float, round_retry_s: float) -> str | None:
    """Watches the background threads and looks at the rounds every ``round_check_s``; returns a failure, or None.

    Each look resumes a round that a crash interrupted, or runs one that the schedule says is due. One look
    never ends the service: a round that fails is recorded in its round.json, and anything else that goes
    wrong (a bug, bad data, the registry or the broker) is logged with its traceback and recorded in
    ``HIVE_HOME/schedule.json``; either way the next look comes after ``round_retry_s``.
    """
    from hive.rounds.book import RoundFailed

    next_round_at = time.monotonic()  # the first look comes at once: an interrupted round resumes at start
    announced = False
    while not stop.event.wait(HEALTH_CHECK_S):
        failure = hive.failure()
        if failure is not None:
            return failure
        if not announced and hive.ingestor.ready:
            announced = True
            parts = sorted(tp.partition for tp in hive.ingestor.assignment())
            log.info("ingest joined group %s with partitions %s", "hive-ingest", parts)
        if not rounds or time.monotonic() < next_round_at:
            continue
        next_round_at = time.monotonic() + round_check_s
        stop.in_round = True
        try:
            record = hive.round_tick(on_progress=_ProgressLogger())
        except KeyboardInterrupt:
            log.warning("the round in progress was interrupted; it resumes when the hive starts again")
            return None
        except RoundFailed as err:
            log.error("%s; the next try is in %g s (`hive round show` has the reason)", err, round_retry_s)
            next_round_at = time.monotonic() + round_retry_s
            _record(hive, None)  # the check itself went through
            continue
        except Exception as err:
            # Isolates one look at the rounds: whatever it raised, the service stays up and says why.
            log.exception("the round check failed; the next try is in %g s", round_retry_s)
            next_round_at = time.monotonic() + round_retry_s
            _record(hive, f"{type(err).__name__}: {err}")
            continue
        finally:
            stop.in_round = False
        _record(hive, None)
        if record is not None:
            log.info("round %s: %s (candidate core v%s)", record.id, record.state, record.candidate_version)
    return None


def _record(hive: Hive, error: str | None) -> None:
    """Records the check's outcome for operators; a HIVE_HOME that cannot be written is logged, not fatal."""
    try:
        record_check(hive.settings.home, error)
    except OSError:
        log.exception("cannot record the round check's outcome under %s", hive.settings.home)


class _ProgressLogger:
    """Logs a running round's progress about every tenth of its steps, with the loss and the ETA."""

    def __init__(self) -> None:
        self._first: tuple[int, float] | None = None
        self._next = 0

    def __call__(self, step: int, total: int, loss: float) -> None:
        from hive.rounds.progress import eta_s

        now = time.monotonic()
        if self._first is None:
            self._first = (step, now)
        if step < self._next and step < total:
            return
        self._next = step + max(1, total // 10)
        eta = eta_s(self._first, step, total, now)
        log.info("distilling: step %d/%d, loss %.4f, ETA %s", step, total, loss, "?" if eta is None else f"{eta:.0f} s")
