"""Group: the data sets of one template (and exporter scope) gathered across a decode batch.

Both walks of the decoder add to groups — the per-message walk one set at a time, the batch walk
in blocks of many sets — and the decoder turns each group into one ``RecordSet`` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowscope.decode.context import MessageContext, RecordColumns, SetColumns
from flowscope.decode.records import SharedRows
from flowscope.decode.templates import Template


@dataclass(slots=True)
class Group:
    """Data sets of one template gathered across a batch, decoded together at the end."""

    template: Template
    context: MessageContext  # of the first set; per-set values are in the lists below
    chunks: list[bytes | memoryview | np.ndarray] = field(default_factory=list)  # record bytes, in order
    sets: list[tuple[int, MessageContext, int]] = field(default_factory=list)  # (records, context, first order)
    variable: dict[int, list[bytes]] | None = None
    # Sets added by the batch walk, as columns (see SetColumns); ``sets`` holds those added one by
    # one since the last block, so the two stay in wire order.
    blocks: list[SetColumns | tuple[SetColumns, slice]] = field(default_factory=list)  # (columns, rows of them)
    # The per-record columns, when the batch walk made them and nothing was added since.
    per_record: RecordColumns | None = None
    shared: SharedRows | None = None  # where ``per_record`` and the records lie in the batch walk's arrays

    def add_block(self, records: np.ndarray, columns: SetColumns | tuple[SetColumns, slice],
                  per_record: RecordColumns | None = None, shared: SharedRows | None = None) -> None:
        """Sets added by the batch walk: ``columns`` or rows of them (sliced only if ever needed:
        with ``per_record`` given and nothing added later, they are not)."""
        self.per_record = per_record if not self.chunks else None
        self.shared = shared if not self.chunks else None
        if self.sets:
            self.blocks.append(SetColumns.of_sets(self.sets))
            self.sets = []
        self.chunks.append(records)
        self.blocks.append(columns)

    def columns(self) -> SetColumns:
        if self.sets:
            self.blocks.append(SetColumns.of_sets(self.sets))
            self.sets = []
        blocks = [b if isinstance(b, SetColumns) else b[0].rows(b[1]) for b in self.blocks]
        return blocks[0] if len(blocks) == 1 else SetColumns.concat(blocks)
