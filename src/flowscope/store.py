"""store: window results in SQLite (WAL), with retention per resolution.

One row per (interval, view, window start). Provisional results are upserted while a window is
open and replaced by the final one when it closes; a provisional result never overwrites a final
one (a late provisional emission after a restart, for instance). Writes come from the engine's
thread through one connection; readers open their own (WAL lets them read while it writes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowscope.aggregate.engine import WindowResult
from flowscope.aggregate.windows import parse_duration_ms
from flowscope.errors import ConfigError
from flowscope.metrics import Counters

DAY_MS = 86_400_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    interval TEXT NOT NULL,
    view TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    final INTEGER NOT NULL,
    flows INTEGER NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (interval, view, start_ms)
) WITHOUT ROWID;
"""


def _default_retention() -> dict[str, int]:
    return {"1s": DAY_MS, "1m": 30 * DAY_MS, "1h": 365 * DAY_MS}


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str = "var/flowscope.db"
    retention_ms: dict[str, int] = field(default_factory=_default_retention)
    default_retention_ms: int = 30 * DAY_MS  # resolutions not listed above

    def retention_for(self, interval: str) -> int:
        return self.retention_ms.get(interval, self.default_retention_ms)


class ResultStore:
    """Persists WindowResults (it is a ``ResultSink``) and answers queries by interval/time/view."""

    def __init__(self, config: StoreConfig, counters: Counters | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else Counters()
        self._write: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.config.path != ":memory:":
            Path(self.config.path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.config.path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        self._write = connection

    def stop(self) -> None:
        with self._lock:
            if self._write is not None:
                self._write.close()
                self._write = None

    # ------------------------------------------------------------------ write
    def emit(self, results: list[WindowResult]) -> None:
        rows = [
            (
                r.resolution, r.view, r.start_ms, r.start_ms + r.duration_ms, int(r.final),
                r.payload["totals"]["flows"], r.payload["totals"]["packets"], r.payload["totals"]["bytes"],
                json.dumps(r.payload, separators=(",", ":")),
            )
            for r in results
        ]
        with self._lock:
            connection = self._connection()
            connection.execute("BEGIN")
            connection.executemany(
                """INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (interval, view, start_ms) DO UPDATE SET
                     end_ms = excluded.end_ms, final = excluded.final, flows = excluded.flows,
                     packets = excluded.packets, bytes = excluded.bytes, payload = excluded.payload
                   WHERE results.final = 0 OR excluded.final = 1""",
                rows,
            )
            connection.execute("COMMIT")
        self.counters.add("store_results_written_total", len(rows))

    def prune(self, now_ms: int) -> int:
        """Delete results older than their resolution's retention; returns rows deleted."""
        with self._lock:
            connection = self._connection()
            intervals = [row[0] for row in connection.execute("SELECT DISTINCT interval FROM results")]
            deleted = 0
            for interval in intervals:
                cursor = connection.execute(
                    "DELETE FROM results WHERE interval = ? AND end_ms < ?",
                    (interval, now_ms - self.config.retention_for(interval)),
                )
                deleted += cursor.rowcount
        self.counters.add("store_results_pruned_total", deleted)
        return deleted

    def _connection(self) -> sqlite3.Connection:
        if self._write is None:
            raise RuntimeError("ResultStore is not started")
        return self._write

    # ------------------------------------------------------------------- read
    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self.config.path == ":memory:":  # one in-memory database: share the writer
            with self._lock:
                yield self._connection()
            return
        connection = sqlite3.connect(f"file:{self.config.path}?mode=ro", uri=True)
        try:
            yield connection
        finally:
            connection.close()

    def query(
        self,
        interval: str,
        *,
        view: str = "all",
        start_ms: int | None = None,
        end_ms: int | None = None,
        final_only: bool = False,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Results whose window starts in [start_ms, end_ms), oldest first."""
        parse_duration_ms(interval, key="interval")
        if limit < 1:
            raise ConfigError(f"limit: {limit} must be at least 1")
        sql = "SELECT interval, view, start_ms, end_ms, final, payload FROM results WHERE interval = ? AND view = ?"
        arguments: list[Any] = [interval, view]
        if start_ms is not None:
            sql += " AND start_ms >= ?"
            arguments.append(start_ms)
        if end_ms is not None:
            sql += " AND start_ms < ?"
            arguments.append(end_ms)
        if final_only:
            sql += " AND final = 1"
        sql += " ORDER BY start_ms DESC LIMIT ?"
        arguments.append(limit)
        with self._reader() as connection:
            rows = connection.execute(sql, arguments).fetchall()
        return [_row_json(row) for row in reversed(rows)]

    def latest(self, interval: str, *, view: str = "all", final_only: bool = True) -> dict[str, Any] | None:
        found = self.query(interval, view=view, final_only=final_only, limit=1)
        return found[0] if found else None

    def at(self, interval: str, start_ms: int, *, view: str = "all") -> dict[str, Any] | None:
        found = self.query(interval, view=view, start_ms=start_ms, end_ms=start_ms + 1, limit=1)
        return found[0] if found else None


def _row_json(row: tuple[Any, ...]) -> dict[str, Any]:
    interval, view, start_ms, end_ms, final, payload = row
    return {"interval": interval, "start_ms": start_ms, "end_ms": end_ms, "view": view, "final": bool(final),
            **json.loads(payload)}
