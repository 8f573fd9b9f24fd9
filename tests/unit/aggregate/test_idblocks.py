"""Blocked sketches (aggregate.idblocks) hold exactly what the whole-table structures hold."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from flowscope.aggregate import idblocks
from flowscope.aggregate.idblocks import BLOCK_IDS, BlockedSets, BlockedTopCounts
from flowscope.aggregate.sketch import BITMAP16, HLL, Kind, SketchSet
from flowscope.aggregate.topcounts import TopCounts


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few hundred keys, so that a test's sets are split many times."""
    monkeypatch.setattr(BlockedSets, "MAX_BLOCK_KEYS", 512)
    monkeypatch.setattr(idblocks, "BLOCK_IDS", 64)


def _flat(sets: BlockedSets) -> tuple[list[int], list[int], bytes]:
    sparse = [int(k) for block in sets.blocks for k in block.sparse]
    dense_ids = [int(i) for block in sets.blocks for i in block.dense_ids]
    dense = b"".join(block.dense.tobytes() for block in sets.blocks)
    return sparse, dense_ids, dense


def _whole(sets: SketchSet) -> tuple[list[int], list[int], bytes]:
    return sets.sparse.tolist(), sets.dense_ids.tolist(), sets.dense.tobytes()


def _pairs(rng: np.random.Generator, hosts: int, count: int, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    # Zipf-like: a few ids get far more values than the promotion threshold.
    ids = np.minimum(rng.zipf(1.3, count) - 1, hosts - 1).astype(np.int64)
    values = rng.integers(0, 1 << min(kind.value_bits, 20), count, dtype=np.uint64)
    return ids, values


@pytest.mark.parametrize("kind", [HLL, BITMAP16], ids=["hll", "bitmap16"])
def test_absorbing_window_after_window_equals_the_whole_set(kind: Kind, small_blocks: None) -> None:
    rng = np.random.default_rng(7)
    whole = SketchSet(kind)
    blocked = BlockedSets(kind)
    hosts = 0
    for _ in range(6):
        # Another window's hosts: some already known here, some new (ids appended, as LocalHosts does).
        part_hosts = int(rng.integers(50, 400))
        ids, values = _pairs(rng, part_hosts, 20_000, kind)
        known = rng.permutation(max(hosts, 1))[: part_hosts // 2] if hosts else np.empty(0, np.int64)
        id_map = np.concatenate([known, np.arange(hosts, hosts + part_hosts - len(known))]).astype(np.int64)
        hosts += part_hosts - len(known)
        whole.absorb(SketchSet.from_pairs(kind, ids, values), id_map)
        blocked.absorb(BlockedSets.from_pairs(kind, ids, values), id_map)
        assert _flat(blocked) == _whole(whole)
    assert len(blocked.blocks) > 4  # the test did exercise splitting
    # A block is cut at id boundaries: at most the limit plus one id's keys (below the promotion threshold).
    assert all(len(block.sparse) <= BlockedSets.MAX_BLOCK_KEYS + kind.threshold for block in blocked.blocks)
    probe = np.arange(hosts + 5)  # every id, and some beyond the known ones
    assert blocked.estimate(probe).tolist() == whole.estimate(probe).tolist()
    assert blocked.estimate_all(hosts + 5).tolist() == whole.estimate_all(hosts + 5).tolist()
    assert blocked.exact(probe).tolist() == whole.exact(probe).tolist()
    assert blocked.entries == len(whole.sparse)


def test_combining_parts_equals_absorbing_them(small_blocks: None) -> None:
    rng = np.random.default_rng(3)
    parts, maps = [], []
    for _ in range(4):
        ids, values = _pairs(rng, 100, 5_000, HLL)
        parts.append(BlockedSets.from_pairs(HLL, ids, values))
        maps.append(rng.permutation(300)[:100].astype(np.int64))
    combined = BlockedSets.combine(HLL, parts, maps)
    one_by_one = BlockedSets(HLL)
    for part, id_map in zip(parts, maps, strict=True):
        one_by_one.absorb(part, id_map)
    assert _flat(combined) == _flat(one_by_one)


def test_absorbing_leaves_shallow_copies_and_the_absorbed_part_unchanged(small_blocks: None) -> None:
    rng = np.random.default_rng(11)
    ids, values = _pairs(rng, 200, 30_000, HLL)
    base = BlockedSets.from_pairs(HLL, ids, values)
    before = _flat(base)
    grown = base.shallow()
    more_ids, more_values = _pairs(rng, 200, 30_000, HLL)
    other = BlockedSets.from_pairs(HLL, more_ids, more_values)
    other_before = _flat(other)
    grown.absorb(other, np.arange(200, dtype=np.int64))
    assert _flat(base) == before
    assert _flat(other) == other_before
    assert _flat(grown) != before


def test_blocked_sets_pickle_and_split_an_old_whole_set() -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 3 * BLOCK_IDS, 50_000).astype(np.int64)
    values = rng.integers(0, 1 << 30, 50_000, dtype=np.uint64)
    whole = SketchSet.from_pairs(HLL, ids, values)
    blocked = BlockedSets.of(whole)
    assert _flat(blocked) == _whole(whole)
    restored = pickle.loads(pickle.dumps(blocked))
    assert _flat(restored) == _whole(whole)
    assert restored.starts.tolist() == blocked.starts.tolist()


def test_blocked_top_counts_equal_the_whole_summaries(small_blocks: None) -> None:
    rng = np.random.default_rng(13)
    whole = TopCounts(8)
    blocked = BlockedTopCounts(8)
    hosts = 0
    for _ in range(5):
        part_hosts = int(rng.integers(100, 300))
        ids = rng.integers(0, part_hosts, 10_000).astype(np.int64)
        ports = np.minimum(rng.zipf(1.5, 10_000), 65_535).astype(np.uint16)
        weights = rng.integers(1, 5, 10_000).astype(np.uint64)
        id_map = (np.arange(part_hosts) + hosts // 2).astype(np.int64)  # overlaps what is held, then new ids
        hosts = max(hosts, int(id_map[-1]) + 1)
        whole.absorb(TopCounts.from_items(8, ids, ports, weights), id_map)
        blocked.absorb(BlockedTopCounts.from_items(8, ids, ports, weights), id_map)
        flat_keys = [int(k) for block in blocked.blocks for k in block.keys]
        flat_counts = [int(c) for block in blocked.blocks for c in block.counts]
        assert (flat_keys, flat_counts) == (whole.keys.tolist(), whole.counts.tolist())
    assert len(blocked.blocks) > 2
    for ident in range(0, hosts, 7):
        assert blocked.top(ident, 5) == whole.top(ident, 5)
    assert blocked.top(hosts + 10 * idblocks.BLOCK_IDS, 5) == []
    assert blocked.entries == len(whole.keys)


def test_local_hosts_from_an_older_checkpoint_get_blocked_sketches() -> None:
    """Checkpoints written before the blocks held whole SketchSet / TopCounts objects."""
    from flowscope.aggregate.localhosts import LocalHosts  # noqa: PLC0415

    rng = np.random.default_rng(17)
    ids = rng.integers(0, 2 * BLOCK_IDS, 20_000).astype(np.int64)
    partners = SketchSet.from_pairs(HLL, ids, rng.integers(0, 1 << 30, 20_000, dtype=np.uint64))
    ports = TopCounts.from_items(8, ids, rng.integers(0, 65_536, 20_000).astype(np.uint16),
                                 np.ones(20_000, np.uint64))
    state = LocalHosts().__getstate__()
    state.update(partners=partners, dst_ports=SketchSet(BITMAP16), ports=ports)
    restored = LocalHosts.__new__(LocalHosts)
    restored.__setstate__(state)
    assert isinstance(restored.partners, BlockedSets) and isinstance(restored.ports, BlockedTopCounts)
    assert _flat(restored.partners) == _whole(partners)
    assert restored.ports.entries == len(ports.keys)
    assert restored.ports.top(int(ids[0]), 3) == ports.top(int(ids[0]), 3)
