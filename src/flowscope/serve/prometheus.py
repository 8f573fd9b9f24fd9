"""Prometheus text exposition format (version 0.0.4) of flowscope's counters and gauges.

Every counter of ``Counters`` becomes a ``flowscope_<name>`` family of type counter; gauges (live
delay, window lag, open windows, kernel drops, subscribers, ...) are added by the caller. Names
are reduced to ``[a-zA-Z_:][a-zA-Z0-9_:]*``, label names to ``[a-zA-Z_][a-zA-Z0-9_]*``; label
values escape backslash, double quote and newline, HELP text backslash and newline, as the format
requires. Exporter addresses and interface names come from the network: they are only ever label
values, escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from flowscope.metrics import Counters

PREFIX = "flowscope_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HELP: dict[str, str] = {
    "flows_total": "Flows decoded and normalized (all exporters).",
    "collector_datagrams_total": "Export datagrams received, per listener and exporter.",
    "collector_bytes_total": "Bytes of export datagrams received, per listener and exporter.",
    "collector_dropped_total": "Datagrams dropped before decoding, by reason.",
    "collector_kernel_drops_total": "Datagrams the kernel dropped on a UDP socket (receive buffer full).",
    "decode_packets_total": "Export packets decoded, per exporter and protocol version.",
    "decode_batches_total": "Batches of datagrams decoded, per path (v5_kernel: plain NetFlow v5 straight to "
                            "flows by the compiled kernel; general: everything else).",
    "decode_records_total": "Records decoded, per exporter and kind (data or options).",
    "decode_errors_total": "Decode errors, per exporter and kind.",
    "decode_sequence_lost_total": "Export records or packets missing according to sequence numbers.",
    "decode_templates_total": "Template events (new, refreshed, changed, withdrawn), per exporter.",
    "engine_flows_total": "Flows aggregated by the engine.",
    "engine_late_flows_total": "Flows that arrived after their window closed (folded into the open window).",
    "engine_windows_closed_total": "Windows closed, per interval.",
    "web_stream_events_total": "Window results pushed to live subscribers.",
    "web_stream_dropped_events_total": "Window results dropped because a live subscriber was too slow.",
    "web_stream_subscriptions_total": "Live stream subscriptions opened.",
}


@dataclass(slots=True)
class Family:
    name: str
    type: Literal["counter", "gauge", "untyped"]
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)


def metric_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    return cleaned if re.match(r"[a-zA-Z_:]", cleaned) else "_" + cleaned


def label_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    cleaned = cleaned if re.match(r"[a-zA-Z_]", cleaned) else "_" + cleaned
    return cleaned if not cleaned.startswith("__") else "x" + cleaned  # "__" is reserved


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def counter_families(counters: Counters) -> list[Family]:
    families = []
    for name, series in counters.snapshot().items():
        help_text = HELP.get(name, f"flowscope counter {name}.")
        families.append(Family(PREFIX + name, "counter", help_text, [(labels, value) for labels, value in series]))
    return families


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        name = metric_name(family.name)
        if name in seen:  # one family per name, as the format requires
            continue
        seen.add(name)
        lines.append(f"# HELP {name} {escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.type}")
        for labels, value in family.samples:
            if labels:
                text = ",".join(f'{label_name(k)}="{escape_label_value(str(v))}"' for k, v in sorted(labels.items()))
                lines.append(f"{name}{{{text}}} {format_value(value)}")
            else:
                lines.append(f"{name} {format_value(value)}")
    return "\n".join(lines) + "\n"
