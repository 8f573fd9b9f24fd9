"""RecordSet: the decoded records of one template, as columns.

The fixed-length fields of every record sit in one numpy structured array (decoded with a single
``np.frombuffer``); variable-length fields, the only slow path, are kept as lists of bytes.
Per-record context from the message headers (export time, uptime, arrival time) is carried as
columns too, so records from many messages can share one array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from flowscope.decode.context import RecordColumns
from flowscope.decode.templates import Template, field_name

if TYPE_CHECKING:
    from flowscope.decode.options import ExporterOptions


@dataclass(frozen=True, slots=True)
class SharedRows:
    """Where the batch walk put a record set's rows: ``start:stop`` of arrays it made for several
    record sets of one layout at once. Record sets that follow each other there are joined by
    slicing these arrays, without looking at (or copying) their own."""

    fixed: np.ndarray
    columns: RecordColumns
    start: int
    stop: int


@dataclass(slots=True)
class RecordSet:
    template: Template
    exporter: str
    domain: int
    version: int
    fixed: np.ndarray  # structured array, dtype = template.fixed_dtype
    variable: dict[int, list[bytes]]  # field position → one value per record
    export_time_ms: npt.NDArray[np.int64]
    sys_uptime_ms: npt.NDArray[np.int64]  # NetFlow v5/v9 header uptime; 0 for IPFIX
    time_received_ms: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64]  # arrival order of each record within one decode call
    header_sampling_interval: npt.NDArray[np.uint32] | None = None  # NetFlow v5 header
    exporter_index: int = 0
    # What the exporter's options data said when these records were sent (sampling, system init);
    # None: use the session's current state.
    options: ExporterOptions | None = None
    extra: dict[str, npt.NDArray] = field(default_factory=dict)
    shared: SharedRows | None = None

    def __len__(self) -> int:
        return len(self.order)

    @property
    def is_options(self) -> bool:
        return self.template.is_options

    def has(self, position: int) -> bool:
        return position in self.template.fixed_index or position in self.variable

    def raw(self, position: int) -> npt.NDArray[np.uint8]:
        """Fixed field as an (n, length) uint8 array, whatever its length."""
        length = self.template.fields[position].length
        column = np.ascontiguousarray(self.fixed[field_name(position)])
        if column.ndim == 2:
            return column
        # 1-D columns keep the big-endian dtype of the template, so the bytes are in wire order.
        return column.view(np.uint8).reshape(-1, length)

    def unsigned(self, position: int) -> npt.NDArray[np.uint64]:
        """Fixed field as unsigned integers (any length up to 8: reduced-size encoding)."""
        spec = self.template.fields[position]
        column = self.fixed[field_name(position)]
        if column.ndim == 1:
            return column.astype(np.uint64)
        if spec.length > 8:
            # Wider than an integer: keep the low 8 bytes (never used for counters in practice).
            column = column[:, -8:]
        weights = np.uint64(256) ** np.arange(column.shape[1] - 1, -1, -1, dtype=np.uint64)
        combined: npt.NDArray[np.uint64] = (column.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
        return combined

    def values(self, position: int) -> list[bytes]:
        """Any field as bytes per record (slow path: output formatting and tests only)."""
        if position in self.variable:
            return self.variable[position]
        spec = self.template.fields[position]
        if spec.length == 0:
            return [b""] * len(self)
        return [bytes(row) for row in self.raw(position)]
