"""CSV forms of reports, and the names of downloaded files.

A range of windows (``/api/v1/results``, ``/api/v1/series``) becomes one row per window: totals,
the protocol split, web traffic, late flows. One report (``/api/v1/report``) becomes a long table,
one row per number: ``section, group, rank, key, flows, packets, bytes`` (totals, protocols,
exporters, top ports per protocol and metric, web servers and clients, watched hosts), which any
spreadsheet can pivot. Text cells that a spreadsheet would run as a formula are quoted with '.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

from flowscope.aggregate.stats import METRICS, PROTOCOL_CLASSES
from flowscope.serve.params import iso

WINDOW_COLUMNS = ("interval", "view", "start_ms", "start", "end_ms", "end", "final")
RANGE_COLUMNS = (
    *WINDOW_COLUMNS, *METRICS,
    *(f"{protocol}_{metric}" for protocol in PROTOCOL_CLASSES for metric in METRICS),
    *(f"web_{metric}" for metric in METRICS), "late_flows",
)
REPORT_COLUMNS = (*WINDOW_COLUMNS, "section", "group", "rank", "key", *METRICS)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return "" if value is None else value


def _csv(columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    return out.getvalue()


def _window(result: dict[str, Any]) -> list[Any]:
    return [result["interval"], result["view"], result["start_ms"], iso(result["start_ms"]), result["end_ms"],
            iso(result["end_ms"]), result["final"]]


def _metrics(entry: Any) -> list[int]:
    entry = entry if isinstance(entry, dict) else {}
    return [int(entry.get(metric, 0)) for metric in METRICS]


def _range_row(window: list[Any], totals: Any, protocols: Any, web: Any, late_flows: Any) -> list[Any]:
    row = window + _metrics(totals)
    for protocol in PROTOCOL_CLASSES:
        row += _metrics(protocols.get(protocol) if isinstance(protocols, dict) else None)
    return [*row, *_metrics(web), int(late_flows or 0)]


def range_csv(results: Iterable[dict[str, Any]]) -> str:
    """One row per window result."""
    rows = []
    for result in results:
        totals = result.get("totals", {})
        rows.append(_range_row(_window(result), totals, totals.get("by_protocol"), result.get("web"),
                               result.get("late_flows")))
    return _csv(RANGE_COLUMNS, rows)


def series_csv(interval: str, view: str, points: Iterable[dict[str, Any]]) -> str:
    """One row per series point (same columns as ``range_csv``)."""
    rows = []
    for point in points:
        window = [interval, view, point["start_ms"], iso(point["start_ms"]), point["end_ms"], iso(point["end_ms"]),
                  point["final"]]
        rows.append(_range_row(window, point, point.get("by_protocol"), point.get("web"), point.get("late_flows")))
    return _csv(RANGE_COLUMNS, rows)


def report_csv(result: dict[str, Any]) -> str:
    """One window result as a long table: one row per (section, group, rank, key)."""
    window = _window(result)
    rows: list[list[Any]] = []

    def add(section: str, group: str, rank: int | None, key: Any, entry: Any) -> None:
        rows.append([*window, section, group, rank, key, *_metrics(entry)])

    totals = result.get("totals", {})
    add("totals", "", None, "all", totals)
    for protocol in PROTOCOL_CLASSES:
        add("protocol", "", None, protocol, totals.get("by_protocol", {}).get(protocol))
    for entry in totals.get("by_exporter", []):
        add("exporter", str(entry.get("domain", "")), None, entry.get("exporter"), entry)
    for protocol in ("tcp", "udp"):
        for metric in METRICS:
            for rank, entry in enumerate(result.get("top_ports", {}).get(protocol, {}).get(metric, []), 1):
                add("top_ports", f"{protocol}_by_{metric}", rank, entry.get("port"), entry)
    web = result.get("web", {})
    add("web", "", None, "all", web)
    for side in ("top_servers", "top_clients"):
        for metric in METRICS:
            for rank, entry in enumerate(web.get(side, {}).get(metric, []), 1):
                add(f"web_{side.removeprefix('top_')}", f"by_{metric}", rank, entry.get("address"), entry)
    hosts = result.get("hosts")
    if isinstance(hosts, dict):
        for entry in hosts.get("watched") or []:
            add("watched_host", "sent", None, entry.get("address"), entry.get("sent"))
            add("watched_host", "received", None, entry.get("address"), entry.get("received"))
    rows.append([*window, "late", "", None, "flows", int(result.get("late_flows", 0)), 0, 0])
    return _csv(REPORT_COLUMNS, rows)


def filename(kind: str, interval: str, view: str, start_ms: int | None, extension: str) -> str:
    """A safe file name: flowscope-report-all-1m-20261127T1300Z.csv."""
    when = ""
    if start_ms is not None:
        when = "-" + iso(start_ms)[:19].replace("-", "").replace(":", "") + "Z"
    name = f"flowscope-{kind}-{view}-{interval}{when}.{extension}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}
