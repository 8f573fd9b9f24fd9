"""Reports for the terminal: window results (as the store and the engine give them) → text tables.

The JSON form of a report is the window result itself (docs/report-schema.md); this module only
renders it for people: totals with the protocol split, the top TCP and UDP ports, web traffic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from flowscope.aggregate.stats import PROTOCOL_CLASSES

_UNITS = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k"))


def human(value: int) -> str:
    """1234567 → '1.2 M' (SI prefixes, as traffic tools print volumes)."""
    for size, unit in _UNITS:
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return str(value)


def utc_text(time_ms: int) -> str:
    return dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time_ms(text: str) -> int:
    """'2026-11-27T13:00', '2026-11-27 13:00:00Z' or epoch milliseconds → UTC ms (naive = UTC)."""
    if text.isdigit():
        return int(text)
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    body = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in
                       enumerate(zip(row, widths, strict=True))) for row in body]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def render(result: dict[str, Any], *, by: str = "flows") -> str:
    """One window result as text."""
    state = "final" if result.get("final") else "provisional (window still open)"
    lines = [
        f"{result['interval']} report {utc_text(result['start_ms'])} - {utc_text(result['end_ms'])} UTC, "
        f"view {result['view']}, {state}",
        "",
    ]
    totals = result["totals"]
    rows = [[name, human(totals["by_protocol"][name]["flows"]), human(totals["by_protocol"][name]["packets"]),
             human(totals["by_protocol"][name]["bytes"])] for name in PROTOCOL_CLASSES]
    rows.append(["total", human(totals["flows"]), human(totals["packets"]), human(totals["bytes"])])
    lines += _table(["protocol", "flows", "packets", "bytes"], rows)
    for protocol in ("tcp", "udp"):
        ranked = result["top_ports"][protocol][by]
        lines += ["", f"Top {len(ranked)} {protocol.upper()} ports by {by}:"]
        if ranked:
            lines += _table(["port", "flows", "packets", "bytes"],
                            [[str(p["port"]), human(p["flows"]), human(p["packets"]), human(p["bytes"])]
                             for p in ranked])
    web = result["web"]
    lines += ["", f"Web traffic: {human(web['flows'])} flows, {human(web['packets'])} packets, "
                  f"{human(web['bytes'])} bytes"]
    for role in ("top_servers", "top_clients"):
        ranked = web[role][by]
        if ranked:
            lines += ["", f"{role.replace('_', ' ').capitalize()} by {by}:"]
            lines += _table(["address", "flows", "packets", "bytes"],
                            [[h["address"], human(h["flows"]), human(h["packets"]), human(h["bytes"])]
                             for h in ranked])
    if result.get("late_flows"):
        lines += ["", f"Late flows folded into this window: {result['late_flows']}"]
    return "\n".join(lines) + "\n"
