"""Conformance with python-netflow-v9-softflowd: every value its tests assert.

``tests/data/python-netflow-v9-softflowd/expected.json`` restates the library's test assertions per
scenario: packets sent in order to one collector, how many packets it returns as decoded
("exports"), record counts and field values by record index. Each scenario here sends the same
packets through ONE ``DecoderSession``, one ``decode`` call per packet.

The library queues a packet whose templates are unknown and parses it once they arrive; our
session holds such data sets and releases them when the template comes. A packet counts as an
export when it was not rejected (no decode error) and none of its data is still waiting for a
template at the end of the scenario.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.decode.values import FieldValue, field_values, record_dicts
from flowscope.metrics import Counters
from flowscope.model import Datagram

DATA = Path(__file__).resolve().parents[2] / "data" / "python-netflow-v9-softflowd"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
SCENARIOS: list[dict[str, Any]] = EXPECTED["scenarios"]
EXPORTER = "192.0.2.1"

# The library's NetFlow v1/v5/v9 field names (IPFIX uses IANA names, as our registry does).
LIBRARY_NAMES = {
    "PROTO": (0, 4), "PROTOCOL": (0, 4), "IPV4_SRC_ADDR": (0, 8), "L4_SRC_PORT": (0, 7), "L4_DST_PORT": (0, 11),
}
# The library's test picks packets_v9_0/1/2 at random for the two data packets of this scenario.
RANDOM_PICK = "packets_v9_0.bin (or _1/_2)"
PICKS = ["packets_v9_1.bin", "packets_v9_2.bin"]


@dataclass
class Export:
    file: str
    payload: bytes
    flows: list[dict[str, FieldValue]]  # records decoded in this packet's decode call, in order
    record_sets: list[RecordSet]
    errors: int
    held: int  # data sets waiting for a template after this packet
    new_templates: int


@dataclass
class ScenarioRun:
    exports: list[Export]
    session: DecoderSession
    counters: Counters

    @property
    def parsed(self) -> list[Export]:
        """Packets the library would return: not rejected, nothing still waiting for a template."""
        waiting = self.session.pending_sets() > 0
        return [export for export in self.exports if export.errors == 0 and not (waiting and export.held)]


def files_of(scenario: dict[str, Any]) -> list[str]:
    picks = iter(PICKS)
    return [next(picks) if name == RANDOM_PICK else name for name in scenario["packets_in_order"]]


def flows_of(record_sets: list[RecordSet]) -> list[dict[str, FieldValue]]:
    """Records of one decode call as dicts (IANA names plus the library's v9 names), in arrival order."""
    rows: list[tuple[int, dict[str, FieldValue]]] = []
    for records in record_sets:
        dicts = record_dicts(records)
        for name, (pen, element_id) in LIBRARY_NAMES.items():
            position = records.template.field_position(pen, element_id)
            if position is not None:
                values = field_values(records, position)
                for row, value in zip(dicts, values, strict=True):
                    row[name] = value
        rows += [(int(order), row) for order, row in zip(records.order, dicts, strict=True)]
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def run_scenario(scenario: dict[str, Any]) -> ScenarioRun:
    counters = Counters()
    session = DecoderSession(counters=counters)
    exports: list[Export] = []
    for file in files_of(scenario):
        payload = (DATA / file).read_bytes()
        errors_before = counters.total("decode_errors_total")
        templates_before = counters.total("decode_templates_total", event="new")
        pending_before = session.pending_sets()
        record_sets = session.decode([Datagram(EXPORTER, 0, payload)])
        exports.append(
            Export(
                file, payload, flows_of(record_sets), record_sets,
                errors=counters.total("decode_errors_total") - errors_before,
                held=max(session.pending_sets() - pending_before, 0),
                new_templates=counters.total("decode_templates_total", event="new") - templates_before,
            )
        )
    return ScenarioRun(exports, session, counters)


def header_count(payload: bytes) -> int:
    return int(struct.unpack_from("!H", payload, 2)[0])


def check_flow(flows: list[dict[str, FieldValue]], expected: dict[str, Any]) -> None:
    flow = flows[expected["index"]]
    for name, value in expected.items():
        if name == "index":
            continue
        if name.endswith("_one_of"):
            assert flow[name.removesuffix("_one_of")] in value, name
        else:
            assert flow[name] == value, name


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["scenario"] for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any]) -> None:
    run = run_scenario(scenario)
    parsed = run.parsed
    assert len(parsed) == scenario["exports_parsed"]

    if "header" in scenario:
        payload = parsed[0].payload
        version = struct.unpack_from("!H", payload)[0]
        for name, value in scenario["header"].items():
            if name == "version":
                assert version == value
                assert {records.version for records in parsed[0].record_sets} == {value}
            elif name == "count":
                assert header_count(payload) == value
            elif name == "length":
                assert struct.unpack_from("!H", payload, 2)[0] == value == len(payload)
            else:
                raise AssertionError(f"unknown header field {name}")
    if "flow_count" in scenario:
        assert len(parsed[0].flows) == scenario["flow_count"]
    if "template_count" in scenario:
        assert parsed[0].new_templates == scenario["template_count"]
    for expected in scenario.get("flows", []):
        check_flow(parsed[0].flows, expected)
    for expected in scenario.get("flows_of_first_export", []):
        check_flow(parsed[0].flows, expected)
    if "first_export_version" in scenario:
        version = scenario["first_export_version"]
        assert struct.unpack_from("!H", parsed[0].payload)[0] == version
        assert {records.version for export in parsed for records in export.record_sets} == {version}
    if "flows_per_packet" in scenario:
        assert [len(export.flows) for export in parsed] == scenario["flows_per_packet"]
    if "header_count_per_packet" in scenario:
        assert [header_count(export.payload) for export in parsed] == scenario["header_count_per_packet"]
    if "total_flows" in scenario:
        assert sum(len(export.flows) for export in run.exports) == scenario["total_flows"]


# Decode errors per scenario: only the 0xFF garbage packets are rejected (unknown version 0xFFFF).
EXPECTED_ERRORS = {"invalid bytes are ignored": {"unknown_version": 3}}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["scenario"] for s in SCENARIOS])
def test_decode_errors(scenario: dict[str, Any]) -> None:
    run = run_scenario(scenario)
    errors = {labels["kind"]: count for labels, count in run.counters.series("decode_errors_total")}
    assert errors == EXPECTED_ERRORS.get(scenario["scenario"], {})


def test_data_before_its_template_is_released_in_order() -> None:
    """IPFIX data, template, data: the 3 held records come out with the template packet (20 + 3)."""
    scenario = next(s for s in SCENARIOS if s["scenario"] == "IPFIX data, template, data")
    run = run_scenario(scenario)
    assert [len(export.flows) for export in run.exports] == [0, 23, 3]
    assert run.counters.total("decode_pending_released_total") == 2  # the two data sets of packet_ipfix.bin
    assert run.session.pending_sets() == 0


def test_zero_filled_packet_without_template_is_held_not_looped() -> None:
    """packet_v9_with_zeros.bin: 5 data sets for the unknown template 260 wait; the zero tail is ignored."""
    scenario = next(s for s in SCENARIOS if s["scenario"] == "v9 zero-filled packet without template")
    run = run_scenario(scenario)
    assert run.session.pending_sets() == 5
    assert run.counters.total("decode_ignored_bytes_total", kind="zero_fill") > 0
