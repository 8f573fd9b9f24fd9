"""What message headers say about the records of their sets, per message and per set.

``MessageContext`` is what the per-message path builds for each message; ``SetColumns`` holds the
same facts for many data sets at once, as numpy columns, which is what the batch walk builds and
what the decoder turns into the per-record columns of a ``RecordSet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter

import numpy as np
import numpy.typing as npt


class MessageContext:
    """What the message header says, for every record of its sets (a plain class: made per message)."""

    __slots__ = ("domain", "export_time_ms", "exporter", "header_sampling_interval", "sys_uptime_ms",
                 "time_received_ms", "version")

    def __init__(self, version: int, exporter: str, domain: int, export_time_ms: int, sys_uptime_ms: int,
                 time_received_ms: int, header_sampling_interval: int = 0) -> None:
        self.version = version
        self.exporter = exporter
        self.domain = domain
        self.export_time_ms = export_time_ms
        self.sys_uptime_ms = sys_uptime_ms
        self.time_received_ms = time_received_ms
        self.header_sampling_interval = header_sampling_interval


@dataclass(frozen=True, slots=True)
class SetColumns:
    """Data sets of one template, one row per set: its record count, the first arrival order of its
    records, and its message's header values."""

    counts: npt.NDArray[np.int64]
    order_start: npt.NDArray[np.int64]
    export_time_ms: npt.NDArray[np.int64]
    sys_uptime_ms: npt.NDArray[np.int64]
    time_received_ms: npt.NDArray[np.int64]
    header_sampling_interval: npt.NDArray[np.uint32]

    @staticmethod
    def of_sets(sets: Sequence[tuple[int, MessageContext, int]]) -> SetColumns:
        """From the per-message path's ``(records, context, first order)`` tuples."""
        n = len(sets)
        contexts = list(map(itemgetter(1), sets))

        def column(attribute: str, dtype: type) -> np.ndarray:
            return np.fromiter(map(attrgetter(attribute), contexts), dtype, n)

        return SetColumns(
            counts=np.fromiter(map(itemgetter(0), sets), np.int64, n),
            order_start=np.fromiter(map(itemgetter(2), sets), np.int64, n),
            export_time_ms=column("export_time_ms", np.int64),
            sys_uptime_ms=column("sys_uptime_ms", np.int64),
            time_received_ms=column("time_received_ms", np.int64),
            header_sampling_interval=column("header_sampling_interval", np.uint32),
        )

    def rows(self, span: slice) -> SetColumns:
        return SetColumns(self.counts[span], self.order_start[span], self.export_time_ms[span],
                          self.sys_uptime_ms[span], self.time_received_ms[span],
                          self.header_sampling_interval[span])

    @staticmethod
    def concat(blocks: Sequence[SetColumns]) -> SetColumns:
        return SetColumns(
            counts=np.concatenate([b.counts for b in blocks]),
            order_start=np.concatenate([b.order_start for b in blocks]),
            export_time_ms=np.concatenate([b.export_time_ms for b in blocks]),
            sys_uptime_ms=np.concatenate([b.sys_uptime_ms for b in blocks]),
            time_received_ms=np.concatenate([b.time_received_ms for b in blocks]),
            header_sampling_interval=np.concatenate([b.header_sampling_interval for b in blocks]),
        )


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """The per-record columns of a ``RecordSet`` that come from message headers, made ahead by the
    batch walk for a group whose records it gathered in one piece."""

    export_time_ms: npt.NDArray[np.int64]
    sys_uptime_ms: npt.NDArray[np.int64]
    time_received_ms: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64]
    header_sampling_interval: npt.NDArray[np.uint32]

    def rows(self, span: slice) -> RecordColumns:
        return RecordColumns(self.export_time_ms[span], self.sys_uptime_ms[span], self.time_received_ms[span],
                             self.order[span], self.header_sampling_interval[span])
