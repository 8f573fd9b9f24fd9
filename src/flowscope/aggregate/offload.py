"""The engine's background threads: slow work on snapshots, outside the engine lock.

With a million local hosts, the results of a minute or an hour (host tops over all hosts, folding
the queued host parts) and the pickling of checkpoints take seconds. Done on the engine's clock
thread, under the lock the decoder needs for every batch, they stalled the live view for that
long. Instead the clock thread takes a *snapshot* under the lock (cheap: host parts are shared,
see ``hosts``; the rest of a window state is small) and this thread works on it, one job at a
time, in submission order (checkpoints have a thread of their own, so that waiting for the disk
delays no fold). What a job learns that the live state can use (folded host parts)
comes back as a *completion*, run by the clock thread under the lock (``run_completions``).
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from flowscope.aggregate.keyed import KeyedSums
from flowscope.aggregate.state import TrafficState
from flowscope.metrics import Counters

log = logging.getLogger(__name__)

Job = Callable[[], None]


def snapshot_state(state: TrafficState, *, with_hosts: bool = True) -> TrafficState:
    """A copy of ``state`` that later updates leave alone (without host statistics if not
    ``with_hosts``).

    Host parts and the arrays of keyed tables are shared: both are replaced by updates, never
    written into (``KeyedSums`` folds into new arrays; see ``hosts`` for the host parts). The
    rest (histograms updated in place) is copied; it is small.
    """
    memo: dict[int, Any] = {}
    if state.hosts is not None:
        memo[id(state.hosts)] = state.hosts.snapshot() if with_hosts else None
    for value in vars(state).values():
        if isinstance(value, KeyedSums):
            memo[id(value)] = _shallow_keyed(value)
    return copy.deepcopy(state, memo)


def _shallow_keyed(table: KeyedSums) -> KeyedSums:
    """A new table sharing the arrays; its pending lists are its own (appends must not show)."""
    result = copy.copy(table)
    for name, value in vars(result).items():
        if isinstance(value, list):
            setattr(result, name, list(value))
    return result


class BackgroundWork:
    """One thread running jobs in order; at most one job per key queued or running."""

    def __init__(self, counters: Counters, name: str = "background") -> None:
        self.counters = counters
        self.name = name
        self._jobs: queue.Queue[tuple[str, Job] | None] = queue.Queue()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._completions: deque[Job] = deque()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"flowscope-engine-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the queued jobs, then end the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def busy(self, key: str) -> bool:
        with self._busy_lock:
            return key in self._busy

    def busy_with(self, suffix: str) -> bool:
        """Whether a job whose key ends with ``suffix`` is queued or running."""
        with self._busy_lock:
            return any(key.endswith(suffix) for key in self._busy)

    def submit(self, key: str, job: Job) -> bool:
        """Queue ``job`` unless a job of the same key is queued or running (False then)."""
        with self._busy_lock:
            if key in self._busy:
                return False
            self._busy.add(key)
        self._jobs.put((key, job))
        return True

    def complete_later(self, completion: Job) -> None:
        """From a job: run ``completion`` on the clock thread, under the engine lock."""
        self._completions.append(completion)

    def run_completions(self) -> int:
        done = 0
        while self._completions:
            self._completions.popleft()()
            done += 1
        return done

    def drain(self) -> None:
        """Wait until every queued job has run."""
        self._jobs.join()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                if item is None:
                    return
                key, job = item
                item = None
                try:
                    job()
                except Exception:  # one failed job (a full disk, a sink) must not end the thread
                    log.exception("engine background job %s failed", key)
                    self.counters.add("engine_background_failures_total", job=key.split(":")[0])
                finally:
                    # Drop the job before waiting for the next: its closure holds snapshots (a
                    # checkpoint's, a fold's view) whose arrays would otherwise stay alive until
                    # then, and a later fold in place would copy them instead of replacing them.
                    del job
                    with self._busy_lock:
                        self._busy.discard(key)
            finally:
                self._jobs.task_done()
