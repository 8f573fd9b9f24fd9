"""The compiled NetFlow v5 kernel, from the Python side: a batch of v5 datagrams straight to flow
columns (``_v5kernel.c``), skipping the record sets of the general path.

A batch is taken only if every datagram is a NetFlow v5 message whose length matches its record
count (what an exporter sends) and no exporter of it has options data (which could announce a
sampling rate for it); anything else goes the general path (``DecoderSession.decode``, then the
normalizer), which counts what is wrong. The result is the general path's: the same flow columns
(rows in arrival order), sequence checks, exporter table entries and counters — tests compare the
two column for column.

The kernel is optional, built at install time where a C compiler is present. Without it
``KERNEL`` is None and ``decode_flows`` takes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from flowscope.model import FLOW_COLUMNS, Datagram, FlowBatch

if TYPE_CHECKING:
    from flowscope.decode.session import DecoderSession

try:
    from flowscope.decode import _v5kernel as _kernel  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install time): the general path does the work
    _kernel = None

KERNEL: ModuleType | None = _kernel
# The columns ``fill`` writes, in its argument order.
FILL_COLUMNS = ("time_received", "time_start", "time_end", "exporter", "src_addr", "dst_addr", "src_port",
                 "dst_port", "protocol", "tcp_flags", "tos", "packets", "bytes", "in_if", "out_if", "src_as",
                 "dst_as", "sampling_rate")
# The columns of ``scan``'s per-datagram header table read here (its layout: see ``scan``'s doc).
_SEQUENCE, _COUNT, _SCOPE = 2, 6, 8


def decode_flows(session: DecoderSession, datagrams: Sequence[Datagram], *, apply_sampling: bool) -> FlowBatch | None:
    """The flows of a batch of plain NetFlow v5 datagrams, as ``Normalizer.normalize`` of
    ``session.decode`` would make them (``apply_sampling``: packets and bytes multiplied by the
    header's rate); None, with nothing done, when the kernel is not built or off, or the batch is
    not one it takes."""
    kernel = KERNEL
    if kernel is None or not session.config.compiled_kernel or not datagrams:
        return None
    batch = datagrams if isinstance(datagrams, list) else list(datagrams)
    heads = np.empty((len(batch), 9), np.int64)
    exporters: list[str] = []
    scanned = kernel.scan(batch, {}, exporters, heads)
    if scanned is None:
        return None
    total, scopes = scanned
    options = session.options
    if any(options.get(exporters[code], domain) is not None for code, domain, *_ in scopes):
        return None
    exporter_index = np.empty(len(scopes), np.uint32)
    tracker, table = session.sequences, session.exporters
    packets: dict[tuple[str, int], int] = {}
    for scope, (code, domain, first, following, records, messages, broken) in enumerate(scopes):
        exporter = exporters[code]
        exporter_index[scope] = table.index_of(exporter, domain)
        packets[(exporter, 5)] = packets.get((exporter, 5), 0) + messages
        session.count("decode_records_total", records, exporter=exporter, kind="data")
        if broken or not tracker.observe_unbroken(exporter, 5, domain, first, following, records):
            # numbers jump somewhere in this scope: message by message, as the general path does
            rows = np.flatnonzero(heads[:, _SCOPE] == scope)
            lost = sum(tracker.observe(exporter, 5, domain, sequence, count) for sequence, count in zip(
                heads[rows, _SEQUENCE].tolist(), heads[rows, _COUNT].tolist(), strict=True))
            if lost:
                session.count("decode_sequence_lost_total", lost, exporter=exporter, unit="records")
    session.count_packets(packets)
    session.flush_counts()
    columns = {name: np.empty(total, FLOW_COLUMNS[name]) for name in FILL_COLUMNS}
    kernel.fill(batch, heads, exporter_index, apply_sampling, *columns.values())
    return FlowBatch(columns)
