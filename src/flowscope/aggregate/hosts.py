"""Host statistics: a traffic profile per host, as a mergeable window state.

Which hosts
    *Watched hosts* (``StatsSpec.watched_hosts``, plus ``HostState.watch`` at run time, minus
    ``HostState.unwatch``) are counted exactly. Every host inside ``StatsSpec.local_networks``
    (IPv4 and IPv6 CIDRs) is a *local host*, counted with sketches for its distinct counts and
    its top ports. A watched host inside a local network is both. A flow counts for each of its
    two endpoints that is tracked: for its source as *sent*, for its destination as *received*.

What each host gets (the JSON of one host, ``HostState.lookup``)
    ``sent`` / ``received``: flows, packets, bytes of the flows it is the source / destination of.
    ``partners``: distinct addresses on the other side of its flows (both directions).
    ``dst_ports``: distinct destination ports of the flows it *sent* (the ports it contacted
      on other hosts; high for a host that scans ports). Exact for every host (a sparse set, or
      a 65 536-bit bitmap once a host has contacted more than 1 024 ports).
    ``top_ports``: its most used ports by flows: the destination port of each of its flows, in
      either direction — for a flow it sends, the port on the far side (the service it uses); for
      a flow it receives, its own port (the service it offers). With unidirectional exports the
      reply flows add the clients' ephemeral ports, exactly as nfdump's ``-s dstport`` does.
      Ties go to the lower port. Watched hosts: exact flows, packets, bytes per port. Local
      hosts: flows only, from a Misra–Gries summary of 8 ports per host; each count is a lower
      bound, short by at most (the host's flows) / 9.
    ``tcp_flags``: for each of FIN SYN RST PSH ACK URG ECE CWR, the number of its TCP flows with
      that flag set (the cumulative flags of the flow record).
    ``mean_duration_ms``: mean of (end − start) over its flows (``None`` without flows).
    ``exact``: true for watched hosts (every number exact). False for local hosts: their sums,
      flags, durations and ``dst_ports`` are exact too, but ``partners`` is exact only up to
      8 192 partners and a HyperLogLog estimate beyond (0.41 % standard error, see ``sketch``),
      and ``top_ports`` counts are Misra–Gries lower bounds.

With the ``spread`` time base a flow's row appears in several windows; its flow count, duration
and flags count once (in the row that counts the flow), its packets and bytes are shared, and its
partner and ports count in every window it covers.

Layout (local hosts)
    Hosts get stable integer ids in the order they are first seen; the per-host sums are
    columns indexed by id, the partner sets, destination-port sets and top ports are keyed by
    id (``sketch.SketchSet``, ``sketch.TopCounts``). A hash index (sorted 64-bit hashes of the
    addresses, verified against the addresses) maps an address to its id. Batches are grouped
    with one sort of 64-bit hashes into a partial state that is queued; the queue is combined
    (one sort per structure) and folded into the main state when it holds a quarter of the
    main state's entries (at least ``COMPACT_MIN``): an update costs O(batch), and the
    amortized cost of folding stays O(log) per entry, never a pass over the whole window per
    batch.

Sharing (snapshots, merges)
    A ``_LocalHosts`` part never changes once a ``HostState`` holds it: folding builds a new
    part (whose arrays are new, or shared with the old part and never written in place; see
    ``sketch``). So merging a window into its parent hands over its parts without copying them,
    and ``HostState.snapshot`` is a copy of a few references: the engine takes snapshots under
    its lock and folds, reads and pickles them on another thread. A snapshot's folded part can
    then replace the parts it came from in the live state (``HostState.adopt``).
"""

from __future__ import annotations

import copy
import ipaddress
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.keyed import KeyedSums, group_sum
from flowscope.aggregate.sketch import (
    BITMAP16,
    HLL,
    I64,
    U64,
    SketchSet,
    TopCounts,
    hash_halves,
    hash_values,
    join_addresses,
    sorted_unique,
    split_addresses,
)
from flowscope.aggregate.stats import TCP, StatsSpec
from flowscope.errors import ConfigError
from flowscope.model import IPV4_MAPPED_PREFIX, address_text

if TYPE_CHECKING:  # state.py holds a HostState: import Rows for typing only (no cycle)
    from flowscope.aggregate.state import Rows

FLAG_NAMES: tuple[str, ...] = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
COLUMNS: tuple[str, ...] = (
    "flows_sent", "packets_sent", "bytes_sent",
    "flows_received", "packets_received", "bytes_received",
    "duration_ms", *FLAG_NAMES,
)
_WIDTH = len(COLUMNS)
_DURATION = COLUMNS.index("duration_ms")
_FIRST_FLAG = COLUMNS.index("FIN")

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

