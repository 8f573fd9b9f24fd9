"""The embedded stream engine: window states updated per batch, closed by the clock, rolled up.

Flows update only the finest windows (1 s by default). When a window closes (its end plus the
grace period has passed on the engine's clock, whether or not traffic arrives) its final result
is emitted and its state is merged into the enclosing window of the next resolution; so a minute
is exactly the sum of its seconds and an hour the sum of its minutes. Open windows emit
provisional results at a fixed interval. A flow whose window has already closed is counted as
late and folded into the window open now; nothing is dropped.

The clock is the wall clock for live collection, or the data itself (the largest time seen) for
offline reports, which makes offline results deterministic.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.filters import Filter, compile_filter
from flowscope.aggregate.state import Rows, TrafficState
from flowscope.aggregate.stats import StatsSpec
from flowscope.aggregate.windows import Resolution, attribute, check_resolutions, split_counts
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
    provisional_interval_ms: int = 250
    checkpoint_path: str | None = None
    checkpoint_interval_ms: int = 5_000
    stats: StatsSpec = field(default_factory=StatsSpec)


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
        self._last_provisional_ms = 0
        self._last_checkpoint_ms = 0
        # Arrival times (collector clock) of batches not yet visible in a published live result,
        # and the delays measured when they became visible: the "live lag" of the dashboard.
        self._unpublished_arrivals_ms: list[int] = []
        self.live_delays_ms: deque[int] = deque(maxlen=100_000)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.resolutions = check_resolutions(list(self.config.windows_ms))
        self._filters = {"all": None}
        for view in self.config.stats.views:
            self._filters[view.name] = compile_filter(view.filter)
        self._open = [{} for _ in self.resolutions]
        self._horizon_ms = [-(1 << 62)] * len(self.resolutions)
        if self.config.checkpoint_path and Path(self.config.checkpoint_path).exists():
            self._restore(Path(self.config.checkpoint_path))
        self._last_checkpoint_ms = self._now()

    def stop(self) -> None:
        """Live stop: keep open windows in the checkpoint so a restart continues them."""
        if self.config.checkpoint_path:
            self.checkpoint()

    def flush(self) -> None:
        """Close every open window now (end of offline input)."""
        self._close(until_ms=None)

    # ----------------------------------------------------------------- update
    def process(self, batch: FlowBatch) -> None:
        if len(batch) == 0:
            return
        finest = self.resolutions[0]
        horizon = self._horizon_ms[0]
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
        unique_starts = np.unique(starts)
        for start in unique_starts.tolist():
            in_window = starts == start if len(unique_starts) > 1 else None
            window = self._window(0, start)
            for name, mask in masks.items():
                selected = _combine(in_window, mask)
                window.views[name].update(rows if selected is None else rows.take(selected), self.config.stats)
            window.dirty = True
        if late_flows:
            self._window(0, int(starts[late][0])).views["all"].late_flows += late_flows
        self.counters.add("engine_flows_total", len(batch))
        if self.config.clock == "wall":
            self._unpublished_arrivals_ms.append(int(batch["time_received"].min()))

    def merge_partial(self, start_ms: int, views: dict[str, TrafficState], arrival_ms: int | None = None) -> None:
        """Merge a finest-window partial state aggregated elsewhere (a collector worker process).

        Same rules as ``process``: a state for a window that has closed is late and folded into
        the window open now.
        """
        finest = self.resolutions[0]
        horizon = self._horizon_ms[0]
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
            window = _Window({name: TrafficState() for name in self._filters})
            self._open[level][start] = window
        return window

    # ------------------------------------------------------------------- time
    def _now(self) -> int:
        if self.config.clock == "data":
            return self._watermark_ms if self._watermark_ms is not None else 0
        return self.clock_ms()

    def tick(self) -> None:
        """Close what is due, emit provisional results and checkpoint when their intervals pass."""
        now = self._now()
        self._close(until_ms=now)
        if now - self._last_provisional_ms >= self.config.provisional_interval_ms:
            self._last_provisional_ms = now
            self._emit_provisional()
        if self.config.checkpoint_path and now - self._last_checkpoint_ms >= self.config.checkpoint_interval_ms:
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
            for start in due:
                window = windows.pop(start)
                results.extend(self._results(resolution, start, window, final=True))
                self._horizon_ms[level] = max(self._horizon_ms[level], start + resolution.duration_ms)
                if level + 1 < len(self.resolutions):
                    parent = self._window(level + 1, self.resolutions[level + 1].start_of(start))
                    for name, state in window.views.items():
                        parent.views[name].merge(state)
                    parent.dirty = True
                self.counters.add("engine_windows_closed_total", resolution=resolution.name)
        if results:
            self.sink.emit(results)

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

    def _emit_provisional(self) -> None:
        results: list[WindowResult] = []
        for level, resolution in enumerate(self.resolutions):
            for start, window in sorted(self._open[level].items()):
                if window.dirty:
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

    def take_finest(self) -> dict[int, dict[str, TrafficState]]:
        """Remove and return the open finest windows (a worker shipping its partial states)."""
        taken = {start: window.views for start, window in self._open[0].items()}
        self._open[0] = {}
        return taken

    def open_windows(self, level: int) -> dict[int, dict[str, TrafficState]]:
        """Read-only view of open windows (tests, live API)."""
        return {start: window.views for start, window in self._open[level].items()}

    # ------------------------------------------------------------- checkpoint
    def checkpoint(self) -> None:
        """Write open windows atomically (temp file + rename) so SIGKILL never leaves half a file."""
        path = self.config.checkpoint_path
        if not path:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "windows_ms": [r.duration_ms for r in self.resolutions],
            "views": list(self._filters),
            "open": self._open,
            "horizon_ms": self._horizon_ms,
            "watermark_ms": self._watermark_ms,
            "exporters": self.exporters.entries(),
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".checkpoint-", delete=False) as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
        self._last_checkpoint_ms = self._now()
        self.counters.add("engine_checkpoints_total")

    def _restore(self, path: Path) -> None:
        try:
            with path.open("rb") as handle:
                state = pickle.load(handle)  # our own file, written by checkpoint()
        except (OSError, pickle.UnpicklingError, EOFError) as error:
            log.warning("checkpoint %s unreadable (%s); starting empty", path, error)
            self.counters.add("engine_checkpoint_errors_total", reason="unreadable")
            return
        if (
            state.get("version") != CHECKPOINT_VERSION
            or state.get("windows_ms") != [r.duration_ms for r in self.resolutions]
            or state.get("views") != list(self._filters)
        ):
            log.warning("checkpoint %s was written with other windows or views; starting empty", path)
            self.counters.add("engine_checkpoint_errors_total", reason="incompatible")
            return
        for address, domain in state["exporters"]:
            self.exporters.index_of(address, domain)  # same indices as before the restart
        self._open = state["open"]
        self._horizon_ms = state["horizon_ms"]
        self._watermark_ms = state["watermark_ms"]
        for level in self._open:
            for window in level.values():
                window.dirty = True
        log.info("restored %d open windows from %s", sum(len(level) for level in self._open), path)


def _combine(first: npt.NDArray[np.bool_] | None, second: npt.NDArray[np.bool_] | None) -> npt.NDArray | None:
    if first is None:
        return second
    if second is None:
        return first
    return first & second
