"""IPFIXcol2's example_flows.ipfix (RFC 5655 file): 68 messages, 3,979 records, no decode error.

The record counts per template are those of ``tests/data/ipfixcol2/MANIFEST.md`` (our parse,
cross-checked with tshark, which decodes the file without expert errors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowscope.collect.files import read_ipfix_file
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.decode.values import field_values, record_dicts
from flowscope.metrics import Counters
from flowscope.model import Datagram

FILE = Path(__file__).resolve().parents[2] / "data" / "ipfixcol2" / "example_flows.ipfix"
EXPORTER = "192.0.2.1"
RECORDS_PER_TEMPLATE = {256: 1848, 257: 2051, 258: 16, 259: 57, 260: 3, 261: 4}
EXPORT_TIMES_MS = (1_438_603_921_000, 1_438_603_922_000)  # 2015-08-03 12:12:01 and 12:12:02 UTC


@pytest.fixture(scope="module")
def datagrams() -> list[Datagram]:
    return list(read_ipfix_file(FILE, exporter=EXPORTER))


def decode(datagrams: list[Datagram], *, one_call: bool) -> tuple[list[RecordSet], Counters, DecoderSession]:
    counters = Counters()
    session = DecoderSession(counters=counters)
    if one_call:
        return session.decode(datagrams), counters, session
    record_sets: list[RecordSet] = []
    for datagram in datagrams:
        record_sets += session.decode([datagram])
    return record_sets, counters, session


def per_template(record_sets: list[RecordSet]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for records in record_sets:
        counts[records.template.template_id] = counts.get(records.template.template_id, 0) + len(records)
    return counts


@pytest.mark.parametrize("one_call", [True, False], ids=["one decode call", "one call per message"])
def test_counts_and_no_errors(datagrams: list[Datagram], one_call: bool) -> None:
    assert len(datagrams) == 68
    record_sets, counters, session = decode(datagrams, one_call=one_call)
    assert per_template(record_sets) == RECORDS_PER_TEMPLATE
    assert sum(len(records) for records in record_sets) == 3979
    assert counters.total("decode_errors_total") == 0
    assert counters.total("decode_packets_total", version="10") == 68  # the set-less message included
    assert counters.total("decode_records_total", kind="data") == 3979
    assert counters.total("decode_templates_total", event="new") == 8  # 256-263, all in message 1
    assert counters.total("decode_sequence_lost_total") == 0
    assert counters.total("decode_ignored_bytes_total") == 0
    assert session.pending_sets() == 0
    assert {records.domain for records in record_sets} == {6}


def test_header_times_and_reduced_size_fields(datagrams: list[Datagram]) -> None:
    record_sets, _, _ = decode(datagrams, one_call=True)
    for records in record_sets:
        assert records.version == 10
        assert EXPORT_TIMES_MS[0] <= records.export_time_ms.min() <= records.export_time_ms.max() <= EXPORT_TIMES_MS[1]
        lengths = {(spec.pen, spec.element_id): spec.length for spec in records.template.fields}
        # Reduced-size encoding (RFC 7011 §6.2): 4-byte counters, 2-byte interfaces.
        assert lengths[(0, 1)] == lengths[(0, 2)] == 4
        assert lengths[(0, 10)] == lengths[(0, 14)] == 2
        rows = record_dicts(records)
        ipv4 = (0, 8) in lengths
        assert ipv4 != ((0, 27) in lengths)
        assert {row["ipVersion"] for row in rows} == {4 if ipv4 else 6}
        for row in rows:
            assert isinstance(row["flowStartMilliseconds"], int)
            assert isinstance(row["flowEndMilliseconds"], int)
            assert row["flowStartMilliseconds"] <= row["flowEndMilliseconds"] <= EXPORT_TIMES_MS[1]
            assert isinstance(row["octetDeltaCount"], int)
            assert isinstance(row["packetDeltaCount"], int)
            assert 0 < row["packetDeltaCount"] <= row["octetDeltaCount"]
        # typed values agree with the raw unsigned column the hot path uses
        position = records.template.field_position(0, 1)
        assert position is not None
        assert np.array_equal(np.array(field_values(records, position), dtype=np.uint64), records.unsigned(position))
