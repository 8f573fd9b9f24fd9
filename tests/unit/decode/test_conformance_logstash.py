"""Conformance with logstash-codec-netflow: every value its spec (netflow_spec.rb) asserts.

``tests/data/logstash-codec-netflow/expected.json`` restates the spec's assertions per case: the
files fed, in order, to one codec, the number of events, and per event either the complete event
or single field values. Each case here feeds the same files through ONE ``DecoderSession`` and
renders every decoded record as the codec would emit it:

* field names: ``logstash_names.json`` (the codec's netflow.yaml / ipfix.yaml), elements the codec
  skips are left out, zero-length template fields too;
* header-copied fields (``version``, ``flow_seq_num``, ``flowset_id``, the v5 engine/sampling
  fields, ``@timestamp``) from the message header;
* values: our typed values (``flowscope.decode.values``) converted to the codec's renderings
  (octet arrays as hex, ``application_id`` as ``engine..selector``, ``forwarding_status`` as
  ``{status, reason}``, ASA ACL ids, MPLS label entries, ISO-8601 times computed the codec's way,
  including its artefacts, see ``switched_v5``/``switched_v9``).

The codec decodes only the first export message of a file (MANIFEST.md); ``read_raw_datagrams``
splits concatenated v5/IPFIX messages, all of them are decoded (they carry state), and only the
records of each file's first message count as events.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from flowscope.collect.files import read_raw_datagrams
from flowscope.decode.fields import lookup
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.decode.templates import VARIABLE_LENGTH, FieldSpec
from flowscope.decode.v9 import V9_SCOPE_PEN
from flowscope.decode.values import field_values
from flowscope.metrics import Counters

DATA = Path(__file__).resolve().parents[2] / "data" / "logstash-codec-netflow"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
CASES: list[dict[str, Any]] = EXPECTED["cases"]
NAMES: dict[str, Any] = json.loads((Path(__file__).with_name("logstash_names.json")).read_text())
EXPORTER = "192.0.2.1"

NTP_UNIX_OFFSET_S = 2_208_988_800
NS = 1_000_000_000
MICROSECOND_RESOLUTION_NS = NS / 2**21  # RFC 7011 §6.1.9: dateTimeMicroseconds ignores 11 fraction bits

# Where the spec states no event count, the record count of our parse in MANIFEST.md (cross-checked
# with tshark there). The codec itself emits nothing for the v5 files: it rejects a header count
# above 30 outright.
MANIFEST_RECORD_COUNTS = {
    "Netflow 5 invalid 01": 30,
    "Netflow 5 invalid 02": 30,
    "Netflow 9 macaddress": 30,
    "Netflow 9 invalid 01": 3,
    "Netflow 9 options template with scope fields": 1,
    "Netflow 9 Cisco WLC 8500 release 8.2": 0,
    "Netflow 9 Cisco 1941/K9 release 15.1": 29,
    "Netflow 9 Cisco ASR1001-X": 25,
}

# Decode errors the deliberately broken inputs must produce (kind -> count); every other case none.
EXPECTED_ERRORS: dict[str, dict[str, int]] = {
    "Netflow 5 invalid 01": {"truncated": 1},  # header count 55582, 30 records present
    "Netflow 5 invalid 02": {"truncated": 1},  # header count 163, 30 records present
}
# Zero-filled tails (MANIFEST caveats): ignored and counted, not errors.
EXPECTED_ZERO_FILL_BYTES = {
    "Netflow 9 Cisco ACI": 64,
    "Netflow 9 Palo Alto 1 flowset in large zero filled packet": 1220,
}

# Values that we deliberately render differently from the codec, with the reason. Empty: every
# codec rendering, artefacts included, is reproduced from our decoded values.
DOCUMENTED_DIFFERENCES: dict[tuple[str, int, str], str] = {}

# Elements our registry does not know (their values come back as bytes): the codec's decoder type
# for them, from its netflow.yaml (NetFlow v9 vendor types) and ipfix.yaml (NetScaler placeholders).
NETFLOW_CODEC_TYPES: dict[tuple[int, int], str] = {
    **{(0, element_id): "uint" for element_id in (8192, 8193, 8194, 8195, 8196, *range(8384, 8394))},
    (0, 8256): "string", (0, 8257): "string", (0, 8258): "string", (0, 8259): "string",
    (0, 33002): "uint", (0, 40000): "string", (0, 40001): "ip4", (0, 40002): "ip4", (0, 40003): "uint",
    (0, 40004): "uint", (0, 40005): "uint", (0, 56701): "string", (0, 56702): "string", (0, 57590): "uint",
    (0, 57591): "string",
}
IPFIX_CODEC_TYPES: dict[tuple[int, int], str] = {
    (5951, 329): "uint", (5951, 330): "uint", (5951, 331): "uint", (5951, 332): "uint", (5951, 347): "uint",
}

FLOW_TIME = re.compile(r"^flow(?:Start|End)(Seconds|Milliseconds|Microseconds|Nanoseconds)$")


# --- the name tables ------------------------------------------------------------------------------


def _invert(table: dict[str, list[int]]) -> dict[tuple[int, int], str]:
    return {(pen, element_id): name for name, (pen, element_id) in table.items()}


NETFLOW_NAMES = _invert(NAMES["netflow"]) | _invert(NAMES["netflow_scopes"])
for _name, _keys in NAMES["netflow_aliases"].items():
    NETFLOW_NAMES.update({(pen, element_id): _name for pen, element_id in _keys})
IPFIX_NAMES = _invert(NAMES["ipfix"])
NETFLOW_SKIPPED = {tuple(key) for key in NAMES["netflow_skipped"]}
IPFIX_SKIPPED = {tuple(key) for key in NAMES["ipfix_skipped"]}


def logstash_name(version: int, spec: FieldSpec) -> str | None:
    """The codec's field name, or None for a field it reads past.

    An element the table lacks gets a name no expected event can contain, so a compared event
    holding it fails and names it.
    """
    key = (spec.pen, spec.element_id)
    names, skipped = (IPFIX_NAMES, IPFIX_SKIPPED) if version == 10 else (NETFLOW_NAMES, NETFLOW_SKIPPED)
    if key in skipped:
        return None
    return names.get(key, f"<v{version} element {key} not in logstash_names.json>")


# --- renderings -------------------------------------------------------------------------------------


def iso(ns: int) -> str:
    """LogStash::Timestamp#to_iso8601 (Logstash >= 8): milli-, micro- or nanosecond digits as needed."""
    seconds, fraction = divmod(ns, NS)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction % 1_000_000 == 0:
        return f"{text}.{fraction // 1_000_000:03d}Z"
    if fraction % 1000 == 0:
        return f"{text}.{fraction // 1000:06d}Z"
    return f"{text}.{fraction:09d}Z"


