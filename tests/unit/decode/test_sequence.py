"""Sequence tracking (flowscope.decode.sequence): loss, wrap-around at 2**32, reordering, restarts."""

from __future__ import annotations

from flowscope.decode.sequence import SequenceState, SequenceTracker

EXPORTER = "192.0.2.1"
TOP = 1 << 32


def feed(tracker: SequenceTracker, messages: list[tuple[int, int]], *, version: int = 9, domain: int = 0) -> list[int]:
    """Observe (sequence, advance) pairs in order; returns what each observation reported lost."""
    return [tracker.observe(EXPORTER, version, domain, sequence, advance) for sequence, advance in messages]


def state(tracker: SequenceTracker, *, version: int = 9, domain: int = 0) -> SequenceState:
    return tracker.states()[(EXPORTER, version, domain)]


def test_first_message_sets_the_baseline_without_loss() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [(1000, 1)]) == [0]
    assert state(tracker).expected == 1001
    assert state(tracker).received == 1


def test_contiguous_packets_lose_nothing() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [(5, 1), (6, 1), (7, 1), (8, 1)]) == [0, 0, 0, 0]
    assert (state(tracker).lost, state(tracker).reordered, state(tracker).received) == (0, 0, 4)


def test_gap_in_packet_numbers_is_loss() -> None:
    # NetFlow v9 counts packets: 10, 11, then 15 means 12, 13 and 14 were lost.
    tracker = SequenceTracker()
    assert feed(tracker, [(10, 1), (11, 1), (15, 1), (16, 1)]) == [0, 0, 3, 0]
    assert state(tracker).lost == 3


def test_record_units_advance_by_the_record_count() -> None:
    # v5/IPFIX count records: a message with sequence 100 and 30 records expects 130 next.
    tracker = SequenceTracker()
    assert feed(tracker, [(100, 30), (130, 29), (159, 0), (159, 5), (170, 2)], version=10) == [0, 0, 0, 0, 6]
    assert state(tracker, version=10).lost == 6
    assert state(tracker, version=10).received == 66


def test_wrap_around_at_two_to_the_32() -> None:
    tracker = SequenceTracker()
    # 2**32 - 2 carrying 2 records → the next is 0; 0 carrying 3 records → the next is 3.
    assert feed(tracker, [(TOP - 2, 2), (0, 3), (3, 1)], version=10) == [0, 0, 0]
    assert state(tracker, version=10).lost == 0
    assert state(tracker, version=10).reordered == 0


def test_loss_across_the_wrap() -> None:
    tracker = SequenceTracker()
    # expected 2**32 - 1 (after TOP-3 with 2 records), next arrives with 4: 2**32-1, 0, 1, 2, 3 → 5 lost
    assert feed(tracker, [(TOP - 3, 2), (4, 1)], version=10) == [0, 5]
    assert state(tracker, version=10).lost == 5


def test_late_packet_is_reordering_not_loss() -> None:
    tracker = SequenceTracker()
    # 1, 2, 3, 5, 4, 6: when 5 arrives 4 is missing (1 lost so far); 4 then turns up late and 6
    # follows 5: no further loss is invented.
    assert feed(tracker, [(1, 1), (2, 1), (3, 1), (5, 1), (4, 1), (6, 1), (7, 1)]) == [0, 0, 0, 1, 0, 0, 0]
    assert state(tracker).lost == 1
    assert state(tracker).reordered == 1
    assert state(tracker).expected == 8


def test_duplicate_packet_is_reordering() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, [(7, 1), (8, 1), (8, 1), (9, 1)]) == [0, 0, 0, 0]
    assert (state(tracker).lost, state(tracker).reordered) == (0, 1)


def test_reordering_across_the_wrap() -> None:
    tracker = SequenceTracker()
    # TOP-1, 1, 0, 2: 0 is late (it precedes 1 modulo 2**32), not a jump of ~4 billion
    assert feed(tracker, [(TOP - 1, 1), (1, 1), (0, 1), (2, 1)]) == [0, 1, 0, 0]
    assert (state(tracker).lost, state(tracker).reordered) == (1, 1)


def test_exporter_restart_resynchronises() -> None:
    tracker = SequenceTracker()
    # A long-running exporter restarts at 0; once 1 follows 0 the tracker follows the new stream.
    assert feed(tracker, [(5000, 1), (5001, 1), (0, 1), (1, 1), (2, 1), (4, 1)]) == [0, 0, 0, 0, 0, 1]
    assert state(tracker).lost == 1
    assert state(tracker).reordered == 1
    assert state(tracker).expected == 5


def test_half_range_jump_forward_counts_as_loss() -> None:
    tracker = SequenceTracker()
    # A jump of 2**31 - 1 is still "forward"; one of 2**31 is "backward".
    assert feed(tracker, [(0, 1), (1 + (1 << 31) - 1, 1)]) == [0, (1 << 31) - 1]
    other = SequenceTracker()
    assert feed(other, [(0, 1), (1 + (1 << 31), 1)]) == [0, 0]
    assert state(other).reordered == 1


def test_scopes_are_independent() -> None:
    tracker = SequenceTracker()
    tracker.observe("192.0.2.1", 9, 0, 10, 1)
    tracker.observe("192.0.2.2", 9, 0, 500, 1)
    tracker.observe("192.0.2.1", 9, 1, 900, 1)
    tracker.observe("192.0.2.1", 10, 0, 70, 3)
    # each continues in its own scope: nothing lost
    assert tracker.observe("192.0.2.1", 9, 0, 11, 1) == 0
    assert tracker.observe("192.0.2.2", 9, 0, 501, 1) == 0
    assert tracker.observe("192.0.2.1", 9, 1, 901, 1) == 0
    assert tracker.observe("192.0.2.1", 10, 0, 73, 1) == 0
    assert len(tracker.states()) == 4
    assert all(s.lost == 0 for s in tracker.states().values())


def test_forget_drops_the_expectation() -> None:
    tracker = SequenceTracker()
    feed(tracker, [(10, 5)], version=10)
    tracker.forget(EXPORTER, 10, 0)
    # anything goes after a forget: the next message is the new baseline
    assert feed(tracker, [(400, 2), (402, 1)], version=10) == [0, 0]
    assert state(tracker, version=10).lost == 0
    tracker.forget("198.51.100.9", 10, 0)  # unknown scope: no effect, no error
    assert ("198.51.100.9", 10, 0) not in tracker.states()
