"""Window definitions and time attribution.

Windows are tumbling and aligned to UTC (a 1-minute window starts at :00 of a minute). Each flow
is attributed to windows by its time base: ``received`` (the collector's clock, the default),
``start``, ``end``, or ``spread`` (packets and bytes shared across the windows the flow's
lifetime covers, in proportion to the overlap; the flow itself is counted once, in the window
of its end).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from flowscope.errors import ConfigError
from flowscope.model import FlowBatch

TimeBase = Literal["received", "start", "end", "spread"]
TIME_BASES: tuple[str, ...] = ("received", "start", "end", "spread")

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|m|h|d)\s*$")


def parse_duration_ms(text: str | int, *, key: str = "duration") -> int:
    """'1s', '500ms', '1m', '1h', '1d' (or a number of milliseconds) → milliseconds."""
    if isinstance(text, int):
        value = text
    else:
        match = _DURATION.match(text)
        if not match:
            raise ConfigError(f"{key}: {text!r} is not a duration (examples: 500ms, 1s, 1m, 1h, 1d)")
        value = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if value <= 0:
        raise ConfigError(f"{key}: {text!r} must be longer than zero")
    return value


def format_duration(duration_ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if duration_ms % size == 0:
            return f"{duration_ms // size}{unit}"
    return f"{duration_ms}ms"


@dataclass(frozen=True, slots=True)
class Resolution:
    """One window length; ``name`` is how the store, the API and the CLI call it ("1m")."""

    duration_ms: int

    @property
    def name(self) -> str:
        return format_duration(self.duration_ms)

    def start_of(self, time_ms: int) -> int:
        return time_ms - time_ms % self.duration_ms

    def starts_of(self, times_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        result: npt.NDArray[np.int64] = times_ms - times_ms % self.duration_ms  # floor, also < 0
        return result


def check_resolutions(durations_ms: list[int]) -> list[Resolution]:
    """Sorted resolutions; each must divide the next, so longer windows roll up from shorter."""
    ordered = sorted(set(durations_ms))
    for shorter, longer in itertools.pairwise(ordered):
        if longer % shorter:
            raise ConfigError(
                f"windows: {format_duration(longer)} is not a multiple of {format_duration(shorter)}; "
                "each window length must divide the next so reports roll up exactly"
            )
    return [Resolution(d) for d in ordered]


@dataclass(frozen=True, slots=True)
class Attribution:
    """Which window each (possibly repeated) flow row goes to, with its share of packets/bytes.

    ``rows`` indexes the batch; a flow spread over k windows appears k times. ``share`` is the
    fraction of its packets and bytes for that window; ``counts_flow`` marks the one row per
    flow that counts the flow itself.
    """

    rows: npt.NDArray[np.intp]
    window_start_ms: npt.NDArray[np.int64]
    share: npt.NDArray[np.float64] | None  # None: every row takes the whole flow
    counts_flow: npt.NDArray[np.bool_] | None  # None: every row counts its flow


def attribute(
    batch: FlowBatch, time_base: str, resolution: Resolution, *, earliest_start_ms: int | None = None,
    max_windows_per_flow: int = 3600,
) -> Attribution:
    """Attribute every flow of ``batch`` to windows of ``resolution``.

    For ``spread``, windows before ``earliest_start_ms`` (already closed) receive nothing: their
    share goes to the earliest window still open, so no packet or byte is lost; a flow covering
    more than ``max_windows_per_flow`` windows is treated the same way beyond that many.
    """
    rows = np.arange(len(batch), dtype=np.intp)
    if time_base == "received":
        return Attribution(rows, resolution.starts_of(batch["time_received"]), None, None)
    if time_base == "start":
        return Attribution(rows, resolution.starts_of(batch["time_start"]), None, None)
    if time_base == "end":
        return Attribution(rows, resolution.starts_of(batch["time_end"]), None, None)
    if time_base != "spread":
        raise ConfigError(f"time_base: {time_base!r} is not one of {', '.join(TIME_BASES)}")
    return _spread(batch, resolution, earliest_start_ms, max_windows_per_flow)


def _spread(
    batch: FlowBatch, resolution: Resolution, earliest_start_ms: int | None, max_windows: int
) -> Attribution:
    duration = resolution.duration_ms
    end = batch["time_end"]
    start = np.minimum(batch["time_start"], end)
    last_window = resolution.starts_of(end)
    first_window = resolution.starts_of(start)
    floor = last_window - (max_windows - 1) * duration
    if earliest_start_ms is not None:
        floor = np.minimum(np.maximum(floor, earliest_start_ms), last_window)
    first_window = np.maximum(first_window, floor)
    clipped_start = np.maximum(start, first_window)
    windows = ((last_window - first_window) // duration + 1).astype(np.intp)
    rows = np.repeat(np.arange(len(batch), dtype=np.intp), windows)
    offset_in_flow = np.arange(len(rows)) - np.repeat(np.cumsum(windows) - windows, windows)
    window_start = np.repeat(first_window, windows) + offset_in_flow * duration
    # Overlap of [start, end] with each window; time before the first open window is folded
    # into it, so the first row's overlap starts at the flow's real start.
    lifetime = (end - start).astype(np.float64)
    row_start = np.maximum(np.repeat(clipped_start, windows), window_start)
    first_row = offset_in_flow == 0
    row_start = np.where(first_row, np.repeat(start, windows), row_start)
    row_end = np.minimum(np.repeat(end, windows), window_start + duration)
    overlap = np.maximum(row_end - row_start, 0).astype(np.float64)
    flow_lifetime = np.repeat(lifetime, windows)
    share = np.where(flow_lifetime > 0, overlap / np.where(flow_lifetime > 0, flow_lifetime, 1.0), 1.0)
    # Instantaneous flows and rounding: make each flow's shares sum to exactly 1.
    total = np.bincount(rows, weights=share, minlength=len(batch))
    share = share / np.where(total > 0, total, 1.0)[rows]
    last_row = offset_in_flow == np.repeat(windows - 1, windows)
    return Attribution(rows, window_start, share, last_row)


def split_counts(values: npt.NDArray[np.uint64], attribution: Attribution) -> npt.NDArray[np.uint64]:
    """Per-row integer shares of a per-flow counter that add up exactly to the flow's value.

    Each row gets floor(share × value); what rounding leaves over goes to the flow's last row.
    """
    per_row = values[attribution.rows]
    if attribution.share is None:
        return per_row
    assert attribution.counts_flow is not None
    allotted = np.floor(attribution.share * per_row.astype(np.float64)).astype(np.uint64)
    allotted = np.minimum(allotted, per_row)
    given = np.bincount(attribution.rows, weights=allotted.astype(np.float64), minlength=len(values))
    # Exact remainders: float sums are exact below 2**53, far above any single flow's share.
    remainder = values - given.astype(np.uint64)
    last = attribution.counts_flow
    allotted[last] += remainder[attribution.rows[last]]
    return allotted
