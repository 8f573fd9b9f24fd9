"""Exporter health: what the counters, the decoder state and the traffic sink know per exporter.

Per exporter address (from the counters, which include those of collector worker processes):
datagrams and bytes received, drops, export packets per protocol version, records, decode errors
by kind, sequence loss, template events, and when a datagram last arrived (``ExporterActivity``
notices the datagram counter moving, to within its poll interval).

Per observation domain / source id: flows, packets, bytes (``ExporterTraffic``: closed finest
windows) and, from the live decoder state when it is in this process, protocol versions,
sequence numbers (received, lost, reordered), templates, sampling rates and interface names.
With collector worker processes the UDP decoder state lives in the workers: only the counters
(and the traffic) are known for their exporters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flowscope.decode.session import DecoderSession
from flowscope.decode.templates import Template, TemplateKey
from flowscope.metrics import Counters
from flowscope.serve.params import iso
from flowscope.serve.sinks import DomainTraffic, ExporterTraffic, wall_clock_ms


class ExporterActivity:
    """When each exporter was last heard from: polls the datagram counters, notes which moved."""

    COUNTERS = ("collector_datagrams_total", "collector_connections_total", "decode_packets_total")

    def __init__(
        self, counters: Counters, interval_ms: int = 1000, clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.counters = counters
        self.interval_ms = interval_ms
        self.clock_ms = clock_ms
        self._previous: dict[str, int] = {}
        self._last_seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self.poll()
        self._thread = threading.Thread(target=self._run, name="flowscope-exporter-activity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_ms / 1000):
            self.poll()

    def poll(self) -> None:
        totals: dict[str, int] = {}
        for name in self.COUNTERS:
            for labels, value in self.counters.series(name):
                exporter = labels.get("exporter")
                if exporter is not None:
                    totals[exporter] = totals.get(exporter, 0) + value
        now_ms = self.clock_ms()
        with self._lock:
            for exporter, total in totals.items():
                if total != self._previous.get(exporter):
                    self._previous[exporter] = total
                    self._last_seen[exporter] = now_ms

    def last_seen(self) -> dict[str, int]:
        with self._lock:
            return dict(self._last_seen)


def _by_exporter(counters: Counters, name: str, label: str | None = None) -> dict[str, dict[str, int]]:
    """counter → exporter → (value of ``label``, or "total") → sum."""
    result: dict[str, dict[str, int]] = {}
    for labels, value in counters.series(name):
        exporter = labels.get("exporter")
        if exporter is None:
            continue
        key = labels.get(label, "unknown") if label is not None else "total"
        per = result.setdefault(exporter, {})
        per[key] = per.get(key, 0) + value
    return result


def _templates(session: DecoderSession) -> list[tuple[TemplateKey, Template]]:
    for _ in range(5):  # the decoding thread may add a template while we copy: try again
        try:
            return session.templates.templates_of()
        except RuntimeError:
            continue
    return []


def _time(ms: int | None) -> dict[str, Any]:
    return {"last_seen_ms": ms, "last_seen": iso(ms) if ms is not None else None}


def exporter_health(
    counters: Counters, traffic: ExporterTraffic, activity: ExporterActivity | None,
    session: DecoderSession | None,
) -> list[dict[str, Any]]:
    """Every exporter known to the counters, the traffic sink or the decoder, with its domains."""
    datagrams = _by_exporter(counters, "collector_datagrams_total")
    received_bytes = _by_exporter(counters, "collector_bytes_total")
    dropped = _by_exporter(counters, "collector_dropped_total", "reason")
    packets = _by_exporter(counters, "decode_packets_total", "version")
    records = _by_exporter(counters, "decode_records_total", "kind")
    errors = _by_exporter(counters, "decode_errors_total", "kind")
    lost = _by_exporter(counters, "decode_sequence_lost_total", "unit")
    template_events = _by_exporter(counters, "decode_templates_total", "event")
    pending_dropped = _by_exporter(counters, "decode_pending_dropped_total", "reason")
    time_unknown = _by_exporter(counters, "normalize_time_unknown_total")
    seen = activity.last_seen() if activity is not None else {}
    flows = traffic.snapshot()

    domains: dict[str, dict[int, dict[str, Any]]] = {}

    def domain(exporter: str, number: int) -> dict[str, Any]:
        per = domains.setdefault(exporter, {})
        entry = per.get(number)
        if entry is None:
            entry = per[number] = {"domain": number, "versions": [], "flows": 0, "packets": 0, "bytes": 0,
                                   **_time(None), "sequence": None, "templates": [], "sampling": None,
                                   "interfaces": {}}
        return entry

    for (exporter, number), sums in flows.items():
        _traffic(domain(exporter, number), sums)
    if session is not None:
        for (exporter, version, number), state in session.sequences.states().items():
            entry = domain(exporter, number)
            if version not in entry["versions"]:
                entry["versions"].append(version)
            sequence = entry["sequence"] or {"received": 0, "lost": 0, "reordered": 0}
            sequence["received"] += state.received
            sequence["lost"] += state.lost
            sequence["reordered"] += state.reordered
            entry["sequence"] = sequence
        for key, template in _templates(session):
            entry = domain(key.exporter, key.domain)
            if key.version not in entry["versions"]:
                entry["versions"].append(key.version)
            entry["templates"].append({"id": key.template_id, "fields": len(template.fields),
                                       "options": template.is_options, "scope_fields": template.scope_count})
        for (exporter, number), options in session.options.scopes().items():
            entry = domain(exporter, number)
            entry["sampling"] = {"rate": options.default_sampling_rate or None,
                                 "by_sampler": {str(k): v for k, v in sorted(dict(options.sampling_by_id).items())}}
            entry["interfaces"] = {str(k): v for k, v in sorted(dict(options.interface_names).items())}

    addresses = set(datagrams) | set(packets) | set(errors) | set(records) | set(domains) | set(seen)
    exporters = []
    for address in sorted(addresses):
        per_domain = sorted(domains.get(address, {}).values(), key=lambda d: int(d["domain"]))
        for entry in per_domain:
            entry["versions"].sort()
            entry["templates"].sort(key=lambda t: int(t["id"]))
        error_kinds = dict(sorted(errors.get(address, {}).items()))
        exporters.append({
            "address": address,
            **_time(seen.get(address)),
            "datagrams": datagrams.get(address, {}).get("total", 0),
            "datagram_bytes": received_bytes.get(address, {}).get("total", 0),
            "dropped": dict(sorted(dropped.get(address, {}).items())),
            "packets_by_version": dict(sorted(packets.get(address, {}).items())),
            "records": {"data": records.get(address, {}).get("data", 0),
                        "options": records.get(address, {}).get("options", 0)},
            "decode_errors": error_kinds,
            "decode_errors_total": sum(error_kinds.values()),
            "sequence_lost": dict(sorted(lost.get(address, {}).items())),
            "templates": dict(sorted(template_events.get(address, {}).items())),
            "pending_dropped": dict(sorted(pending_dropped.get(address, {}).items())),
            "time_unknown": time_unknown.get(address, {}).get("total", 0),
            "flows": sum(int(d["flows"]) for d in per_domain),
            "packets": sum(int(d["packets"]) for d in per_domain),
            "bytes": sum(int(d["bytes"]) for d in per_domain),
            "domains": per_domain,
        })
    return exporters


def _traffic(entry: dict[str, Any], sums: DomainTraffic) -> None:
    entry.update(flows=sums.flows, packets=sums.packets, bytes=sums.bytes, **_time(sums.last_seen_ms))
