"""Shallow copies of sketch sets and top counts stay as they were while the original changes."""

from __future__ import annotations

import numpy as np
from tests.unit.aggregate.test_sketch import _heavy_tailed_sets

from flowscope.aggregate.sketch import BITMAP16, HLL, SketchSet
from flowscope.aggregate.topcounts import TopCounts


def _arrays(sets: SketchSet) -> tuple[list[int], list[int], bytes]:
    return sets.sparse.tolist(), sets.dense_ids.tolist(), sets.dense.tobytes()


def test_shallow_hll_sets_survive_every_kind_of_update() -> None:
    rng = np.random.default_rng(61)
    ids, values, _ = _heavy_tailed_sets(rng, 2_000, 3)
    half = len(ids) // 2
    sets = SketchSet.from_pairs(HLL, ids[:half], values[:half])
    assert len(sets.dense_ids) > 0  # the heavy ids are dense already: later values hit their rows
    frozen = sets.shallow()
    before = _arrays(frozen)
    estimates = frozen.estimate(np.arange(2_000)).tolist()
    sets.add(ids[half:], values[half:])  # sparse keys into dense rows, and new dense rows
    other = SketchSet.from_pairs(HLL, ids, values)
    sets.absorb(other, np.arange(2_000, dtype=np.int64))  # dense rows met by dense rows
    assert _arrays(frozen) == before
    assert frozen.estimate(np.arange(2_000)).tolist() == estimates
    assert sets.estimate(np.arange(2_000)).tolist() == other.estimate(np.arange(2_000)).tolist()


def test_shallow_bitmaps_survive_updates() -> None:
    sets = SketchSet.from_pairs(BITMAP16, np.zeros(2_000, np.int64), np.arange(2_000))
    frozen = sets.shallow()
    before = _arrays(frozen)
    sets.add(np.zeros(100, np.int64), np.arange(60_000, 60_100))
    sets.absorb(SketchSet.from_pairs(BITMAP16, np.zeros(3_000, np.int64), np.arange(10_000, 13_000)))
    assert _arrays(frozen) == before
    assert frozen.estimate(np.array([0])).tolist() == [2_000]
    assert sets.estimate(np.array([0])).tolist() == [5_100]


def test_shallow_top_counts_survive_reductions() -> None:
    rng = np.random.default_rng(62)
    ids = rng.integers(0, 20, 50_000)
    items = np.minimum(rng.zipf(1.3, 50_000), 65_535)
    weights = np.ones(50_000, np.uint64)
    top = TopCounts.from_items(4, ids[:25_000], items[:25_000], weights[:25_000])
    frozen = top.shallow()
    keys, counts = frozen.keys.copy(), frozen.counts.copy()
    reported = [frozen.top(i, 4) for i in range(20)]
    top.absorb(TopCounts.from_items(4, ids[25_000:], items[25_000:], weights[25_000:]))
    assert (frozen.keys == keys).all() and (frozen.counts == counts).all()
    assert [frozen.top(i, 4) for i in range(20)] == reported
    assert top.counts.sum() != counts.sum()
