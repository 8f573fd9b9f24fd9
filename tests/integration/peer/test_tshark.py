"""Wireshark's cflow dissector (tshark) as the oracle for decode + normalize, record by record.

Every real export payload in ``tests/data`` (Logstash's cases in their file order, the
python-netflow-v9-softflowd scenarios, goflow2's packets, ipfixcol2's IPFIX file split into its
messages) is wrapped into Ethernet/IP/UDP frames — one export message per datagram, each case or
scenario sent from its own exporter address so that templates cannot leak between cases — and
written to one pcap. tshark decodes that pcap to JSON; flowscope decodes the same pcap through
``decode_files``. Per frame, both must find the same number of data records and options records,
and per data record the same addresses, ports, protocol, packets, bytes and (where tshark shows
them) start/end times.

Which of tshark's fields feeds a column follows flowscope's documented choice (e.g. packets from
packetDeltaCount, else packetTotalCount, ...), read off tshark's own rendering of the template;
the values themselves are tshark's. Frames tshark cannot decode are listed in ``EXCLUSIONS`` with
the reason; for each, the test asserts that tshark really reports the problem, and where the same
records reach tshark decodably elsewhere, our records of the excluded frame are compared to those.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.model import FlowBatch, addresses_text
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.pipeline import decode_files
from support.pcapwrite import UdpPacket, write_pcap

pytestmark = [pytest.mark.integration, pytest.mark.peer]

DATA = Path(__file__).resolve().parents[2] / "data"
LOGSTASH = "logstash-codec-netflow"
SOFTFLOWD = "python-netflow-v9-softflowd"
GOFLOW2 = "goflow2"
IPFIXCOL2 = "ipfixcol2"

NETFLOW_PORT, IPFIX_PORT = 2055, 4739
EXPORTER_PORT = 50_000
COLLECTOR = {4: "192.0.2.1", 6: "2001:db8:c::1"}
BASE_TIME_MS = 1_700_000_000_000  # frame k is captured at BASE_TIME_MS + k: unique per frame
REVERSE_PEN = 29305
SCOPE = -1  # pen marker for NetFlow v9 options scope fields
UPTIME_MODULO = 1 << 32


# -- what tshark cannot decode ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exclusion:
    source: str
    stream: str
    position: int  # index of the file within the stream
    file: str
    reason: str
    evidence: str  # "expert:<text>" (an expert message tshark must show) or "stops_at_count"
    reference: tuple[str, str, int] | None = None  # frame whose tshark records must equal ours


H3C_REASON = ("the H3C template declares ipv4RouterSc (type 43) with length 2; tshark throws "
              "'IPv4 address with length 2' and abandons the message (MANIFEST: H3C files)")
EXCLUSIONS = (
    Exclusion(LOGSTASH, "Netflow 9 H3C", 1, "netflow9_test_h3c_data3281.dat", H3C_REASON,
              "expert:Trying to fetch an IPv4 address with length 2"),
    Exclusion(LOGSTASH, "Netflow 9 H3C Netstream with varstring", 1,
              "netflow9_test_h3c_netstream_varstring_data3281.dat", H3C_REASON,
              "expert:Trying to fetch an IPv4 address with length 2"),
    Exclusion(LOGSTASH, "Netflow 9 invalid 01", 0, "netflow9_test_invalid01.dat",
              "the v9 header count (2) is smaller than the records present; tshark stops after two "
              "records, flowscope walks every set by its length (compared below with the count fixed)",
              "stops_at_count"),
    Exclusion(SOFTFLOWD, "v9 templates placed after the data in the same packet", 0,
              "packet_v9_template_mixed.bin",
              "the data set precedes its template in the message; tshark never holds data for a later "
              "template, flowscope does", "expert:no template found",
              (SOFTFLOWD, "v9 template packet", 0)),
    Exclusion(SOFTFLOWD, "IPFIX data, template, data", 0, "packet_ipfix.bin",
              "data before its template; flowscope holds it until the template arrives, tshark drops it",
              "expert:no template found", (SOFTFLOWD, "IPFIX data, template, data", 2)),
)


# -- streams of export messages -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stream:
    source: str
    name: str
    files: tuple[tuple[str, bytes], ...]  # (file name, file content) in sending order


@dataclass(frozen=True, slots=True)
class Message:
    stream: Stream
    exporter: str
    position: int  # of the file within the stream
    file: str
    part: int  # of the message within the file (some files hold several)
    parts: int
    payload: bytes

    @property
    def label(self) -> str:
        part = f" message {self.part + 1}/{self.parts}" if self.parts > 1 else ""
        return f"{self.stream.source}/{self.file}{part} [{self.stream.name}, file {self.position + 1}]"


_LEGACY_SIZES = {1: (16, 48), 5: (24, 48), 7: (24, 52)}  # version → (header, record) bytes


def split_messages(data: bytes) -> list[bytes]:
    """Concatenated export messages → one per datagram (v1/v5/v7 by count, IPFIX by length).

    NetFlow v9 has no length field, and a header that announces more than is present keeps the
    rest together: both stay one datagram, as an exporter would have sent them.
    """
    messages = []
    while data:
        size = len(data)
        if len(data) >= 4:
            version, number = struct.unpack_from("!HH", data)
            if version in _LEGACY_SIZES:
                header, record = _LEGACY_SIZES[version]
                size = min(header + record * number, size)
            elif version == 10 and 16 <= number <= size:
                size = number
        messages.append(data[:size])
        data = data[size:]
    return messages


def _read(source: str, name: str) -> tuple[str, bytes]:
    return name, (DATA / source / name).read_bytes()


def logstash_streams() -> list[Stream]:
    expected = json.loads((DATA / LOGSTASH / "expected.json").read_text())
    streams = [Stream(LOGSTASH, case["case"], tuple(_read(LOGSTASH, f) for f in case["packets_in_order"]))
               for case in expected["cases"]]
    unreferenced = sorted(p.name for p in (DATA / LOGSTASH).glob("*.dat") if p.name not in expected["files_to_cases"])
    streams.append(Stream(LOGSTASH, "files no spec case uses", tuple(_read(LOGSTASH, f) for f in unreferenced)))
    # netflow9_test_invalid01.dat with its header count set to the records really present
    # (2 templates, 1 options template, 3 data records), so tshark decodes all of it too.
    name, invalid = _read(LOGSTASH, "netflow9_test_invalid01.dat")
    fixed = invalid[:2] + struct.pack("!H", 6) + invalid[4:]
    streams.append(Stream(LOGSTASH, "Netflow 9 invalid 01, header count corrected to 6", ((name, fixed),)))
    return streams


def softflowd_streams() -> list[Stream]:
    expected = json.loads((DATA / SOFTFLOWD / "expected.json").read_text())
    # "packets_v9_0.bin (or _1/_2)": the upstream test picks one at random; we take the first.
    return [Stream(SOFTFLOWD, s["scenario"], tuple(_read(SOFTFLOWD, f.split()[0]) for f in s["packets_in_order"]))
            for s in expected["scenarios"]]


def goflow2_streams() -> list[Stream]:
    files = ("netflow_v9_template.bin", "netflow_v9_data.bin", "netflow_v5.bin")
    return [Stream(GOFLOW2, "v9 template, v9 data, v5", tuple(_read(GOFLOW2, f) for f in files))]


def ipfixcol2_streams() -> list[Stream]:
    return [Stream(IPFIXCOL2, "example_flows.ipfix", (_read(IPFIXCOL2, "example_flows.ipfix"),))]


def exporter_address(index: int, family: int) -> str:
    if family == 4:
        return f"10.1.{index // 250}.{index % 250 + 1}"
    return f"2001:db8:e::{index + 1:x}"


def build_capture(path: Path, streams: list[Stream], family: int) -> dict[int, Message]:
    """Write the pcap; returns frame number (1-based, as tshark counts) → message."""
    frames: dict[int, Message] = {}
    packets = []
    for index, stream in enumerate(streams):
        exporter = exporter_address(index, family)
        for position, (name, content) in enumerate(stream.files):
            parts = split_messages(content)
            for part, payload in enumerate(parts):
                number = len(frames) + 1
                frames[number] = Message(stream, exporter, position, name, part, len(parts), payload)
                version = int.from_bytes(payload[:2]) if len(payload) >= 2 else 0
                port = IPFIX_PORT if version == 10 else NETFLOW_PORT
                packets.append(UdpPacket(payload, exporter, COLLECTOR[family], EXPORTER_PORT, port,
                                         (BASE_TIME_MS + number) * 1000))
    assert write_pcap(path, packets) == len(frames)
    return frames


# -- tshark's view ---------------------------------------------------------------------------------

# tshark field → the information elements it renders (forward and, with PEN 29305, reverse).
HF_ELEMENTS: dict[str, frozenset[int]] = {
    "cflow.srcaddr": frozenset({8}),
    "cflow.dstaddr": frozenset({12}),
    "cflow.srcaddrv6": frozenset({27}),
    "cflow.dstaddrv6": frozenset({28}),
    "cflow.srcport": frozenset({7, 180, 182}),
    "cflow.dstport": frozenset({11, 181, 183}),
    "cflow.protocol": frozenset({4}),
    "cflow.octets": frozenset({1}),
    "cflow.packets": frozenset({2}),
    "cflow.permanent_octets": frozenset({85}),
    "cflow.permanent_packets": frozenset({86}),
    "cflow.post_octets": frozenset({23}),
    "cflow.post_packets": frozenset({24}),
    "cflow.initiator_octets": frozenset({231}),
    "cflow.initiator_packets": frozenset({298}),
    "cflow.abstimestart": frozenset({150, 152, 154, 156}),
    "cflow.abstimeend": frozenset({151, 153, 155, 157}),
    "cflow.timestart": frozenset({22}),
    "cflow.timeend": frozenset({21}),
    "cflow.icmp_type_code_ipv4": frozenset({32, 139}),
    "cflow.icmp_ipv4_type": frozenset({176}),
    "cflow.icmp_ipv4_code": frozenset({177}),
    "cflow.icmp_ipv6_type": frozenset({178}),
    "cflow.icmp_ipv6_code": frozenset({179}),
}
ELEMENT_HF = {element: hf for hf, elements in HF_ELEMENTS.items() for element in elements}
LEGACY_VERSIONS = (1, 5, 7)


@dataclass(slots=True)
class PeerRecord:
    values: dict[str, list[str]]  # tshark field → its values in this record, in record order
    fields: tuple[tuple[int, int], ...] | None  # (pen, element) per template field; None: v1/v5/v7
    version: int
    header: dict[str, str]


@dataclass(slots=True)
class PeerFrame:
    number: int
    dissected: bool  # tshark dissected the frame as cflow
    data: list[PeerRecord] = field(default_factory=list)
    options: int = 0
    no_template_sets: int = 0
    experts: list[str] = field(default_factory=list)
    malformed: bool = False
    bytes_shown: int = 0  # header + lengths of the sets tshark shows (v9)
    network: str = ""  # "ip" or "ipv6": the layer tshark found under UDP


def _gather(node: Any, out: dict[str, list[str]]) -> None:
    """Every cflow.* leaf under ``node``, in document order (subtrees included)."""
    if isinstance(node, list):
        for item in node:
            _gather(item, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str | list) and key.startswith("cflow.") and not key.endswith("_tree"):
                items = value if isinstance(value, list) else [value]
                strings = [v for v in items if isinstance(v, str)]
                out.setdefault(key, []).extend(strings)
                _gather([v for v in items if not isinstance(v, str)], out)
            else:
                _gather(value, out)


def _experts(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _experts(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "_ws.expert.message":
                yield from (value if isinstance(value, list) else [value])
            else:
                yield from _experts(value)


def _template_fields(node: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    fields = []
    for value in node.values():
        if not isinstance(value, dict):
            continue
        if "cflow.template_ipfix_field_type" in value:
            fields.append((0, int(value["cflow.template_ipfix_field_type"])))
        elif "cflow.template_ipfix_field_type_enterprise" in value:
            fields.append((int(value["cflow.template_ipfix_field_pen"]),
                           int(value["cflow.template_ipfix_field_type_enterprise"])))
        elif "cflow.scope_field_type" in value:
            fields.append((SCOPE, int(value["cflow.scope_field_type"])))
        elif "cflow.template_field_type" in value:
            fields.append((0, int(value["cflow.template_field_type"])))
    return tuple(fields)


TemplateBook = dict[tuple[str, int, int, int], tuple[bool, tuple[tuple[int, int], ...]]]


def parse_frame(number: int, layers: dict[str, Any], exporter: str, book: TemplateBook) -> PeerFrame:
    """One frame of tshark's JSON → its records; ``book`` carries the templates tshark learned."""
    cflow = layers.get("cflow")
    frame = PeerFrame(number, isinstance(cflow, dict))
    frame.experts = list(_experts(layers))
    frame.malformed = "_ws.malformed" in layers
    frame.network = "ipv6" if "ipv6" in layers else "ip" if "ip" in layers else ""
    if not isinstance(cflow, dict):
        return frame
    version = int(cflow["cflow.version"])
    header: dict[str, list[str]] = {}
    _gather({k: v for k, v in cflow.items() if not isinstance(v, dict) or k.endswith("_tree")}, header)
    flat = {k: v[0] for k, v in header.items() if v}
    if version in LEGACY_VERSIONS:
        for key, node in cflow.items():
            if key.startswith("pdu ") and isinstance(node, dict):
                values: dict[str, list[str]] = {}
                _gather(node, values)
                frame.data.append(PeerRecord(values, None, version, flat))
        return frame
    domain = int(flat.get("cflow.source_id", flat.get("cflow.od_id", "0")))
    frame.bytes_shown = 20 if version == 9 else 16
    for node in cflow.values():
        if not isinstance(node, dict) or "cflow.flowset_id" not in node:
            continue
        set_id = int(node["cflow.flowset_id"])
        frame.bytes_shown += int(node["cflow.flowset_length"])
        if set_id < 256:
            for template in node.values():
                if isinstance(template, dict) and "cflow.template_id" in template:
                    key = (exporter, version, domain, int(template["cflow.template_id"]))
                    book[key] = (set_id in (1, 3), _template_fields(template))
            continue
        known = book.get((exporter, version, domain, set_id))
        if known is None or "cflow.template_frame" not in node:
            frame.no_template_sets += 1
            continue
        is_options, fields = known
        for key, record in node.items():
            if key.startswith("Flow ") and isinstance(record, dict):
                if is_options:
                    frame.options += 1
                else:
                    values = {}
                    _gather(record, values)
                    frame.data.append(PeerRecord(values, fields, version, flat))
    return frame


