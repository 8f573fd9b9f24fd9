"""KeyedSums: a mergeable group-by-sum over fixed-size keys (addresses, ports), all in numpy.

Updates append partial sums; they are folded into the sorted table lazily (when the pending part
grows past the table, or before reading), so a batch costs one sort of the batch's own keys,
never a Python loop per key. Sums are exact uint64 (sort, then ``np.add.at`` by group, no float).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_LOW_WORD = np.uint64(0xFFFF_FFFF)
_V4_MAPPED_WORD = np.uint64(0xFFFF)  # bytes 8-11 of ::ffff:a.b.c.d: the top of the low half
_TWO_PASS_ROWS = 16_384  # from here on two single-key sorts beat lexsort (cache misses)


def _packed_order(values: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint64]]:
    """The order that sorts ``values`` (each < 2**32), and the values in that order.

    One ``np.sort`` of ``value << 32 | row``: numpy sorts plain integers with branch-free SIMD
    code, while ``argsort``/``lexsort`` mispredict branches on real (unrepeated) data and were
    5-10× slower per batch.
    """
    packed = (values << np.uint64(32)) | np.arange(len(values), dtype=np.uint64)
    packed.sort()
    return (packed & _LOW_WORD).astype(np.intp), packed >> np.uint64(32)


def _lexsort_halves(high: npt.NDArray[np.uint64], low: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
    if len(high) < _TWO_PASS_ROWS:
        order: npt.NDArray[np.intp] = np.lexsort((low, high))
        return order
    # Large: the low half (quicksort), then the high half stably; high halves take few values.
    by_low = np.argsort(low)
    by_both: npt.NDArray[np.intp] = by_low[np.argsort(high[by_low], kind="stable")]
    return by_both


def _starts(*ordered: npt.NDArray) -> npt.NDArray[np.bool_]:
    """Where a new key starts in sorted key columns (a key is the tuple of all columns)."""
    starts = np.empty(len(ordered[0]), np.bool_)
    starts[0] = True
    np.not_equal(ordered[0][1:], ordered[0][:-1], out=starts[1:])
    for column in ordered[1:]:
        starts[1:] |= column[1:] != column[:-1]
    return starts


def _address_groups(keys: npt.NDArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """``_sorted_groups`` of 16-byte keys, bytewise order.

    The keys are read as two big-endian uint64 halves (high, low). IPv4-mapped addresses (high
    0, low ``0000ffff`` + the IPv4 address), most of the traffic, sort by their 32-bit address
    with ``_packed_order``; the other keys with ``lexsort`` on both halves. In byte order the
    IPv4-mapped block sits after the other keys with high 0 and a smaller low half (``::1``,
    IPv4-compatible ``::a.b.c.d``) and before all the rest.
    """
    halves = np.ascontiguousarray(keys).view(">u8").reshape(-1, 2).astype(np.uint64)
    high, low = halves[:, 0], halves[:, 1]
    mapped = (high == 0) & ((low >> np.uint64(32)) == _V4_MAPPED_WORD)
    mapped_rows = np.flatnonzero(mapped)
    mapped_order, addresses = _packed_order(low[mapped_rows] & _LOW_WORD)
    if len(mapped_rows) == len(keys):
        return mapped_order, _starts(addresses)
    other_rows = np.flatnonzero(~mapped)
    other_order = other_rows[_lexsort_halves(high[other_rows], low[other_rows])]
    below = int(np.count_nonzero((high[other_rows] == 0) & (low[other_rows] < (_V4_MAPPED_WORD << np.uint64(32)))))
    order = np.concatenate([other_order[:below], mapped_rows[mapped_order], other_order[below:]])
    return order, _starts(high[order], low[order])


def _sorted_groups(keys: npt.NDArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """The order that sorts ``keys``, and a mask (in that order) of where a new key starts."""
    if keys.dtype.kind in "SV" and keys.dtype.itemsize == 16:
        return _address_groups(keys)
    if keys.dtype.kind == "u" and keys.dtype.itemsize <= 4:  # exporters, ports
        order, ordered = _packed_order(keys.astype(np.uint64))
        return order, _starts(ordered)
    order = np.argsort(keys)
    return order, _starts(keys[order])


def column_sums(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``values.sum(axis=0)`` of a (rows × width) table, column by column: numpy reduces integer
    columns of a row-major table 7× slower along axis 0 than one contiguous-enough column at a time."""
    return np.array([values[:, column].sum(dtype=np.uint64) for column in range(values.shape[1])], np.uint64)


