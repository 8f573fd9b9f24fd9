"""Sequence numbers per exporter, version and domain: how much export was lost on the way.

NetFlow v5/v7 count flows, NetFlow v9 counts export packets, IPFIX counts data records; all wrap
at 2**32. A jump forward is loss; a jump backward (reordering, duplicate, exporter restart) is
counted separately and resynchronises.
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
        if state.expected is not None and sequence != state.expected:
            gap = (sequence - state.expected) % _MODULO
            if gap < _HALF:
                lost = gap
                state.lost += gap
            else:
                state.reordered += 1
        state.expected = (sequence + advance) % _MODULO
        state.received += advance
        return lost

    def forget(self, exporter: str, version: int, domain: int) -> None:
        """The next expected number is unknown (e.g. records held for a missing template)."""
        state = self._states.get((exporter, version, domain))
        if state is not None:
            state.expected = None

    def states(self) -> dict[tuple[str, int, int], SequenceState]:
        return dict(self._states)
