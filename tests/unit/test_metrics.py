"""Counters: ``add_series`` (several increments under one lock) counts as ``add`` does."""

from __future__ import annotations

from flowscope.metrics import Counters


def test_add_series_matches_add() -> None:
    one_by_one, together = Counters(), Counters()
    increments = [
        ("decode_packets_total", {"exporter": "192.0.2.1", "version": "9"}, 3),
        ("decode_records_total", {"kind": "data", "exporter": "192.0.2.1"}, 70),
        ("decode_packets_total", {"version": "9", "exporter": "192.0.2.1"}, 2),
        ("decode_packets_total", {"exporter": "2001:db8::1", "version": "10"}, 1),
        ("decode_templates_total", {"exporter": "192.0.2.1", "event": "refreshed"}, 0),
    ]
    for name, labels, value in increments:
        one_by_one.add(name, value, **labels)
    together.add_series(((name, tuple(sorted(labels.items()))), value) for name, labels, value in increments)
    assert together.snapshot() == one_by_one.snapshot()
    assert together.get("decode_packets_total", exporter="192.0.2.1", version="9") == 5
    assert together.total("decode_records_total", kind="data") == 70
    # a zero increment still makes the series exist, as with add
    assert list(together.series("decode_templates_total")) == [({"event": "refreshed", "exporter": "192.0.2.1"}, 0)]
