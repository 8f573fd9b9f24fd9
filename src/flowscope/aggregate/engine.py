"""The embedded stream engine: window states updated per batch, closed by the clock, rolled up.

Flows update only the finest windows (1 s by default). When a window closes (its end plus the
grace period has passed on the engine's clock, whether or not traffic arrives) its final result
is emitted and its state is merged into the enclosing window of the next resolution; so a minute
is exactly the sum of its seconds and an hour the sum of its minutes. Open windows emit
provisional results at a fixed interval. A flow whose window has already closed is counted as
late and folded into the window open now; nothing is dropped.

The clock is the wall clock for live collection, or the data itself (the largest time seen) for
offline reports, which makes offline results deterministic.

With ``offload`` (live collection, wall clock) the results of the windows longer than the finest
and the checkpoints are computed on a background thread from snapshots taken under the engine's
lock (see ``offload``): the live (finest) results never wait behind an hour of host statistics.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.allocator import fix_mmap_threshold
from flowscope.aggregate.checkpoint import CheckpointError, CheckpointFiles
from flowscope.aggregate.filters import Filter, compile_filter
from flowscope.aggregate.hosts import HostState
from flowscope.aggregate.offload import BackgroundWork, snapshot_state
from flowscope.aggregate.state import Rows, TrafficState
from flowscope.aggregate.stats import StatsSpec
from flowscope.aggregate.windows import Resolution, attribute, check_resolutions, split_counts
from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class EngineConfig:
    windows_ms: tuple[int, ...] = (1_000, 60_000, 3_600_000)
    time_base: str = "received"
    grace_ms: int = 1_000  # a window closes this long after its end
    clock: Literal["wall", "data"] = "wall"
    provisional_interval_ms: int = 250  # live (finest) windows
    report_provisional_interval_ms: int = 5_000  # longer windows: costly with many hosts, slow to change
    checkpoint_dir: str | None = None
    checkpoint_interval_ms: int = 5_000
    stats: StatsSpec = field(default_factory=StatsSpec)
    # Longer windows' results and checkpoints on a background thread (wall clock only).
    offload: bool = False


@dataclass(frozen=True, slots=True)
class WindowResult:
    resolution: str  # "1s", "1m", "1h"
    duration_ms: int
    start_ms: int
    view: str
    final: bool
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "interval": self.resolution,
            "start_ms": self.start_ms,
            "end_ms": self.start_ms + self.duration_ms,
            "view": self.view,
            "final": self.final,
            **self.payload,
        }


class ResultSink(Protocol):
    def emit(self, results: list[WindowResult]) -> None: ...


@dataclass(slots=True)
class _Window:
    views: dict[str, TrafficState]
    dirty: bool = True


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    """Stateful aggregation of FlowBatches into window results for every resolution and view."""

    def __init__(
        self,
        config: EngineConfig,
        sink: ResultSink,
        exporters: ExporterTable,
        counters: Counters,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config
        self.sink = sink
        self.exporters = exporters
        self.counters = counters
        self.clock_ms = clock_ms
        self.resolutions: list[Resolution] = []
        self._filters: dict[str, Filter | None] = {}
        self._open: list[dict[int, _Window]] = []
        self._horizon_ms: list[int] = []  # windows starting before this have closed, per level
        self._watermark_ms: int | None = None
        self._last_provisional_ms: list[int] = []
        self._last_checkpoint_ms = 0
        self._checkpoint: CheckpointFiles | None = None
        self._changed: list[bool] = []  # per level: changed since the last checkpoint
        self._watch_added: set[str] = set()  # run-time watch list changes, kept in checkpoints
        self._watch_removed: set[str] = set()
        # Arrival times (collector clock) of batches not yet visible in a published live result,
        # and the delays measured when they became visible: the "live lag" of the dashboard.
        self._unpublished_arrivals_ms: list[int] = []
        self.live_delays_ms: deque[int] = deque(maxlen=100_000)
        self._background: BackgroundWork | None = None  # results and folds of long windows
        self._writer: BackgroundWork | None = None  # checkpoints (disk waits must not delay folds)
        self._checkpoint_failed = False  # a background write failed: rewrite every level next time

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.resolutions = check_resolutions(list(self.config.windows_ms))
        self._filters = {"all": None}
        for view in self.config.stats.views:
            self._filters[view.name] = compile_filter(view.filter)
        self._open = [{} for _ in self.resolutions]
        self._horizon_ms = [-(1 << 62)] * len(self.resolutions)
        self._changed = [True] * len(self.resolutions)
        self._last_provisional_ms = [0] * len(self.resolutions)
        if self.config.offload and self.config.clock == "wall":
            fix_mmap_threshold()  # folds free arrays of hundreds of MB: give them back to the system
            self._background = BackgroundWork(self.counters, "background")
            self._writer = BackgroundWork(self.counters, "checkpoint")
            self._background.start()
            self._writer.start()
        if self.config.checkpoint_dir:
            self._checkpoint = CheckpointFiles(self.config.checkpoint_dir)
            self._restore()
        self._last_checkpoint_ms = self._now()

    def stop(self) -> None:
        """Live stop: publish what the open windows hold, and checkpoint them for the restart."""
        self.wait_background()  # nothing in flight: the last results and checkpoint go out
        self._run_completions()  # closed minutes hand their hosts to the hour
        self._emit_provisional(self._now(), force=True)
        self.wait_background()  # folds lend host parts; the checkpoint waits for them to return
        self._run_completions()
        if self._checkpoint is not None:
            self.checkpoint()
        for worker in (self._background, self._writer):
            if worker is not None:
                worker.stop()
        self._background = self._writer = None

    def flush(self) -> None:
        """Close every open window now (end of offline input)."""
        self._close(until_ms=None)
        self.wait_background()

    def wait_background(self) -> None:
        """Wait until the background threads have run every queued job (results, checkpoints)."""
        for worker in (self._background, self._writer):
            if worker is not None:
                worker.drain()

    # ----------------------------------------------------------------- update
    def process(self, batch: FlowBatch) -> None:
        if len(batch) == 0:
            return
        finest = self.resolutions[0]
        # A flow is late once any window containing it has closed: a closed hour covers its seconds.
        horizon = max(self._horizon_ms)
        attribution = attribute(batch, self.config.time_base, finest, earliest_start_ms=horizon)
        starts = attribution.window_start_ms
        if self.config.clock == "data":
            newest = int(starts.max()) + finest.duration_ms - 1
            self._watermark_ms = newest if self._watermark_ms is None else max(self._watermark_ms, newest)
        rows = self._rows(batch, attribution)
        late = starts < horizon
        if late.any():
            open_now = max(finest.start_of(self._now()), horizon)
            starts = np.where(late, open_now, starts)
            late_flows = int(rows.flows[late].sum())
            self.counters.add("engine_late_flows_total", late_flows)
        else:
            late_flows = 0
        masks = {name: (None if f is None else f.mask(batch)[attribution.rows]) for name, f in self._filters.items()}
        # Most batches fall into one window: checking that is far cheaper than np.unique.
        unique_starts = starts[:1] if (starts == starts[0]).all() else np.unique(starts)
        for start in unique_starts.tolist():
            in_window = starts == start if len(unique_starts) > 1 else None
            window = self._window(0, start)
            for name, mask in masks.items():
                selected = _combine(in_window, mask)
                chosen = rows if selected is None else rows.take(np.flatnonzero(selected))  # by index: faster
                window.views[name].update(chosen, self.config.stats)
            window.dirty = True
        if late_flows:
            self._window(0, int(starts[late][0])).views["all"].late_flows += late_flows
        self._changed[0] = True
        self.counters.add("engine_flows_total", len(batch))
        if self.config.clock == "wall":
            self._unpublished_arrivals_ms.append(int(batch["time_received"].min()))

    def merge_partial(self, start_ms: int, views: dict[str, TrafficState], arrival_ms: int | None = None) -> None:
        """Merge a finest-window partial state aggregated elsewhere (a collector worker process).

        Same rules as ``process``: a state for a window that has closed is late and folded into
        the window open now.
        """
        finest = self.resolutions[0]
        horizon = max(self._horizon_ms)
        if start_ms < horizon:
            late_flows = int(views["all"].by_class[:, 0].sum()) if "all" in views else 0
            start_ms = max(finest.start_of(self._now()), horizon)
            self.counters.add("engine_late_flows_total", late_flows)
            views["all"].late_flows += late_flows
        window = self._window(0, start_ms)
        for name, state in views.items():
            if name in window.views:
                window.views[name].merge(state)
        window.dirty = True
        self._changed[0] = True
        if arrival_ms is not None and self.config.clock == "wall":
            self._unpublished_arrivals_ms.append(arrival_ms)

    def _rows(self, batch: FlowBatch, attribution: Any) -> Rows:
        index = attribution.rows
        spread = attribution.share is not None
        flows = (
            attribution.counts_flow.astype(np.uint64) if spread else np.ones(len(index), np.uint64)
        )
        return Rows(
            protocol=batch["protocol"][index] if spread else batch["protocol"],
            src_port=batch["src_port"][index] if spread else batch["src_port"],
            dst_port=batch["dst_port"][index] if spread else batch["dst_port"],
            src_addr=batch["src_addr"][index] if spread else batch["src_addr"],
            dst_addr=batch["dst_addr"][index] if spread else batch["dst_addr"],
            exporter=batch["exporter"][index] if spread else batch["exporter"],
            tcp_flags=batch["tcp_flags"][index] if spread else batch["tcp_flags"],
            duration_ms=(batch["time_end"] - batch["time_start"])[index] if spread
            else batch["time_end"] - batch["time_start"],
            flows=flows,
            packets=split_counts(batch["packets"], attribution),
            bytes=split_counts(batch["bytes"], attribution),
        )

    def _window(self, level: int, start: int) -> _Window:
        window = self._open[level].get(start)
        if window is None:
            window = _Window({name: self._new_state(name, level) for name in self._filters})
            self._open[level][start] = window
        return window

    def _new_state(self, view: str, level: int = 0) -> TrafficState:
        # Host statistics only for the unfiltered view: their memory would multiply by views.
        if view != "all":
            return TrafficState()
        hosts = HostState(watched=self._watch_added, unwatched=self._watch_removed)
        hosts.deferred = self._defers(level)
        return TrafficState(hosts=hosts)

    def _defers(self, level: int) -> bool:
        """Whether the level's host parts are folded by the background thread (see ``_offload``)."""
        return self._background is not None and level > 0

    # ------------------------------------------------------------------ hosts
    def watch(self, address: str) -> None:
        """Count ``address`` exactly from now on, in every open window and every later one."""
        address = _canonical(address)
        self._watch_added.add(address)
        self._watch_removed.discard(address)
        for hosts in self._open_host_states():
            hosts.watch(address)
        self._changed = [True] * len(self._changed)

    def unwatch(self, address: str) -> None:
        address = _canonical(address)
        self._watch_removed.add(address)
        self._watch_added.discard(address)
        for hosts in self._open_host_states():
            hosts.unwatch(address)
        self._changed = [True] * len(self._changed)

    def _open_host_states(self) -> Iterator[HostState]:
        for level in self._open:
            for window in level.values():
                hosts = window.views["all"].hosts
                if hosts is not None:
                    yield hosts

    def watched_hosts(self) -> list[str]:
        configured = {_canonical(a) for a in self.config.stats.watched_hosts}
        return sorted((configured | self._watch_added) - self._watch_removed)

    def lent_hosts(self, level: int) -> list[HostState]:
        """The host statistics of the level's open windows that a background fold holds now:
        ``lookup_host`` would wait for them (seconds, for the hour of a million hosts)."""
        lent = []
        for window in self._open[level].values():
            hosts = window.views["all"].hosts
            if hosts is not None and hosts.lent:
                lent.append(hosts)
        return lent

    def lookup_host(self, address: str, level: int) -> list[dict[str, Any]]:
        """The host's statistics in every open window of one resolution (oldest first); waits
        for lent host statistics (see ``lent_hosts``)."""
        found = []
        for start, window in sorted(self._open[level].items()):
            hosts = window.views["all"].hosts
            entry = hosts.lookup(address, self.config.stats) if hosts is not None else None
            if entry is not None:
                found.append({"start_ms": start, **entry})
        return found

    # ------------------------------------------------------------------- time
    def _now(self) -> int:
        if self.config.clock == "data":
            return self._watermark_ms if self._watermark_ms is not None else 0
        return self.clock_ms()

    def tick(self) -> None:
        """Close what is due, emit provisional results and checkpoint when their intervals pass."""
        self._run_completions()
        now = self._now()
        self._close(until_ms=now)
        self._emit_provisional(now)
        if self._checkpoint is not None and now - self._last_checkpoint_ms >= self.config.checkpoint_interval_ms:
            self.checkpoint()

    def _close(self, until_ms: int | None) -> None:
        """Close windows whose end + grace <= until_ms (all of them when None), finest first."""
        results: list[WindowResult] = []
        for level, resolution in enumerate(self.resolutions):
            windows = self._open[level]
            due = sorted(
                start for start in windows
                if until_ms is None or start + resolution.duration_ms + self.config.grace_ms <= until_ms
            )
            if due and until_ms is not None and self._fold_in_flight(level, due):
                break  # closes at a later tick, once its fold is back (higher levels wait too)
            if due and level > 0 and (self._closing() or self._lending()):
                # A child's host statistics are still on their way to this level (see below), or
                # a window's are being folded: closing needs them back.
                self.wait_background()
                self._run_completions()
            for start in due:
                window = windows.pop(start)
                offloaded = self._background is not None and level > 0
                if not offloaded:
                    results.extend(self._results(resolution, start, window, final=True))
                self._horizon_ms[level] = max(self._horizon_ms[level], start + resolution.duration_ms)
                self._changed[level] = True
                parent: _Window | None = None
                hand_over = False
                if level + 1 < len(self.resolutions):
                    parent_resolution = self.resolutions[level + 1]
                    parent_start = parent_resolution.start_of(start)
                    parent = self._window(level + 1, parent_start)
                    parent_due = until_ms is None or (
                        parent_start + parent_resolution.duration_ms + self.config.grace_ms <= until_ms
                    )
                    hand_over = offloaded and not parent_due
                    for name, state in window.views.items():
                        parent.views[name].merge(_without_hosts(state) if hand_over else state)
                    parent.dirty = True
                    self._changed[level + 1] = True
                if offloaded:
                    self._offload_final(level, start, window, parent if hand_over else None,
                                        exclusive=hand_over or parent is None)
                self.counters.add("engine_windows_closed_total", resolution=resolution.name)
        if results:
            self.sink.emit(results)

    def _fold_in_flight(self, level: int, due: list[int]) -> bool:
        """Whether a due window's provisional fold (``_offload_fold``) is queued or running.

        Its host statistics are lent to that fold: closing needs them back. The clock thread does
        not wait for it; the window closes a tick or a few later."""
        if self._background is None or level == 0:
            return False
        return any(self._background.busy(f"result:{level}:{start}") for start in due)

    def _published(self) -> None:
        """The live windows were just published: every waiting batch is now visible."""
        if self._unpublished_arrivals_ms:
            now = self.clock_ms()
            self.live_delays_ms.extend(now - arrival for arrival in self._unpublished_arrivals_ms)
            self._unpublished_arrivals_ms.clear()

    def live_delay_quantiles(self) -> dict[str, int]:
        """Median and 99th percentile of arrival → live result, over the last 100k batches."""
        if not self.live_delays_ms:
            return {}
        values = np.fromiter(self.live_delays_ms, np.int64, len(self.live_delays_ms))
        p50, p99, high = np.percentile(values, [50, 99, 100])
        return {"p50_ms": int(p50), "p99_ms": int(p99), "max_ms": int(high), "samples": len(values)}

    def _emit_provisional(self, now: int, *, force: bool = False) -> None:
        results: list[WindowResult] = []
        for level, resolution in enumerate(self.resolutions):
            interval = self.config.provisional_interval_ms if level == 0 else self.config.report_provisional_interval_ms
            if not force and now - self._last_provisional_ms[level] < interval:
                continue
            self._last_provisional_ms[level] = now
            for start, window in sorted(self._open[level].items()):
                if not window.dirty:
                    continue
                if self._background is not None and level > 0:
                    if not force and start + resolution.duration_ms + self.config.grace_ms <= now:
                        continue  # due to close (see ``_fold_in_flight``): no new fold of it
                    if not self._background.busy(f"result:{level}:{start}") and not self._closing():
                        self._offload_fold(level, start, window)
                        window.dirty = False
                    continue
                results.extend(self._results(resolution, start, window, final=False))
                window.dirty = False
        if results:
            self.sink.emit(results)
        self._published()

    def _results(self, resolution: Resolution, start: int, window: _Window, *, final: bool) -> list[WindowResult]:
        return [
            WindowResult(resolution.name, resolution.duration_ms, start, name, final,
                         state.result(self.config.stats, self.exporters))
            for name, state in window.views.items()
        ]

    def _offload_final(
        self, level: int, start: int, window: _Window, hand_to: _Window | None, *, exclusive: bool
    ) -> None:
        """The final result of a closed minute (or hour), on the background thread.

        Its host statistics are folded in place there (nothing else holds them: with
        ``hand_to``, the parent gets them only afterwards, folded, by a completion), so the
        closed window never exists twice, raw and folded (``exclusive``: the host statistics are
        nobody else's; else they were merged into the parent as they were, and are folded into a
        copy). Until the hand-over, snapshots wait (``_closing``): no checkpoint can miss them."""
        assert self._background is not None
        background = self._background
        resolution = self.resolutions[level]
        hosts = window.views["all"].hosts if "all" in window.views else None
        lent = hosts.lend() if hosts is not None and exclusive else None

        def job() -> None:
            if hosts is not None and lent is not None:
                self._after_checkpoint()
                hosts.fold_lent(lent)
            self.sink.emit(self._results(resolution, start, window, final=True))
            if hosts is not None and hand_to is not None:
                background.complete_later(lambda: self._hand_over(level + 1, hand_to, hosts))

        background.submit(f"result:{level}:{start}:final", job)

    def _hand_over(self, level: int, parent: _Window, hosts: HostState) -> None:
        target = parent.views["all"].hosts
        if target is None:
            parent.views["all"].hosts = target = HostState()
        target.merge(hosts)
        parent.dirty = True
        self._changed[level] = True

    def _run_completions(self) -> None:
        if self._background is not None:
            self._background.run_completions()

    def _offload_fold(self, level: int, start: int, window: _Window) -> None:
        """A provisional result of a minute or an hour: the background thread folds the live host
        parts in place (lent to it, see ``HostState.lend``) and publishes from them.

        Folding a snapshot instead would hold the window's old main part beside the new one until
        the new one replaced it: with a million hosts, +40-80 MB for a minute every 5 s and several
        hundred MB for an hour. Meanwhile the window only queues what is merged into it (seconds,
        minutes); checkpoints and a close of the window wait for the fold (``_fold_in_flight``)."""
        assert self._background is not None
        resolution = self.resolutions[level]
        views = {name: snapshot_state(state, with_hosts=False) for name, state in window.views.items()}
        live = window.views["all"].hosts if "all" in window.views else None
        lent = live.lend() if live is not None else None

        def job() -> None:
            if live is not None and lent is not None:
                self._after_checkpoint()
                views["all"].hosts = live.fold_lent(lent)
                self.counters.add("engine_host_folds_total", resolution=resolution.name)
            self.sink.emit(self._results(resolution, start, _Window(views, dirty=False), final=False))

        if not self._background.submit(f"result:{level}:{start}", job):
            job()  # not reached: the caller checked that no such job is queued

    def _after_checkpoint(self) -> None:
        """From a fold job: wait for a checkpoint being written. Its snapshot holds the parts
        about to be folded; folded in place meanwhile, they would exist twice (old and new) until
        it is written. No checkpoint starts while parts are lent or a window closes (``checkpoint``)."""
        writer = self._writer
        if writer is not None:
            writer.drain()

    def _lending(self) -> bool:
        return any(hosts.lent for hosts in self._open_host_states())

    def _closing(self) -> bool:
        """A closed window's final result is being computed in the background: snapshots wait
        (its folded host parts are about to replace the raw ones in the parent; a snapshot taken
        now would hold both, and fold the raw ones a second time)."""
        return self._background is not None and self._background.busy_with(":final")

    def open_windows(self, level: int) -> dict[int, dict[str, TrafficState]]:
        """Read-only view of open windows (tests, live API)."""
        return {start: window.views for start, window in self._open[level].items()}

    def take_finest(self) -> dict[int, dict[str, TrafficState]]:
        """Remove and return the open finest windows (a worker shipping its partial states)."""
        taken = {start: window.views for start, window in self._open[0].items()}
        self._open[0] = {}
        return taken

    def checkpoint(self) -> None:
        """Save open windows: changed resolutions only, committed atomically (see checkpoint.py).

        With the background thread: snapshots of the changed levels are taken here and pickled
        and written there (skipped while the previous checkpoint is still being written).
        """
        if self._checkpoint is None:
            return
        writer = self._writer
        if writer is not None and (writer.busy("checkpoint") or self._closing() or self._lending()):
            return
        if self._checkpoint_failed:
            self._checkpoint_failed = False
            self._changed = [True] * len(self._changed)
        header = {
            "version": CHECKPOINT_VERSION,
            "windows_ms": [r.duration_ms for r in self.resolutions],
            "views": list(self._filters),
            "horizon_ms": list(self._horizon_ms),  # a copy: written later, on another thread
            "watermark_ms": self._watermark_ms,
            "exporters": self.exporters.entries(),
            "watch_added": sorted(self._watch_added),
            "watch_removed": sorted(self._watch_removed),
        }
        levels: list[dict[int, _Window] | None] = [
            self._open[level] if changed else None for level, changed in enumerate(self._changed)
        ]
        self._changed = [False] * len(self._changed)
        self._last_checkpoint_ms = self._now()
        files = self._checkpoint
        if writer is None:
            self._write_checkpoint(files, header, levels)
            return
        snapshots = [
            None if windows is None else {
                start: _Window({name: snapshot_state(state) for name, state in window.views.items()}, window.dirty)
                for start, window in windows.items()
            }
            for windows in levels
        ]
        writer.submit("checkpoint", lambda: self._write_checkpoint(files, header, snapshots))

    def _write_checkpoint(
        self, files: CheckpointFiles, header: dict[str, Any], levels: list[dict[int, _Window] | None]
    ) -> None:
        try:
            written = files.write(header, levels)
        except BaseException:
            self._checkpoint_failed = True  # the old manifest stands; write every level next time
            raise
        self.counters.add("engine_checkpoints_total")
        self.counters.add("engine_checkpoint_level_files_total", written)

    def _restore(self) -> None:
        assert self._checkpoint is not None
        try:
            found = self._checkpoint.read()
        except CheckpointError as error:
            log.warning("%s; starting empty", error)
            self.counters.add("engine_checkpoint_errors_total", reason=error.reason)
            return
        if found is None:
            return
        header, levels = found
        if (
            header.get("version") != CHECKPOINT_VERSION
            or header.get("windows_ms") != [r.duration_ms for r in self.resolutions]
            or header.get("views") != list(self._filters)
        ):
            log.warning("checkpoint in %s was written with other windows or views; starting empty",
                        self.config.checkpoint_dir)
            self.counters.add("engine_checkpoint_errors_total", reason="incompatible")
            return
        if self.exporters.entries() and self.exporters.entries() != [tuple(e) for e in header["exporters"]][
            : len(self.exporters)
        ]:
            raise RuntimeError("the exporter table must be empty (or the checkpoint's) when the engine starts")
        for address, domain in header["exporters"]:
            self.exporters.index_of(address, domain)  # same indices as before the restart
        self._open = levels
        self._horizon_ms = header["horizon_ms"]
        self._watermark_ms = header["watermark_ms"]
        self._watch_added = set(header["watch_added"])
        self._watch_removed = set(header["watch_removed"])
        for level, windows in enumerate(self._open):
            for window in windows.values():
                window.dirty = True
                hosts = window.views["all"].hosts if "all" in window.views else None
                if hosts is not None:
                    hosts.deferred = self._defers(level)
        log.info("restored %d open windows from %s", sum(len(level) for level in self._open),
                 self.config.checkpoint_dir)


def _without_hosts(state: TrafficState) -> TrafficState:
    """The state with its host statistics left out (a shallow copy: it is only read)."""
    if state.hosts is None:
        return state
    copied = TrafficState.__new__(TrafficState)
    copied.__dict__.update(state.__dict__)
    copied.hosts = None
    return copied


def _canonical(address: str) -> str:
    """One spelling per address ('2001:DB8::1' and '2001:db8::1' are the same host)."""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise ConfigError(f"host: {address!r} is not an IP address") from None


def _combine(first: npt.NDArray[np.bool_] | None, second: npt.NDArray[np.bool_] | None) -> npt.NDArray | None:
    if first is None:
        return second
    if second is None:
        return first
    return first & second
