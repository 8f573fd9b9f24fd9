"""Hashing, distinct-count sketches and heavy-hitter summaries, against exact answers."""

from __future__ import annotations

import ipaddress
import pickle

import numpy as np
import pytest

from flowscope.aggregate.sketch import (
    BITMAP16,
    HLL,
    HLL_RELATIVE_STANDARD_ERROR,
    DistinctCounter,
    SketchSet,
    hash_addresses,
    hash_u64,
    hash_values,
    hll_estimate,
    join_addresses,
    mix64,
    split_addresses,
)
from flowscope.aggregate.topcounts import TopCounts

MASK64 = (1 << 64) - 1


def _splitmix64_reference(state: int, count: int) -> list[int]:
    """Vigna's splitmix64 generator, written out in plain Python integers."""
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def _random_hashes(rng: np.random.Generator, count: int) -> np.ndarray:
    return hash_u64(rng.integers(0, 2**63, count, dtype=np.int64))


# --------------------------------------------------------------------------------- hashing


def test_mix64_is_splitmix64() -> None:
    # The first outputs of splitmix64 seeded with 0, as published with the reference code.
    assert _splitmix64_reference(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    states = np.array([0x9E3779B97F4A7C15 * k & MASK64 for k in (1, 2, 3)], np.uint64)
    assert mix64(states).tolist() == _splitmix64_reference(0, 3)
    assert hash_u64(np.array([0], np.uint64)).tolist() == [0xE220A8397B1DCDAF]


def test_addresses_split_join_round_trip_in_numeric_order() -> None:
    texts = ["0.0.0.1", "10.0.0.1", "255.255.255.255", "::1", "2001:db8::1", "ffff::ffff"]
    raw = [
        (b"\x00" * 10 + b"\xff\xff" + ipaddress.ip_address(t).packed) if "." in t else ipaddress.ip_address(t).packed
        for t in texts
    ]
    column = np.array(raw, "S16")
    hi, lo = split_addresses(column)
    values = [(int(h) << 64) | int(lo_) for h, lo_ in zip(hi, lo, strict=True)]
    assert values == [int.from_bytes(r, "big") for r in raw]
    assert join_addresses(hi, lo).tolist() == column.tolist()
    with pytest.raises(ValueError, match="16-byte"):
        split_addresses(np.array([b"abc"], "S3"))


def test_ipv4_address_hashes_never_collide() -> None:
    # For one upper half (all IPv4-mapped addresses) the hash is a bijection of the lower half.
    count = 1 << 20
    raw = np.zeros((count, 16), np.uint8)
    raw[:, 10:12] = 0xFF
    raw[:, 12:] = (np.arange(count, dtype=">u4") * 2_654_435_761).view(np.uint8).reshape(-1, 4)
    hashes = hash_addresses(raw.view("S16").ravel())
    assert len(np.unique(hashes)) == count


# ------------------------------------------------------------------------ DistinctCounter


def test_counter_is_exact_below_the_promotion_threshold() -> None:
    rng = np.random.default_rng(1)
    hashes = _random_hashes(rng, HLL.threshold)
    counter = DistinctCounter()
    for part in np.array_split(np.concatenate([hashes, hashes[:1000]]), 5):  # with repeats
        counter.add_hashes(part)
    assert counter.is_exact
    assert counter.estimate() == HLL.threshold
    counter.add_hashes(_random_hashes(rng, 1))
    assert not counter.is_exact  # 8 193 values: promoted to registers
    assert abs(counter.estimate() / (HLL.threshold + 1) - 1) < 0.01


@pytest.mark.parametrize("cardinality", [10_000, 50_000, 200_000, 1_000_000, 3_000_000])
def test_counter_relative_error_within_two_percent(cardinality: int) -> None:
    rng = np.random.default_rng(cardinality)
    values = rng.integers(0, 2**62, cardinality, dtype=np.int64)
    exact = len(np.unique(values))
    counter = DistinctCounter()
    for part in np.array_split(hash_u64(values), 4):
        counter.add_hashes(part)
    error = counter.estimate() / exact - 1
    assert abs(error) <= 0.02
    assert abs(error) <= 4 * HLL_RELATIVE_STANDARD_ERROR  # 1.6 %: four standard errors of p = 16


def test_counter_error_across_many_independent_sets() -> None:
    """RMS relative error over 40 sets of 20 000 values is close to 1.04/sqrt(m) = 0.41 %."""
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(40):
        counter = DistinctCounter()
        counter.add_hashes(_random_hashes(rng, 20_000))
        errors.append(counter.estimate() / 20_000 - 1)
    rms = float(np.sqrt(np.mean(np.square(errors))))
    assert rms < 2 * HLL_RELATIVE_STANDARD_ERROR
    assert abs(float(np.mean(errors))) < HLL_RELATIVE_STANDARD_ERROR  # no visible bias
    assert max(abs(e) for e in errors) < 0.02


def test_counter_merge_equals_counting_the_union() -> None:
    rng = np.random.default_rng(3)
    a, b = _random_hashes(rng, 30_000), _random_hashes(rng, 5_000)
    shared = a[:2_000]
    left, right, union = DistinctCounter(), DistinctCounter(), DistinctCounter()
    left.add_hashes(a)
    right.add_hashes(np.concatenate([b, shared]))
    union.add_hashes(np.concatenate([a, b]))
    left.merge(right)
    assert left.estimate() == union.estimate()  # identical registers
    # Both sparse: exact union.
    small_left, small_right = DistinctCounter(), DistinctCounter()
    small_left.add_hashes(a[:3000])
    small_right.add_hashes(a[2000:5000])
    small_left.merge(small_right)
    assert small_left.estimate() == 5000 and small_left.is_exact


def test_counter_pickles() -> None:
    counter = DistinctCounter()
    counter.add_hashes(_random_hashes(np.random.default_rng(4), 20_000))
    restored = pickle.loads(pickle.dumps(counter))
    assert restored.estimate() == counter.estimate()


def test_empty_registers_estimate_zero() -> None:
    assert hll_estimate(np.zeros((2, HLL.width), np.uint8)).tolist() == [0.0, 0.0]


# ------------------------------------------------------------------------------ SketchSet


def _heavy_tailed_sets(rng: np.random.Generator, ids: int, heavy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, values, exact count per id): most ids small, ``heavy`` ids with 9k-60k values."""
    sizes = rng.integers(1, 40, ids)
    heavy_ids = rng.choice(ids, heavy, replace=False)
    sizes[heavy_ids] = rng.integers(9_000, 60_000, heavy)
    owner = np.repeat(np.arange(ids), sizes)
    # Distinct values per id: id * 2**20 + k (then hashed); plus 10 % repeated rows.
    k = np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    values = hash_values(hash_u64(owner.astype(np.uint64) << np.uint64(20) | k.astype(np.uint64)))
    repeat = rng.random(len(owner)) < 0.1
    owner = np.concatenate([owner, owner[repeat]])
    values = np.concatenate([values, values[repeat]])
    order = rng.permutation(len(owner))
    return owner[order], values[order], sizes


def test_many_sets_against_exact_counts() -> None:
    rng = np.random.default_rng(5)
    ids, values, exact = _heavy_tailed_sets(rng, 120_000, 30)
    sets = SketchSet(HLL)
    for part in np.array_split(np.arange(len(ids)), 7):
        sets.add(ids[part], values[part])
    estimates = sets.estimate_all(120_000)
    assert estimates.tolist() == sets.estimate(np.arange(120_000)).tolist()
    assert sets.estimate_all(10).tolist() == estimates[:10].tolist()
    small = exact <= HLL.threshold
    assert (estimates[small] == exact[small]).all()
    assert len(sets.dense_ids) == int((~small).sum()) == 30
    errors = estimates[~small] / exact[~small] - 1
    assert np.abs(errors).max() <= 0.02
    assert float(np.sqrt(np.mean(errors**2))) < 2 * HLL_RELATIVE_STANDARD_ERROR
    assert sets.exact(np.flatnonzero(small)[:5]).all() and not sets.exact(sets.dense_ids[:1]).any()


def test_absorb_with_id_maps_equals_direct_construction() -> None:
    rng = np.random.default_rng(6)
    ids, values, _ = _heavy_tailed_sets(rng, 3_000, 4)
    direct = SketchSet.from_pairs(HLL, ids, values)
    # Two parts with their own id spaces, mapped back through permutations.
    half = len(ids) // 2
    target = SketchSet(HLL)
    for part in (slice(0, half), slice(half, None)):
        local_of = rng.permutation(3_000)  # global id -> part-local id
        global_of = np.argsort(local_of)  # part-local id -> global id
        piece = SketchSet.from_pairs(HLL, local_of[ids[part]], values[part])
        target.absorb(piece, global_of.astype(np.int64))
    everything = np.arange(3_000)
    assert target.estimate(everything).tolist() == direct.estimate(everything).tolist()
    assert target.dense_ids.tolist() == direct.dense_ids.tolist()
    assert (target.dense == direct.dense).all()
    assert target.sparse.tolist() == direct.sparse.tolist()


def test_combine_many_parts_equals_absorbing_them_one_by_one() -> None:
    rng = np.random.default_rng(12)
    ids, values, _ = _heavy_tailed_sets(rng, 2_000, 3)
    parts, maps = [], []
    one_by_one = SketchSet(HLL)
    for chunk in np.array_split(np.arange(len(ids)), 5):
        local_of = rng.permutation(2_000)
        global_of = np.argsort(local_of).astype(np.int64)
        part = SketchSet.from_pairs(HLL, local_of[ids[chunk]], values[chunk])
        parts.append(part)
        maps.append(global_of)
        one_by_one.absorb(part, global_of)
    combined = SketchSet.combine(HLL, parts, maps)
    assert combined.sparse.tolist() == one_by_one.sparse.tolist()
    assert combined.dense_ids.tolist() == one_by_one.dense_ids.tolist()
    assert (combined.dense == one_by_one.dense).all()
    assert SketchSet.combine(HLL, [], []).estimate(np.arange(3)).tolist() == [0, 0, 0]


def test_dense_rows_meet_sparse_sets_in_both_directions() -> None:
    rng = np.random.default_rng(7)
    big = hash_values(_random_hashes(rng, 20_000))
    small = hash_values(_random_hashes(rng, 500))
    # id 1 dense on the left, sparse on the right; id 2 the other way round.
    left = SketchSet.from_pairs(HLL, np.r_[np.full(20_000, 1), np.full(500, 2)], np.r_[big, small])
    right = SketchSet.from_pairs(HLL, np.r_[np.full(500, 1), np.full(20_000, 2)], np.r_[small, big])
    union = SketchSet.from_pairs(
        HLL, np.r_[np.full(20_500, 1), np.full(20_500, 2)], np.r_[big, small, small, big]
    )
    left.merge(right)
    assert left.dense_ids.tolist() == [1, 2] and len(left.sparse) == 0
    assert left.estimate(np.array([1, 2])).tolist() == union.estimate(np.array([1, 2])).tolist()


def test_bitmap_sets_count_ports_exactly() -> None:
    rng = np.random.default_rng(8)
    ports_a = rng.choice(65_536, 5_000, replace=False)
    ports_b = rng.choice(65_536, 3_000, replace=False)
    ids = np.r_[np.zeros(5_000, np.int64), np.ones(3_000, np.int64), np.full(10, 2)]
    values = np.r_[ports_a, ports_b, np.arange(10)]
    sets = SketchSet.from_pairs(BITMAP16, ids, values)
    assert sets.dense_ids.tolist() == [0, 1]  # past 1 024 ports: bitmaps
    more = SketchSet.from_pairs(BITMAP16, np.zeros(100, np.int64), np.arange(100))
    sets.merge(more)
    expected_0 = len(np.union1d(ports_a, np.arange(100)))
    assert sets.estimate(np.array([0, 1, 2, 3])).tolist() == [expected_0, 3_000, 10, 0]
    assert sets.exact(np.array([0, 1, 2])).all()


def test_sketch_set_pickles_and_rejects_other_kinds() -> None:
    sets = SketchSet.from_pairs(BITMAP16, np.array([1, 1, 2]), np.array([80, 443, 22]))
    restored = pickle.loads(pickle.dumps(sets))
    assert restored.estimate(np.array([1, 2])).tolist() == [2, 1]
    with pytest.raises(ValueError, match="cannot merge"):
        restored.merge(SketchSet(HLL))


# ------------------------------------------------------------------------------ TopCounts


def test_top_counts_exact_while_within_slots() -> None:
    ids = np.array([0, 0, 0, 0, 1, 1, 0])
    items = np.array([443, 80, 443, 53, 22, 22, 80])
    weights = np.array([1, 1, 1, 1, 1, 2, 0], np.uint64)  # a zero weight adds nothing
    top = TopCounts.from_items(3, ids, items, weights)
    assert top.top(0, 5) == [(443, 2), (53, 1), (80, 1)]  # ties: lower item first
    assert top.top(1, 5) == [(22, 3)]
    assert top.top(2, 5) == []


def test_top_counts_misra_gries_bound_under_merges() -> None:
    rng = np.random.default_rng(9)
    slots = 8
    # Zipf-like items for 50 ids, spread over 6 parts merged into one.
    ids = rng.integers(0, 50, 200_000)
    items = np.minimum(rng.zipf(1.3, 200_000), 65_535)
    weights = np.ones(200_000, np.uint64)
    merged = TopCounts(slots)
    for part in np.array_split(np.arange(200_000), 6):
        merged.absorb(TopCounts.from_items(slots, ids[part], items[part], weights[part]))
    for ident in range(50):
        mine = items[ids == ident]
        exact_items, exact_counts = np.unique(mine, return_counts=True)
        exact = dict(zip(exact_items.tolist(), exact_counts.tolist(), strict=True))
        slack = len(mine) / (slots + 1)
        reported = merged.top(ident, slots)
        assert len(reported) <= slots
        for item, count in reported:
            assert exact[item] - slack <= count <= exact[item]
        # Any item heavier than the slack must be reported.
        reported_items = {item for item, _ in reported}
        assert {i for i, c in exact.items() if c > slack} <= reported_items
        assert reported[0][0] == 1  # the heaviest item stays first


def test_top_counts_combine_keeps_the_guarantee() -> None:
    rng = np.random.default_rng(13)
    ids = rng.integers(0, 20, 50_000)
    items = np.minimum(rng.zipf(1.5, 50_000), 65_535)
    chunks = np.array_split(np.arange(50_000), 4)
    parts = [TopCounts.from_items(4, ids[c], items[c], np.ones(len(c), np.uint64)) for c in chunks]
    combined = TopCounts.combine(4, parts, [np.arange(20, dtype=np.int64)] * 4)
    for ident in range(20):
        mine = items[ids == ident]
        slack = len(mine) / 5
        for item, count in combined.top(ident, 4):
            exact = int((mine == item).sum())
            assert exact - slack <= count <= exact
        assert combined.top(ident, 1)[0][0] == 1
    before = (combined.keys.tolist(), combined.counts.tolist())
    copied = combined.copy()
    copied.absorb(parts[0])  # the copy owns its arrays: the original does not change
    assert (combined.keys.tolist(), combined.counts.tolist()) == before
    assert copied.counts.sum() > combined.counts.sum()


def test_top_counts_absorb_with_id_map() -> None:
    part = TopCounts.from_items(4, np.array([0, 1, 1]), np.array([80, 53, 53]), np.ones(3, np.uint64))
    target = TopCounts.from_items(4, np.array([5]), np.array([80]), np.ones(1, np.uint64))
    target.absorb(part, np.array([5, 9], np.int64))
    assert target.top(5, 4) == [(80, 2)]
    assert target.top(9, 4) == [(53, 2)]
    assert pickle.loads(pickle.dumps(target)).top(9, 4) == [(53, 2)]


def test_ids_beyond_the_key_space_are_refused() -> None:
    too_big = np.array([1 << (64 - HLL.value_bits)], np.int64)
    with pytest.raises(OverflowError, match="ids up to"):
        SketchSet.from_pairs(HLL, too_big, np.array([1]))


def test_top_counts_saturate_at_32_bits_and_stay_lower_bounds() -> None:
    big = np.array([3_000_000_000, 5], np.uint64)
    part = TopCounts.from_items(2, np.array([0, 0]), np.array([443, 80]), big)
    assert part.counts.dtype == np.uint32
    merged = TopCounts(2)
    merged.absorb(part)
    merged.absorb(part)  # 6e9 flows to port 443: held as 2**32 - 1, never wrapped to a small count
    assert merged.top(0, 2) == [(443, (1 << 32) - 1), (80, 10)]
    combined = TopCounts.combine(2, [part, part, part], [np.zeros(1, np.int64)] * 3)
    assert combined.top(0, 2) == [(443, (1 << 32) - 1), (80, 15)]
