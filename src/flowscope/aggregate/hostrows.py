"""What host statistics count per host, and how one batch's flows become rows per host.

``COLUMNS`` are the per-host sums (flows, packets, bytes sent and received, the duration sum and
one count per TCP flag); ``BatchColumns`` are a batch's split and hashed addresses; ``Sides``
has one row per (flow, tracked endpoint) and sums them per host; ``host_json`` is the JSON of one
host, shared by the embedded engine and the Spark backend (the same shape by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.sketch import I64, U64, hash_halves, split_addresses
from flowscope.aggregate.stats import TCP

if TYPE_CHECKING:  # state.py holds a HostState: import Rows for typing only (no cycle)
    from flowscope.aggregate.state import Rows

FLAG_NAMES: tuple[str, ...] = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
COLUMNS: tuple[str, ...] = (
    "flows_sent", "packets_sent", "bytes_sent",
    "flows_received", "packets_received", "bytes_received",
    "duration_ms", *FLAG_NAMES,
)
WIDTH = len(COLUMNS)
DURATION = COLUMNS.index("duration_ms")
FIRST_FLAG = COLUMNS.index("FIN")

# The metrics ``top`` ranks by: sums of columns, or distinct counts.
METRICS: dict[str, tuple[int, ...]] = {
    "flows": (0, 3), "packets": (1, 4), "bytes": (2, 5),
    "flows_sent": (0,), "packets_sent": (1,), "bytes_sent": (2,),
    "flows_received": (3,), "packets_received": (4,), "bytes_received": (5,),
    "partners": (), "dst_ports": (),
}
RESULT_METRICS: tuple[str, ...] = ("flows", "bytes", "partners")
TOP_PORT_SLOTS = 8  # Misra–Gries entries per local host
HOST_TOP_PORTS = 5  # ports shown per host
COMPACT_MIN = 1 << 20  # pending entries are folded into the main state beyond max(this, main / 4)


@dataclass(slots=True)
class BatchColumns:
    """Split and hashed address columns of one batch."""

    src_hi: U64
    src_lo: U64
    src_hash: U64
    dst_hi: U64
    dst_lo: U64
    dst_hash: U64

    @classmethod
    def of(cls, rows: Rows) -> BatchColumns:
        src_hi, src_lo = split_addresses(rows.src_addr)
        dst_hi, dst_lo = split_addresses(rows.dst_addr)
        return cls(src_hi, src_lo, hash_halves(src_hi, src_lo), dst_hi, dst_lo, hash_halves(dst_hi, dst_lo))


@dataclass(slots=True)
class Sides:
    """One row per (flow, tracked endpoint): the first ``sent`` rows are flows the host sent."""

    rows: I64
    sent: int
    host_hi: U64
    host_lo: U64
    host_hash: U64
    partner_hi: U64
    partner_lo: U64
    partner_hash: U64

    @classmethod
    def of(cls, columns: BatchColumns, src_tracked: npt.NDArray[np.bool_], dst_tracked: npt.NDArray[np.bool_]) -> Sides:
        out = np.flatnonzero(src_tracked)
        into = np.flatnonzero(dst_tracked)
        c = columns
        return cls(
            rows=np.concatenate([out, into]).astype(np.int64),
            sent=len(out),
            host_hi=np.concatenate([c.src_hi[out], c.dst_hi[into]]),
            host_lo=np.concatenate([c.src_lo[out], c.dst_lo[into]]),
            host_hash=np.concatenate([c.src_hash[out], c.dst_hash[into]]),
            partner_hi=np.concatenate([c.dst_hi[out], c.src_hi[into]]),
            partner_lo=np.concatenate([c.dst_lo[out], c.src_lo[into]]),
            partner_hash=np.concatenate([c.dst_hash[out], c.src_hash[into]]),
        )

    def group(self) -> tuple[I64, I64, I64]:
        """Group the side rows by host: (order, starts of groups in that order, group id per row)."""
        order = host_order(self.host_hash, self.host_hi, self.host_lo)
        hashes, hi, lo = self.host_hash[order], self.host_hi[order], self.host_lo[order]
        new = np.r_[True, (hashes[1:] != hashes[:-1]) | (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])]
        ids = np.empty(len(order), np.int64)
        ids[order] = np.cumsum(new) - 1
        return order, np.flatnonzero(new), ids

    def sums(self, rows: Rows, groups: int, ids: I64) -> U64:
        """(groups × COLUMNS) uint64 sums per host group (``ids`` from ``group()``), exact."""
        r = self.rows
        k = self.sent
        flows = np.asarray(rows.flows, np.uint64)[r]
        out = np.empty((groups, WIDTH), np.uint64)
        sent, received = ids[:k], ids[k:]
        out[:, 0] = sum_by(sent, flows[:k], groups)
        out[:, 1] = sum_by(sent, rows.packets[r[:k]], groups)
        out[:, 2] = sum_by(sent, rows.bytes[r[:k]], groups)
        out[:, 3] = sum_by(received, flows[k:], groups)
        out[:, 4] = sum_by(received, rows.packets[r[k:]], groups)
        out[:, 5] = sum_by(received, rows.bytes[r[k:]], groups)
        out[:, DURATION] = sum_by(ids, np.maximum(rows.duration_ms[r], 0).astype(np.uint64) * flows, groups)
        tcp_flows = np.where(rows.protocol[r] == TCP, flows, 0).astype(np.float64)  # 0/1 (or small) counts
        flags = rows.tcp_flags[r]
        for bit in range(len(FLAG_NAMES)):
            weights = tcp_flows * ((flags >> bit) & 1)
            out[:, FIRST_FLAG + bit] = np.bincount(ids, weights=weights, minlength=groups).astype(np.uint64)
        return out


def sum_by(ids: I64, values: npt.NDArray[np.unsignedinteger], groups: int) -> U64:
    """Exact uint64 sums of ``values`` per id.

    Float bincounts of the 32-bit halves, recombined in integers: exact while no id sums more
    than 2**21 halves at once, which chunks of 2**20 rows guarantee.
    """
    values = np.asarray(values, np.uint64)
    total = np.zeros(groups, np.uint64)
    for start in range(0, len(values), 1 << 20):
        part, where = values[start:start + (1 << 20)], ids[start:start + (1 << 20)]
        low = np.bincount(where, weights=(part & np.uint64(0xFFFFFFFF)).astype(np.float64), minlength=groups)
        total += low.astype(np.uint64)
        high_part = part >> np.uint64(32)
        if high_part.any():
            high = np.bincount(where, weights=high_part.astype(np.float64), minlength=groups).astype(np.uint64)
            total += high << np.uint64(32)
    return total


def host_order(hashes: U64, hi: U64, lo: U64) -> I64:
    """An order that groups equal addresses: by hash, or by (hash, address) if hashes collide."""
    order = np.argsort(hashes)
    ordered = hashes[order]
    same = ordered[1:] == ordered[:-1]
    if same.any():
        o_hi, o_lo = hi[order], lo[order]
        if (same & ((o_hi[1:] != o_hi[:-1]) | (o_lo[1:] != o_lo[:-1]))).any():
            order = np.lexsort((lo, hi, hashes))
    return order.astype(np.int64)



def host_json(
    address: str, exact: bool, sums: list[int], partners: int, dst_ports: int, top_ports: list[dict[str, int]]
) -> dict[str, Any]:
    flows = sums[0] + sums[3]
    return {
        "address": address,
        "exact": exact,
        "sent": {"flows": sums[0], "packets": sums[1], "bytes": sums[2]},
        "received": {"flows": sums[3], "packets": sums[4], "bytes": sums[5]},
        "partners": partners,
        "dst_ports": dst_ports,
        "top_ports": top_ports,
        "tcp_flags": {name: sums[FIRST_FLAG + i] for i, name in enumerate(FLAG_NAMES)},
        "mean_duration_ms": sums[DURATION] / flows if flows else None,
    }
