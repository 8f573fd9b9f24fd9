"""The Parquet stream's per-window partial sums on the driver: merged, saved and ranked with numpy.

A window's state is one ``WindowSums``: a row per (view, facet, key) with the exact sums of flows,
packets and bytes (``uint64``, wrapping as the embedded engine's counters do). A facet is one of
the sums a result needs (``CLASS`` … ``CLIENT``); ``num`` and the address halves ``hi``/``lo`` (the
big-endian signed words of the 16-byte address, as in the flow files) are the key within it.

Each window's state lives in its own directory, one file per version
(``WORK/state/<interval>-<start>/v-<batch>.npz``): a micro-batch merges and rewrites only the windows
it touched, so the hour window's thousands of ports are not re-shuffled with every second's.
Ranking a top list is a partial sort of one column (``np.partition``, then ``np.lexsort`` of the
candidates with the tie rules of ``spark.stats``): a few milliseconds for 65 536 ports.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.stats import METRICS, PROTOCOL_CLASSES, TCP, UDP
from flowscope.spark.stats import WindowTotals

__all__ = [
    "CLASS", "CLIENT", "EXPORTER", "LATE", "PORT", "SERVER", "WEB", "RankedWindow", "WindowSums",
    "grouped_rows", "payload_inputs", "rank_window", "save_arrays", "window_dir",
]

# Facets of the partial sums (the ``kind`` key column).
CLASS, WEB, LATE, EXPORTER, PORT, SERVER, CLIENT = range(7)
KEY_COLUMNS = ("view", "kind", "num", "hi", "lo")

Window = tuple[int, int]  # (interval ms, window start ms)


def grouped_rows(keys: npt.NDArray[np.int64], sums: npt.NDArray[np.uint64]) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    """Rows with equal keys (rows of ``keys``) summed into one, sorted by the key columns (signed,
    first column first). ``sums`` may have no columns (a set of keys)."""
    if not len(keys):
        return keys, sums
    order = np.lexsort(keys.T[::-1])
    keys, sums = keys[order], sums[order]
    first = np.ones(len(keys), np.bool_)
    first[1:] = np.any(keys[1:] != keys[:-1], axis=1)
    starts = np.flatnonzero(first)
    summed = np.add.reduceat(sums, starts, axis=0).astype(np.uint64) if sums.shape[1] else sums[starts]
    return np.ascontiguousarray(keys[starts]), summed


def save_arrays(target: Path, **arrays: npt.NDArray[Any]) -> None:
    """``arrays`` as one ``.npz`` file, written atomically (a crash leaves the old version or the
    new one, never half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    with temporary.open("wb") as out:
        np.savez(out, allow_pickle=False, **arrays)
    os.replace(temporary, target)


@dataclass(slots=True)
class WindowSums:
    """Sums per key: ``keys`` (rows × ``KEY_COLUMNS``, int64, sorted, unique), ``sums`` (rows × METRICS, uint64)."""

    keys: npt.NDArray[np.int64]
    sums: npt.NDArray[np.uint64]

    @classmethod
    def empty(cls) -> WindowSums:
        return cls(np.zeros((0, len(KEY_COLUMNS)), np.int64), np.zeros((0, len(METRICS)), np.uint64))

    @classmethod
    def combined(cls, keys: npt.NDArray[np.int64], sums: npt.NDArray[np.uint64]) -> WindowSums:
        """Rows with repeated keys summed into one (sorted by ``KEY_COLUMNS``)."""
        if not len(keys):
            return cls.empty()
        return cls(*grouped_rows(keys, sums))

    def merged(self, other: WindowSums) -> WindowSums:
        return WindowSums.combined(np.concatenate([self.keys, other.keys]), np.concatenate([self.sums, other.sums]))

    def __len__(self) -> int:
        return len(self.keys)

    # files ---------------------------------------------------------------------------------------
    def save(self, target: Path) -> None:
        """Writes atomically (a crash leaves the old version or the new one, never half a file)."""
        save_arrays(target, keys=self.keys, sums=self.sums)

    @classmethod
    def load(cls, source: Path) -> WindowSums:
        with np.load(source) as saved:
            return cls(saved["keys"].astype(np.int64), saved["sums"].astype(np.uint64))


def window_dir(state: Path, window: Window) -> Path:
    return state / f"{window[0]}-{window[1]}"


@dataclass(slots=True)
class RankedWindow:
    """One (window, view)'s part of ``SparkStats.payload``'s inputs."""

    totals: WindowTotals
    exporters: list[tuple[int, dict[str, int]]]
    ports: dict[tuple[int, str], list[tuple[int, int, dict[str, int]]]]  # (protocol, metric) → (rank, port, sums)
    addresses: dict[tuple[str, str], list[tuple[int, bytes, dict[str, int]]]]  # (role, metric) → (rank, address, sums)


def _values(sums: npt.NDArray[np.uint64]) -> dict[str, int]:
    return {name: int(value) for name, value in zip(METRICS, sums.tolist(), strict=True)}


def _top(keys: npt.NDArray[np.int64], sums: npt.NDArray[np.uint64], metric: int, n: int) -> npt.NDArray[np.intp]:
    """Row indices of the top ``n`` by ``metric`` descending, then ``num``, then the address (unsigned bytes)."""
    column = sums[:, metric]
    candidates = np.arange(len(column))
    if len(column) > n:  # everything tied with the n-th largest value stays a candidate
        threshold = np.partition(column, len(column) - n)[len(column) - n]
        candidates = np.flatnonzero(column >= threshold)
    chosen = keys[candidates]
    order = np.lexsort((chosen[:, 4].astype(np.uint64), chosen[:, 3].astype(np.uint64), chosen[:, 2],
                        ~column[candidates]))
    ranked: npt.NDArray[np.intp] = candidates[order[:n]]
    return ranked


def _address(hi: int, lo: int) -> bytes:
    return struct.pack(">qq", hi, lo)


def rank_window(sums: WindowSums, view: int, top_n: int) -> RankedWindow:
    """The totals and top lists of one view of a window's state."""
    keys, values = sums.keys, sums.sums
    in_view = keys[:, 0] == view
    keys, values = keys[in_view], values[in_view]
    kinds = keys[:, 1]
    totals = WindowTotals({name: dict.fromkeys(METRICS, 0) for name in PROTOCOL_CLASSES}, dict.fromkeys(METRICS, 0))
    for row in np.flatnonzero(kinds <= LATE).tolist():
        kind, num = int(kinds[row]), int(keys[row, 2])
        if kind == CLASS:
            totals.by_class[PROTOCOL_CLASSES[num]] = _values(values[row])
        elif kind == WEB:
            totals.web = _values(values[row])
        else:
            totals.late_flows = int(values[row, 0])
    exporters = [(int(keys[row, 2]), _values(values[row])) for row in np.flatnonzero(kinds == EXPORTER).tolist()]
    ranked = RankedWindow(totals, exporters, {}, {})
    for protocol in (TCP, UDP):
        group = np.flatnonzero((kinds == PORT) & ((keys[:, 2] >> 16) == protocol))
        for metric, name in enumerate(METRICS):
            found: list[tuple[int, int, dict[str, int]]] = []
            for rank, row in enumerate(group[_top(keys[group], values[group], metric, top_n)].tolist(), start=1):
                if values[row, metric] > 0:
                    found.append((rank, int(keys[row, 2]) & 0xFFFF, _values(values[row])))
            ranked.ports[(protocol, name)] = found
    for role, kind in (("server", SERVER), ("client", CLIENT)):
        group = np.flatnonzero(kinds == kind)
        for metric, name in enumerate(METRICS):
            ranked.addresses[(role, name)] = [
                (rank, _address(int(keys[row, 3]), int(keys[row, 4])), _values(values[row]))
                for rank, row in enumerate(group[_top(keys[group], values[group], metric, top_n)].tolist(), start=1)
            ]
    return ranked


def payload_inputs(key: Any, ranked: RankedWindow) -> tuple[
        dict[Any, list[tuple[int, dict[str, int]]]],
        dict[Any, list[tuple[int, int, dict[str, int]]]],
        dict[Any, list[tuple[int, bytes, dict[str, int]]]]]:
    """``ranked`` as the keyed lists ``SparkStats.payload`` reads."""
    return (
        {key: ranked.exporters},
        {(key, protocol, metric): found for (protocol, metric), found in ranked.ports.items()},
        {(key, role, metric): found for (role, metric), found in ranked.addresses.items()},
    )
