"""normalize (flowscope.normalize.Normalizer): record sets of every version → canonical FlowBatch.

Every expected value is worked out by hand in the test (times as plain integer arithmetic on the
values written into the crafted messages), or taken from what a source project asserts for a
real capture (expected.json), never by calling the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from flowscope.decode.session import DecoderSession
from flowscope.model import FLOW_COLUMNS, Datagram, FlowBatch, addresses_text
from flowscope.normalize import NormalizeConfig, Normalizer
from support.exports import (
    REVERSE_PEN,
    SCOPE_SYSTEM,
    data_set,
    ipfix_message,
    ipfix_options_template,
    ipfix_options_template_set,
    ipfix_template,
    ipfix_template_set,
    ipv4,
    ipv6,
    mapped,
    ntp,
    record,
    u8,
    u16,
    u32,
    u64,
    uint,
    v5_message,
    v5_record,
    v9_message,
    v9_options_template,
    v9_options_template_set,
    v9_template,
    v9_template_set,
)

DATA = Path(__file__).resolve().parents[1] / "data"
LOGSTASH = DATA / "logstash-codec-netflow"
SOFTFLOWD = DATA / "python-netflow-v9-softflowd"
GOFLOW2 = DATA / "goflow2"

A, B = "192.0.2.1", "198.51.100.7"
T0 = 1_700_000_000_000
EXPORT_S = 1_699_999_990
EXPORT_MS = EXPORT_S * 1000


class Pipeline:
    """One decoder session and one normalizer, fed call by call."""

    def __init__(self, config: NormalizeConfig | None = None) -> None:
        self.session = DecoderSession()
        self.normalizer = Normalizer(config, self.session.options, self.session.counters)

    def __call__(self, *payloads: bytes, exporter: str = A, at: int = T0) -> FlowBatch:
        records = self.session.decode([Datagram(exporter, at, p) for p in payloads])
        return self.normalizer.normalize(records)


def normalize(*payloads: bytes, config: NormalizeConfig | None = None, exporter: str = A) -> FlowBatch:
    return Pipeline(config)(*payloads, exporter=exporter)


def ipfix(fields: list[tuple[int, int] | tuple[int, int, int]], *records: bytes, **header: int) -> bytes:
    """One IPFIX message: template 256 with ``fields`` and a data set of ``records``."""
    header.setdefault("export_time", EXPORT_S)
    return ipfix_message([ipfix_template_set(ipfix_template(256, fields)), data_set(256, records)], **header)


def v9(fields: list[tuple[int, int]], *records: bytes, uptime_ms: int, unix_secs: int = EXPORT_S) -> bytes:
    return v9_message(
        [v9_template_set(v9_template(256, fields)), data_set(256, records)], uptime_ms=uptime_ms, unix_secs=unix_secs
    )


def iso_ms(text: str) -> int:
    """ISO-8601 UTC text (any number of fraction digits) → ms, truncated."""
    base, _, fraction = text.rstrip("Z").partition(".")
    seconds = int(dt.datetime.fromisoformat(base).replace(tzinfo=dt.UTC).timestamp())
    return seconds * 1000 + int((fraction + "000")[:3])


def column(batch: FlowBatch, name: str) -> list[int]:
    return batch[name].tolist()


# -- canonical columns ----------------------------------------------------------------------------


def test_columns_from_an_ipfix_record() -> None:
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 2), (5, 1), (2, 8), (1, 8), (10, 4), (14, 4), (16, 4),
              (17, 4)]
    row = record(ipv4("10.1.2.3"), ipv4("192.0.2.200"), u16(51000), u16(443), u8(6), u16(0x0112), u8(0x28),
                 u64(12), u64(3456), u32(7), u32(9), u32(64500), u32(64501))
    batch = normalize(ipfix(fields, row))
    assert len(batch) == 1
    assert set(batch.columns) == set(FLOW_COLUMNS)
    assert all(batch[name].dtype == dtype for name, dtype in FLOW_COLUMNS.items())
    assert addresses_text(batch["src_addr"]) == ["10.1.2.3"]
    assert batch["src_addr"].tobytes() == mapped("10.1.2.3")
    assert batch["dst_addr"].tobytes() == mapped("192.0.2.200")
    assert (column(batch, "src_port"), column(batch, "dst_port"), column(batch, "protocol")) == ([51000], [443], [6])
    assert column(batch, "tcp_flags") == [0x12]  # the low 8 bits of a 2-byte tcpControlBits
    assert column(batch, "tos") == [0x28]
    assert (column(batch, "packets"), column(batch, "bytes")) == ([12], [3456])
    assert (column(batch, "in_if"), column(batch, "out_if")) == ([7], [9])
    assert (column(batch, "src_as"), column(batch, "dst_as")) == ([64500], [64501])
    assert column(batch, "time_received") == [T0]
    assert column(batch, "exporter") == [0]
    assert column(batch, "sampling_rate") == [1]
    # no time fields: the export time stands for both ends
    assert (column(batch, "time_start"), column(batch, "time_end")) == ([EXPORT_MS], [EXPORT_MS])


def test_missing_fields_are_zero() -> None:
    batch = normalize(ipfix([(4, 1)], u8(17)))
    for name in ("src_port", "dst_port", "packets", "bytes", "in_if", "out_if", "src_as", "dst_as", "tos"):
        assert column(batch, name) == [0], name
    assert batch["src_addr"].tobytes() == bytes(16)


def test_ipv6_addresses() -> None:
    src, dst = "2001:db8::1", "fe80::1234:5678:9abc:def0"
    batch = normalize(ipfix([(27, 16), (28, 16), (4, 1)], ipv6(src) + ipv6(dst) + u8(58)))
    assert batch["src_addr"].tobytes() == ipv6(src)
    assert batch["dst_addr"].tobytes() == ipv6(dst)
    assert addresses_text(batch["src_addr"]) == [src]
    assert addresses_text(batch["dst_addr"]) == [dst]


def test_exporter_index_follows_the_exporter_table() -> None:
    pipeline = Pipeline()
    pipeline(ipfix([(4, 1)], u8(6)), exporter=A)
    batch = pipeline(ipfix([(4, 1)], u8(6), domain=3), exporter=B)
    assert pipeline.session.exporters.key_of(int(batch["exporter"][0])) == (B, 3)


# -- ICMP -----------------------------------------------------------------------------------------


def test_icmp_type_code_goes_into_dst_port() -> None:
    fields = [(4, 1), (11, 2), (32, 2), (139, 2)]
    batch = normalize(ipfix(
        fields,
        u8(1) + u16(0) + u16(0x0800) + u16(0),  # ICMP echo request: 8 * 256 + 0
        u8(1) + u16(0) + u16(0x0303) + u16(0),  # port unreachable: 3 * 256 + 3
        u8(6) + u16(443) + u16(0x0800) + u16(0),  # TCP: the port stays
        u8(1) + u16(77) + u16(0x0800) + u16(0),  # the exporter already filled the port
    ))
    assert column(batch, "dst_port") == [2048, 771, 443, 77]


def test_icmpv6_and_separate_type_and_code() -> None:
    v6 = normalize(ipfix([(4, 1), (139, 2)], u8(58) + u16(0x8000)))  # echo request 128/0
    assert column(v6, "dst_port") == [32768]
    split = normalize(ipfix([(4, 1), (176, 1), (177, 1)], u8(1) + u8(3) + u8(1)))  # host unreachable 3/1
    assert column(split, "dst_port") == [3 * 256 + 1]
    type_only = normalize(ipfix([(4, 1), (176, 1)], u8(1) + u8(11)))  # time exceeded, code absent
    assert column(type_only, "dst_port") == [11 * 256]


def test_icmp_real_v5() -> None:
    # softflowd v5 puts type/code into the destination port itself: echo request, echo reply
    payload = (SOFTFLOWD / "packet_v5.bin").read_bytes()
    batch = normalize(payload)
    assert column(batch, "protocol") == [1, 1, 17]
    assert column(batch, "dst_port") == [0x0800, 0x0000, 5353]
    assert addresses_text(batch["dst_addr"]) == ["172.17.0.1", "172.17.0.2", "224.0.0.251"]


# -- times ----------------------------------------------------------------------------------------


def test_v9_uptime_relative_times() -> None:
    uptime = 100_000_000
    batch = normalize(v9([(22, 4), (21, 4)], u32(uptime - 5000) + u32(uptime - 1000), uptime_ms=uptime))
    assert column(batch, "time_start") == [EXPORT_MS - 5000]
    assert column(batch, "time_end") == [EXPORT_MS - 1000]


def test_v9_uptime_wrap() -> None:
    # uptime wrapped to 3,000 ms; the flow started 2,000 ms before the wrap and ended at uptime 1,000
    before_wrap = (1 << 32) - 2000
    batch = normalize(v9([(22, 4), (21, 4)], u32(before_wrap) + u32(1000), uptime_ms=3000))
    assert column(batch, "time_start") == [EXPORT_MS - 5000]
    assert column(batch, "time_end") == [EXPORT_MS - 2000]


def test_v5_times_use_header_nanoseconds() -> None:
    row = v5_record(first=9_000, last=9_900, packets=1)
    batch = normalize(v5_message([row], uptime_ms=10_000, unix_secs=EXPORT_S, unix_nsecs=123_456_789))
    export = EXPORT_MS + 123
    assert column(batch, "time_start") == [export - 1000]
    assert column(batch, "time_end") == [export - 100]


def test_ipfix_seconds_and_milliseconds() -> None:
    seconds = normalize(ipfix([(150, 4), (151, 4)], u32(1_600_000_000) + u32(1_600_000_007)))
    assert (column(seconds, "time_start"), column(seconds, "time_end")) == ([1_600_000_000_000], [1_600_000_007_000])
    millis = normalize(ipfix([(152, 8), (153, 8)], u64(1_600_000_000_123) + u64(1_600_000_000_999)))
    assert (column(millis, "time_start"), column(millis, "time_end")) == ([1_600_000_000_123], [1_600_000_000_999])


def test_ipfix_ntp_microseconds_and_nanoseconds() -> None:
    # fraction 2**31 is half a second; 0x2000_0000 an eighth (125 ms); 1 ms = 4294967.296 units,
    # so 4294968 units is just over 1 ms and 4294967 just under
    micro = normalize(ipfix([(154, 8), (155, 8)], ntp(1_600_000_000, 1 << 31) + ntp(1_600_000_001, 0x2000_0000)))
    assert column(micro, "time_start") == [1_600_000_000_500]
    assert column(micro, "time_end") == [1_600_000_001_125]
    nano = normalize(ipfix([(156, 8), (157, 8)], ntp(1_600_000_000, 4294968) + ntp(1_600_000_000, 4294967)))
    assert column(nano, "time_start") == [1_600_000_000_001]
    assert column(nano, "time_end") == [1_600_000_000_000]


def test_ipfix_delta_microseconds() -> None:
    # deltas back from the export time; 1,500 µs before EXPORT_MS is EXPORT_MS - 1.5 ms → floor
    batch = normalize(ipfix([(158, 4), (159, 4)], u32(2_000_000) + u32(1_500)))
    assert column(batch, "time_start") == [EXPORT_MS - 2000]
    assert column(batch, "time_end") == [EXPORT_MS - 2]
    # the same instant as an NTP microsecond timestamp gives the same millisecond
    same = normalize(ipfix([(154, 8)], ntp(EXPORT_S - 1, (1 << 32) - (1 << 32) * 1500 // 1_000_000)))
    assert column(same, "time_start") == [EXPORT_MS - 2]


def test_ipfix_sysuptime_with_init_time_in_the_record() -> None:
    init = 1_600_000_000_000
    batch = normalize(ipfix([(160, 8), (22, 4), (21, 4)], u64(init) + u32(70_000) + u32(75_500)))
    assert column(batch, "time_start") == [init + 70_000]
    assert column(batch, "time_end") == [init + 75_500]


def test_ipfix_sysuptime_with_init_time_from_options() -> None:
    init = 1_600_000_000_000
    options = ipfix_message([
        ipfix_options_template_set(ipfix_options_template(300, [(144, 4)], [(160, 8)])),  # exportingProcessId
        data_set(300, [u32(1) + u64(init)]),
    ], export_time=EXPORT_S)
    pipeline = Pipeline()
    batch = pipeline(options, ipfix([(22, 4), (21, 4)], u32(1000) + u32(2000)))
    assert column(batch, "time_start") == [init + 1000]
    assert column(batch, "time_end") == [init + 2000]
    # later messages use what was learned
    later = pipeline(ipfix_message([data_set(256, [u32(5000) + u32(6000)])], export_time=EXPORT_S))
    assert column(later, "time_start") == [init + 5000]
    # another domain has no init time: the export time stands in, and that is counted
    unknown = pipeline(ipfix([(22, 4), (21, 4)], u32(1) + u32(2), domain=9))
    assert column(unknown, "time_start") == [EXPORT_MS]
    assert pipeline.session.counters.get("normalize_time_unknown_total", exporter=A) == 2


def test_durations() -> None:
    start_plus = normalize(ipfix([(152, 8), (161, 4)], u64(1_600_000_000_000) + u32(2500)))
    assert column(start_plus, "time_end") == [1_600_000_002_500]
    end_minus = normalize(ipfix([(153, 8), (162, 4)], u64(1_600_000_000_000) + u32(2_500_700)))
    assert column(end_minus, "time_start") == [1_600_000_000_000 - 2500]
    # with both ends present the duration is not used
    both = normalize(ipfix([(152, 8), (153, 8), (161, 4)], u64(1000) + u64(3000) + u32(99)))
    assert (column(both, "time_start"), column(both, "time_end")) == ([1000], [3000])
    only_start = normalize(ipfix([(150, 4)], u32(1_600_000_000)))
    assert column(only_start, "time_end") == [1_600_000_000_000]


def test_times_real_logstash_cases() -> None:
    expected = json.loads((LOGSTASH / "expected.json").read_text())["cases"]

    def event(case: str, index: int) -> dict:
        found = next(c for c in expected if c["case"] == case)
        return next(e for e in found["events"] if e["event_index"] == index)["complete_event"]["netflow"]

    # The codec's v9 first/last_switched are always exactly 1 s late (it borrows a second when
    # splitting the uptime difference into seconds and microseconds), so 1,000 ms come off.
    valid = normalize((LOGSTASH / "netflow9_test_valid01.dat").read_bytes())
    first = event("Netflow 9 valid 01", 0)
    assert int(valid["time_start"][0]) == iso_ms(first["first_switched"]) - 1000
    assert int(valid["time_end"][0]) == iso_ms(first["last_switched"]) - 1000
    assert int(valid["bytes"][0]) == first["in_bytes"]

    asr = Pipeline()
    asr((LOGSTASH / "netflow9_test_cisco_asr9k_tpl260.dat").read_bytes())
    batch = asr((LOGSTASH / "netflow9_test_cisco_asr9k_data260.dat").read_bytes())
    last = event("Netflow 9 Cisco ASR 9000 series template 260", 20)
    assert len(batch) == 21
    assert int(batch["time_start"][20]) == iso_ms(last["first_switched"]) - 1000
    assert int(batch["time_end"][20]) == iso_ms(last["last_switched"]) - 1000
    assert addresses_text(batch["src_addr"][20:]) == [last["ipv4_src_addr"]]

    pflow = Pipeline()
    pflow((LOGSTASH / "ipfix_test_openbsd_pflow_tpl.dat").read_bytes())
    batch = pflow((LOGSTASH / "ipfix_test_openbsd_pflow_data.dat").read_bytes())
    last = event("IPFIX OpenBSD pflow", 25)
    assert int(batch["time_start"][25]) == iso_ms(last["flowStartMilliseconds"])
    assert int(batch["time_end"][25]) == iso_ms(last["flowEndMilliseconds"])
    assert int(batch["bytes"][25]) == last["octetDeltaCount"]
    assert int(batch["dst_port"][25]) == last["destinationTransportPort"]


def test_times_real_goflow2_v9() -> None:
    header = json.loads((GOFLOW2 / "expected.json").read_text())["files"]["netflow_v9_data.bin"]["header"]
    pipeline = Pipeline()
    pipeline((GOFLOW2 / "netflow_v9_template.bin").read_bytes())
    batch = pipeline((GOFLOW2 / "netflow_v9_data.bin").read_bytes())
    # first record: FIRST_SWITCHED = LAST_SWITCHED = 3015698169, header uptime 3015702147
    behind = header["sys_uptime_ms"] - 3015698169
    assert int(batch["time_start"][0]) == header["unix_secs"] * 1000 - behind
    assert int(batch["time_end"][0]) == header["unix_secs"] * 1000 - behind


# -- sampling -------------------------------------------------------------------------------------


def test_v5_header_sampling_interval() -> None:
    payload = v5_message([v5_record(packets=3, octets=400)], sampling_interval=100, sampling_mode=1)
    batch = normalize(payload)
    assert (column(batch, "packets"), column(batch, "bytes"), column(batch, "sampling_rate")) == ([300], [40000], [100])
    raw = normalize(payload, config=NormalizeConfig(apply_sampling=False))
    assert (column(raw, "packets"), column(raw, "bytes"), column(raw, "sampling_rate")) == ([3], [400], [100])


def test_v5_sampling_real_juniper() -> None:
    expected = json.loads((LOGSTASH / "expected.json").read_text())["cases"]
    case = next(c for c in expected if c["case"] == "Netflow5 Juniper MX80")
    last = case["events"][0]["complete_event"]["netflow"]
    batch = normalize((LOGSTASH / "netflow5_test_juniper_mx80.dat").read_bytes())
    assert len(batch) == 29
    assert int(batch["sampling_rate"][28]) == last["sampling_interval"] == 1000
    assert int(batch["packets"][28]) == last["in_pkts"] * 1000
    assert int(batch["bytes"][28]) == last["in_bytes"] * 1000
    assert (int(batch["src_as"][28]), int(batch["dst_as"][28])) == (last["src_as"], last["dst_as"])


@pytest.mark.parametrize("interval_element", [50, 34], ids=["FLOW_SAMPLER_RANDOM_INTERVAL", "SAMPLING_INTERVAL"])
def test_v9_options_sampler_table(interval_element: int) -> None:
    # options template: scope System (4 bytes); FLOW_SAMPLER_ID, FLOW_SAMPLER_MODE, the interval
    table = v9_options_template_set(
        v9_options_template(300, [(SCOPE_SYSTEM, 4)], [(48, 1), (49, 1), (interval_element, 4)])
    )
    samplers = data_set(300, [u32(0) + u8(1) + u8(2) + u32(100), u32(0) + u8(2) + u8(2) + u32(512)], padding=2)
    flows = [(48, 1), (2, 4), (1, 4)]
    pipeline = Pipeline()
    batch = pipeline(
        v9_message([v9_template_set(v9_template(256, flows)), data_set(256, [
            u8(1) + u32(2) + u32(100),
            u8(2) + u32(3) + u32(300),
            u8(9) + u32(4) + u32(400),  # unknown sampler: not scaled
        ], padding=3)], unix_secs=EXPORT_S),
        v9_message([table, samplers], unix_secs=EXPORT_S),
    )
    assert column(batch, "sampling_rate") == [100, 512, 1]
    assert column(batch, "packets") == [200, 1536, 4]
    assert column(batch, "bytes") == [10_000, 153_600, 400]
    # a later packet uses the table learned before
    later = pipeline(v9_message([data_set(256, [u8(2) + u32(1) + u32(1)])], unix_secs=EXPORT_S))
    assert column(later, "packets") == [512]
    # another exporter's table does not apply
    other = pipeline(
        v9_message([v9_template_set(v9_template(256, flows)), data_set(256, [u8(2) + u32(1) + u32(1)])]), exporter=B
    )
    assert column(other, "packets") == [1]


def test_v9_options_sampling_interval_without_sampler_id() -> None:
    table = v9_options_template_set(v9_options_template(301, [(SCOPE_SYSTEM, 4)], [(34, 4), (35, 1)]))
    pipeline = Pipeline()
    batch = pipeline(
        v9_message([table, data_set(301, [u32(0) + u32(64) + u8(2)], padding=3)]),
        v9([(2, 4)], u32(5), uptime_ms=0),
    )
    assert column(batch, "sampling_rate") == [64]
    assert column(batch, "packets") == [320]


def test_ipfix_selector_with_packet_interval_and_space() -> None:
    # selectorId 302 (scope), samplingPacketInterval 305, samplingPacketSpace 306
    options = ipfix_message([
        ipfix_options_template_set(ipfix_options_template(300, [(302, 8)], [(305, 4), (306, 4)])),
        data_set(300, [u64(7) + u32(1) + u32(99), u64(8) + u32(2) + u32(6)]),
    ], export_time=EXPORT_S)
    flows = ipfix_message([
        ipfix_template_set(ipfix_template(256, [(302, 8), (2, 8), (1, 8)])),
        data_set(256, [u64(7) + u64(1) + u64(60), u64(8) + u64(5) + u64(70), u64(9) + u64(1) + u64(1)]),
    ], export_time=EXPORT_S)
    batch = normalize(options, flows)
    # 1 selected of every 1 + 99 → 1 in 100; 2 of every 2 + 6 → 1 in 4; selector 9 unknown
    assert column(batch, "sampling_rate") == [100, 4, 1]
    assert column(batch, "packets") == [100, 20, 1]
    assert column(batch, "bytes") == [6000, 280, 1]


def test_per_record_sampling_interval() -> None:
    batch = normalize(ipfix([(34, 4), (2, 4)], u32(10) + u32(3), u32(0) + u32(3), u32(1) + u32(3)))
    assert column(batch, "sampling_rate") == [10, 1, 1]
    assert column(batch, "packets") == [30, 3, 3]


def test_per_record_rate_wins_over_options() -> None:
    options = ipfix_message([
        ipfix_options_template_set(ipfix_options_template(300, [(149, 4)], [(34, 4)])),  # observationDomainId
        data_set(300, [u32(0) + u32(1000)]),
    ])
    batch = normalize(options, ipfix([(34, 4), (2, 4)], u32(10) + u32(1), u32(0) + u32(1)))
    assert column(batch, "sampling_rate") == [10, 1000]


def test_apply_sampling_off_keeps_the_rate_column() -> None:
    payload = ipfix([(34, 4), (2, 4), (1, 4)], u32(10) + u32(3) + u32(300))
    batch = normalize(payload, config=NormalizeConfig(apply_sampling=False))
    assert (column(batch, "packets"), column(batch, "bytes"), column(batch, "sampling_rate")) == ([3], [300], [10])


# -- reduced-size counters ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 7, 8])
def test_reduced_size_counters(length: int) -> None:
    value = (1 << (8 * length)) - 2  # the largest even value the length holds
    batch = normalize(ipfix([(2, length), (1, length)], uint(1, length) + uint(value, length)))
    assert column(batch, "bytes") == [value]
    assert column(batch, "packets") == [1]


def test_reduced_size_real_ipt_netflow() -> None:
    expected = json.loads((LOGSTASH / "expected.json").read_text())["cases"]
    case = next(c for c in expected if c["case"] == "Netflow 9 ipt_netflow reduced size encoding")
    last = case["events"][0]["complete_event"]["netflow"]
    batch = normalize((LOGSTASH / "netflow9_test_iptnetflow_reduced_size_encoding_tpldata260.dat").read_bytes())
    assert len(batch) == 12
    assert (int(batch["bytes"][11]), int(batch["packets"][11])) == (last["in_bytes"], last["in_pkts"])
    assert (int(batch["in_if"][11]), int(batch["out_if"][11])) == (last["input_snmp"], last["output_snmp"])
    # the codec's v9 times are 1 s late (see test_times_real_logstash_cases)
    assert int(batch["time_start"][11]) == iso_ms(last["first_switched"]) - 1000
    assert int(batch["time_end"][11]) == iso_ms(last["last_switched"]) - 1000


# -- RFC 5103 biflows -----------------------------------------------------------------------------

BIFLOW = [
    (8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 8), (1, 8), (10, 4), (14, 4), (16, 4), (17, 4),
    (2, 8, REVERSE_PEN), (1, 8, REVERSE_PEN), (6, 1, REVERSE_PEN),
]


def biflow_record(forward: tuple[int, int], reverse: tuple[int, int], *, src: str = "10.0.0.1") -> bytes:
    return record(
        ipv4(src), ipv4("192.0.2.80"), u16(40000), u16(80), u8(6), u8(0x02), u64(forward[0]), u64(forward[1]),
        u32(1), u32(2), u32(65001), u32(65002), u64(reverse[0]), u64(reverse[1]), u8(0x12),
    )


def test_biflow_split() -> None:
    batch = normalize(ipfix(BIFLOW, biflow_record((5, 500), (4, 4000)), biflow_record((1, 60), (0, 0), src="10.0.0.9")))
    # the reverse half follows its forward half; a record without reverse traffic stays single
    assert len(batch) == 3
    assert addresses_text(batch["src_addr"]) == ["10.0.0.1", "192.0.2.80", "10.0.0.9"]
    assert addresses_text(batch["dst_addr"]) == ["192.0.2.80", "10.0.0.1", "192.0.2.80"]
    assert column(batch, "src_port") == [40000, 80, 40000]
    assert column(batch, "dst_port") == [80, 40000, 80]
    assert column(batch, "in_if") == [1, 2, 1]
    assert column(batch, "out_if") == [2, 1, 2]
    assert column(batch, "src_as") == [65001, 65002, 65001]
    assert column(batch, "dst_as") == [65002, 65001, 65002]
    assert column(batch, "packets") == [5, 4, 1]
    assert column(batch, "bytes") == [500, 4000, 60]
    assert column(batch, "tcp_flags") == [0x02, 0x12, 0x02]
    assert column(batch, "protocol") == [6, 6, 6]


def test_biflow_split_off_and_sampled() -> None:
    payload = ipfix(BIFLOW, biflow_record((5, 500), (4, 4000)))
    single = normalize(payload, config=NormalizeConfig(split_biflows=False))
    assert (len(single), column(single, "packets")) == (1, [5])
    sampled = normalize(
        ipfix([*BIFLOW, (34, 4)], biflow_record((5, 500), (4, 4000)) + u32(10)),
    )
    assert column(sampled, "packets") == [50, 40]
    assert column(sampled, "bytes") == [5000, 40000]


# -- order and options ----------------------------------------------------------------------------


def test_rows_follow_arrival_order_across_sets_and_messages() -> None:
    templates = ipfix_message([ipfix_template_set(ipfix_template(256, [(1, 4)]), ipfix_template(257, [(1, 8)]))])
    one = ipfix_message([data_set(256, [u32(1), u32(2)]), data_set(257, [u64(3)]), data_set(256, [u32(4)])])
    two = ipfix_message([data_set(257, [u64(5)]), data_set(256, [u32(6)])])
    assert column(normalize(templates, one, two), "bytes") == [1, 2, 3, 4, 5, 6]
    grouped = normalize(templates, one, two, config=NormalizeConfig(preserve_order=False))
    assert column(grouped, "bytes") == [1, 2, 4, 6, 3, 5]


def test_biflow_rows_in_order_with_other_sets() -> None:
    templates = ipfix_message([ipfix_template_set(ipfix_template(256, BIFLOW), ipfix_template(257, [(1, 8)]))])
    body = ipfix_message([
        data_set(257, [u64(1)]),
        data_set(256, [biflow_record((1, 2), (1, 3))]),
        data_set(257, [u64(4)]),
    ])
    assert column(normalize(templates, body), "bytes") == [1, 2, 3, 4]


def test_options_records_are_not_flows() -> None:
    options = ipfix_message([
        ipfix_options_template_set(ipfix_options_template(300, [(149, 4)], [(1, 8)])),
        data_set(300, [u32(0) + u64(999)]),
    ])
    assert len(normalize(options)) == 0
    assert len(normalize(options, ipfix([(1, 8)], u64(5)))) == 1


def test_empty_input() -> None:
    batch = Normalizer(None, DecoderSession().options).normalize([])
    assert len(batch) == 0
    assert all(batch[name].dtype == dtype for name, dtype in FLOW_COLUMNS.items())


def test_real_ipfix_file_batch() -> None:
    raw = (DATA / "ipfixcol2" / "example_flows.ipfix").read_bytes()
    batch = normalize(raw)
    assert len(batch) == 3979
    # every record has samplingInterval (34) and flowStart/EndMilliseconds (152/153)
    assert np.all(batch["time_start"] <= batch["time_end"])
    first_export = struct.unpack_from("!I", raw, 4)[0] * 1000
    # the flows end before the first message's export time (within the capture's hour)
    assert np.all(batch["time_end"] <= first_export + 3_600_000)
    assert np.all(batch["time_start"] >= first_export - 3_600_000)
