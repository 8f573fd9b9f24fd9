"""Per-host sketches split into blocks of ids, so that folding a window rebuilds one block at a time.

A window's distinct-count sets (``sketch.SketchSet``) and top-port summaries
(``topcounts.TopCounts``) keep their entries in one sorted array keyed by ``id << bits | value``.
Adding a minute into the hour rebuilds such an array (``np.insert``): the old and the new one exist
side by side, with the temporaries of the merge beside them. For the hour of a million hosts the
partner keys alone are tens of millions of entries, and that rebuild was the highest point of the
engine's memory (measured in process: +313 MB over what it held, for an array of ~80 MB).

Here the same structures are split by host id into blocks of ``BLOCK_IDS`` ids (ids are
first-seen order, so blocks fill one after the other): block ``b`` holds the ids
``b * BLOCK_IDS`` .. ``(b + 1) * BLOCK_IDS - 1`` with their absolute ids, as an ordinary
``SketchSet`` / ``TopCounts``. Absorbing another window maps its entries to this window's ids,
sorts them once and adds them block by block: only one block is rebuilt at a time, and the
transient memory is a block's, not the whole table's. The blocks never change in place (each is
replaced by ``absorb``, as the arrays inside ``SketchSet`` are), so shallow copies can share them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.sketch import I64, U64, Kind, SketchSet
from flowscope.aggregate.topcounts import TopCounts

__all__ = ["BLOCK_IDS", "BlockedSets", "BlockedTopCounts"]

BLOCK_IDS = 1 << 17  # a million hosts: 8 blocks
U32 = npt.NDArray[np.uint32]


def _bounds(keys: U64, shift: int) -> list[int]:
    """Positions in sorted, non-empty ``keys`` where each block of ``BLOCK_IDS`` ids starts (and the end)."""
    blocks = int(keys[-1] >> np.uint64(shift)) // BLOCK_IDS + 1
    firsts = np.arange(1, blocks, dtype=np.uint64) * np.uint64(BLOCK_IDS) << np.uint64(shift)
    return [0, *np.searchsorted(keys, firsts).tolist(), len(keys)]


def _mapped_keys(keys: U64, id_map: I64, shift: int) -> U64:
    """``keys`` (``id << shift | value``) with their ids mapped through ``id_map``; few temporaries."""
    ids = (keys >> np.uint64(shift)).astype(np.int64)
    mapped: U64 = id_map[ids].view(np.uint64)
    del ids
    mapped <<= np.uint64(shift)
    mapped |= keys & np.uint64((1 << shift) - 1)
    return mapped


def _every_block(parts: list[Any], id_maps: list[I64]) -> tuple[list[Any], list[I64]]:
    """The blocks of all ``parts`` (``BlockedSets`` or ``BlockedTopCounts``), each with its
    part's id map: what ``combine`` merges at once."""
    blocks = [block for part in parts for block in part.blocks]
    maps = [id_map for part, id_map in zip(parts, id_maps, strict=True) for _ in part.blocks]
    return blocks, maps


def _by_block(ids: I64, starts: I64) -> Iterator[tuple[int, npt.NDArray[np.intp]]]:
    """(block, positions of ``ids`` in it) for each block that ``ids`` touch, blocks starting at
    the ids ``starts`` (sorted, ``starts[0] == 0``)."""
    blocks = np.searchsorted(starts, ids, side="right") - 1
    for block in np.unique(blocks).tolist():
        yield block, np.flatnonzero(blocks == block)


