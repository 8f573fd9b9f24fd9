"""Conformance with goflow2's decoder tests: every value they assert.

``tests/data/goflow2/expected.json`` restates goflow2's assertions: the NetFlow v9 template packet
(header and the 23 field type/length pairs of template 260), the data packet (header, first set,
the raw bytes of every field of the first record) and the NetFlow v5 packet (version, first
record's input interface). The packets go through ONE ``DecoderSession``, template first.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from flowscope.decode.fields import lookup
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.decode.values import default_name, field_values
from flowscope.metrics import Counters
from flowscope.model import Datagram

DATA = Path(__file__).resolve().parents[2] / "data" / "goflow2"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())["files"]
EXPORTER = "192.0.2.1"
V9_HEADER = struct.Struct("!HHIIII")  # version, count, sys_uptime, unix_secs, sequence, source_id


@pytest.fixture(scope="module")
def decoded() -> tuple[DecoderSession, Counters, dict[str, list[RecordSet]]]:
    counters = Counters()
    session = DecoderSession(counters=counters)
    results: dict[str, list[RecordSet]] = {}
    for name in ("netflow_v9_template.bin", "netflow_v9_data.bin", "netflow_v5.bin"):
        results[name] = session.decode([Datagram(EXPORTER, 0, (DATA / name).read_bytes())])
    return session, counters, results


def v9_header(name: str) -> dict[str, int]:
    version, count, uptime, secs, sequence, source_id = V9_HEADER.unpack_from((DATA / name).read_bytes())
    return {"version": version, "count": count, "sys_uptime_ms": uptime, "unix_secs": secs,
            "sequence": sequence, "source_id": source_id}


@pytest.mark.parametrize("name", ["netflow_v9_template.bin", "netflow_v9_data.bin"])
def test_v9_header(name: str) -> None:
    expected = {key: value for key, value in EXPECTED[name]["header"].items() if key != "unix_secs_utc"}
    assert v9_header(name) == expected


def test_v9_template(decoded: tuple[DecoderSession, Counters, dict[str, list[RecordSet]]]) -> None:
    session, counters, results = decoded
    (flowset,) = EXPECTED["netflow_v9_template.bin"]["flowsets"]
    (expected,) = flowset["templates"]
    assert flowset["flowset_id"] == 0  # a template set, as our decoder read it: nothing but a template
    assert results["netflow_v9_template.bin"] == []
    source_id = EXPECTED["netflow_v9_template.bin"]["header"]["source_id"]
    template = session.templates.get(EXPORTER, source_id, expected["template_id"])
    assert template is not None
    assert not template.is_options
    assert len(template.fields) == expected["field_count"]
    assert [[spec.element_id, spec.length] for spec in template.fields] == expected["fields_type_length"]
    assert all(spec.pen == 0 for spec in template.fields)
    assert template.fixed_length == 65  # 23 fields, 4+4+4+4+4+4+4+4+2+2+4+4+4+1+1+1+1+1+1+1+2+4+4
    assert counters.total("decode_templates_total", event="new") == 1


def test_v9_data_first_record(decoded: tuple[DecoderSession, Counters, dict[str, list[RecordSet]]]) -> None:
    _, _, results = decoded
    expected = EXPECTED["netflow_v9_data.bin"]
    header = expected["header"]
    (records,) = results["netflow_v9_data.bin"]
    assert records.template.template_id == expected["first_flowset"]["flowset_id"]
    # set length 1372 = 4-byte set header + 21 records of 65 bytes + 3 padding bytes
    assert expected["first_flowset"]["length"] == 4 + header["count"] * records.template.fixed_length + 3
    assert len(records) == header["count"] == 21
    assert records.domain == header["source_id"]
    assert records.version == header["version"]
    assert set(records.sys_uptime_ms.tolist()) == {header["sys_uptime_ms"]}
    assert set(records.export_time_ms.tolist()) == {header["unix_secs"] * 1000}

    fields = expected["first_record_fields"]
    assert [spec.element_id for spec in records.template.fields] == [f["type"] for f in fields]
    for position, field in enumerate(fields):
        assert records.values(position)[0].hex() == field["raw_hex"], field["name_in_goflow2"]
        value = field_values(records, position)[0]
        assert value == field.get("as_ipv4", field["uint"]), field["name_in_goflow2"]
        if "iana_name" in field:
            assert default_name(lookup(0, field["type"])) == field["iana_name"]


def test_v5(decoded: tuple[DecoderSession, Counters, dict[str, list[RecordSet]]]) -> None:
    _, _, results = decoded
    expected = EXPECTED["netflow_v5.bin"]
    (records,) = results["netflow_v5.bin"]
    assert records.version == expected["header"]["version"]
    assert len(records) == 6  # MANIFEST: 6 records
    position = records.template.field_position(0, 10)  # ingressInterface (input SNMP index)
    assert position is not None
    for record in expected["records"]:
        assert field_values(records, position)[record["index"]] == record["input_interface"]


def test_no_decode_errors(decoded: tuple[DecoderSession, Counters, dict[str, list[RecordSet]]]) -> None:
    _, counters, _ = decoded
    assert counters.total("decode_errors_total") == 0
    assert counters.total("decode_packets_total") == 3
