"""The hive as a long-running service: one per HIVE_HOME, watching its threads and running rounds when due."""

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

from hive.rounds.book import RoundFailed
from hive.rounds.last_check import record_check
from hive.rounds.progress import eta_s

if TYPE_CHECKING:
    from hive.config import HiveSettings
    from hive.service import Hive

# The logger `hive serve` has always logged under: operators' log lines and filters stay as they were.
log = logging.getLogger("hive.serve")

LOCK_FILE = "serve.lock"
# How often the main thread looks at the background threads' health; rounds have their own interval.
HEALTH_CHECK_S = 0.5
# How often the hive checks that hive.core still holds its newest release (Hive.republish).
REPUBLISH_CHECK_S = 5.0
REPUBLISH_RETRY_S = 10.0


class ServeBusy(RuntimeError):
    """Another ``hive serve`` holds ``HIVE_HOME/serve.lock``: it is the one process writing the store."""


class StopSignal:
    """The first SIGTERM/SIGINT asks the service to stop; during a round it also interrupts the round."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.in_round = False

    def install(self) -> None:
        """Makes SIGTERM and SIGINT ask this service to stop (call it from the main thread)."""
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.event.set()
        if self.in_round:
            # The launcher kills its whole process group on any interruption, so no DeepSpeed rank
            # outlives the service; waiting for the round instead could take up to distill.timeout_s.
            raise KeyboardInterrupt


@contextlib.contextmanager
def exclusive(home: Path) -> Iterator[IO[str]]:
    """Holds ``HIVE_HOME/serve.lock`` so that one process at a time writes the store; raises ServeBusy,
    naming the holder's pid, when another process holds it.

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
            raise ServeBusy(f"another hive serve (pid {holder}) is already running with HIVE_HOME={home}") from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle


def open_hive(settings: HiveSettings, rounds: bool) -> Hive:
    """The hive's clients and store; a hive that runs rounds releases its first core to a new fleet.

    Raises what could not be reached or opened: the broker's KafkaError, StoreError, RegistryError or
    ReleaseError.
    """
    # Imported here so that `hive --help` stays fast: the service pulls in torch and the Kafka clients.
    from hive.service import Hive

    hive = Hive(settings)
    # An ingest-only hive (--no-rounds) leaves releases to the one that runs rounds.
    first = hive.announce() if rounds else None
    if first is not None:
        log.info("a new hive: released core v%d to the fleet", first.version)
    return hive


def run_until_stopped(
    hive: Hive, stop: StopSignal, rounds: bool, round_check_s: float, round_retry_s: float, schedule: str
) -> str | None:
    """Runs ``hive`` until ``stop`` (or a background thread fails), then stops it; returns the failure, or None.

    ``schedule`` describes the round schedule for the opening log line.
    """
    hive.start()
    log.info(
        "serving: broker %s, HIVE_HOME %s, rounds %s",
        hive.settings.kafka.bootstrap,
        hive.settings.home.resolve(),
        f"checked every {round_check_s:g} s ({schedule})" if rounds else "off",
    )
    try:
        failure = main_loop(hive, stop, rounds, round_check_s, round_retry_s)
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
    return failure


def main_loop(hive: Hive, stop: StopSignal, rounds: bool, round_check_s: float, round_retry_s: float) -> str | None:
    """Watches the background threads and looks at the rounds every ``round_check_s``; returns a failure, or None.

    Each look resumes a round that a crash interrupted, or runs one that the schedule says is due. One look
    never ends the service: a round that fails is recorded in its round.json, and anything else that goes
    wrong (a bug, bad data, the registry or the broker) is logged with its traceback and recorded in
    ``HIVE_HOME/schedule.json``; either way the next look comes after ``round_retry_s``.
    """
    next_round_at = time.monotonic()  # the first look comes at once: an interrupted round resumes at start
    announced = False
    republish_at = 0.0
    while not stop.event.wait(HEALTH_CHECK_S):
        failure = hive.failure()
        if failure is not None:
            return failure
        if not announced and hive.ingestor.ready:
            announced = True
            parts = sorted(tp.partition for tp in hive.ingestor.assignment())
            log.info("ingest joined group %s with partitions %s", "hive-ingest", parts)
        if time.monotonic() >= republish_at:
            republish_at = time.monotonic() + REPUBLISH_CHECK_S
            try:
                hive.republish()
            except Exception:
                # The broker may still be coming back (or the producer still be settling with it): try again soon.
                log.exception("could not release the champion again on hive.core; next try in %g s", REPUBLISH_RETRY_S)
                republish_at = time.monotonic() + REPUBLISH_RETRY_S
        if not rounds or time.monotonic() < next_round_at:
            continue
        next_round_at = time.monotonic() + round_check_s
        stop.in_round = True
        try:
            record = hive.round_tick(on_progress=ProgressLogger())
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


class ProgressLogger:
    """Logs a running round's progress about every tenth of its steps, with the loss and the ETA."""

    def __init__(self) -> None:
        self._first: tuple[int, float] | None = None
        self._next = 0

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (step, now)
        if step < self._next and step < total:
            return
        self._next = step + max(1, total // 10)
        eta = eta_s(self._first, step, total, now)
        log.info("distilling: step %d/%d, loss %.4f, ETA %s", step, total, loss, "?" if eta is None else f"{eta:.0f} s")
