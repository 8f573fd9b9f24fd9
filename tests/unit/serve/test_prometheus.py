"""Prometheus text format: every counter, names and label values escaped as the format says."""

from __future__ import annotations

import re

from flowscope.metrics import Counters
from flowscope.serve.prometheus import Family, counter_families, escape_label_value, label_name, metric_name, render

# One sample line of the text format 0.0.4: name, optional {labels}, value.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{{{_LABEL}(,{_LABEL})*\}})? (-?[0-9.e+]+|NaN|[+-]Inf)$")


def test_every_counter_with_its_labels() -> None:
    counters = Counters()
    counters.add("decode_errors_total", 3, exporter="192.0.2.1", kind="truncated")
    counters.add("decode_errors_total", exporter="2001:db8::1", kind="unknown_version")
    counters.add("flows_total", 1_234)
    counters.add("collector_dropped_total", exporter="192.0.2.1", reason="decoder_busy")
    counters.add("collector_dropped_total", listener="udp/0.0.0.0:2055", reason="not_allowed", exporter="192.0.2.9")
    text = render(counter_families(counters))
    lines = text.splitlines()
    assert lines[:5] == [
        "# HELP flowscope_collector_dropped_total Datagrams dropped before decoding, by reason.",
        "# TYPE flowscope_collector_dropped_total counter",
        'flowscope_collector_dropped_total{exporter="192.0.2.1",reason="decoder_busy"} 1',
        'flowscope_collector_dropped_total{exporter="192.0.2.9",listener="udp/0.0.0.0:2055",reason="not_allowed"} 1',
        "# HELP flowscope_decode_errors_total Decode errors, per exporter and kind.",
    ]
    assert 'flowscope_decode_errors_total{exporter="192.0.2.1",kind="truncated"} 3' in lines
    assert 'flowscope_decode_errors_total{exporter="2001:db8::1",kind="unknown_version"} 1' in lines
    assert "flowscope_flows_total 1234" in lines
    assert text.endswith("\n")
    assert all(SAMPLE.match(line) for line in lines if not line.startswith("#")), text


def test_label_values_names_and_help_are_escaped() -> None:
    hostile = 'ge-0/0/1 "uplink" \\ <script>\nx'
    assert escape_label_value(hostile) == 'ge-0/0/1 \\"uplink\\" \\\\ <script>\\nx'
    assert metric_name("web stream-events.total") == "web_stream_events_total"
    assert metric_name("2xx") == "_2xx"
    assert label_name("if-name") == "if_name" and label_name("__x") == "x__x"
    text = render([Family("flowscope_interface_up", "gauge", "Line one\\two\nthree", [({"name": hostile}, 1.5)])])
    assert text.splitlines() == [
        "# HELP flowscope_interface_up Line one\\\\two\\nthree",
        "# TYPE flowscope_interface_up gauge",
        'flowscope_interface_up{name="ge-0/0/1 \\"uplink\\" \\\\ <script>\\nx"} 1.5',
    ]
    assert all(SAMPLE.match(line) for line in text.splitlines() if not line.startswith("#"))


def test_one_family_per_name_and_special_values() -> None:
    text = render([Family("a", "gauge", "first", [({}, float("nan"))]), Family("a", "gauge", "again", [({}, 2)]),
                   Family("b", "gauge", "inf", [({}, float("inf"))])])
    assert text.splitlines() == ["# HELP a first", "# TYPE a gauge", "a NaN", "# HELP b inf", "# TYPE b gauge",
                                 "b +Inf"]