def run_tshark(tshark: str, pcap: Path, frames: dict[int, Message]) -> dict[int, PeerFrame]:
    command = [tshark, "-n", "-r", str(pcap), "-T", "json", "--no-duplicate-keys",
               "-d", f"udp.port=={NETFLOW_PORT},cflow", "-d", f"udp.port=={IPFIX_PORT},cflow"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}"
    packets = json.loads(done.stdout)
    assert len(packets) == len(frames), f"tshark read {len(packets)} frames, we wrote {len(frames)}"
    book: TemplateBook = {}
    result = {}
    for packet in packets:
        layers = packet["_source"]["layers"]
        number = int(layers["frame"]["frame.number"])
        result[number] = parse_frame(number, layers, frames[number].exporter, book)
    return result


class OracleError(AssertionError):
    """tshark's output does not fit what this test assumes about it (not a flowscope bug)."""


def element_value(record: PeerRecord, element: int) -> str | None:
    """tshark's value for the forward (PEN 0) field ``element`` of the record, None if absent."""
    hf = ELEMENT_HF[element]
    values = record.values.get(hf, [])
    if record.fields is None:
        return values[0] if values else None
    # Fields rendered under the same tshark name appear in template order: find ours among them.
    rendered = [(pen, e) for pen, e in record.fields if pen in (0, REVERSE_PEN) and e in HF_ELEMENTS[hf]]
    if (0, element) not in rendered:
        return None
    if len(values) != len(rendered):
        raise OracleError(f"{hf}: template has {len(rendered)} such fields, tshark shows {len(values)}")
    return values[rendered.index((0, element))]


