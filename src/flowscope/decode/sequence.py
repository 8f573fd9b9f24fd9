"""Sequence numbers per exporter, version and domain: how much export was lost on the way.

NetFlow v5/v7 count flows, NetFlow v9 counts export packets, IPFIX counts data records; all wrap
at 2**32. A jump forward is loss. A jump backward (a late or duplicate message, or an exporter
restart) is counted separately and leaves the expected number alone, so a message that merely
arrived late does not turn its successors into a phantom loss; when the next message continues
from the backward one, the exporter restarted, and the tracker resynchronises on it.
"""

from __future__ import annotations

from dataclasses import dataclass

_MODULO = 1 << 32
_HALF = 1 << 31


@dataclass(slots=True)
class SequenceState:
    expected: int | None = None
    lost: int = 0
    reordered: int = 0
    received: int = 0
    resume: int | None = None  # where a stream restarted by the last backward message would go on


class SequenceTracker:
    def __init__(self) -> None:
        self._states: dict[tuple[str, int, int], SequenceState] = {}

    def observe(self, exporter: str, version: int, domain: int, sequence: int, advance: int) -> int:
        """Record one message; returns the number of units newly found missing before it."""
        key = (exporter, version, domain)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = SequenceState()
        lost = 0
        state.received += advance
        following = (sequence + advance) % _MODULO
        if state.expected is not None and sequence not in (state.expected, state.resume):
            gap = (sequence - state.expected) % _MODULO
            if gap >= _HALF:
                state.reordered += 1
                state.resume = following
                return 0
            lost = gap
            state.lost += gap
        state.expected = following
        state.resume = None
        return lost

    def observe_unbroken(self, exporter: str, version: int, domain: int, first: int, following: int,
                         advance: int) -> bool:
        """Messages of one scope whose numbers follow one another, from ``first`` to ``following``
        (the number after the last), ``advance`` units in all: recorded as ``observe`` on each would,
        if the first one loses nothing; False (and nothing recorded) if it might."""
        key = (exporter, version, domain)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = SequenceState()
        elif state.expected is not None and first not in (state.expected, state.resume):
            return False
        state.received += advance
        state.expected = following
        state.resume = None
        return True

    def forget(self, exporter: str, version: int, domain: int) -> None:
        """The next expected number is unknown (e.g. records held for a missing template)."""
        state = self._states.get((exporter, version, domain))
        if state is not None:
            state.expected = None

    def states(self) -> dict[tuple[str, int, int], SequenceState]:
        return dict(self._states)
