"""IPFIXcol / IPFIXcol2 records → FlowBatch (``spark.ipfixcol``), without Spark.

Spark's ``from_json`` hands the mapping every key as text (a JSON number as its digits, a string
without its quotes, a malformed line in the corrupt-record column); ``text_table`` builds that
table here with Python's json module so the mapping is tested on its own. The oracle is
flowscope's own decoder on the capture the records were printed from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.model import IPV4_MAPPED_PREFIX, ExporterTable, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.pipeline import decode_files
from flowscope.spark.ipfixcol import CORRUPT_COLUMN, JsonInput, _keys, ipfixcol_flows, line_schema

DATA = Path(__file__).resolve().parents[2] / "data"
CAPTURE = DATA / "ipfixcol2" / "example_flows.ipfix"
RECORDED = DATA / "ipfixcol"


def text_table(lines: list[str], input_format: str) -> pa.Table:
    """The table Spark's ``from_json(value, line_schema(input_format))`` gives for ``lines``."""
    keys = _keys(input_format)
    columns: dict[str, list[str | None]] = {key: [] for key in [*keys, CORRUPT_COLUMN]}
    for line in lines:
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(line)
        except ValueError:
            record = None
        for key in keys:
            value = None if record is None else record.get(key)
            columns[key].append(None if value is None else value if isinstance(value, str) else json.dumps(value))
        columns[CORRUPT_COLUMN].append(line if record is None else None)
    return pa.table({key: pa.array(values, pa.string()) for key, values in columns.items()})


def decoded_capture() -> FlowBatch:
    """The capture through flowscope's decoder and normalizer, rows in arrival order."""
    session = DecoderSession(counters=Counters())
    normalizer = Normalizer(NormalizeConfig(preserve_order=True), session.options, Counters())
    return FlowBatch.concat([batch for batch, _ in decode_files([CAPTURE], session, normalizer)])


def printed(*options: str) -> list[str]:
    """``flowscope decode --format ipfixcol2`` of the capture (flowscope-made IPFIXcol2 JSON)."""
    run = subprocess.run([sys.executable, "-m", "flowscope.cli", "decode", "--format", "ipfixcol2", *options,
                          str(CAPTURE)], check=True, capture_output=True, text=True, timeout=60)
    return run.stdout.splitlines()


@pytest.fixture(scope="module")
def expected() -> FlowBatch:
    return decoded_capture()


COMPARED = ("time_start", "time_end", "src_addr", "dst_addr", "src_port", "dst_port", "protocol", "tcp_flags",
            "tos", "packets", "bytes", "in_if", "out_if", "src_as", "dst_as", "sampling_rate")


@pytest.mark.parametrize("options", [
    (),  # IPFIXcol2's defaults: formatted flags, timestamps and protocol
    ("--ipfixcol2-tcp-flags", "raw", "--ipfixcol2-timestamp", "unix", "--ipfixcol2-protocol", "raw",
     "--ipfixcol2-detailed-info"),
], ids=["formatted", "raw+detailed"])
def test_ipfixcol2_records_give_the_decoders_flows(options: tuple[str, ...], expected: FlowBatch) -> None:
    lines = printed(*options)
    counters = Counters()
    exporters = ExporterTable()
    batch = ipfixcol_flows(text_table(lines, "ipfixcol2"), exporters, counters)
    assert len(batch) == len(expected) == 3979
    for name in COMPARED:
        want = expected[name]
        if name == "tcp_flags" and not options:  # ".AP.S." shows six flags: ECE and CWR (0xC0) are lost
            assert (want & 0xC0).any()
            want = want & 0x3F
        assert np.array_equal(batch[name], want), name
    detailed = "--ipfixcol2-detailed-info" in options
    assert exporters.entries() == [("0.0.0.0", 6 if detailed else 0)]
    if detailed:  # ipfix:exportTime is the message's export time, which the decoder calls received
        assert np.array_equal(batch["time_received"], expected["time_received"])
    assert counters.total("spark_input_dropped_total") == 0
    assert counters.total("spark_input_bad_values_total") == 0