def iso_ms(text: str) -> str:
    """An ISO time truncated to milliseconds (Logstash < 8)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    return f"{head}.{(fraction + '000')[:3]}Z"


def switched_v5(unix_s: int, unix_ns: int, uptime_ms: int, value: int) -> str:
    """first/last_switched as the codec computes them for v5.

    Ruby's ``seconds--`` is no decrement (it parses as ``seconds - -(...)``), so when the
    sub-second borrow is needed only the microseconds wrap: the time comes out 1 s late. A
    timestamp above sysUptime (softflowd's 0xFFFFFFFF) is not wrapped either.
    """
    millis = uptime_ms - value
    seconds = unix_s - millis // 1000
    micros = unix_ns // 1000 - (millis % 1000) * 1000
    if micros < 0:
        micros += 1_000_000
    return iso(seconds * NS + micros * 1000)


def switched_v9(unix_s: int, uptime_ms: int, value: int) -> str:
    """first/last_switched as the codec computes them for v9: always 1 s after the true time."""
    millis = uptime_ms - value
    seconds = unix_s - millis // 1000
    micros = 1_000_000 - (millis % 1000) * 1000
    return iso(seconds * NS + micros * 1000)


def ntp_iso(raw: bytes) -> str:
    """IPFIX flowStart/End Micro/Nanoseconds as the codec renders them (NTP format, all 32 fraction bits)."""
    seconds, fraction = struct.unpack("!II", raw)
    micros = fraction / 2**32 * 1_000_000  # a Float in the codec, handed to Timestamp.at(s, µs)
    return iso((seconds - NTP_UNIX_OFFSET_S) * NS + math.floor(micros * 1000))


def application_id(raw: bytes) -> str:
    """RFC 6759 application id: ``engine..selector``; engine 20 (PANA-L7-PEN) adds the PEN."""
    engine, rest = raw[0], raw[1:]
    if engine == 20 and len(raw) in (8, 9):
        return f"{engine}..{int.from_bytes(rest[:4], 'big')}..{int.from_bytes(rest[4:], 'big')}"
    return f"{engine}..{int.from_bytes(rest, 'big')}"


def vendor_value(kind: str, raw: bytes) -> Any:
    if kind == "uint":
        return int.from_bytes(raw, "big")
    if kind == "ip4":
        return ".".join(str(octet) for octet in raw)
    return raw.rstrip(b"\x00").decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict[str, int]  # copied into every event
    unix_s: int
    unix_ns: int  # v5 only
    uptime_ms: int  # v5/v9

    @property
    def timestamp(self) -> str:
        return iso(self.unix_s * NS + self.unix_ns // 1000 * 1000)


def parse_header(payload: bytes) -> Header:
    (version,) = struct.unpack_from("!H", payload)
    if version == 5:
        _, count, uptime, secs, nsecs, sequence, engine_type, engine_id, sampling = struct.unpack_from(
            "!HHIIIIBBH", payload
        )
        fields = {
            "version": 5, "flow_seq_num": sequence, "engine_type": engine_type, "engine_id": engine_id,
            "sampling_algorithm": sampling >> 14, "sampling_interval": sampling & 0x3FFF, "flow_records": count,
        }
        return Header(5, fields, secs, nsecs, uptime)
    if version == 9:
        _, _, uptime, secs, sequence, _ = struct.unpack_from("!HHIIII", payload)
        return Header(9, {"version": 9, "flow_seq_num": sequence}, secs, 0, uptime)
    assert version == 10, version
    _, _, secs, _, _ = struct.unpack_from("!HHIII", payload)
    return Header(10, {"version": 10}, secs, 0, 0)


def render(name: str, spec: FieldSpec, value: Any, raw: bytes, header: Header) -> Any:
    """One field as the codec renders it, from our typed value (raw bytes for the codec's own types)."""
    if header.version in (5, 9) and name in ("first_switched", "last_switched"):
        if header.version == 5:
            return switched_v5(header.unix_s, header.unix_ns, header.uptime_ms, value)
        return switched_v9(header.unix_s, header.uptime_ms, value)
    if header.version == 10 and (match := FLOW_TIME.match(name)):
        unit = match.group(1)
        if unit == "Seconds":
            return iso(value * NS)
        if unit == "Milliseconds":
            return iso(value * 1_000_000)
        return ntp_iso(raw)
    if name == "forwarding_status":
        assert len(raw) == 1, raw
        return {"status": raw[0] >> 6, "reason": raw[0] & 0x3F}
    if name == "application_id":
        return application_id(raw)
    if name in ("ingress_acl_id", "egress_acl_id"):
        text = raw.hex()
        return "-".join(text[i : i + 8] for i in range(0, len(text), 8))
    if name == "mpls_label_stack_octets":
        entry = int.from_bytes(raw[:3], "big")
        return {"label": entry >> 4, "experimental": (entry >> 1) & 7, "bottom_of_stack": entry & 1, "ttl": raw[3]}
    if isinstance(value, bytes):
        codec_types = IPFIX_CODEC_TYPES if header.version == 10 else NETFLOW_CODEC_TYPES
        kind = codec_types.get((spec.pen, spec.element_id))
        if kind is not None:
            return vendor_value(kind, raw)
        return value.hex()  # the codec's OctetArray
    return value


# --- decoding a case ---------------------------------------------------------------------------------


@dataclass
class Event:
    file: str
    header: Header
    records: RecordSet
    index: int
    netflow: dict[str, Any] = field(default_factory=dict)
    timestamp: str = ""


@dataclass
class CaseRun:
    events: list[Event]
    counters: Counters
    session: DecoderSession


def make_events(records_sets: list[RecordSet], file: str, header: Header, include_flowset_id: bool) -> list[Event]:
    rows: list[tuple[int, Event]] = []
    for records in records_sets:
        fields = records.template.fields
        typed = [field_values(records, position) for position in range(len(fields))]
        raw = [records.values(position) for position in range(len(fields))]
        for index in range(len(records)):
            event = Event(file, header, records, index, timestamp=header.timestamp)
            event.netflow.update(header.fields)
            if header.version == 9 or include_flowset_id:
                event.netflow["flowset_id"] = records.template.template_id
            for position, spec in enumerate(fields):
                if spec.length == 0:
                    continue  # the codec leaves zero-length template fields out
                name = logstash_name(header.version, spec)
                if name is not None:
                    event.netflow[name] = render(name, spec, typed[position][index], raw[position][index], header)
            rows.append((int(records.order[index]), event))
    return [event for _, event in sorted(rows, key=lambda row: row[0])]


def run_case(case: dict[str, Any]) -> CaseRun:
    counters = Counters()
    session = DecoderSession(counters=counters)
    include_flowset_id = isinstance(case["codec_config"], dict) and bool(case["codec_config"].get("include_flowset_id"))
    events: list[Event] = []
    for file in [*case.get("template_packets_decoded_first", []), *case["packets_in_order"]]:
        datagrams = list(read_raw_datagrams(DATA / file, exporter=EXPORTER))
        assert datagrams, file
        for number, datagram in enumerate(datagrams):
            record_sets = session.decode([datagram])
            header = parse_header(datagram.payload)
            for records in record_sets:
                # What the session exposes agrees with the header.
                assert records.version == header.version
                assert set(records.sys_uptime_ms.tolist()) <= {header.uptime_ms}
                assert set(records.export_time_ms.tolist()) == {header.unix_s * 1000 + header.unix_ns // 1_000_000}
            if number == 0:  # the codec sees only a file's first export message
                events += make_events(record_sets, file, header, include_flowset_id)
    return CaseRun(events, counters, session)


_RUNS: dict[int, CaseRun] = {}


def case_run(case: dict[str, Any]) -> CaseRun:
    """Each case decoded once per test session (the spec line tells apart two cases of one name)."""
    if case["spec_line"] not in _RUNS:
        _RUNS[case["spec_line"]] = run_case(case)
    return _RUNS[case["spec_line"]]


def case_id(case: dict[str, Any]) -> str:
    if sum(other["case"] == case["case"] for other in CASES) > 1:
        return f"{case['case']} (spec line {case['spec_line']})"
    return str(case["case"])


def by_name(cases: list[dict[str, Any]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", cases, ids=[case_id(case) for case in cases])


# --- tests ----------------------------------------------------------------------------------------------


@by_name(CASES)
def test_event_count(case: dict[str, Any]) -> None:
    run = case_run(case)
    expected = case["expected_event_count"]
    if expected is None:
        expected = MANIFEST_RECORD_COUNTS[case["case"]]
    assert len(run.events) == expected


@by_name([case for case in CASES if case["events"]])
def test_asserted_values(case: dict[str, Any]) -> None:
    run = case_run(case)
    for expected in case["events"]:
        event = run.events[expected["event_index"]]
        where = f"event {expected['event_index']} ({event.file}, template {event.records.template.template_id})"
        complete = expected.get("complete_event")
        if complete is not None:
            assert complete["@version"] == "1"
            assert set(complete) == {"@timestamp", "@version", "netflow"}, where
            assert event.timestamp == complete["@timestamp"], where
            ours = {
                name: value for name, value in event.netflow.items()
                if (case["case"], expected["event_index"], name) not in DOCUMENTED_DIFFERENCES
            }
            theirs = {
                name: value for name, value in complete["netflow"].items()
                if (case["case"], expected["event_index"], name) not in DOCUMENTED_DIFFERENCES
            }
            assert ours == theirs, where
        for name, value in expected.get("field_assertions", {}).items():
            if (case["case"], expected["event_index"], name) in DOCUMENTED_DIFFERENCES:
                continue
            assert name in event.netflow, f"{where}: no field {name}"
            assert event.netflow[name] == value, f"{where}: {name}"
        for name, value in expected.get("field_assertions_logstash_before_8", {}).items():
            assert iso_ms(event.netflow[name]) == value, f"{where}: {name} (Logstash < 8)"


@by_name(CASES)
def test_decode_errors(case: dict[str, Any]) -> None:
    run = case_run(case)
    errors = {labels["kind"]: count for labels, count in run.counters.series("decode_errors_total")}
    assert errors == EXPECTED_ERRORS.get(case["case"], {})
    zero_fill = run.counters.total("decode_ignored_bytes_total", kind="zero_fill")
    assert zero_fill == EXPECTED_ZERO_FILL_BYTES.get(case["case"], 0)
    # Nothing the codec would have dropped for want of a template is emitted later by us.
    assert run.counters.total("decode_pending_released_total") == 0


def test_only_first_message_of_concatenated_files_is_counted() -> None:
    """netflow5.dat holds 12 v5 messages (30 records), ipfix.dat 3 IPFIX messages: all decode cleanly."""
    for file, messages, records in (("netflow5.dat", 12, 30), ("ipfix.dat", 3, 13)):
        counters = Counters()
        session = DecoderSession(counters=counters)
        datagrams = list(read_raw_datagrams(DATA / file, exporter=EXPORTER))
        assert len(datagrams) == messages
        decoded = sum(len(records) for records in session.decode(datagrams))
        assert decoded == records
        assert counters.total("decode_errors_total") == 0


def test_netflow_v5_timestamp_artefacts_reproduced() -> None:
    """The MANIFEST's first_switched artefact (softflowd's 0xFFFFFFFF) is the codec's arithmetic on our value."""
    case = next(case for case in CASES if case["case"] == "Netflow 5 valid 01")
    event = case_run(case).events[0]
    position = event.records.template.field_position(0, 22)  # flowStartSysUpTime
    assert position is not None
    assert field_values(event.records, position)[event.index] == 0xFFFFFFFF
    assert event.netflow["first_switched"] == "2015-06-21T11:40:52.194328Z"


def test_microsecond_times_within_the_resolution_rfc_7011_allows() -> None:
    """Our dateTimeMicroseconds values drop the 11 low fraction bits; the codec keeps them."""
    case = next(case for case in CASES if case["case"] == "IPFIX Netscaler with variable length fields")
    assert case["packets_in_order"][0] == "ipfix_test_netscaler_tpl.dat"
    checked = 0
    for event in case_run(case).events:
        for element_id in (154, 155):
            position = event.records.template.field_position(0, element_id)
            assert position is not None
            ours = field_values(event.records, position)[event.index]
            seconds, fraction = struct.unpack("!II", event.records.values(position)[event.index])
            exact = (seconds - NTP_UNIX_OFFSET_S) * NS + Fraction(fraction * NS, 2**32)
            assert isinstance(ours, int)
            assert 0 <= exact - ours < MICROSECOND_RESOLUTION_NS
            checked += 1
    assert checked == 6


def test_netscaler_template_cache() -> None:
    """The codec's template cache (decoder type and name per field) matches the templates we learned."""
    case = next(case for case in CASES if "expected_template_cache" in case)
    run = case_run(case)
    for key, expected in case["expected_template_cache"]["templates"].items():
        domain, template_id = (int(part) for part in key.split("|"))
        template = run.session.templates.get(EXPORTER, domain, template_id)
        assert template is not None, key
        assert [cache_entry(spec) for spec in template.fields] == expected, key


def cache_entry(spec: FieldSpec) -> list[Any]:
    name = logstash_name(10, spec)
    if name is None:
        return ["skip", None, {"length": spec.length}]
    if (spec.pen, spec.element_id) in IPFIX_CODEC_TYPES:
        return [f"uint{8 * spec.length}", name]
    data_type = lookup(spec.pen, spec.element_id).data_type
    if data_type == "string":
        return ["VarString", name] if spec.length == VARIABLE_LENGTH else ["string", name, {"length": spec.length}]
    if data_type == "octetArray":
        return ["OctetArray", name, {"initial_length": spec.length}]
    kind = {"ipv4Address": "ip4_addr", "ipv6Address": "ip6_addr", "macAddress": "mac_addr"}.get(data_type)
    return [kind or f"uint{8 * spec.length}", name]


def test_name_table_agrees_with_the_registry() -> None:
    """IPFIX names of the codec are the registry names (IANA, RFC 5103, vendors) for every listed element."""
    for name, (pen, element_id) in NAMES["ipfix"].items():
        element = lookup(pen, element_id)
        if name.startswith("netscalerUnknown"):
            assert not element.known  # the codec's placeholders
        else:
            assert element.name == name
    assert all(pen == V9_SCOPE_PEN for pen, _ in NAMES["netflow_scopes"].values())
