"""Host states share their parts: merges without copies, snapshots, parts lent to a fold and given back."""

from __future__ import annotations

import pickle
import weakref

import numpy as np
import pytest
from tests.unit.aggregate.test_hosts import RANDOM_SPEC, all_hosts, concat_rows, random_rows, without_local_ports

from flowscope.aggregate.hosts import HostState
from flowscope.aggregate.state import Rows


def _state(*parts: Rows, deferred: bool = False, compact_min: int = 2_000) -> HostState:
    state = HostState(compact_min=compact_min)
    state.deferred = deferred
    for rows in parts:
        state.update(rows, RANDOM_SPEC)
    return state


def _batches(seed: int, count: int, size: int = 6_000) -> list[Rows]:
    rng = np.random.default_rng(seed)
    return [random_rows(rng, size) for _ in range(count)]


def test_a_snapshot_keeps_its_content_while_the_state_goes_on() -> None:
    first, later = _batches(41, 4), _batches(42, 4)
    state = _state(*first)
    snapshot = state.snapshot()
    for rows in later:  # updates that fold the queue into new main parts, several times
        state.update(rows, RANDOM_SPEC)
    state.compact()
    state.unwatch("10.0.0.9")
    assert all_hosts(snapshot, RANDOM_SPEC) == all_hosts(_state(*first), RANDOM_SPEC)
    expected = _state(concat_rows(first + later))
    expected.unwatch("10.0.0.9")
    assert without_local_ports(all_hosts(state, RANDOM_SPEC)) == without_local_ports(all_hosts(expected, RANDOM_SPEC))
    assert [h["address"] for h in snapshot.result(RANDOM_SPEC)["watched"]] == [
        "10.0.0.1", "10.0.0.9", "198.51.100.3"]


def test_merge_shares_parts_and_leaves_the_merged_state_unchanged() -> None:
    a_rows, b_rows, more = _batches(43, 3), _batches(44, 3), _batches(45, 3)
    a, b = _state(*a_rows), _state(*b_rows)
    b.compact()
    before = all_hosts(_state(*b_rows), RANDOM_SPEC)
    a.compact_min = 10**7  # keep b's part queued, to see it
    a.merge(b)
    assert any(part is b._main for part in a.parts())  # handed over, not copied
    for rows in more:
        a.update(rows, RANDOM_SPEC)
    a.compact()  # folds b's main into a new part of a
    assert all_hosts(b, RANDOM_SPEC) == before
    assert without_local_ports(all_hosts(a, RANDOM_SPEC)) == without_local_ports(
        all_hosts(_state(concat_rows(a_rows + b_rows + more)), RANDOM_SPEC)
    )


def test_deferred_state_folds_only_far_past_the_bound() -> None:
    rows = _batches(46, 6, size=2_000)
    eager, deferred = _state(*rows), _state(*rows, deferred=True)
    assert len(eager._pending) < len(deferred._pending)
    assert deferred._pending_size <= 4 * max(deferred._main.size // 4, deferred.compact_min)
    assert without_local_ports(all_hosts(eager, RANDOM_SPEC)) == without_local_ports(all_hosts(deferred, RANDOM_SPEC))


def test_checkpoint_keeps_the_queue_unfolded() -> None:
    rows = _batches(52, 4, size=2_000)
    state = _state(*rows, deferred=True, compact_min=10**7)
    assert state._pending
    restored = pickle.loads(pickle.dumps(state, protocol=5))
    assert len(restored._pending) == len(state._pending) and restored.deferred
    assert all_hosts(restored, RANDOM_SPEC) == all_hosts(state, RANDOM_SPEC)


def test_a_lent_main_part_is_folded_in_place_and_given_back() -> None:
    first, during = _batches(53, 3), _batches(54, 2)
    live = _state(first[0], deferred=True, compact_min=10**7)
    live.compact()
    for rows in first[1:]:
        live.update(rows, RANDOM_SPEC)
    old_column = weakref.ref(live._main.sums[0])
    lent = live.lend()
    assert live.lent
    for rows in during:  # updates go on meanwhile: they queue
        live.update(rows, RANDOM_SPEC)
    assert len(live.parts()) == len(during)  # only what was queued meanwhile is held here
    with pytest.raises(RuntimeError):
        live.lend()  # and it cannot be lent twice
    view = live.fold_lent(lent)
    assert not live.lent
    assert old_column() is None  # freed during the fold, not kept beside the new arrays
    # The view: the state as lent, folded; the live state: that plus what queued meanwhile.
    assert len(view.parts()) == 1 and len(live.parts()) == 1 + len(during)
    lent_expected = all_hosts(_state(concat_rows(first)), RANDOM_SPEC)
    assert without_local_ports(all_hosts(view, RANDOM_SPEC)) == without_local_ports(lent_expected)
    expected = all_hosts(_state(concat_rows(first + during)), RANDOM_SPEC)
    assert without_local_ports(all_hosts(live, RANDOM_SPEC)) == without_local_ports(expected)