def test_the_formatted_and_raw_samples_are_the_same_flows() -> None:
    formatted = (RECORDED / "flowscope-made-ipfixcol2-formatted.jsonl").read_text().splitlines()
    raw = (RECORDED / "flowscope-made-ipfixcol2-raw.jsonl").read_text().splitlines()
    one = ipfixcol_flows(text_table(formatted, "ipfixcol2"), ExporterTable(), Counters())
    other = ipfixcol_flows(text_table(raw, "ipfixcol2"), ExporterTable(), Counters())
    assert len(one) == len(other) == 60
    for name in COMPARED:
        assert np.array_equal(one[name], other[name] & 0x3F if name == "tcp_flags" else other[name]), name
    assert sum(bytes(address)[:12] != IPV4_MAPPED_PREFIX for address in one["src_addr"]) == 5  # IPv6 ones
    icmp = one["protocol"] == 1
    assert icmp.any() and (one["dst_port"][icmp] > 0).all()  # ICMP type and code in the port


def test_ipfixcol_v1_key_names_give_the_same_flows(expected: FlowBatch) -> None:
    # Stream4Flow's IPFIXcol settings (raw flags, unix timestamps, raw protocol) with v1 key names
    # and separators: flowscope-made, from the IPFIXcol2 rendering with the keys renamed.
    lines = printed("--ipfixcol2-tcp-flags", "raw", "--ipfixcol2-timestamp", "unix", "--ipfixcol2-protocol", "raw")
    v1 = [json.dumps({key.replace("iana:", "ipfix."): value for key, value in json.loads(line).items()})
          for line in lines]
    batch = ipfixcol_flows(text_table(v1, "ipfixcol"), ExporterTable(), Counters())
    for name in COMPARED:
        assert np.array_equal(batch[name], expected[name]), name


def test_the_recorded_ipfixcol_v1_line_is_the_captures_flow_in_local_time(expected: FlowBatch) -> None:
    # IPFIXcol's README record and the capture's record are the same flow (ipfixcol2 later
    # anonymized the file's addresses). v1 prints local time (here Central European Summer Time)
    # and that version cut the seconds' last digit ("14:10:2.012" for 14:10:23.012).
    line = (RECORDED / "ipfixcol-json-readme.jsonl").read_text().splitlines()
    batch = ipfixcol_flows(text_table(line, "ipfixcol"), ExporterTable(), Counters(), timezone="Europe/Prague")
    assert len(batch) == 1
    twin = np.flatnonzero((expected["bytes"] == 3970) & (expected["packets"] == 14))
    assert len(twin) == 1
    for name in ("src_port", "dst_port", "protocol", "tcp_flags", "tos", "packets", "bytes", "in_if", "out_if"):
        assert batch[name][0] == expected[name][twin[0]], name
    assert batch["tcp_flags"][0] == 0x1B and batch["protocol"][0] == 6
    # The same minute, and the truncated seconds: 12:10:02.012 UTC for 12:10:23.012.
    assert batch["time_start"][0] // 60_000 == expected["time_start"][twin[0]] // 60_000
    assert batch["time_start"][0] == 1_438_603_802_012
    assert batch["time_end"][0] == 1_438_603_862_380
    assert bytes(batch["src_addr"][0])[-4:] == bytes([52, 24, 214, 8])


def test_the_recorded_ipfixcol2_line() -> None:
    line = (RECORDED / "ipfixcol2-json-readme.jsonl").read_text().splitlines()
    batch = ipfixcol_flows(text_table(line, "ipfixcol2"), ExporterTable(), Counters())
    assert len(batch) == 1
    assert batch["time_start"][0] == 1_526_067_869_006  # 2018-05-11T19:44:29.006Z
    assert batch["time_end"][0] == 1_526_067_870_364
    assert (batch["packets"][0], batch["bytes"][0]) == (2383, 3_568_720)
    assert (batch["protocol"][0], batch["tcp_flags"][0]) == (6, 0x1A)  # ".AP.S."
    assert (batch["src_port"][0], batch["dst_port"][0], batch["in_if"][0]) == (47200, 20810, 1)


