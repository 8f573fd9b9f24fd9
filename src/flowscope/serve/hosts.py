"""Host statistics for the API: which hosts are tracked, and one host's numbers per window.

The API talks to a ``HostLookup``. ``ResultHostLookup`` implements it over what the engine already
publishes: the ``hosts`` section of stored window results (view "all")::

    "hosts": {"watched": [HOST, ...],                       # every watched host, exact
              "local": {"hosts": N, "top": {"flows": [HOST, ...], "bytes": [...], ...}}}

where HOST is ``{"address", "exact", "sent", "received", "partners", "dst_ports", "top_ports",
"tcp_flags", "mean_duration_ms"}`` (``flowscope.aggregate.hosts``). A stored result holds every
watched host but only the top local hosts; for any other local host the lookup asks ``live``
(the engine, for windows still open) when it is given one. Watching and unwatching at run time go
to ``on_watch`` / ``on_unwatch`` (the engine) when given, and are kept here for ``watched()``.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from flowscope.aggregate.engine import Engine
from flowscope.aggregate.windows import format_duration, parse_duration_ms
from flowscope.errors import FlowscopeError
from flowscope.serve.params import canonical_address, iso
from flowscope.store import ResultStore

HostStats = dict[str, Any]
# (address, interval name, window start ms) → that host's statistics in that window, or None.
LiveHostLookup = Callable[[str, str, int], HostStats | None]


class HostLookup(Protocol):
    """What the host endpoints need. Addresses are canonical text (``params.canonical_address``)."""

    def watched(self) -> list[str]:
        """The watched hosts in effect, in address order."""
        ...

    def watch(self, address: str) -> bool:
        """Watch a host from now on; False if it already was."""
        ...

    def unwatch(self, address: str) -> bool:
        """Stop watching a host; False if it was not watched."""
        ...

    def tracked(self, address: str) -> dict[str, bool]:
        """``{"watched": ..., "local": ...}``: is the host watched, is it in a local network."""
        ...

    def lookup(self, address: str, interval: str, at_ms: int | None) -> dict[str, Any]:
        """The host in the window of ``interval`` holding ``at_ms`` (None: the newest window)."""
        ...

    def series(self, address: str, interval: str, start_ms: int | None, end_ms: int | None,
               limit: int) -> list[dict[str, Any]]:
        """One point per stored window of the range: the window and the host's stats (or None)."""
        ...

    def overview(self, interval: str, at_ms: int | None) -> dict[str, Any]:
        """The watched hosts' stats and the top local hosts in one window."""
        ...


