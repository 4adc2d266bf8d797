"""Background compaction of the learning store: ingest writes one small segment per poll batch, and a long-running
hive would otherwise read thousands of them per round."""

from __future__ import annotations

import logging
import threading

from hive.store.interface import StoreError
from hive.store.parquet import ParquetLearningStore

log = logging.getLogger(__name__)

COMPACT_EVERY_S = 300.0


class Compactor:
    """Calls ``store.compact()`` every ``every_s`` on its own thread. A pass that fails is logged with its reason and
    tried again at the next one: compaction is housekeeping, never a reason to stop the hive."""

    def __init__(self, store: ParquetLearningStore, every_s: float = COMPACT_EVERY_S) -> None:
        self.store = store
        self.every_s = every_s
        self.retired = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compactor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=60)

    def run_once(self) -> None:
        try:
            retired = self.store.compact()
        except (StoreError, OSError) as err:
            self.failures += 1
            log.error("store compaction failed (tried again in %g s): %s", self.every_s, err)
            return
        self.retired += retired
        if retired:
            log.info("compacted the learning store: %d small segments merged", retired)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()