def test_formatted_flags_protocols_and_timestamps() -> None:
    lines = [
        json.dumps({"@type": "ipfix.entry", "iana:sourceIPv6Address": "2001:db8::1",
                    "iana:destinationIPv6Address": "2001:db8::2", "iana:protocolIdentifier": name,
                    "iana:tcpControlBits": flags, "iana:flowStartMilliseconds": start,
                    "iana:flowEndSeconds": end, "iana:packetDeltaCount": 1, "iana:octetDeltaCount": 40})
        for name, flags, start, end in [
            ("TCP", "UAPRSF", "1970-01-01T00:00:01.5Z", 2000), ("ipv6-icmp", 0, 1000, "1970-01-01T00:00:02.123456Z"),
            ("17", "......", "2024-02-29T23:59:59.999Z", None), ("HIP", 0x1FF, 0, 0),
        ]
    ]
    batch = ipfixcol_flows(text_table(lines, "ipfixcol2"), ExporterTable(), Counters())
    assert batch["protocol"].tolist() == [6, 58, 17, 139]
    assert batch["tcp_flags"].tolist() == [0x3F, 0, 0, 0xFF]
    assert batch["time_start"].tolist() == [1500, 1000, 1_709_251_199_999, 0]
    assert batch["time_end"].tolist() == [2000, 2123, 1_709_251_199_999, 0]  # a missing end is the start
    assert bytes(batch["dst_addr"][0]) == bytes.fromhex("20010db8000000000000000000000002")


def test_sampling_icmp_and_biflows_follow_the_normalizer() -> None:
    base = {"@type": "ipfix.entry", "iana:sourceIPv4Address": "10.0.0.1", "iana:destinationIPv4Address": "10.0.0.2",
            "iana:flowStartMilliseconds": 5000, "iana:flowEndMilliseconds": 6000}
    lines = [
        json.dumps({**base, "iana:protocolIdentifier": 1, "iana:icmpTypeCodeIPv4": 0x0303,
                    "iana:packetDeltaCount": 2, "iana:octetDeltaCount": 100, "iana:samplingInterval": 10}),
        json.dumps({**base, "iana:protocolIdentifier": 6, "iana:sourceTransportPort": 1234,
                    "iana:destinationTransportPort": 80, "iana:packetDeltaCount": 3, "iana:octetDeltaCount": 300,
                    "iana@reverse:packetDeltaCount@reverse": 4, "iana@reverse:octetDeltaCount@reverse": 4000,
                    "iana:tcpControlBits": ".A..S.", "iana@reverse:tcpControlBits@reverse": ".AP..F"}),
    ]
    batch = ipfixcol_flows(text_table(lines, "ipfixcol2"), ExporterTable(), Counters())
    assert len(batch) == 3
    assert batch["dst_port"].tolist() == [0x0303, 80, 1234]
    assert batch["packets"].tolist() == [20, 3, 4] and batch["bytes"].tolist() == [1000, 300, 4000]
    assert batch["sampling_rate"].tolist() == [10, 1, 1]
    assert batch["tcp_flags"].tolist() == [0, 0x12, 0x19]
    assert bytes(batch["src_addr"][2])[-4:] == bytes([10, 0, 0, 2])


