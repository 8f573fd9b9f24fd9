"""KeyedSums: a mergeable group-by-sum over fixed-size keys (addresses, ports), all in numpy.

Updates append partial sums; they are folded into the sorted table lazily (when the pending part
grows past the table, or before reading), so a batch costs one sort of the batch's own keys,
never a Python loop per key. Sums are exact uint64 (sort + ``np.add.reduceat``, no float).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _sorted_groups(keys: npt.NDArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The order that sorts ``keys`` and the positions (in that order) where a new key starts.

    16-byte keys (addresses) are sorted as two big-endian uint64 halves with ``lexsort``: six
    times faster than numpy's byte-string sort, and the same byte order.
    """
    if keys.dtype.kind in "SV" and keys.dtype.itemsize == 16:
        halves = np.ascontiguousarray(keys).view(">u8").reshape(-1, 2).astype(np.uint64)
        order = np.lexsort((halves[:, 1], halves[:, 0]))
        high, low = halves[order, 0], halves[order, 1]
        starts = np.r_[True, (high[1:] != high[:-1]) | (low[1:] != low[:-1])]
    else:
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.r_[True, ordered[1:] != ordered[:-1]]
    return order, np.flatnonzero(starts)


def group_sum(keys: npt.NDArray, values: npt.NDArray[np.uint64]) -> tuple[npt.NDArray, npt.NDArray[np.uint64]]:
    """Unique sorted keys and the column sums of ``values`` (rows × width) per key."""
    if len(keys) == 0:
        return keys, values
    order, boundaries = _sorted_groups(keys)
    sums: npt.NDArray[np.uint64] = np.add.reduceat(values[order], boundaries, axis=0)
    return keys[order[boundaries]], sums


class KeyedSums:
    """Sums of ``width`` uint64 metrics per key; keys of one numpy dtype (e.g. ``S16``)."""

    def __init__(self, key_dtype: np.dtype | str, width: int) -> None:
        self.key_dtype = np.dtype(key_dtype)
        self.width = width
        self.keys: npt.NDArray = np.empty(0, self.key_dtype)
        self.sums: npt.NDArray[np.uint64] = np.empty((0, width), np.uint64)
        self._pending_keys: list[npt.NDArray] = []
        self._pending_sums: list[npt.NDArray[np.uint64]] = []
        self._pending_rows = 0

    def add(self, keys: npt.NDArray, values: npt.NDArray[np.uint64]) -> None:
        """Add ``values`` (rows × width) under ``keys`` (rows); rows need not be unique."""
        if len(keys) == 0:
            return
        unique, sums = group_sum(keys.astype(self.key_dtype, copy=False), values.astype(np.uint64, copy=False))
        self._pending_keys.append(unique)
        self._pending_sums.append(sums)
        self._pending_rows += len(unique)
        if self._pending_rows > max(len(self.keys), 65_536):
            self.compact()

    def merge(self, other: KeyedSums) -> None:
        other.compact()
        if len(other.keys):
            self._pending_keys.append(other.keys)
            self._pending_sums.append(other.sums)
            self._pending_rows += len(other.keys)
            self.compact()

    def compact(self) -> None:
        if not self._pending_keys:
            return
        keys = np.concatenate([self.keys, *self._pending_keys])
        sums = np.concatenate([self.sums, *self._pending_sums])
        self._pending_keys, self._pending_sums, self._pending_rows = [], [], 0
        self.keys, self.sums = group_sum(keys, sums)

    def __len__(self) -> int:
        self.compact()
        return len(self.keys)

    def top(self, n: int, column: int) -> tuple[npt.NDArray, npt.NDArray[np.uint64]]:
        """The ``n`` keys with the largest ``column``; ties broken by the smaller key."""
        self.compact()
        metric = self.sums[:, column].astype(np.int64)  # sums stay far below 2**63
        order = np.lexsort((self.keys, -metric))[:n]
        return self.keys[order], self.sums[order]

    def get(self, key: object) -> npt.NDArray[np.uint64] | None:
        self.compact()
        probe = np.array([key], self.key_dtype)[0]
        index = int(np.searchsorted(self.keys, probe))
        if index < len(self.keys) and self.keys[index] == probe:
            found: npt.NDArray[np.uint64] = self.sums[index]
            return found
        return None