class BlockedSets:
    """``SketchSet`` semantics over blocks of ids (see the module docstring).

    The hosts seen first are the busiest (they hold most partners), so blocks of equal id counts
    would be very unequal; instead a block covers the ids from ``starts[i]`` to ``starts[i + 1]``
    and is split (at id boundaries) once it holds more than ``MAX_BLOCK_KEYS`` sparse keys.
    """

    __slots__ = ("blocks", "kind", "starts")

    MAX_BLOCK_KEYS = 1 << 20  # 8 MiB of keys

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.blocks: list[SketchSet] = []
        self.starts: I64 = np.zeros(0, np.int64)

    @classmethod
    def of(cls, sets: SketchSet) -> BlockedSets:
        """``sets`` as blocks (the blocks' arrays are views of its arrays)."""
        result = cls(sets.kind)
        if len(sets.sparse) or len(sets.dense_ids):
            result.blocks, starts = _split(sets, 0)
            result.starts = np.array(starts, np.int64)
        return result

    @classmethod
    def from_pairs(cls, kind: Kind, ids: npt.NDArray[np.integer], values: npt.NDArray[np.integer]) -> BlockedSets:
        return cls.of(SketchSet.from_pairs(kind, ids, values))

    @classmethod
    def combine(cls, kind: Kind, parts: list[BlockedSets], id_maps: list[I64]) -> BlockedSets:
        """The union of many (small, queued) parts at once, part i's ids mapped through ``id_maps[i]``."""
        return cls.of(SketchSet.combine(kind, *_every_block(parts, id_maps)))

    @property
    def entries(self) -> int:
        """Sparse keys held (what a fold costs)."""
        return sum(len(block.sparse) for block in self.blocks)

    @property
    def nbytes(self) -> int:
        return sum(block.nbytes for block in self.blocks)

    def shallow(self) -> BlockedSets:
        """A copy sharing the arrays (``absorb`` replaces them, never writes into them)."""
        result = BlockedSets(self.kind)
        result.blocks, result.starts = [block.shallow() for block in self.blocks], self.starts
        return result

    def copy(self) -> BlockedSets:
        result = BlockedSets(self.kind)
        result.blocks, result.starts = [block.copy() for block in self.blocks], self.starts.copy()
        return result

    def absorb(self, other: BlockedSets, id_map: I64) -> None:
        """Union ``other`` into this; ``other``'s id i becomes ``id_map[i]`` (injective) here.

        ``other``'s keys are mapped and sorted one of its blocks at a time, then added to this
        set's blocks one at a time (dense rows first, as ``SketchSet.absorb`` does)."""
        if other.kind != self.kind:
            raise ValueError(f"cannot merge a {other.kind.name} sketch set into a {self.kind.name} one")
        if not self.blocks:
            self.blocks, self.starts = [SketchSet(self.kind)], np.zeros(1, np.int64)
        shift = np.uint64(self.kind.value_bits)
        first_keys = self.starts[1:].astype(np.uint64) << shift
        keys: defaultdict[int, list[U64]] = defaultdict(list)
        dense: defaultdict[int, list[tuple[I64, npt.NDArray[np.uint8]]]] = defaultdict(list)
        for source in other.blocks:
            if len(source.dense_ids):
                ids = id_map[source.dense_ids]
                for block, at in _by_block(ids, self.starts):
                    dense[block].append((ids[at], source.dense[at]))
            if len(source.sparse):
                mapped = _mapped_keys(source.sparse, id_map, self.kind.value_bits)
                mapped.sort()
                bounds = [0, *np.searchsorted(mapped, first_keys).tolist(), len(mapped)]
                for block, (lo, hi) in enumerate(pairwise(bounds)):
                    if hi > lo:
                        keys[block].append(mapped[lo:hi])
        blocks: list[SketchSet] = []
        starts: list[int] = []
        for block, (target, start) in enumerate(zip(self.blocks, self.starts.tolist(), strict=True)):
            rows = dense.pop(block, [])
            pieces = keys.pop(block, [])
            if rows or pieces:
                if rows:
                    row_ids = np.concatenate([i for i, _ in rows])
                    order = np.argsort(row_ids, kind="stable")
                    target.absorb_dense(row_ids[order], np.concatenate([r for _, r in rows])[order])
                del rows
                if pieces:
                    # Ids are distinct across ``other``'s blocks (the map is injective): no duplicates.
                    target.absorb_sorted(pieces[0] if len(pieces) == 1 else np.sort(np.concatenate(pieces)))
                del pieces
                if len(target.sparse) > self.MAX_BLOCK_KEYS:
                    parts, part_starts = _split(target, start)
                    blocks.extend(parts)
                    starts.extend(part_starts)
                    continue
            blocks.append(target)
            starts.append(start)
        self.blocks, self.starts = blocks, np.array(starts, np.int64)

    def estimate(self, ids: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
        """Distinct-count estimates for ``ids`` (0 for ids without a set)."""
        wanted = np.asarray(ids, np.int64)
        out = np.zeros(len(wanted), np.float64)
        if self.blocks:
            for block, at in _by_block(wanted, self.starts):
                out[at] = self.blocks[block].estimate(wanted[at])
        return out

    def estimate_all(self, count: int) -> npt.NDArray[np.float64]:
        """Estimates for ids 0 .. count-1, one block at a time."""
        out = np.zeros(count, np.float64)
        ends = [*self.starts[1:].tolist(), count]
        for sets, first, end in zip(self.blocks, self.starts.tolist(), ends, strict=True):
            stop = min(end, count)
            if first < stop:
                out[first:stop] = sets.estimate_range(first, stop)
        return out

    def exact(self, ids: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        """Whether each id's count is exact (sparse, or a bitmap)."""
        wanted = np.asarray(ids, np.int64)
        out = np.ones(len(wanted), np.bool_)
        if self.blocks:
            for block, at in _by_block(wanted, self.starts):
                out[at] = self.blocks[block].exact(wanted[at])
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "blocks": self.blocks, "starts": self.starts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.kind, self.blocks, self.starts = state["kind"], state["blocks"], state["starts"]


def _split(sets: SketchSet, first_id: int) -> tuple[list[SketchSet], list[int]]:
    """``sets`` (its ids from ``first_id`` on) cut at id boundaries into blocks of at most about
    ``MAX_BLOCK_KEYS`` sparse keys (views of its arrays), and the first id of each block."""
    shift = np.uint64(sets.kind.value_bits)
    limit = BlockedSets.MAX_BLOCK_KEYS // 2  # room to grow before the next split
    cuts = np.arange(limit, len(sets.sparse), limit)
    starts = sorted({first_id, *(sets.sparse[cuts] >> shift).astype(np.int64).tolist()})
    sparse = [0, *np.searchsorted(sets.sparse, np.array(starts[1:], np.uint64) << shift).tolist(), len(sets.sparse)]
    dense = [0, *np.searchsorted(sets.dense_ids, starts[1:]).tolist(), len(sets.dense_ids)]
    blocks = []
    for block in range(len(starts)):
        part = SketchSet(sets.kind)
        part.sparse = sets.sparse[sparse[block]:sparse[block + 1]]
        part.dense_ids = sets.dense_ids[dense[block]:dense[block + 1]]
        part.dense = sets.dense[dense[block]:dense[block + 1]]
        blocks.append(part)
    return blocks, starts


class BlockedTopCounts:
    """``TopCounts`` semantics over blocks of ids (see the module docstring)."""

    __slots__ = ("blocks", "item_bits", "slots")

    def __init__(self, slots: int, item_bits: int = 16) -> None:
        self.slots = slots
        self.item_bits = item_bits
        self.blocks: list[TopCounts] = []

    @classmethod
    def of(cls, counts: TopCounts) -> BlockedTopCounts:
        """``counts`` split into blocks (views of its arrays)."""
        result = cls(counts.slots, counts.item_bits)
        if not len(counts.keys):
            return result
        bounds = _bounds(counts.keys, counts.item_bits)
        for lo, hi in pairwise(bounds):
            part = TopCounts(counts.slots, counts.item_bits)
            part.keys, part.counts = counts.keys[lo:hi], counts.counts[lo:hi]
            result.blocks.append(part)
        return result

    @classmethod
    def from_items(
        cls, slots: int, ids: npt.NDArray[np.integer], items: npt.NDArray[np.integer], weights: U64,
    ) -> BlockedTopCounts:
        return cls.of(TopCounts.from_items(slots, ids, items, weights))

    @classmethod
    def combine(cls, slots: int, parts: list[BlockedTopCounts], id_maps: list[I64]) -> BlockedTopCounts:
        return cls.of(TopCounts.combine(slots, *_every_block(parts, id_maps)))

    @property
    def entries(self) -> int:
        return sum(len(block.keys) for block in self.blocks)

    @property
    def nbytes(self) -> int:
        return sum(block.nbytes for block in self.blocks)

    def shallow(self) -> BlockedTopCounts:
        result = BlockedTopCounts(self.slots, self.item_bits)
        result.blocks = [block.shallow() for block in self.blocks]
        return result

    def copy(self) -> BlockedTopCounts:
        result = BlockedTopCounts(self.slots, self.item_bits)
        result.blocks = [block.copy() for block in self.blocks]
        return result

    def absorb(self, other: BlockedTopCounts, id_map: I64) -> None:
        """Merge ``other`` in; its id i becomes ``id_map[i]`` (injective) here, block by block."""
        shift = self.item_bits
        pieces: defaultdict[int, list[tuple[U64, U32]]] = defaultdict(list)
        for source in other.blocks:
            if not len(source.keys):
                continue
            mapped = _mapped_keys(source.keys, id_map, shift)
            order = np.argsort(mapped)
            mapped, counts = mapped[order], source.counts[order]
            del order
            bounds = _bounds(mapped, shift)
            for block, (lo, hi) in enumerate(pairwise(bounds)):
                if hi > lo:
                    pieces[block].append((mapped[lo:hi], counts[lo:hi]))
        for block in sorted(pieces):
            while len(self.blocks) <= block:
                self.blocks.append(TopCounts(self.slots, self.item_bits))
            parts = pieces.pop(block)
            incoming = TopCounts(self.slots, self.item_bits)
            if len(parts) == 1:
                incoming.keys, incoming.counts = parts[0]
            else:
                keys = np.concatenate([k for k, _ in parts])
                order = np.argsort(keys)
                incoming.keys, incoming.counts = keys[order], np.concatenate([c for _, c in parts])[order]
            self.blocks[block].absorb(incoming)

    def top(self, ident: int, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` (item, count) of one id: larger count first, then the lower item."""
        block = ident // BLOCK_IDS
        return self.blocks[block].top(ident, n) if block < len(self.blocks) else []

    def __getstate__(self) -> dict[str, Any]:
        return {"slots": self.slots, "item_bits": self.item_bits, "blocks": self.blocks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.slots, self.item_bits, self.blocks = state["slots"], state["item_bits"], state["blocks"]