def test_bad_lines_are_counted_by_kind_and_never_raise() -> None:
    good = {"@type": "ipfix.entry", "iana:sourceIPv4Address": "10.0.0.1", "iana:destinationIPv4Address": "10.0.0.2",
            "iana:flowEndMilliseconds": 1000, "iana:packetDeltaCount": 1, "iana:octetDeltaCount": 64,
            "ipfix:srcAddr": "192.0.2.7", "ipfix:odid": 3}
    lines = [
        json.dumps(good),
        '{"@type":"ipfix.entry","iana:sourceIPv4Add',  # cut short
        "[1, 2]",  # JSON, but not an object
        json.dumps({"hello": "world"}),
        json.dumps({"@type": "ipfix.optionsEntry", "iana:samplingInterval": 100, "ipfix:srcAddr": "192.0.2.7"}),
        json.dumps({**good, "iana:sourceIPv4Address": None}),
        json.dumps({**good, "iana:destinationIPv4Address": "10.0.0.300"}),
        json.dumps({k: v for k, v in good.items() if k != "iana:flowEndMilliseconds"}),
        json.dumps({**good, "iana:octetDeltaCount": "many", "iana:protocolIdentifier": "NOPE",
                    "iana:tcpControlBits": "SYN", "iana:sourceTransportPort": 70000,
                    "iana:packetDeltaCount": 18446744073709551616}),
        json.dumps({k: v for k, v in good.items() if k != "iana:packetDeltaCount"}),
        json.dumps({**good, "iana:flowEndMilliseconds": "2024-13-45T09:00:00.000Z",
                    "iana:flowStartMilliseconds": 7000}),
    ]
    source = JsonInput("ipfixcol2")
    batch = source.flows(text_table(lines, "ipfixcol2"), ExporterTable())
    assert len(batch) == 4  # the good line, the one with bad values, the one without packets, the bad end
    dropped = {labels["kind"]: value for labels, value in source.counters.series("spark_input_dropped_total")}
    assert dropped == {"malformed_json": 2, "unrecognized": 1, "not_a_flow": 1, "missing_address": 1,
                       "bad_address": 1, "missing_time": 1}
    assert source.counters.get("spark_input_dropped_total", kind="not_a_flow", exporter="192.0.2.7") == 1
    bad = {labels["field"]: value for labels, value in source.counters.series("spark_input_bad_values_total")}
    assert bad == {"bytes": 1, "protocol": 1, "tcp_flags": 1, "src_port": 1, "packets": 1, "missing_packets": 1,
                   "time_end": 1}
    assert batch["packets"].tolist() == [1, 0, 0, 1] and batch["bytes"].tolist() == [64, 0, 64, 64]
    assert batch["time_end"].tolist() == [1000, 1000, 1000, 7000]  # the bad end: the start stands in


def test_auto_reads_flowscope_ipfixcol_and_ipfixcol2_lines_side_by_side() -> None:
    v2 = (RECORDED / "ipfixcol2-json-readme.jsonl").read_text().splitlines()
    v1 = (RECORDED / "ipfixcol-json-readme.jsonl").read_text().splitlines()
    own = ['{"time_received":1000,"time_start":900,"time_end":1000,"exporter":"192.0.2.1","domain":5,'
           '"src_addr":"10.1.1.1","dst_addr":"10.1.1.2","src_port":1,"dst_port":2,"protocol":17,"tcp_flags":0,'
           '"tos":0,"packets":7,"bytes":700,"in_if":0,"out_if":0,"src_as":0,"dst_as":0,"sampling_rate":1}']
    exporters = ExporterTable()
    source = JsonInput("auto")
    batch = source.flows(text_table([*v2, *own, *v1], "auto"), exporters)
    assert sorted(batch["packets"].tolist()) == [7, 14, 2383]
    assert sorted(exporters.entries()) == [("0.0.0.0", 0), ("192.0.2.1", 5)]
    assert source.counters.total("spark_input_dropped_total") == 0


def test_schema_names_every_key_once_and_refuses_unknown_formats() -> None:
    for input_format in ("ipfixcol", "ipfixcol2", "auto"):
        schema = line_schema(input_format)
        names = [part.split(" ")[0] for part in schema.split(", ")]
        assert len(names) == len(set(names))
        assert f"{CORRUPT_COLUMN}" in names
    assert "`ipfix.octetDeltaCount`" in line_schema("ipfixcol")
    assert "`iana:octetDeltaCount`" not in line_schema("ipfixcol")
    with pytest.raises(Exception, match="input-format"):
        line_schema("netflow")
