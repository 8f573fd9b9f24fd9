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

Layout (local hosts: ``localhosts``; watched hosts: ``exacthosts``)
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
    A ``LocalHosts`` part never changes once a ``HostState`` holds it: folding builds a new
    part (whose arrays are new, or shared with the old part and never written in place; see
    ``sketch``). So merging a window into its parent hands over its parts without copying them,
    and ``HostState.snapshot`` is a copy of a few references: the engine takes snapshots under
    its lock and reads and pickles them on another thread. To fold a window's queue without a
    second copy of the window, the engine lends its parts to the folding thread instead
    (``HostState.lend`` / ``fold_lent``): updates only queue until they come back.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flowscope.aggregate.exacthosts import ByteSet, ExactHosts
from flowscope.aggregate.hostaddr import address_bytes, compile_networks, configured_hosts, halves, host_set
from flowscope.aggregate.hostrows import (
    COLUMNS,
    COMPACT_MIN,
    FLAG_NAMES,
    HOST_TOP_PORTS,
    METRICS,
    RESULT_METRICS,
    TOP_PORT_SLOTS,
    BatchColumns,
    Sides,
    host_json,
)
from flowscope.aggregate.localhosts import LocalHosts
from flowscope.aggregate.sketch import hash_halves
from flowscope.aggregate.stats import StatsSpec

if TYPE_CHECKING:  # state.py holds a HostState: import Rows for typing only (no cycle)
    from flowscope.aggregate.state import Rows

__all__ = [
    "COLUMNS", "COMPACT_MIN", "FLAG_NAMES", "HOST_TOP_PORTS", "METRICS", "RESULT_METRICS", "TOP_PORT_SLOTS",
    "HostState", "LentParts", "address_bytes", "compile_networks", "host_json",
]

# The classes' former names here: checkpoints written before they moved refer to them.
_LocalHosts = LocalHosts
_ExactHosts = ExactHosts
_ByteSet = ByteSet


@dataclass(slots=True)
class LentParts:
    """What ``HostState.lend`` hands to the thread that folds it."""

    main: LocalHosts
    queue: list[LocalHosts]
    exact: ExactHosts


class HostState:
    """Host statistics of one window: mergeable, picklable, updated per batch of ``Rows``."""

    def __init__(
        self, watched: Iterable[str] = (), unwatched: Iterable[str] = (), compact_min: int = COMPACT_MIN
    ) -> None:
        """``watched`` / ``unwatched``: run-time changes to the configured list already in effect
        (as the engine's API made them) for a window opened after them."""
        self.compact_min = compact_min  # entries the queue may hold before it is folded in
        # Deferred folding: the queue is folded by the engine's background thread (``lend``,
        # ``fold_lent``), and here only past 4 × the usual bound (a backstop).
        self.deferred = False
        self._returned = threading.Event()  # cleared while the main part is lent (``lend``)
        self._returned.set()
        self._main = LocalHosts()
        self._pending: list[LocalHosts] = []  # partial states not yet folded into main
        self._pending_size = 0
        self._exact = ExactHosts()
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
        return sorted((configured_hosts(spec.watched_hosts) | self._added) - self._removed)

    # ------------------------------------------------------------------ update
    def update(self, rows: Rows, spec: StatsSpec) -> None:
        if not len(rows):
            return
        networks = compile_networks(spec.local_networks)
        watched = self.watched(spec)
        if networks.empty and not watched:
            return
        columns = BatchColumns.of(rows)
        if not networks.empty:
            src_local = networks.contains(columns.src_hi, columns.src_lo)
            dst_local = networks.contains(columns.dst_hi, columns.dst_lo)
            if src_local.any() or dst_local.any():
                chunk = LocalHosts.from_sides(rows, Sides.of(columns, src_local, dst_local))
                self._fold(chunk)
        if watched:
            hosts = host_set(tuple(watched))
            src_watched = hosts.contains(columns.src_hash, columns.src_hi, columns.src_lo)
            dst_watched = hosts.contains(columns.dst_hash, columns.dst_hi, columns.dst_lo)
            if src_watched.any() or dst_watched.any():
                self._exact.update(rows, Sides.of(columns, src_watched, dst_watched))

    def _fold(self, part: LocalHosts) -> None:
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
            combined = pending[0] if len(pending) == 1 else LocalHosts.combine(pending)
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

    def _view(self, main: LocalHosts, pending: list[LocalHosts], exact: ExactHosts) -> HostState:
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

    def wait_returned(self, timeout_s: float | None = None) -> bool:
        """Wait until lent parts are back (at once if none are lent); False on timeout."""
        return self._returned.wait(timeout_s)

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
        self._main, self._pending, self._pending_size = LocalHosts(), [], 0
        return lent

    def fold_lent(self, lent: LentParts) -> HostState:
        """Fold what ``lend`` handed over and give it back; returns a snapshot of what was lent
        (the state as it was at ``lend``, folded) for reading.

        The main part is folded in place: each of its arrays is replaced in turn, so the old
        ones are freed as it goes (unless a snapshot still holds them). The price: should the
        fold fail half-way (out of memory), the old main part is lost, not restored; the queued
        parts are put back."""
        main, queue, exact = lent.main, [p for p in lent.queue if p.count], lent.exact
        lent.main, lent.queue = LocalHosts(), []  # no reference left but ours
        folded = LocalHosts()
        try:
            if not queue:
                folded = main
            elif not main.count:
                folded = queue[0] if len(queue) == 1 else LocalHosts.combine(queue)
            else:
                combined = queue[0] if len(queue) == 1 else LocalHosts.combine(queue)
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
        """The non-empty parts held, main first (``merge`` hands over exactly these)."""
        return tuple(p for p in (self._main, *self._pending) if p.count)

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
        hi, lo = halves(key)
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
