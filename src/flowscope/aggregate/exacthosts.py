"""Watched hosts: exact statistics, keyed by the hosts' 16-byte addresses.

Sums, per-port sums and the sets of partners and destination ports are kept as sorted
fixed-width byte keys (host address + partner address, host address + port): few hosts, every
number exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.hostrows import HOST_TOP_PORTS, WIDTH, Sides, host_json
from flowscope.aggregate.keyed import KeyedSums, group_sum
from flowscope.aggregate.sketch import U64, join_addresses, sorted_unique
from flowscope.model import address_text

if TYPE_CHECKING:
    from flowscope.aggregate.state import Rows


class ByteSet:
    """An exact set of fixed-width byte strings (sorted unique ``S<width>``), batched."""

    def __init__(self, width: int) -> None:
        self.dtype = np.dtype(f"S{width}")
        self.keys: npt.NDArray = np.empty(0, self.dtype)
        self._pending: list[npt.NDArray] = []
        self._pending_rows = 0

    def add(self, keys: npt.NDArray) -> None:
        if len(keys):
            self._pending.append(keys.astype(self.dtype, copy=False))
            self._pending_rows += len(keys)
            if self._pending_rows > max(len(self.keys), 65_536):
                self.compact()

    def merge(self, other: ByteSet) -> None:
        other.compact()
        self.add(other.keys)

    def compact(self) -> None:
        """Fold the pending keys in: sort only them, then insert the new ones into place."""
        if not self._pending:
            return
        pending = sorted_unique(np.concatenate(self._pending))
        self._pending, self._pending_rows = [], 0
        if not len(self.keys):
            self.keys = pending
            return
        position = np.searchsorted(self.keys, pending)
        present = self.keys[np.minimum(position, len(self.keys) - 1)] == pending
        self.keys = np.insert(self.keys, position[~present], pending[~present])

    def count_prefix(self, prefix: bytes) -> int:
        self.compact()
        lo, hi = prefix_range(self.keys, prefix)
        return hi - lo

    def drop_prefix(self, prefix: bytes) -> None:
        self.compact()
        lo, hi = prefix_range(self.keys, prefix)
        self.keys = np.concatenate([self.keys[:lo], self.keys[hi:]])

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + sum(p.nbytes for p in self._pending))

    def __getstate__(self) -> dict[str, Any]:
        self.compact()
        return {"dtype": self.dtype, "keys": self.keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dtype, self.keys = state["dtype"], state["keys"]
        self._pending, self._pending_rows = [], 0


def prefix_range(keys: npt.NDArray, prefix: bytes) -> tuple[int, int]:
    """[lo, hi) of the sorted fixed-width byte keys that start with ``prefix``."""
    pad = keys.dtype.itemsize - len(prefix)
    lo = np.searchsorted(keys, np.array([prefix + b"\x00" * pad], keys.dtype))[0]
    hi = np.searchsorted(keys, np.array([prefix + b"\xff" * pad], keys.dtype), side="right")[0]
    return int(lo), int(hi)


def concat_bytes(*parts: npt.NDArray) -> npt.NDArray:
    """Row-wise concatenation of fixed-width byte columns (e.g. S16 + S2 → S18)."""
    widths = [p.dtype.itemsize for p in parts]
    out = np.empty((len(parts[0]), sum(widths)), np.uint8)
    offset = 0
    for part, width in zip(parts, widths, strict=True):
        out[:, offset:offset + width] = np.ascontiguousarray(part).view(np.uint8).reshape(-1, width)
        offset += width
    return out.view(f"S{sum(widths)}").reshape(-1)


class ExactHosts:
    """Exact statistics of watched hosts, keyed by their 16-byte addresses."""

    def __init__(self) -> None:
        self.sums = KeyedSums("S16", WIDTH)
        self.partners = ByteSet(32)  # host + partner
        self.dst_ports = ByteSet(18)  # host + destination port of the flows it sent
        self.ports = KeyedSums("S18", 3)  # host + port: flows, packets, bytes

    def update(self, rows: Rows, sides: Sides) -> None:
        """Pre-aggregate the batch on 64-bit keys, then add its few distinct keys as bytes."""
        if not len(sides.rows):
            return
        r = sides.rows
        order, starts, ids = sides.group()
        first = order[starts]
        hosts = join_addresses(sides.host_hi[first], sides.host_lo[first])
        self.sums.add(hosts, sides.sums(rows, len(starts), ids))
        # (host, port): flows, packets, bytes of all its flows; distinct ports of the flows it sent.
        keys = (ids.astype(np.uint64) << np.uint64(16)) | np.asarray(rows.dst_port, np.uint64)[r]
        metrics = np.stack([np.asarray(rows.flows, np.uint64)[r], rows.packets[r], rows.bytes[r]], axis=1)
        port_keys, port_sums = group_sum(keys, metrics)
        self.ports.add(self._host_port(hosts, port_keys), port_sums)
        self.dst_ports.add(self._host_port(hosts, sorted_unique(keys[: sides.sent])))
        # (host, partner): rows sorted by host then partner hash; identical neighbours dropped.
        pairs = np.lexsort((sides.partner_hash, ids))
        p_ids, p_hi, p_lo = ids[pairs], sides.partner_hi[pairs], sides.partner_lo[pairs]
        distinct = np.r_[True, (p_ids[1:] != p_ids[:-1]) | (p_hi[1:] != p_hi[:-1]) | (p_lo[1:] != p_lo[:-1])]
        self.partners.add(
            concat_bytes(hosts[p_ids[distinct]], join_addresses(p_hi[distinct], p_lo[distinct]))
        )

    @staticmethod
    def _host_port(hosts: npt.NDArray, keys: U64) -> npt.NDArray:
        """S18 keys (host address, big-endian port) from ``group id << 16 | port`` keys."""
        ports = (keys & np.uint64(0xFFFF)).astype(">u2").view("S2")
        return concat_bytes(hosts[(keys >> np.uint64(16)).astype(np.int64)], ports)

    def merge(self, other: ExactHosts) -> None:
        self.sums.merge(other.sums)
        self.partners.merge(other.partners)
        self.dst_ports.merge(other.dst_ports)
        self.ports.merge(other.ports)

    def compact(self) -> None:
        self.sums.compact()
        self.partners.compact()
        self.dst_ports.compact()
        self.ports.compact()

    def has(self, host: bytes) -> bool:
        return self.sums.get(host) is not None

    def drop(self, host: bytes) -> None:
        for table in (self.sums, self.ports):
            table.compact()
            lo, hi = prefix_range(table.keys, host)
            table.keys = np.concatenate([table.keys[:lo], table.keys[hi:]])
            table.sums = np.concatenate([table.sums[:lo], table.sums[hi:]])
        self.partners.drop_prefix(host)
        self.dst_ports.drop_prefix(host)

    def describe(self, host: bytes) -> dict[str, Any]:
        found = self.sums.get(host)
        sums = [0] * WIDTH if found is None else [int(v) for v in found]
        self.ports.compact()
        keys = self.ports.keys
        lo, hi = prefix_range(keys, host)
        raw = np.ascontiguousarray(keys[lo:hi]).view(np.uint8).reshape(-1, 18)
        port_numbers = raw[:, 16].astype(np.int64) << 8 | raw[:, 17]
        metrics = self.ports.sums[lo:hi]
        order = np.lexsort((port_numbers, -metrics[:, 0].astype(np.int64)))[:HOST_TOP_PORTS]
        top = [
            {"port": int(port_numbers[i]), "flows": int(metrics[i, 0]), "packets": int(metrics[i, 1]),
             "bytes": int(metrics[i, 2])}
            for i in order
        ]
        return host_json(
            address_text(host), True, sums, self.partners.count_prefix(host), self.dst_ports.count_prefix(host), top
        )

    @property
    def nbytes(self) -> int:
        tables = (self.sums, self.ports)
        return sum(int(t.keys.nbytes + t.sums.nbytes) for t in tables) + self.partners.nbytes + self.dst_ports.nbytes

    def __getstate__(self) -> dict[str, Any]:
        self.compact()
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
