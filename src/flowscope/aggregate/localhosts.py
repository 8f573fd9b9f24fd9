"""Local hosts: sketch-based statistics of every host in the local networks, by stable id.

Hosts get integer ids in the order they are first seen; the per-host sums are columns indexed by
id, the partner sets, destination-port sets and top ports are keyed by id (``sketch.SketchSet``,
``topcounts.TopCounts``, split into blocks of ids by ``idblocks`` so that a fold rebuilds one block
at a time). A hash index (sorted 64-bit hashes of the addresses, verified against the
addresses) maps an address to its id. A ``LocalHosts`` never changes once a ``HostState`` holds
it except through ``absorb`` on a ``shallow`` copy, which replaces arrays and never writes into
them: so parts can be shared by snapshots and merged windows without copies.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.hostrows import (
    COLUMNS,
    FLAG_NAMES,
    HOST_TOP_PORTS,
    METRICS,
    TOP_PORT_SLOTS,
    WIDTH,
    Sides,
    host_json,
    host_order,
    sum_by,
)
from flowscope.aggregate.idblocks import BlockedSets, BlockedTopCounts
from flowscope.aggregate.sketch import BITMAP16, HLL, I64, U64, SketchSet, hash_values, join_addresses
from flowscope.aggregate.topcounts import TopCounts
from flowscope.model import address_text

if TYPE_CHECKING:
    from flowscope.aggregate.state import Rows

Column = npt.NDArray[np.unsignedinteger[Any]]

# Flow counts (sent, received, per TCP flag) are held in 32 bits, the other sums in 64: a host
# would need 1.2M flows/s for an hour to pass 2**32 - 1, where they saturate instead of wrapping.
# With a million hosts that is 38 MiB less per window.
NARROW_COLUMNS = frozenset(c for c, name in enumerate(COLUMNS) if name.startswith("flows_") or name in FLAG_NAMES)
_MAX32 = np.uint64((1 << 32) - 1)


def stored_column(column: int, values: U64) -> Column:
    """``values`` (uint64 sums of column number ``column``) in the width the column is held in."""
    if column in NARROW_COLUMNS:
        return np.minimum(values, _MAX32).astype(np.uint32)
    return np.ascontiguousarray(values, np.uint64)


class LocalHosts:
    """Sketch-based statistics of local hosts, keyed by stable ids (first-seen order)."""

    def __init__(self) -> None:
        self.hi: U64 = np.empty(0, np.uint64)  # address halves by id
        self.lo: U64 = np.empty(0, np.uint64)
        self.hashes: U64 = np.empty(0, np.uint64)  # address hashes by id
        self.index_hashes: U64 = np.empty(0, np.uint64)  # sorted hashes ...
        self.index_ids: I64 = np.empty(0, np.int64)  # ... and their ids
        self.sums: list[Column] = [stored_column(c, np.empty(0, np.uint64)) for c in range(WIDTH)]
        self.partners = BlockedSets(HLL)
        self.dst_ports = BlockedSets(BITMAP16)
        self.ports = BlockedTopCounts(TOP_PORT_SLOTS)

    @property
    def count(self) -> int:
        return len(self.hi)

    @property
    def size(self) -> int:
        """Entries held: what folding this state into another costs."""
        return self.count + self.partners.entries + self.dst_ports.entries + self.ports.entries

    @property
    def nbytes(self) -> int:
        arrays = (self.hi, self.lo, self.hashes, self.index_hashes, self.index_ids, *self.sums)
        return sum(a.nbytes for a in arrays) + self.partners.nbytes + self.dst_ports.nbytes + self.ports.nbytes

    @classmethod
    def from_sides(cls, rows: Rows, sides: Sides) -> LocalHosts:
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
        result.sums = [stored_column(c, sums[:, c]) for c in range(WIDTH)]
        result.partners = BlockedSets.from_pairs(HLL, ids, hash_values(sides.partner_hash))
        sent = slice(0, sides.sent)
        result.dst_ports = BlockedSets.from_pairs(BITMAP16, ids[sent], rows.dst_port[sides.rows[sent]])
        result.ports = BlockedTopCounts.from_items(
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

    def absorb(self, other: LocalHosts) -> None:
        """Add ``other``'s statistics into this state (``other`` is left unchanged)."""
        if not other.count:
            return
        before = self.count
        ids = self._ids_for(other.hashes, other.hi, other.lo)
        grow = self.count - before
        for c in range(WIDTH):
            # A new column, never an update in place: the old one may be shared with a snapshot.
            old = self.sums[c]
            column = np.concatenate([old, np.zeros(grow, old.dtype)]) if grow else old.copy()
            if column.dtype == np.uint64:
                column[ids] += other.sums[c]
            else:  # saturating (see NARROW_COLUMNS)
                column[ids] = np.minimum(column[ids].astype(np.uint64) + other.sums[c], _MAX32)
            self.sums[c] = column
        self.partners.absorb(other.partners, ids)
        self.dst_ports.absorb(other.dst_ports, ids)
        self.ports.absorb(other.ports, ids)

    def absorbed(self, other: LocalHosts) -> LocalHosts:
        """A new part holding this one plus ``other``; neither is changed."""
        result = self.shallow()
        result.absorb(other)
        return result

    def shallow(self) -> LocalHosts:
        """A copy sharing the arrays (``absorb`` replaces them, never writes into them)."""
        result = LocalHosts()
        result.__dict__.update(self.__dict__)
        result.sums = list(self.sums)
        result.partners, result.dst_ports, result.ports = (
            self.partners.shallow(), self.dst_ports.shallow(), self.ports.shallow()
        )
        return result

    def copy(self) -> LocalHosts:
        result = LocalHosts()
        for name in ("hi", "lo", "hashes", "index_hashes", "index_ids"):
            setattr(result, name, getattr(self, name).copy())
        result.sums = [column.copy() for column in self.sums]
        result.partners, result.dst_ports, result.ports = self.partners.copy(), self.dst_ports.copy(), self.ports.copy()
        return result

    @classmethod
    def combine(cls, parts: list[LocalHosts]) -> LocalHosts:
        """The sum of many partial states at once: one sort per structure (ids in hash order)."""
        parts = [p for p in parts if p.count]
        result = cls()
        if not parts:
            return result
        hashes = np.concatenate([p.hashes for p in parts])
        hi = np.concatenate([p.hi for p in parts])
        lo = np.concatenate([p.lo for p in parts])
        order = host_order(hashes, hi, lo)
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
        result.sums = [
            stored_column(c, sum_by(ids, np.concatenate([p.sums[c] for p in parts]), groups)) for c in range(WIDTH)
        ]
        result.partners = BlockedSets.combine(HLL, [p.partners for p in parts], maps)
        result.dst_ports = BlockedSets.combine(BITMAP16, [p.dst_ports for p in parts], maps)
        result.ports = BlockedTopCounts.combine(TOP_PORT_SLOTS, [p.ports for p in parts], maps)
        return result

    # ----------------------------------------------------------------- reading
    def metric(self, name: str) -> npt.NDArray[np.float64] | U64:
        if name == "partners":
            return np.rint(self.partners.estimate_all(self.count))
        if name == "dst_ports":
            return self.dst_ports.estimate_all(self.count)
        columns = METRICS[name]
        total = self.sums[columns[0]].astype(np.uint64)
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
            result.append(host_json(texts[i], False, sums, round(float(partners[i])), int(dst_ports[i]), ports))
        return result

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["index_hashes"], state["index_ids"]  # rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before the sketches were split into blocks hold them whole.
        for name in ("partners", "dst_ports"):
            if isinstance(state[name], SketchSet):
                state[name] = BlockedSets.of(state[name])
        if isinstance(state["ports"], TopCounts):
            state["ports"] = BlockedTopCounts.of(state["ports"])
        self.__dict__.update(state)
        self.index_ids = np.argsort(self.hashes, kind="stable").astype(np.int64)
        self.index_hashes = self.hashes[self.index_ids]