def has_element(record: PeerRecord, element: int) -> bool:
    if record.fields is None:
        hf = ELEMENT_HF.get(element)
        return hf is not None and bool(record.values.get(hf))
    return (0, element) in record.fields


def first_present(record: PeerRecord, elements: tuple[int, ...]) -> int | None:
    return next((e for e in elements if has_element(record, e)), None)


def _number(text: str) -> int:
    return int(text, 0)


def _relative_ms(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1000 + int(fraction[:3].ljust(3, "0"))


def _absolute_ms(text: str) -> int:
    stamp, _, zone = text.rpartition(" ")
    if zone != "UTC":
        raise OracleError(f"unexpected time zone in tshark time {text!r}")
    whole, _, fraction = stamp.partition(".")
    moment = datetime.strptime(" ".join(whole.split()), "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1000 + int(fraction[:3].ljust(3, "0"))


# flowscope's documented preferences (normalize._CANDIDATES), restated here as the contract.
PACKETS = (2, 86, 24, 298)
OCTETS = (1, 85, 23, 231)
SRC_PORT, DST_PORT = (7, 180, 182), (11, 181, 183)
START = {152: "abs", 150: "abs", 154: "abs", 156: "abs", 158: "delta", 22: "uptime"}
END = {153: "abs", 151: "abs", 155: "abs", 157: "abs", 159: "delta", 21: "uptime"}


def expected_flow(record: PeerRecord) -> dict[str, object]:
    """The FlowBatch values tshark's decode implies (None: tshark shows nothing to compare)."""

    def integer(elements: tuple[int, ...]) -> int:
        element = first_present(record, elements)
        value = None if element is None else element_value(record, element)
        return 0 if value is None else _number(value)

    def address(v4: int, v6: int) -> str:
        value = element_value(record, v4) if has_element(record, v4) else None
        if value is not None:
            return value
        value = element_value(record, v6) if has_element(record, v6) else None
        return "::" if value is None else str(ipaddress.ip_address(value))

    expected: dict[str, object] = {
        "src_addr": address(8, 27),
        "dst_addr": address(12, 28),
        "src_port": integer(SRC_PORT),
        "dst_port": integer(DST_PORT),
        "protocol": integer((4,)),
        "packets": integer(PACKETS),
        "bytes": integer(OCTETS),
        "time_start": _time(record, START),
        "time_end": _time(record, END),
    }
    if expected["protocol"] in (1, 58) and expected["dst_port"] == 0:
        # ICMP type and code go to the destination port (type × 256 + code), as nfdump does.
        combined = first_present(record, (32, 139))
        kind = first_present(record, (176, 178))
        if combined is not None:
            expected["dst_port"] = integer((combined,))
        elif kind is not None:
            code = first_present(record, (177, 179))
            expected["dst_port"] = integer((kind,)) * 256 + (integer((code,)) if code is not None else 0)
    return expected


def _time(record: PeerRecord, sources: dict[int, str]) -> int | None:
    element = first_present(record, tuple(sources))
    if element is None:
        return None
    kind = sources[element]
    if kind == "abs":
        value = element_value(record, element)
        return None if value is None else _absolute_ms(value)
    if kind != "uptime" or record.version == 10:
        return None  # IPFIX uptime or delta times: tshark shows no absolute time to compare with
    uptime_ms = _uptime_value(record, element)
    header = record.header
    export_ms = int(header["cflow.unix_secs"]) * 1000 + int(header.get("cflow.unix_nsecs", "0")) // 1_000_000
    behind = (_relative_ms(header["cflow.sysuptime"]) - uptime_ms) % UPTIME_MODULO
    return export_ms - behind


def _uptime_value(record: PeerRecord, element: int) -> int:
    """FIRST/LAST_SWITCHED as tshark shows it: relative seconds since boot.

    Quirk: when LAST_SWITCHED precedes FIRST_SWITCHED in the template (nProbe, softflowd), tshark
    renders the start under ``cflow.abstimestart``, i.e. the raw uptime read as seconds since 1970.
    """
    try:
        value = element_value(record, element)
    except OracleError:
        quirk = "cflow.abstimestart" if element == 22 else "cflow.abstimeend"
        absolute = record.values.get(quirk, [])
        if record.fields is None or len(absolute) != 1 or any(
                e in HF_ELEMENTS[quirk] for _, e in record.fields):
            raise
        return _absolute_ms(absolute[0])
    if value is None:
        raise OracleError(f"element {element} is in the template but tshark shows no value")
    return _relative_ms(value)


# -- flowscope's view ------------------------------------------------------------------------------


@dataclass(slots=True)
class OurFrame:
    data: list[dict[str, object]] = field(default_factory=list)
    options: int = 0
    exporters: set[str] = field(default_factory=set)


def decode_with_flowscope(pcap: Path) -> tuple[dict[int, OurFrame], Counters]:
    """Frame number → our data flows (in wire order) and options record count."""
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(NormalizeConfig(apply_sampling=False, split_biflows=False), session.options, counters)
    batches, options_ms = [], []
    for batch, records in decode_files([pcap], session, normalizer):
        batches.append(batch)
        options_ms.extend(r.time_received_ms for r in records if r.is_options)
    flows = FlowBatch.concat(batches)
    flows = flows.take(np.argsort(flows["time_received"], kind="stable"))
    frames: dict[int, OurFrame] = defaultdict(OurFrame)
    columns = {
        "src_addr": addresses_text(flows["src_addr"]),
        "dst_addr": addresses_text(flows["dst_addr"]),
        **{name: flows[name].tolist() for name in ("src_port", "dst_port", "protocol", "packets", "bytes",
                                                    "time_start", "time_end", "time_received", "exporter")},
    }
    for row in range(len(flows)):
        number = columns["time_received"][row] - BASE_TIME_MS
        frame = frames[number]
        frame.data.append({name: values[row] for name, values in columns.items()})
        frame.exporters.add(session.exporters.key_of(columns["exporter"][row])[0])
    for received in options_ms:
        for ms, count in Counter(received.tolist()).items():
            frames[ms - BASE_TIME_MS].options += count
    return frames, counters


# -- comparison ------------------------------------------------------------------------------------

COMPARED = ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "packets", "bytes", "time_start",
            "time_end")


@dataclass(slots=True)
class Report:
    mismatches: list[str] = field(default_factory=list)
    frames: int = 0
    records: Counter[str] = field(default_factory=Counter)  # source → data records compared
    options: int = 0
    times: int = 0  # start/end values compared
    excluded: list[str] = field(default_factory=list)
    files: set[tuple[str, str]] = field(default_factory=set)
    messages: Counter[str] = field(default_factory=Counter)  # source → datagrams sent

    def summary(self) -> str:
        return (f"{self.frames} datagrams from {len(self.files)} files; data records compared per source "
                f"{dict(self.records)}, options records {self.options}, times {self.times}, "
                f"datagrams per source {dict(self.messages)}, excluded {len(self.excluded)}")


def compare_records(report: Report, label: str, ours: list[dict[str, object]], peer: list[PeerRecord],
                    *, ordered: bool = True) -> int:
    """Record by record; ``ordered=False`` pairs them up after sorting both sides by their values."""
    if len(ours) != len(peer):
        report.mismatches.append(f"{label}: flowscope {len(ours)} data records, tshark {len(peer)}")
        return 0
    try:
        expectations = [expected_flow(record) for record in peer]
    except OracleError as error:
        report.mismatches.append(f"{label}: cannot read tshark's decode: {error}")
        return 0
    if not ordered:
        ours = sorted(ours, key=_sort_key)
        expectations = sorted(expectations, key=_sort_key)
    for index, (mine, expected) in enumerate(zip(ours, expectations, strict=True)):
        for name in COMPARED:
            if expected[name] is None:
                continue
            report.times += name.startswith("time_")
            if mine[name] != expected[name]:
                report.mismatches.append(
                    f"{label} record {index}: {name}: ours {mine[name]!r}, tshark {expected[name]!r}")
    return len(ours)


def _sort_key(flow: dict[str, object]) -> tuple[str, ...]:
    return tuple(str(flow[name]) for name in COMPARED[:7])


def check_exclusion(report: Report, exclusion: Exclusion, message: Message, peer: PeerFrame, ours: OurFrame,
                    peers_by_stream: dict[tuple[str, str, int], tuple[list[PeerRecord], str]]) -> None:
    label = message.label
    if message.file != exclusion.file:
        report.mismatches.append(f"{label}: exclusion names {exclusion.file}, the stream has {message.file}")
        return
    if exclusion.evidence.startswith("expert:"):
        text = exclusion.evidence.removeprefix("expert:")
        if not any(text in expert for expert in peer.experts):
            report.mismatches.append(f"{label}: excluded because {exclusion.reason!r}, but tshark does not "
                                     f"report {text!r} (experts: {peer.experts})")
    elif exclusion.evidence == "stops_at_count":
        if peer.data or peer.bytes_shown >= len(message.payload):
            report.mismatches.append(f"{label}: excluded because tshark stops at the header count, but "
                                     f"tshark shows {len(peer.data)} data records over {peer.bytes_shown} "
                                     f"of {len(message.payload)} bytes")
    else:
        raise AssertionError(f"unknown evidence {exclusion.evidence!r} for {label}")
    if not ours.data:
        report.mismatches.append(f"{label}: excluded frame, but flowscope decodes no data record from it either")
    report.excluded.append(f"{label}: {len(ours.data)} records of ours not comparable: {exclusion.reason}")
    if peer.malformed and peer.data and ours.data:
        # tshark dissects the first record up to the field that throws: compare what it got.
        report.records[message.stream.source] += compare_records(
            report, f"{label} (first record, as far as tshark got)", ours.data[:1], peer.data[:1])
    if exclusion.reference is not None:
        records, reference_label = peers_by_stream[exclusion.reference]
        # Held data is released template by template as the templates arrive, so its sets may come
        # out in template order rather than wire order: compare as a set of records.
        compared = compare_records(report, f"{label} (vs tshark's {reference_label})", ours.data, records,
                                   ordered=False)
        report.records[message.stream.source] += compared


def compare(tshark: str, tmp_path: Path, streams: list[Stream], family: int) -> Report:
    pcap = tmp_path / f"exports-ipv{family}.pcap"
    frames = build_capture(pcap, streams, family)
    peers = run_tshark(tshark, pcap, frames)
    ours, _ = decode_with_flowscope(pcap)
    assert set(ours) <= set(frames), f"flows attributed to frames that do not exist: {set(ours) - set(frames)}"
    exclusions = {(e.source, e.stream, e.position): e for e in EXCLUSIONS}
    peers_by_stream = {(m.stream.source, m.stream.name, m.position): (peers[n].data, m.label)
                       for n, m in frames.items() if m.parts == 1}
    report = Report()
    for number, message in frames.items():
        peer, mine = peers[number], ours.get(number, OurFrame())
        label = f"frame {number} {message.label}"
        report.frames += 1
        report.files.add((message.stream.source, message.file))
        report.messages[message.stream.source] += 1
        if peer.network != {4: "ip", 6: "ipv6"}[family]:
            report.mismatches.append(f"{label}: tshark sees network layer {peer.network!r}, we wrote IPv{family}")
        if mine.exporters - {message.exporter}:
            report.mismatches.append(f"{label}: flows attributed to exporter(s) {mine.exporters}, "
                                     f"sent from {message.exporter}")
        exclusion = exclusions.get((message.stream.source, message.stream.name, message.position))
        if exclusion is not None:
            check_exclusion(report, exclusion, message, peer, mine, peers_by_stream)
            continue
        if peer.malformed and mine.data:
            report.mismatches.append(f"{label}: tshark calls the frame malformed ({peer.experts}) and it is "
                                     f"not in EXCLUSIONS")
        if mine.options != peer.options:
            report.mismatches.append(f"{label}: flowscope {mine.options} options records, tshark {peer.options}")
        report.options += peer.options
        report.records[message.stream.source] += compare_records(report, label, mine.data, peer.data)
    return report


def failure_text(report: Report) -> str:
    shown = report.mismatches[:60]
    more = len(report.mismatches) - len(shown)
    return "\n".join([f"{len(report.mismatches)} differences between flowscope and tshark:", *shown,
                      *([f"... and {more} more"] if more else [])])


@pytest.fixture(scope="module")
def tshark() -> str:
    found = shutil.which("tshark")
    if found is None:
        pytest.fail("tshark is required for the peer tests (Debian/Ubuntu: apt-get install tshark)")
    return found


def test_every_sample_decodes_like_tshark(tshark: str, tmp_path: Path) -> None:
    streams = logstash_streams() + softflowd_streams() + goflow2_streams() + ipfixcol2_streams()
    report = compare(tshark, tmp_path, streams, family=4)
    if report.mismatches:
        pytest.fail(failure_text(report), pytrace=False)
    # Guard against a vacuous pass: every source contributed, ipfixcol2 with all its records.
    summary = report.summary()
    assert report.messages[IPFIXCOL2] == 68 and report.records[IPFIXCOL2] == 3979, summary
    assert report.records[LOGSTASH] > 500 and report.records[SOFTFLOWD] > 50, summary
    assert report.records[GOFLOW2] == 27, summary  # 21 v9 + 6 v5
    assert len(report.excluded) == len(EXCLUSIONS), report.excluded
    assert report.times > 5000 and report.options > 0, summary


def test_exporters_over_ipv6_decode_like_tshark(tshark: str, tmp_path: Path) -> None:
    by_name = {s.name: s for s in logstash_streams() + softflowd_streams() + goflow2_streams()}
    names = ("IPFIX Mikrotik RouterOS 6.39.2", "IPFIX", "Netflow 9 macaddress",
             "v9 template then three data packets", "v9 template, v9 data, v5")
    report = compare(tshark, tmp_path, [by_name[n] for n in names], family=6)
    if report.mismatches:
        pytest.fail(failure_text(report), pytrace=False)
    assert sum(report.records.values()) > 150, report.summary()