def top_indices(values: npt.NDArray[np.uint64], n: int) -> npt.NDArray[np.intp]:
    """Indices of the ``n`` largest ``values``, largest first; equal values by ascending index.

    ``np.partition`` finds the n-th largest value; only the values reaching it (n, plus ties)
    are sorted, instead of all of them.
    """
    count = len(values)
    if count > n:
        threshold = np.partition(values, count - n)[count - n]
        candidates = np.flatnonzero(values >= threshold)
    else:
        candidates = np.arange(count)
    ranked = np.argsort(-values[candidates].astype(np.int64), kind="stable")  # sums stay far below 2**63
    chosen: npt.NDArray[np.intp] = candidates[ranked[:n]]
    return chosen


def group_sum(keys: npt.NDArray, values: npt.NDArray[np.uint64]) -> tuple[npt.NDArray, npt.NDArray[np.uint64]]:
    """Unique sorted keys and the column sums of ``values`` (rows × width) per key.

    The sums are scattered (``np.add.at`` per column, by each row's group number) rather than
    gathered in key order and ``reduceat``: moving rows × width values around cost more than
    the sort.
    """
    if len(keys) == 0:
        return keys, values
    if keys.dtype.kind in "uib" and keys[0] == keys[-1] and (keys == keys[0]).all():
        return keys[:1], column_sums(values)[None, :]  # e.g. a single exporter
    order, starts = _sorted_groups(keys)
    group_of_row = np.empty(len(keys), np.intp)
    group_of_row[order] = np.cumsum(starts) - 1
    first_rows = order[starts]
    sums = np.zeros((len(first_rows), values.shape[1]), np.uint64)
    for column in range(values.shape[1]):
        np.add.at(sums[:, column], group_of_row, values[:, column])
    return keys[first_rows], sums


def merge_sorted(
    keys: npt.NDArray, sums: npt.NDArray[np.uint64], more_keys: npt.NDArray, more_sums: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray, npt.NDArray[np.uint64]]:
    """Two grouped tables (sorted unique keys, sums per key) as one, in new arrays."""
    position = np.searchsorted(keys, more_keys)
    found = position < len(keys)
    found[found] = keys[position[found]] == more_keys[found]
    fresh = np.flatnonzero(~found)
    fresh_at = position[fresh] + np.arange(len(fresh))  # where the new keys land
    size = len(keys) + len(fresh)
    old_rows = np.ones(size, np.bool_)
    old_rows[fresh_at] = False
    merged_keys = np.empty(size, keys.dtype)
    merged_keys[fresh_at] = more_keys[fresh]
    merged_keys[old_rows] = keys
    merged_sums = np.empty((size, sums.shape[1]), np.uint64)
    merged_sums[fresh_at] = more_sums[fresh]
    merged_sums[old_rows] = sums
    del old_rows
    known = np.flatnonzero(found)
    if len(known):
        # An old row moves down by the number of new keys inserted before it.
        at = position[known] + np.searchsorted(position[fresh], position[known], side="right")
        merged_sums[at] += more_sums[known]
    return merged_keys, merged_sums


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
            # Folded lazily, as in ``add``: a second merged into its minute every second must not
            # re-sort the whole minute (under the engine lock) each time.
            if self._pending_rows > max(len(self.keys), 65_536):
                self.compact()

    def compact(self) -> None:
        """Fold the pending parts in: they are grouped among themselves, then merged into the
        sorted table (new arrays: the old ones may be shared with a snapshot). Grouping the table
        and the parts together instead cost about four times the table in temporaries (an hour
        of a million web clients: ~150 MB at once)."""
        if not self._pending_keys:
            return
        pending_keys, pending_sums = self._pending_keys, self._pending_sums
        self._pending_keys, self._pending_sums, self._pending_rows = [], [], 0
        if len(pending_keys) == 1:  # every part is grouped already (``add``, ``merge``)
            keys, sums = pending_keys[0], pending_sums[0]
        else:
            keys, sums = group_sum(np.concatenate(pending_keys), np.concatenate(pending_sums))
        del pending_keys, pending_sums
        if len(self.keys):
            keys, sums = merge_sorted(self.keys, self.sums, keys, sums)
        self.keys, self.sums = keys, sums

    def __len__(self) -> int:
        self.compact()
        return len(self.keys)

    def top(self, n: int, column: int) -> tuple[npt.NDArray, npt.NDArray[np.uint64]]:
        """The ``n`` keys with the largest ``column``; ties broken by the smaller key."""
        self.compact()
        order = top_indices(self.sums[:, column], n)  # keys are sorted: smaller key = smaller index
        return self.keys[order], self.sums[order]

    def get(self, key: object) -> npt.NDArray[np.uint64] | None:
        self.compact()
        probe = np.array([key], self.key_dtype)[0]
        index = int(np.searchsorted(self.keys, probe))
        if index < len(self.keys) and self.keys[index] == probe:
            found: npt.NDArray[np.uint64] = self.sums[index]
            return found
        return None
