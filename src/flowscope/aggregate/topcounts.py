"""Heavy hitters for many keys at once: one Misra–Gries summary per integer id, vectorized.

``TopCounts``: one summary per id (e.g. the most used ports of each host)
    At most ``slots`` (item, count) entries per id. When an id has more, the (slots+1)-th largest
    count is subtracted from all its entries and those left at zero are dropped. The summaries
    are mergeable (Agarwal et al., "Mergeable summaries", 2012): every reported count is a lower
    bound of the true weight, short by at most ``total weight of the id / (slots + 1)``.

Like the sketch sets (``sketch``), arrays are never written in place once a summary holds them,
so ``shallow()`` copies are cheap snapshots.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.sketch import I64, U32, U64, ranges

COUNT_MAX = (1 << 32) - 1  # top counts saturate here (a lower bound still)


def _saturated(counts: npt.NDArray[np.unsignedinteger]) -> U32:
    """Counts as uint32, those beyond ``COUNT_MAX`` clipped to it."""
    result: U32 = np.minimum(counts, np.uint64(COUNT_MAX)).astype(np.uint32)
    return result


class TopCounts:
    """Misra–Gries heavy-hitter summaries, one per id, over ``item_bits``-bit items.

    ``keys`` (sorted) are ``id << item_bits | item``; ``counts`` their weights, held in 32 bits
    (half the memory of 64) and saturating at ``COUNT_MAX``: a saturated count is still a lower
    bound, as every Misra–Gries count is.
    """

    __slots__ = ("counts", "item_bits", "keys", "slots")

    def __init__(self, slots: int, item_bits: int = 16) -> None:
        if slots < 1:
            raise ValueError("TopCounts needs at least one slot per id")
        self.slots = slots
        self.item_bits = item_bits
        self.keys: U64 = np.empty(0, np.uint64)
        self.counts: U32 = np.empty(0, np.uint32)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.counts.nbytes)

    @classmethod
    def from_items(
        cls, slots: int, ids: npt.NDArray[np.integer], items: npt.NDArray[np.integer], weights: U64,
        item_bits: int = 16,
    ) -> TopCounts:
        result = cls(slots, item_bits)
        used = weights > 0
        if used.any():
            keys = (ids[used].astype(np.uint64) << np.uint64(item_bits)) | items[used].astype(np.uint64)
            order = np.argsort(keys)
            keys, weights = keys[order], weights[used][order]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            result.keys = keys[starts]
            result.counts = _saturated(np.add.reduceat(np.asarray(weights, np.uint64), starts))
            ids_sorted = result.keys >> np.uint64(item_bits)
            result._reduce(ids_sorted[np.r_[True, ids_sorted[1:] != ids_sorted[:-1]]].astype(np.int64))
        return result

    @classmethod
    def combine(cls, slots: int, parts: list[TopCounts], id_maps: list[I64], item_bits: int = 16) -> TopCounts:
        """Many summaries merged at once (one sort), part i's ids mapped through ``id_maps[i]``."""
        shift = np.uint64(item_bits)
        mask = np.uint64((1 << item_bits) - 1)
        used = [(p, m) for p, m in zip(parts, id_maps, strict=True) if len(p.keys)]
        result = cls(slots, item_bits)
        if not used:
            return result
        keys = np.concatenate(
            [(m[(p.keys >> shift).astype(np.int64)].astype(np.uint64) << shift) | (p.keys & mask) for p, m in used]
        )
        counts = np.concatenate([p.counts for p, _ in used]).astype(np.uint64)
        order = np.argsort(keys)
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        result.keys = keys[starts]
        result.counts = _saturated(np.add.reduceat(counts, starts))
        ids = result.keys >> shift
        result._reduce(ids[np.r_[True, ids[1:] != ids[:-1]]].astype(np.int64))
        return result

    def copy(self) -> TopCounts:
        result = TopCounts(self.slots, self.item_bits)
        result.keys, result.counts = self.keys.copy(), self.counts.copy()
        return result

    def shallow(self) -> TopCounts:
        """A copy sharing the arrays (they are replaced, never written, by later updates)."""
        result = TopCounts(self.slots, self.item_bits)
        result.keys, result.counts = self.keys, self.counts
        return result

    def absorb(self, other: TopCounts, id_map: I64 | None = None) -> None:
        """Merge ``other`` in; its id i becomes ``id_map[i]`` (injective) here."""
        if not len(other.keys):
            return
        shift = np.uint64(self.item_bits)
        keys, counts = other.keys, other.counts
        if id_map is not None:
            mapped = id_map[(keys >> shift).astype(np.int64)].astype(np.uint64)
            keys = (mapped << shift) | (keys & np.uint64((1 << self.item_bits) - 1))
            order = np.argsort(keys)
            keys, counts = keys[order], counts[order]
        if len(self.keys):
            position = np.searchsorted(self.keys, keys)
            present = self.keys[np.minimum(position, len(self.keys) - 1)] == keys
            new = ~present
            self.keys = np.insert(self.keys, position[new], keys[new])
            self.counts = np.insert(self.counts, position[new], _saturated(counts[new]))
            if present.any():
                at = np.searchsorted(self.keys, keys[present])
                self.counts[at] = _saturated(self.counts[at].astype(np.uint64) + counts[present])
        else:
            self.keys, self.counts = keys.copy(), _saturated(counts)
        ids = keys >> shift
        self._reduce(ids[np.r_[True, ids[1:] != ids[:-1]]].astype(np.int64))

    def _range(self, ids: I64) -> tuple[I64, I64]:
        first = ids.astype(np.uint64) << np.uint64(self.item_bits)
        lo = np.searchsorted(self.keys, first).astype(np.int64)
        hi = np.searchsorted(self.keys, first + (np.uint64(1) << np.uint64(self.item_bits))).astype(np.int64)
        return lo, hi

    def _reduce(self, candidates: I64) -> None:
        """Misra–Gries step for the candidate ids that hold more than ``slots`` entries."""
        lo, hi = self._range(candidates)
        sizes = hi - lo
        over = sizes > self.slots
        if not over.any():
            return
        lo, hi, sizes = lo[over], hi[over], sizes[over]
        positions = ranges(lo, hi)
        counts = self.counts[positions]
        group = np.repeat(np.arange(len(lo), dtype=np.int64), sizes)
        ends = np.cumsum(sizes)
        # The (slots+1)-th largest count of each id: sort (id, count) ascending in one uint64
        # sort when both fit (always, short of 17.6e12 flows per host), else lexsort.
        if len(lo) < (1 << 20) and int(counts.max()) < (1 << 44):
            packed = np.sort((group.astype(np.uint64) << np.uint64(44)) | counts)
            cut = packed[ends - self.slots - 1] & np.uint64((1 << 44) - 1)
        else:
            cut = counts[np.lexsort((counts, group))][ends - self.slots - 1]
        cut_per_entry = np.repeat(cut, sizes)
        keep = counts > cut_per_entry  # at most ``slots`` per id
        survivors = positions[keep]
        dropped = positions[~keep]  # sorted, as ``positions`` are
        # New arrays (the old may be shared with a shallow copy), built by deleting the few
        # dropped entries: no temporary of the table's length beyond a mask of bytes.
        kept_counts = np.delete(self.counts, dropped)
        kept_counts[survivors - np.searchsorted(dropped, survivors)] = counts[keep] - cut_per_entry[keep]
        self.counts = kept_counts
        self.keys = np.delete(self.keys, dropped)

    def top(self, ident: int, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` (item, count) of one id: larger count first, then the lower item."""
        lo, hi = self._range(np.array([ident], np.int64))
        items = (self.keys[lo[0]:hi[0]] & np.uint64((1 << self.item_bits) - 1)).astype(np.int64)
        counts = self.counts[lo[0]:hi[0]]
        order = np.lexsort((items, -counts.astype(np.int64)))[:n]
        return [(int(items[i]), int(counts[i])) for i in order]

    def __getstate__(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
