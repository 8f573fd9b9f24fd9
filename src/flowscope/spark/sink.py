"""Window results computed by Spark into the ``ResultStore`` the dashboard and the API read.

The store upserts by (interval, view, window start) and never lets a provisional result replace
a final one, so writing the results of a micro-batch again (a restarted query replaying it)
leaves the store as it was: the writes are idempotent per micro-batch.
"""

from __future__ import annotations

from typing import Any

from flowscope.aggregate.engine import WindowResult
from flowscope.aggregate.windows import format_duration
from flowscope.store import ResultStore

__all__ = ["StoreSink", "result_of"]


def result_of(json_result: dict[str, Any]) -> WindowResult:
    """A result in its JSON form (docs/report-schema.md) back as the store's WindowResult."""
    duration = int(json_result["end_ms"]) - int(json_result["start_ms"])
    meta = {"interval", "start_ms", "end_ms", "view", "final"}
    payload = {key: value for key, value in json_result.items() if key not in meta}
    return WindowResult(format_duration(duration), duration, int(json_result["start_ms"]), str(json_result["view"]),
                        bool(json_result["final"]), payload)


class StoreSink:
    """Writes JSON window results to a started ResultStore."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def write(self, results: list[dict[str, Any]]) -> int:
        if results:
            self.store.emit([result_of(r) for r in results])
        return len(results)
