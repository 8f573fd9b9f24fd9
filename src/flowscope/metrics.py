"""Counters: everything that moves gets one.

A ``Counters`` object holds monotonically increasing integers keyed by a metric name and a tuple
of label values. It is cheap enough to touch once per packet (never once per flow) and is read by
the CLI summaries and, later, by the Prometheus endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

Labels = tuple[tuple[str, str], ...]  # (label name, value) pairs, sorted by name


class Counters:
    """A thread-safe family of labelled counters."""

    def __init__(self) -> None:
        # Keyed by name and the (label, value) pairs: one name may be counted with different label sets.
        self._values: dict[tuple[str, Labels], int] = {}
        self._lock = threading.Lock()
        # Cumulative snapshots from other processes (collector workers), summed into every read.
        self._external: dict[str, dict[str, list[tuple[dict[str, str], int]]]] = {}

    def add(self, name: str, value: int = 1, **labels: str) -> None:
        """Add ``value`` to counter ``name`` with the given labels (names sorted for a stable key)."""
        key = (name, tuple((n, str(labels[n])) for n in sorted(labels)))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + value

    def add_series(self, increments: Iterable[tuple[tuple[str, Labels], int]]) -> None:
        """Several ``add``s under one lock, each keyed by its name and its (label, value) pairs
        already sorted by label name, values as text (what a caller that counts per batch keeps)."""
        with self._lock:
            values = self._values
            for key, value in increments:
                values[key] = values.get(key, 0) + value

    def get(self, name: str, **labels: str) -> int:
        """The value of one counter series (0 if it never moved)."""
        key = (name, tuple((n, str(labels[n])) for n in sorted(labels)))
        with self._lock:
            return self._values.get(key, 0)

    def total(self, name: str, **match: str) -> int:
        """Sum over every series of ``name`` whose labels include ``match``."""
        result = 0
        for labels, value in self.series(name):
            if all(labels.get(k) == v for k, v in match.items()):
                result += value
        return result

    def series(self, name: str) -> Iterator[tuple[dict[str, str], int]]:
        """Every series of one counter as (labels, value), this process's and other processes' summed."""
        with self._lock:
            items = [(k, v) for k, v in self._values.items() if k[0] == name]
            external = [snapshot.get(name, []) for snapshot in self._external.values()]
        summed: dict[Labels, int] = {}
        for (_, pairs), value in items:
            summed[pairs] = summed.get(pairs, 0) + value
        for series in external:
            for labels, value in series:
                key = tuple(sorted(labels.items()))
                summed[key] = summed.get(key, 0) + value
        for key, value in summed.items():
            yield dict(key), value

    def set_external(self, source: str, snapshot: dict[str, list[tuple[dict[str, str], int]]]) -> None:
        """Replace the cumulative counters reported by another process (``source`` names it)."""
        with self._lock:
            self._external[source] = snapshot

    def names(self) -> list[str]:
        with self._lock:
            names = {k[0] for k in self._values}
            for snapshot in self._external.values():
                names.update(snapshot)
            return sorted(names)

    def snapshot(self) -> dict[str, list[tuple[dict[str, str], int]]]:
        """A copy of everything, for reports and tests."""
        return {name: list(self.series(name)) for name in self.names()}