def _networks(texts: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            continue  # the engine rejects a bad network at start; nothing to match here
    return networks


def _window(row: dict[str, Any]) -> dict[str, Any]:
    return {"interval": row["interval"], "start_ms": row["start_ms"], "start": iso(row["start_ms"]),
            "end_ms": row["end_ms"], "end": iso(row["end_ms"]), "final": row["final"]}


def _find(hosts: Any, address: str) -> tuple[HostStats | None, str | None]:
    """A host's entry in a result's ``hosts`` section, and where it was found."""
    if not isinstance(hosts, dict):
        return None, None
    for entry in hosts.get("watched") or ():
        if isinstance(entry, dict) and entry.get("address") == address:
            return entry, "watched"
    local = hosts.get("local")
    top = local.get("top") if isinstance(local, dict) else None
    if isinstance(top, dict):
        for entries in top.values():
            for entry in entries or ():
                if isinstance(entry, dict) and entry.get("address") == address:
                    return entry, "local_top"
    return None, None


class ResultHostLookup:
    """``HostLookup`` over the store's results (and optional engine hooks)."""

    def __init__(
        self, store: ResultStore, *, watched_hosts: Iterable[str] = (), local_networks: Iterable[str] = (),
        live: LiveHostLookup | None = None, on_watch: Callable[[str], object] | None = None,
        on_unwatch: Callable[[str], object] | None = None,
    ) -> None:
        self.store = store
        self.live = live
        self.on_watch = on_watch
        self.on_unwatch = on_unwatch
        self.local_networks = [str(n) for n in _networks(local_networks)]
        self._networks = _networks(local_networks)
        self._configured = {canonical_address("stats.watched_hosts", a) for a in watched_hosts}
        self._added: set[str] = set()
        self._removed: set[str] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------- watching
    def watched(self) -> list[str]:
        with self._lock:
            hosts = (self._configured | self._added) - self._removed
        return sorted(hosts, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))

    def watch(self, address: str) -> bool:
        with self._lock:
            already = address in ((self._configured | self._added) - self._removed)
            self._added.add(address)
            self._removed.discard(address)
        if not already and self.on_watch is not None:
            self.on_watch(address)
        return not already

    def unwatch(self, address: str) -> bool:
        with self._lock:
            was = address in ((self._configured | self._added) - self._removed)
            self._added.discard(address)
            self._removed.add(address)
        if was and self.on_unwatch is not None:
            self.on_unwatch(address)
        return was

    def tracked(self, address: str) -> dict[str, bool]:
        parsed = ipaddress.ip_address(address)
        local = any(parsed.version == network.version and parsed in network for network in self._networks)
        return {"watched": address in self.watched(), "local": local}

    # ----------------------------------------------------------------------- reading
    def _row(self, interval: str, at_ms: int | None) -> dict[str, Any] | None:
        if at_ms is None:
            return self.store.latest(interval, view="all", final_only=False)
        duration = parse_duration_ms(interval, key="interval")
        return self.store.at(interval, at_ms - at_ms % duration, view="all")

    def _stats(self, row: dict[str, Any], address: str) -> tuple[HostStats | None, str | None]:
        stats, source = _find(row.get("hosts"), address)
        if stats is None and self.live is not None and not row["final"]:
            stats = self.live(address, row["interval"], row["start_ms"])
            source = "engine" if stats is not None else None
        return stats, source

    def lookup(self, address: str, interval: str, at_ms: int | None) -> dict[str, Any]:
        answer: dict[str, Any] = {"address": address, **self.tracked(address), "window": None, "stats": None,
                                  "source": None}
        row = self._row(interval, at_ms)
        if row is None:
            if self.live is not None and at_ms is not None:
                start = at_ms - at_ms % parse_duration_ms(interval, key="interval")
                stats = self.live(address, interval, start)
                if stats is not None:
                    answer.update(stats=stats, source="engine")
            return answer
        stats, source = self._stats(row, address)
        answer.update(window=_window(row), stats=stats, source=source)
        return answer

    def series(self, address: str, interval: str, start_ms: int | None, end_ms: int | None,
               limit: int) -> list[dict[str, Any]]:
        rows = self.store.query(interval, view="all", start_ms=start_ms, end_ms=end_ms, limit=limit)
        points = []
        for row in rows:
            stats, source = _find(row.get("hosts"), address)
            points.append({**_window(row), "stats": stats, "source": source})
        return points

    def overview(self, interval: str, at_ms: int | None) -> dict[str, Any]:
        row = self._row(interval, at_ms)
        hosts = row.get("hosts") if row is not None else None
        section = hosts if isinstance(hosts, dict) else {}
        return {
            "watched": self.watched(),
            "local_networks": list(self.local_networks),
            "window": _window(row) if row is not None else None,
            "available": isinstance(hosts, dict),
            "watched_stats": list(section.get("watched") or []),
            "local": section.get("local"),
        }


def _canonical(texts: Iterable[str]) -> set[str]:
    found = set()
    for text in texts:
        try:
            found.add(canonical_address("address", text))
        except FlowscopeError:
            continue
    return found


_LENT_ROUNDS = 4  # lookups that find host statistics lent to a fold wait this many times outside the lock
_LENT_WAIT_S = 30.0  # ... each at most this long


class EngineHostLookup(ResultHostLookup):
    """``ResultHostLookup`` wired to the engine: its watch list (kept in its checkpoints, so it
    survives a restart), watch/unwatch applied to every open window, and any host of an open
    window (``Engine.lookup_host``), not only the stored top local hosts. Every call into the
    engine holds ``lock``.
    """

    def __init__(self, store: ResultStore, engine: Engine, lock: AbstractContextManager[Any]) -> None:
        spec = engine.config.stats
        self.engine = engine
        self.lock = lock
        durations = sorted(engine.config.windows_ms)
        self.levels = {format_duration(duration): level for level, duration in enumerate(durations)}
        super().__init__(store, watched_hosts=spec.watched_hosts, local_networks=spec.local_networks,
                         live=self._live)

    def _live(self, address: str, interval: str, start_ms: int) -> HostStats | None:
        level = self.levels.get(interval)
        if level is None:
            return None
        for _ in range(_LENT_ROUNDS):
            with self.lock:
                lent = self.engine.lent_hosts(level)
                if not lent:
                    found = self.engine.lookup_host(address, level)
                    break
            # A background fold holds this level's host statistics: wait for it without the
            # engine lock, which the decoder needs for every batch (a lookup used to stall it
            # for the whole fold).
            for hosts in lent:
                hosts.wait_returned(_LENT_WAIT_S)
        else:  # folds kept coming: wait under the lock after all, as the engine does
            with self.lock:
                found = self.engine.lookup_host(address, level)
        for entry in found:
            if entry.get("start_ms") == start_ms:
                return {k: v for k, v in entry.items() if k != "start_ms"}
        return None

    def watched(self) -> list[str]:
        with self.lock:
            hosts = _canonical(self.engine.watched_hosts())
        return sorted(hosts, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))

    def watch(self, address: str) -> bool:
        with self.lock:
            already = address in _canonical(self.engine.watched_hosts())
            if not already:
                self.engine.watch(address)
        return not already

    def unwatch(self, address: str) -> bool:
        with self.lock:
            was = address in _canonical(self.engine.watched_hosts())
            if was:
                self.engine.unwatch(address)
        return was