_LOW64 = (1 << 64) - 1


# ------------------------------------------------------------------------------- addresses


def address_bytes(text: str) -> bytes:
    """An address as the 16 bytes of the flow columns (IPv4 as IPv4-mapped IPv6)."""
    try:
        parsed = ipaddress.ip_address(text.strip())
    except ValueError as error:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from error
    if parsed.version == 4:
        return IPV4_MAPPED_PREFIX + parsed.packed
    return parsed.packed


def _halves(raw: bytes) -> tuple[int, int]:
    value = int.from_bytes(raw, "big")
    return value >> 64, value & _LOW64


@dataclass(frozen=True, slots=True)
class Networks:
    """CIDR membership over 128-bit addresses, grouped by prefix length.

    For each distinct prefix length, the masked address's hash is looked up among the
    networks' hashes (one ``searchsorted``), then verified exactly: the cost is one pass per
    prefix length, not per network.
    """

    groups: tuple[tuple[int, int, U64, U64, U64], ...]  # mask hi, mask lo, hashes, net hi, net lo

    @property
    def empty(self) -> bool:
        return not self.groups

    def contains(self, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        inside = np.zeros(len(hi), np.bool_)
        for mask_hi, mask_lo, hashes, net_hi, net_lo in self.groups:
            masked_hi = hi & np.uint64(mask_hi)
            masked_lo = lo & np.uint64(mask_lo)
            if len(hashes) == 1:
                inside |= (masked_hi == net_hi[0]) & (masked_lo == net_lo[0])
                continue
            keys = hash_halves(masked_hi, masked_lo)
            at = np.minimum(np.searchsorted(hashes, keys), len(hashes) - 1)
            inside |= (hashes[at] == keys) & (net_hi[at] == masked_hi) & (net_lo[at] == masked_lo)
        return inside


@lru_cache(maxsize=64)
def compile_networks(texts: tuple[str, ...]) -> Networks:
    """Parse CIDRs (``10.0.0.0/8``, ``2001:db8::/32``; a bare address is a /32 or /128)."""
    by_length: dict[int, set[int]] = {}
    for text in texts:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as error:
            raise ConfigError(f"stats.local_networks: {text!r} is not an IPv4 or IPv6 network") from error
        value = int(network.network_address)
        length = network.prefixlen
        if network.version == 4:
            value |= 0xFFFF << 32
            length += 96
        by_length.setdefault(length, set()).add(value)
    # Drop networks inside a shorter one: they add nothing.
    kept: dict[int, list[int]] = {}
    for length in sorted(by_length):
        for value in sorted(by_length[length]):
            if not any(_mask(shorter) & value in kept[shorter] for shorter in kept):
                kept.setdefault(length, []).append(value)
    groups = []
    for length, values in kept.items():
        mask = _mask(length)
        hi = np.array([v >> 64 for v in values], np.uint64)
        lo = np.array([v & _LOW64 for v in values], np.uint64)
        hashes = hash_halves(hi, lo)
        order = np.argsort(hashes)
        groups.append((mask >> 64, mask & _LOW64, hashes[order], hi[order], lo[order]))
    return Networks(tuple(groups))


def _mask(length: int) -> int:
    return ((1 << length) - 1) << (128 - length)


@dataclass(frozen=True, slots=True)
class HostSet:
    """A small exact set of addresses, matched against columns by hash then verified."""

    hashes: U64
    hi: U64
    lo: U64

    @property
    def empty(self) -> bool:
        return not len(self.hashes)

    def contains(self, hashes: U64, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        if self.empty:
            return np.zeros(len(hashes), np.bool_)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        # Equal hashes of distinct addresses (never seen in practice) would shadow one another
        # here; the verification keeps the answer exact either way for addresses not in the set.
        result: npt.NDArray[np.bool_] = (self.hashes[at] == hashes) & (self.hi[at] == hi) & (self.lo[at] == lo)
        return result


@lru_cache(maxsize=64)
def _host_set(addresses: tuple[bytes, ...]) -> HostSet:
    hi = np.array([_halves(a)[0] for a in addresses], np.uint64)
    lo = np.array([_halves(a)[1] for a in addresses], np.uint64)
    hashes = hash_halves(hi, lo)
    order = np.argsort(hashes)
    return HostSet(hashes[order], hi[order], lo[order])


@lru_cache(maxsize=64)
def _configured(texts: tuple[str, ...]) -> frozenset[bytes]:
    result = set()
    for text in texts:
        try:
            result.add(address_bytes(text))
        except ValueError as error:
            raise ConfigError(f"stats.watched_hosts: {error}") from error
    return frozenset(result)


# ----------------------------------------------------------------------------------- sides


@dataclass(slots=True)
class _Columns:
    """Split and hashed address columns of one batch."""

    src_hi: U64
    src_lo: U64
    src_hash: U64
    dst_hi: U64
    dst_lo: U64
    dst_hash: U64

    @classmethod
    def of(cls, rows: Rows) -> _Columns:
        src_hi, src_lo = split_addresses(rows.src_addr)
        dst_hi, dst_lo = split_addresses(rows.dst_addr)
        return cls(src_hi, src_lo, hash_halves(src_hi, src_lo), dst_hi, dst_lo, hash_halves(dst_hi, dst_lo))


@dataclass(slots=True)
class _Sides:
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
    def of(cls, columns: _Columns, src_tracked: npt.NDArray[np.bool_], dst_tracked: npt.NDArray[np.bool_]) -> _Sides:
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
        order = _host_order(self.host_hash, self.host_hi, self.host_lo)
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
        out = np.empty((groups, _WIDTH), np.uint64)
        sent, received = ids[:k], ids[k:]
        out[:, 0] = _sum_by(sent, flows[:k], groups)
        out[:, 1] = _sum_by(sent, rows.packets[r[:k]], groups)
        out[:, 2] = _sum_by(sent, rows.bytes[r[:k]], groups)
        out[:, 3] = _sum_by(received, flows[k:], groups)
        out[:, 4] = _sum_by(received, rows.packets[r[k:]], groups)
        out[:, 5] = _sum_by(received, rows.bytes[r[k:]], groups)
        out[:, _DURATION] = _sum_by(ids, np.maximum(rows.duration_ms[r], 0).astype(np.uint64) * flows, groups)
        tcp_flows = np.where(rows.protocol[r] == TCP, flows, 0).astype(np.float64)  # 0/1 (or small) counts
        flags = rows.tcp_flags[r]
        for bit in range(len(FLAG_NAMES)):
            weights = tcp_flows * ((flags >> bit) & 1)
            out[:, _FIRST_FLAG + bit] = np.bincount(ids, weights=weights, minlength=groups).astype(np.uint64)
        return out


def _sum_by(ids: I64, values: npt.NDArray[np.unsignedinteger], groups: int) -> U64:
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


def _host_order(hashes: U64, hi: U64, lo: U64) -> I64:
    """An order that groups equal addresses: by hash, or by (hash, address) if hashes collide."""
    order = np.argsort(hashes)
    ordered = hashes[order]
    same = ordered[1:] == ordered[:-1]
    if same.any():
        o_hi, o_lo = hi[order], lo[order]
        if (same & ((o_hi[1:] != o_hi[:-1]) | (o_lo[1:] != o_lo[:-1]))).any():
            order = np.lexsort((lo, hi, hashes))
    return order.astype(np.int64)


# --------------------------------------------------------------------------- local hosts


class _LocalHosts:
    """Sketch-based statistics of local hosts, keyed by stable ids (first-seen order)."""

    def __init__(self) -> None:
        self.hi: U64 = np.empty(0, np.uint64)  # address halves by id
        self.lo: U64 = np.empty(0, np.uint64)
        self.hashes: U64 = np.empty(0, np.uint64)  # address hashes by id
        self.index_hashes: U64 = np.empty(0, np.uint64)  # sorted hashes ...
        self.index_ids: I64 = np.empty(0, np.int64)  # ... and their ids
        self.sums: list[U64] = [np.empty(0, np.uint64) for _ in COLUMNS]
        self.partners = SketchSet(HLL)
        self.dst_ports = SketchSet(BITMAP16)
        self.ports = TopCounts(TOP_PORT_SLOTS)

    @property
    def count(self) -> int:
        return len(self.hi)

    @property
    def size(self) -> int:
        """Entries held: what folding this state into another costs."""
        return self.count + len(self.partners.sparse) + len(self.dst_ports.sparse) + len(self.ports.keys)

    @property
    def nbytes(self) -> int:
        arrays = (self.hi, self.lo, self.hashes, self.index_hashes, self.index_ids, *self.sums)
        return sum(a.nbytes for a in arrays) + self.partners.nbytes + self.dst_ports.nbytes + self.ports.nbytes

    @classmethod
    def from_sides(cls, rows: Rows, sides: _Sides) -> _LocalHosts:
        """The statistics of one batch's side rows, ids in hash order."""
        result = cls()
        if not len(sides.rows):
            return result
        order, starts, ids = sides.group()
        sums = sides.sums(rows, len(starts), ids)
        first = order[starts]
        result.hi, result.lo, result.hashes = sides.host_hi[first], sides.host_lo[first], sides.host_hash[first]
        result.index_hashes = result.hashes
        result.index_ids = np.arange(len(starts), dtype=np.int64)
        result.sums = [np.ascontiguousarray(sums[:, c]) for c in range(_WIDTH)]
        result.partners = SketchSet.from_pairs(HLL, ids, hash_values(sides.partner_hash))
        sent = slice(0, sides.sent)
        result.dst_ports = SketchSet.from_pairs(BITMAP16, ids[sent], rows.dst_port[sides.rows[sent]])
        result.ports = TopCounts.from_items(
            TOP_PORT_SLOTS, ids, rows.dst_port[sides.rows], np.asarray(rows.flows, np.uint64)[sides.rows]
        )
        return result

    def find(self, hashes: U64, hi: U64, lo: U64) -> I64:
        """Ids of the given addresses, -1 where unknown."""
        found = np.full(len(hashes), -1, np.int64)
        if not self.count or not len(hashes):
            return found
        position = np.searchsorted(self.index_hashes, hashes)
        at = np.minimum(position, self.count - 1)
        candidate = self.index_ids[at]
        same_hash = self.index_hashes[at] == hashes
        same = same_hash & (self.hi[candidate] == hi) & (self.lo[candidate] == lo)
        found[same] = candidate[same]
        # A hash shared by two addresses: look through the run of equal hashes. 64-bit hashes
        # of a million hosts collide with probability ~3e-8, so this loop practically never runs.
        for i in np.flatnonzero(same_hash & ~same).tolist():
            j = int(position[i])
            while j < self.count and self.index_hashes[j] == hashes[i]:
                ident = int(self.index_ids[j])
                if self.hi[ident] == hi[i] and self.lo[ident] == lo[i]:
                    found[i] = ident
                    break
                j += 1
        return found

    def _ids_for(self, hashes: U64, hi: U64, lo: U64) -> I64:
        """Ids of the given distinct addresses, adding the unknown ones."""
        ids = self.find(hashes, hi, lo)
        new = np.flatnonzero(ids < 0)
        if len(new):
            new_ids = np.arange(self.count, self.count + len(new), dtype=np.int64)
            ids[new] = new_ids
            order = np.argsort(hashes[new])
            new_hashes = hashes[new][order]
            at = np.searchsorted(self.index_hashes, new_hashes)
            self.index_hashes = np.insert(self.index_hashes, at, new_hashes)
            self.index_ids = np.insert(self.index_ids, at, new_ids[order])
            self.hi = np.concatenate([self.hi, hi[new]])
            self.lo = np.concatenate([self.lo, lo[new]])
            self.hashes = np.concatenate([self.hashes, hashes[new]])
        return ids

    def absorb(self, other: _LocalHosts) -> None:
        """Add ``other``'s statistics into this state (``other`` is left unchanged)."""
        if not other.count:
            return
        before = self.count
        ids = self._ids_for(other.hashes, other.hi, other.lo)
        grow = self.count - before
        for c in range(_WIDTH):
            # A new column, never an update in place: the old one may be shared with a snapshot.
            column = np.concatenate([self.sums[c], np.zeros(grow, np.uint64)]) if grow else self.sums[c].copy()
            column[ids] += other.sums[c]
            self.sums[c] = column
        self.partners.absorb(other.partners, ids)
        self.dst_ports.absorb(other.dst_ports, ids)
        self.ports.absorb(other.ports, ids)

    def absorbed(self, other: _LocalHosts) -> _LocalHosts:
        """A new part holding this one plus ``other``; neither is changed."""
        result = self.shallow()
        result.absorb(other)
        return result

    def shallow(self) -> _LocalHosts:
        """A copy sharing the arrays (``absorb`` replaces them, never writes into them)."""
        result = _LocalHosts()
        result.__dict__.update(self.__dict__)
        result.sums = list(self.sums)
        result.partners, result.dst_ports, result.ports = (
            self.partners.shallow(), self.dst_ports.shallow(), self.ports.shallow()
        )
        return result

    def copy(self) -> _LocalHosts:
        result = _LocalHosts()
        for name in ("hi", "lo", "hashes", "index_hashes", "index_ids"):
            setattr(result, name, getattr(self, name).copy())
        result.sums = [column.copy() for column in self.sums]
        result.partners, result.dst_ports, result.ports = self.partners.copy(), self.dst_ports.copy(), self.ports.copy()
        return result

    @classmethod
    def combine(cls, parts: list[_LocalHosts]) -> _LocalHosts:
        """The sum of many partial states at once: one sort per structure (ids in hash order)."""
        parts = [p for p in parts if p.count]
        result = cls()
        if not parts:
            return result
        hashes = np.concatenate([p.hashes for p in parts])
        hi = np.concatenate([p.hi for p in parts])
        lo = np.concatenate([p.lo for p in parts])
        order = _host_order(hashes, hi, lo)
        s_hashes, s_hi, s_lo = hashes[order], hi[order], lo[order]
        new = np.r_[True, (s_hashes[1:] != s_hashes[:-1]) | (s_hi[1:] != s_hi[:-1]) | (s_lo[1:] != s_lo[:-1])]
        starts = np.flatnonzero(new)
        ids = np.empty(len(order), np.int64)
        ids[order] = np.cumsum(new) - 1
        groups = len(starts)
        result.hi, result.lo, result.hashes = s_hi[starts], s_lo[starts], s_hashes[starts]
        result.index_hashes = result.hashes
        result.index_ids = np.arange(groups, dtype=np.int64)
        bounds = np.cumsum([0, *(p.count for p in parts)])
        maps = [ids[a:b] for a, b in pairwise(bounds.tolist())]
        result.sums = [_sum_by(ids, np.concatenate([p.sums[c] for p in parts]), groups) for c in range(_WIDTH)]
        result.partners = SketchSet.combine(HLL, [p.partners for p in parts], maps)
        result.dst_ports = SketchSet.combine(BITMAP16, [p.dst_ports for p in parts], maps)
        result.ports = TopCounts.combine(TOP_PORT_SLOTS, [p.ports for p in parts], maps)
        return result

    # ----------------------------------------------------------------- reading
    def metric(self, name: str) -> npt.NDArray[np.float64] | U64:
        if name == "partners":
            return np.rint(self.partners.estimate_all(self.count))
        if name == "dst_ports":
            return self.dst_ports.estimate_all(self.count)
        columns = METRICS[name]
        total = self.sums[columns[0]].copy()
        for c in columns[1:]:
            total += self.sums[c]
        return total

    def describe(self, ids: I64) -> list[dict[str, Any]]:
        partners = self.partners.estimate(ids)
        dst_ports = self.dst_ports.estimate(ids)
        texts = [address_text(bytes(a)) for a in join_addresses(self.hi[ids], self.lo[ids])]
        result = []
        for i, ident in enumerate(ids.tolist()):
            sums = [int(column[ident]) for column in self.sums]
            ports = [{"port": port, "flows": flows} for port, flows in self.ports.top(ident, HOST_TOP_PORTS)]
            result.append(_host_json(texts[i], False, sums, round(float(partners[i])), int(dst_ports[i]), ports))
        return result

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["index_hashes"], state["index_ids"]  # rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.index_ids = np.argsort(self.hashes, kind="stable").astype(np.int64)
        self.index_hashes = self.hashes[self.index_ids]


def _host_json(
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
        "tcp_flags": {name: sums[_FIRST_FLAG + i] for i, name in enumerate(FLAG_NAMES)},
        "mean_duration_ms": sums[_DURATION] / flows if flows else None,
    }


# --------------------------------------------------------------------------- exact hosts


class _ByteSet:
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

    def merge(self, other: _ByteSet) -> None:
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
        lo, hi = _prefix_range(self.keys, prefix)
        return hi - lo

    def drop_prefix(self, prefix: bytes) -> None:
        self.compact()
        lo, hi = _prefix_range(self.keys, prefix)
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


def _prefix_range(keys: npt.NDArray, prefix: bytes) -> tuple[int, int]:
    """[lo, hi) of the sorted fixed-width byte keys that start with ``prefix``."""
    pad = keys.dtype.itemsize - len(prefix)
    lo = np.searchsorted(keys, np.array([prefix + b"\x00" * pad], keys.dtype))[0]
    hi = np.searchsorted(keys, np.array([prefix + b"\xff" * pad], keys.dtype), side="right")[0]
    return int(lo), int(hi)


def _concat_bytes(*parts: npt.NDArray) -> npt.NDArray:
    """Row-wise concatenation of fixed-width byte columns (e.g. S16 + S2 → S18)."""
    widths = [p.dtype.itemsize for p in parts]
    out = np.empty((len(parts[0]), sum(widths)), np.uint8)
    offset = 0
    for part, width in zip(parts, widths, strict=True):
        out[:, offset:offset + width] = np.ascontiguousarray(part).view(np.uint8).reshape(-1, width)
        offset += width
    return out.view(f"S{sum(widths)}").reshape(-1)


class _ExactHosts:
    """Exact statistics of watched hosts, keyed by their 16-byte addresses."""

    def __init__(self) -> None:
        self.sums = KeyedSums("S16", _WIDTH)
        self.partners = _ByteSet(32)  # host + partner
        self.dst_ports = _ByteSet(18)  # host + destination port of the flows it sent
        self.ports = KeyedSums("S18", 3)  # host + port: flows, packets, bytes

    def update(self, rows: Rows, sides: _Sides) -> None:
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
            _concat_bytes(hosts[p_ids[distinct]], join_addresses(p_hi[distinct], p_lo[distinct]))
        )

    @staticmethod
    def _host_port(hosts: npt.NDArray, keys: U64) -> npt.NDArray:
        """S18 keys (host address, big-endian port) from ``group id << 16 | port`` keys."""
        ports = (keys & np.uint64(0xFFFF)).astype(">u2").view("S2")
        return _concat_bytes(hosts[(keys >> np.uint64(16)).astype(np.int64)], ports)

    def merge(self, other: _ExactHosts) -> None:
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
            lo, hi = _prefix_range(table.keys, host)
            table.keys = np.concatenate([table.keys[:lo], table.keys[hi:]])
            table.sums = np.concatenate([table.sums[:lo], table.sums[hi:]])
        self.partners.drop_prefix(host)
        self.dst_ports.drop_prefix(host)

    def describe(self, host: bytes) -> dict[str, Any]:
        found = self.sums.get(host)
        sums = [0] * _WIDTH if found is None else [int(v) for v in found]
        self.ports.compact()
        keys = self.ports.keys
        lo, hi = _prefix_range(keys, host)
        raw = np.ascontiguousarray(keys[lo:hi]).view(np.uint8).reshape(-1, 18)
        port_numbers = raw[:, 16].astype(np.int64) << 8 | raw[:, 17]
        metrics = self.ports.sums[lo:hi]
        order = np.lexsort((port_numbers, -metrics[:, 0].astype(np.int64)))[:HOST_TOP_PORTS]
        top = [
            {"port": int(port_numbers[i]), "flows": int(metrics[i, 0]), "packets": int(metrics[i, 1]),
             "bytes": int(metrics[i, 2])}
            for i in order
        ]
        return _host_json(
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


# ------------------------------------------------------------------------------ HostState


@dataclass(slots=True)
class LentParts:
    """What ``HostState.lend`` hands to the thread that folds it."""

    main: _LocalHosts
    queue: list[_LocalHosts]
    exact: _ExactHosts


class HostState:
    """Host statistics of one window: mergeable, picklable, updated per batch of ``Rows``."""

    def __init__(
        self, watched: Iterable[str] = (), unwatched: Iterable[str] = (), compact_min: int = COMPACT_MIN
    ) -> None:
        """``watched`` / ``unwatched``: run-time changes to the configured list already in effect
        (as the engine's API made them) for a window opened after them."""
        self.compact_min = compact_min  # entries the queue may hold before it is folded in
        # Deferred folding: the queue is folded by whoever reads a snapshot (the engine's
        # background thread, see ``adopt``), and here only past 4 × the usual bound (a backstop).
        self.deferred = False
        self._returned = threading.Event()  # cleared while the main part is lent (``lend``)
        self._returned.set()
        self._main = _LocalHosts()
        self._pending: list[_LocalHosts] = []  # partial states not yet folded into main
        self._pending_size = 0
        self._exact = _ExactHosts()
        self._removed: set[bytes] = {address_bytes(a) for a in unwatched}
        self._added: set[bytes] = {address_bytes(a) for a in watched} - self._removed

    # ---------------------------------------------------------------- watching
    def watch(self, address: str) -> None:
        """Count ``address`` exactly from now on (run-time addition to the configured list)."""
        key = address_bytes(address)
        self._added.add(key)
        self._removed.discard(key)

    def unwatch(self, address: str) -> None:
        """Stop watching ``address`` (configured or added) and forget its exact statistics."""
        key = address_bytes(address)
        self._added.discard(key)
        self._removed.add(key)
        self._exact.drop(key)

    def watched(self, spec: StatsSpec) -> list[bytes]:
        """The watched hosts in effect, in address order."""
        return sorted((_configured(spec.watched_hosts) | self._added) - self._removed)

    # ------------------------------------------------------------------ update
    def update(self, rows: Rows, spec: StatsSpec) -> None:
        if not len(rows):
            return
        networks = compile_networks(spec.local_networks)
        watched = self.watched(spec)
        if networks.empty and not watched:
            return
        columns = _Columns.of(rows)
        if not networks.empty:
            src_local = networks.contains(columns.src_hi, columns.src_lo)
            dst_local = networks.contains(columns.dst_hi, columns.dst_lo)
            if src_local.any() or dst_local.any():
                chunk = _LocalHosts.from_sides(rows, _Sides.of(columns, src_local, dst_local))
                self._fold(chunk)
        if watched:
            hosts = _host_set(tuple(watched))
            src_watched = hosts.contains(columns.src_hash, columns.src_hi, columns.src_lo)
            dst_watched = hosts.contains(columns.dst_hash, columns.dst_hi, columns.dst_lo)
            if src_watched.any() or dst_watched.any():
                self._exact.update(rows, _Sides.of(columns, src_watched, dst_watched))

    def _fold(self, part: _LocalHosts) -> None:
        """Queue a private partial state; fold the queue into main once it is big enough."""
        self._pending.append(part)
        self._pending_size += part.size
        bound = max(self._main.size // 4, self.compact_min)
        if self._pending_size > (4 * bound if self.deferred else bound) and not self.lent:
            self.compact()

    def compact(self) -> None:
        """Fold pending partial states into the main tables (done before any read)."""
        self._returned.wait()
        if self._pending:
            pending = [p for p in self._pending if p.count]
            # One part is used as it is: a part never changes, so sharing it is safe.
            combined = pending[0] if len(pending) == 1 else _LocalHosts.combine(pending)
            self._pending, self._pending_size = [], 0
            if self._main.count and combined.count:
                self._main = self._main.absorbed(combined)  # a new part: the old may be shared
            elif combined.count:
                self._main = combined
        self._exact.compact()

    # ------------------------------------------------------------ snapshots
    def snapshot(self) -> HostState:
        """A copy that later updates of this state leave alone: the host parts are shared (they
        never change), the small exact part is copied."""
        self._returned.wait()
        self._exact.compact()
        return self._view(self._main, list(self._pending), copy.deepcopy(self._exact))

    def _view(self, main: _LocalHosts, pending: list[_LocalHosts], exact: _ExactHosts) -> HostState:
        result = HostState.__new__(HostState)
        result.compact_min, result.deferred = self.compact_min, False
        result._returned = threading.Event()
        result._returned.set()
        result._main, result._pending = main, pending
        result._pending_size = sum(p.size for p in result._pending)
        result._exact = exact
        result._added, result._removed = set(self._added), set(self._removed)
        return result

    # ----------------------------------------------------- folding in place
    @property
    def lent(self) -> bool:
        return not self._returned.is_set()

    def lend(self) -> LentParts:
        """Hand the main part and the queue to ``fold_lent`` (on another thread), with a copy of
        the exact part. Until it returns, updates only queue, and reads (``compact``) wait.

        Folding a snapshot instead would keep the old main part alive beside the new one (the
        live state still holds it): for the hour of a million hosts, hundreds of MB more."""
        if self.lent:
            raise RuntimeError("the main part is lent already")
        self._exact.compact()
        lent = LentParts(self._main, self._pending, copy.deepcopy(self._exact))
        self._returned.clear()
        self._main, self._pending, self._pending_size = _LocalHosts(), [], 0
        return lent

    def fold_lent(self, lent: LentParts) -> HostState:
        """Fold what ``lend`` handed over and give it back; returns a snapshot of what was lent
        (the state as it was at ``lend``, folded) for reading.

        The main part is folded in place: each of its arrays is replaced in turn, so the old
        ones are freed as it goes (unless a snapshot still holds them). The price: should the
        fold fail half-way (out of memory), the old main part is lost, not restored; the queued
        parts are put back."""
        main, queue, exact = lent.main, [p for p in lent.queue if p.count], lent.exact
        lent.main, lent.queue = _LocalHosts(), []  # no reference left but ours
        folded = _LocalHosts()
        try:
            if not queue:
                folded = main
            elif not main.count:
                folded = queue[0] if len(queue) == 1 else _LocalHosts.combine(queue)
            else:
                combined = queue[0] if len(queue) == 1 else _LocalHosts.combine(queue)
                folded = main.shallow()  # its own shell: ``main`` itself may be shared
                del main
                folded.absorb(combined)
            queue = []
        finally:
            self._main = folded
            self._pending = [*queue, *self._pending]
            self._pending_size = sum(p.size for p in self._pending)
            self._returned.set()
        return self._view(folded, [], exact)

    def parts(self) -> tuple[object, ...]:
        """The non-empty parts held (main first): what ``adopt`` matches against (``merge``
        hands over exactly these)."""
        return tuple(p for p in (self._main, *self._pending) if p.count)

    def adopt(self, parts: tuple[object, ...], folded: HostState) -> bool:
        """Replace ``parts`` (as returned by ``parts()``, consecutive here) by the main part of
        ``folded``, a compacted snapshot of exactly those parts. False if they are no longer held
        as such (folded meanwhile): nothing changes then."""
        held = [self._main, *self._pending]
        width = len(parts)
        if not width or self.lent:
            return False
        for start in range(len(held) - width + 1):
            if all(held[start + i] is part for i, part in enumerate(parts)):
                held[start:start + width] = [folded._main]
                held = [p for p in held if p.count] or [_LocalHosts()]
                self._main, self._pending = held[0], held[1:]
                self._pending_size = sum(p.size for p in self._pending)
                return True
        return False

    # ------------------------------------------------------------------- merge
    def merge(self, other: HostState) -> None:
        """Add another window's (or process's) host statistics: the union of both.

        ``other`` is left unchanged; its host parts are shared, not copied (they never change).
        """
        for part in (other._main, *other._pending):
            if part.count:
                self._fold(part)
        self._exact.merge(other._exact)
        self._added |= other._added - self._removed
        self._removed |= other._removed - self._added
        for host in self._removed:
            if self._exact.has(host):
                self._exact.drop(host)

    # ------------------------------------------------------------------ reading
    @property
    def local_hosts(self) -> int:
        self.compact()
        return self._main.count

    def lookup(self, address: str, spec: StatsSpec | None = None) -> dict[str, Any] | None:
        """One host's statistics, or None if it is neither watched nor a local host seen here.

        A watched host gets its exact statistics; whether it is watched is decided by ``spec``
        (configured hosts, plus those added, minus those removed at run time) or, without a
        spec, by the run-time list and the exact data held. Other hosts get the sketch-based
        view of local hosts.
        """
        key = address_bytes(address)
        self.compact()
        if spec is not None:
            watched = key in self.watched(spec)
        else:
            watched = key not in self._removed and (key in self._added or self._exact.has(key))
        if watched:
            return self._exact.describe(key)
        hi, lo = _halves(key)
        hi_a, lo_a = np.array([hi], np.uint64), np.array([lo], np.uint64)
        ids = self._main.find(hash_halves(hi_a, lo_a), hi_a, lo_a)
        if ids[0] < 0:
            return None
        return self._main.describe(ids)[0]

    def top(self, n: int, metric: str = "flows") -> list[dict[str, Any]]:
        """The ``n`` local hosts with the largest ``metric`` (see METRICS); ties: lower address."""
        if metric not in METRICS:
            raise ValueError(f"unknown host metric {metric!r}; one of {', '.join(METRICS)}")
        self.compact()
        main = self._main
        if n <= 0 or not main.count:
            return []
        values = main.metric(metric)
        candidates = np.flatnonzero(values > 0)
        if len(candidates) > n:
            kth = np.partition(values[candidates], len(candidates) - n)[len(candidates) - n]
            candidates = candidates[values[candidates] >= kth]
        chosen = values[candidates]
        rank = -chosen if chosen.dtype.kind == "f" else -chosen.astype(np.int64)  # sums stay below 2**63
        order = np.lexsort((main.lo[candidates], main.hi[candidates], rank))
        return main.describe(candidates[order[:n]])

    def result(
        self, spec: StatsSpec, n: int | None = None, metrics: tuple[str, ...] = RESULT_METRICS
    ) -> dict[str, Any]:
        """Watched hosts in full (address order) and the top ``n`` local hosts by each metric."""
        self.compact()
        count = spec.top_n if n is None else n
        return {
            "watched": [self._exact.describe(host) for host in self.watched(spec)],
            "local": {
                "hosts": self._main.count,
                "top": {metric: self.top(count, metric) for metric in metrics},
            },
        }

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of this state (without Python object overhead)."""
        return self._main.nbytes + sum(p.nbytes for p in self._pending) + self._exact.nbytes

    # --------------------------------------------------------------- checkpoint
    def __getstate__(self) -> dict[str, Any]:
        # The queue is saved as it is: folding it here would cost a checkpoint a full copy.
        self._returned.wait()
        self._exact.compact()
        return {
            "main": self._main, "pending": self._pending, "exact": self._exact, "added": sorted(self._added),
            "removed": sorted(self._removed), "compact_min": self.compact_min, "deferred": self.deferred,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._returned = threading.Event()
        self._returned.set()
        self._main = state["main"]
        self._pending = list(state.get("pending", []))
        self._pending_size = sum(p.size for p in self._pending)
        self.deferred = bool(state.get("deferred", False))
        self._exact = state["exact"]
        self._added = set(state["added"])
        self._removed = set(state["removed"])
        self.compact_min = state["compact_min"]
