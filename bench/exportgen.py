"""Export datagrams for the benchmarks, built from real templates found in tests/data.

The templates (field lists and the template records' own bytes) are read from the sample captures
of other projects; only the flow values are generated: random but plausible addresses, ports,
protocols, counters and times, with consistent headers (sequence numbers, uptime, export times).
Each datagram is filled up to ``mtu_payload`` bytes with as many records as fit, as exporters do,
and every ``template_every``-th datagram of an exporter carries its template set again before the
records (template refresh, as softflowd and IOS do every 16-20 packets).

Used by ``decode_bench.py`` and ``json_stream_bench.py``; not part of the flowscope package.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from flowscope.collect.files import read_capture
from flowscope.decode.fields import lookup

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

ENTERPRISE_BIT = 0x8000
VARIABLE = 0xFFFF
REVERSE_PEN = 29305
NTP_UNIX_OFFSET_S = 2_208_988_800


@dataclass(frozen=True)
class FieldDef:
    pen: int
    element_id: int
    length: int

    @property
    def name(self) -> str:
        return lookup(self.pen, self.element_id).name


@dataclass(frozen=True)
class RealTemplate:
    """A data template as found in a capture: its fields and the template record's bytes."""

    version: int  # 9 or 10 (5: the fixed NetFlow v5 record layout)
    template_id: int
    fields: tuple[FieldDef, ...]
    record_bytes: bytes  # the template record exactly as in the capture (empty for v5)
    source: str  # "file: template id"
    domain: int  # observation domain / source id of the capture

    @property
    def variable(self) -> bool:
        return any(f.length == VARIABLE for f in self.fields)

    @property
    def fixed_length(self) -> int:
        return sum(f.length for f in self.fields if f.length != VARIABLE)


# --------------------------------------------------------------------------- templates from files
def _template_records(payload: bytes) -> Iterator[tuple[int, int, bytes, tuple[FieldDef, ...]]]:
    """(version, template id, record bytes, fields) of every data template record of one message."""
    (version,) = struct.unpack_from("!H", payload)
    if version == 9:
        offset, template_set = 20, 0
    elif version == 10:
        offset, template_set = 16, 2
        payload = payload[: struct.unpack_from("!H", payload, 2)[0]]
    else:
        return
    while len(payload) - offset >= 4:
        set_id, set_length = struct.unpack_from("!HH", payload, offset)
        if set_length < 4:
            return
        body = payload[offset + 4 : offset + set_length]
        offset += set_length
        if set_id != template_set:
            continue
        pos = 0
        while len(body) - pos >= 4:
            start = pos
            template_id, count = struct.unpack_from("!HH", body, pos)
            pos += 4
            if template_id == 0 or count == 0:
                break
            fields = []
            for _ in range(count):
                element_id, length = struct.unpack_from("!HH", body, pos)
                pos += 4
                pen = 0
                if version == 10 and element_id & ENTERPRISE_BIT:
                    (pen,) = struct.unpack_from("!I", body, pos)
                    pos += 4
                    element_id &= ~ENTERPRISE_BIT
                fields.append(FieldDef(pen, element_id, length))
            yield version, template_id, bytes(body[start:pos]), tuple(fields)


def _domain(payload: bytes) -> int:
    (version,) = struct.unpack_from("!H", payload)
    return int(struct.unpack_from("!I", payload, 16 if version == 9 else 12)[0])


def load_template(relative_path: str, template_id: int) -> RealTemplate:
    """The data template ``template_id`` from a capture under tests/data (first occurrence)."""
    path = DATA / relative_path
    for datagram in read_capture(path):
        for version, tid, raw, fields in _template_records(datagram.payload):
            if tid == template_id:
                return RealTemplate(version, tid, fields, raw, f"tests/data/{relative_path}: template {tid}",
                                    _domain(datagram.payload))
    raise LookupError(f"template {template_id} not found in {path}")


# The NetFlow v5 record (Cisco's published layout, 48 bytes) as IANA elements.
V5_FIELDS = tuple(FieldDef(0, e, n) for e, n in [
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2),
    (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (210, 2),
])
V5_TEMPLATE = RealTemplate(5, 0, V5_FIELDS, b"", "NetFlow v5 record layout (48 bytes)", 0)


# ------------------------------------------------------------------------------ flow values
_SERVER_PORTS = np.array([443, 80, 53, 123, 22, 8080, 993, 25, 8443, 3389, 5060, 1194, 445, 161], np.uint16)
_SERVER_WEIGHTS = np.array([40, 18, 14, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 2], np.float64)
_TCP_FLAGS = np.array([0x1B, 0x1A, 0x18, 0x02, 0x12, 0x10, 0x11, 0x19, 0x14, 0x1F], np.uint8)
_AS_NUMBERS = np.array([0, 15169, 13335, 16509, 32934, 8075, 2906, 20940, 3356, 1299, 2852, 64512], np.uint32)


@dataclass
class Flows:
    """Plausible values of n flows, one numpy array per quantity (host byte order)."""

    src_v4: npt.NDArray[np.uint32]
    dst_v4: npt.NDArray[np.uint32]
    src_v6: npt.NDArray[np.uint8]  # (n, 16)
    dst_v6: npt.NDArray[np.uint8]
    src_port: npt.NDArray[np.uint16]
    dst_port: npt.NDArray[np.uint16]
    protocol: npt.NDArray[np.uint8]
    tcp_flags: npt.NDArray[np.uint8]
    tos: npt.NDArray[np.uint8]
    packets: npt.NDArray[np.uint64]
    octets: npt.NDArray[np.uint64]
    in_if: npt.NDArray[np.uint32]
    out_if: npt.NDArray[np.uint32]
    src_as: npt.NDArray[np.uint32]
    dst_as: npt.NDArray[np.uint32]
    icmp: npt.NDArray[np.uint16]  # type * 256 + code
    end_behind_ms: npt.NDArray[np.int64]  # how long before the export the flow ended
    duration_ms: npt.NDArray[np.int64]
    ttl: npt.NDArray[np.uint8]
    extra: dict[str, npt.NDArray] = field(default_factory=dict)


def make_flows(rng: np.random.Generator, n: int) -> Flows:
    clients = (10 << 24) + rng.integers(1, 1 << 20, n, dtype=np.uint32)  # 10.0.0.0/12 hosts
    servers_pool = rng.integers(0x01000000, 0xDF000000, 5000, dtype=np.uint32)  # 5000 public servers
    servers = servers_pool[rng.zipf(1.3, n) % len(servers_pool)]
    outbound = rng.random(n) < 0.5  # client → server, else the server's answer
    protocol = rng.choice(np.array([6, 17, 1], np.uint8), n, p=[0.72, 0.25, 0.03])
    server_port = rng.choice(_SERVER_PORTS, n, p=_SERVER_WEIGHTS / _SERVER_WEIGHTS.sum())
    client_port = rng.integers(1024, 65536, n, dtype=np.uint32).astype(np.uint16)
    icmp_rows = protocol == 1
    server_port[icmp_rows] = 0
    client_port[icmp_rows] = 0
    src = np.where(outbound, clients, servers).astype(np.uint32)
    dst = np.where(outbound, servers, clients).astype(np.uint32)
    src_port = np.where(outbound, client_port, server_port).astype(np.uint16)
    dst_port = np.where(outbound, server_port, client_port).astype(np.uint16)
    packets = np.minimum(1 + rng.geometric(0.08, n) * (1 + (rng.random(n) < 0.05) * 200), 10_000_000)
    mean_size = rng.integers(40, 1500, n)
    octets = packets * mean_size
    prefix6 = np.frombuffer(bytes.fromhex("20010db8"), np.uint8)
    src_v6 = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    dst_v6 = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    src_v6[:, :4] = prefix6
    dst_v6[:, :4] = prefix6
    icmp = np.where(icmp_rows, rng.choice(np.array([0x0800, 0x0000, 0x0303, 0x0B00], np.uint16), n), 0)
    return Flows(
        src_v4=src, dst_v4=dst, src_v6=src_v6, dst_v6=dst_v6,
        src_port=src_port, dst_port=dst_port, protocol=protocol,
        tcp_flags=np.where(protocol == 6, rng.choice(_TCP_FLAGS, n), 0).astype(np.uint8),
        tos=rng.choice(np.array([0, 0, 0, 0, 0x28, 0xB8, 0x10], np.uint8), n),
        packets=packets.astype(np.uint64), octets=octets.astype(np.uint64),
        in_if=rng.integers(1, 9, n, dtype=np.uint32), out_if=rng.integers(1, 9, n, dtype=np.uint32),
        src_as=rng.choice(_AS_NUMBERS, n), dst_as=rng.choice(_AS_NUMBERS, n),
        icmp=icmp.astype(np.uint16),
        end_behind_ms=rng.integers(0, 30_000, n),
        duration_ms=np.minimum(rng.exponential(5_000, n), 120_000).astype(np.int64),
        ttl=rng.choice(np.array([64, 128, 255, 57, 121], np.uint8), n),
    )


def _values_for(spec: FieldDef, flows: Flows, export_ms: npt.NDArray[np.int64],
                uptime_ms: npt.NDArray[np.int64], rng: np.random.Generator) -> npt.NDArray:
    """One template field's values for every flow (unsigned ints, or (n, length) uint8 for others)."""
    n = len(flows.protocol)
    pen, eid = spec.pen, spec.element_id
    end_ms = export_ms - flows.end_behind_ms
    start_ms = end_ms - flows.duration_ms
    if pen == 0:
        simple: dict[int, np.ndarray] = {
            8: flows.src_v4, 12: flows.dst_v4, 7: flows.src_port, 11: flows.dst_port, 4: flows.protocol,
            6: flows.tcp_flags, 5: flows.tos, 2: flows.packets, 1: flows.octets, 10: flows.in_if,
            14: flows.out_if, 16: flows.src_as, 17: flows.dst_as, 32: flows.icmp, 139: flows.icmp,
            192: flows.ttl, 86: flows.packets, 85: flows.octets,
        }
        if eid in simple:
            return simple[eid]
        if eid == 27:
            return flows.src_v6
        if eid == 28:
            return flows.dst_v6
        if eid in (15, 18):  # next hop, BGP next hop
            return (0xC0000200 + rng.integers(1, 8, n)).astype(np.uint32)
        if eid in (9, 13):  # prefix lengths
            return rng.choice(np.array([8, 16, 20, 24, 24, 32], np.uint8), n)
        if eid == 22:  # flowStartSysUpTime
            return ((uptime_ms - (export_ms - start_ms)) % (1 << 32)).astype(np.uint64)
        if eid == 21:
            return ((uptime_ms - (export_ms - end_ms)) % (1 << 32)).astype(np.uint64)
        if eid == 152:
            return start_ms.astype(np.uint64)
        if eid == 153:
            return end_ms.astype(np.uint64)
        if eid in (150, 151):
            return ((start_ms if eid == 150 else end_ms) // 1000).astype(np.uint64)
        if eid in (154, 155, 156, 157):  # NTP timestamps
            ms = start_ms if eid in (154, 156) else end_ms
            seconds = (ms // 1000 + NTP_UNIX_OFFSET_S).astype(np.uint64)
            fraction = (((ms % 1000).astype(np.uint64) << np.uint64(32)) // np.uint64(1000))
            return (seconds << np.uint64(32)) | fraction
        if eid == 60:  # ipVersion (callers set 6 for IPv6 templates)
            return np.full(n, 4, np.uint8)
        if eid == 34:  # samplingInterval: not sampled
            return np.ones(n, np.uint32)
        if eid == 35:  # samplingAlgorithm
            return np.ones(n, np.uint8)
        if eid == 48:  # samplerId
            return np.ones(n, np.uint8)
        if eid == 61:  # flowDirection
            return rng.integers(0, 2, n, dtype=np.uint8)
        if eid == 89:  # forwardingStatus: forwarded
            return np.full(n, 64, np.uint8)
        if eid in (234, 235):  # VRF ids
            return np.zeros(n, np.uint32)
        if eid == 210:  # paddingOctets
            return np.zeros(n, np.uint8)
    if pen == REVERSE_PEN and eid in (1, 2, 85, 86):
        return (flows.packets if eid in (2, 86) else flows.octets) // np.uint64(2)
    if spec.length <= 8:  # anything else: small random numbers of the field's size
        return rng.integers(0, min(1 << (8 * spec.length), 1 << 16), n, dtype=np.uint64)
    return rng.integers(0, 256, (n, spec.length), dtype=np.uint8)


_INTEGER_FORMATS = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}


def _fixed_run_dtype(fields: list[FieldDef]) -> np.dtype:
    formats = [_INTEGER_FORMATS.get(f.length, ("u1", (f.length,))) for f in fields]
    return np.dtype({"names": [f"f{i}" for i in range(len(fields))], "formats": formats})


def _fill(records: np.ndarray, name: str, spec: FieldDef, values: npt.NDArray) -> None:
    if spec.length in _INTEGER_FORMATS:
        if values.ndim == 2:  # a wide value into an integer field: keep the low bytes
            values = np.frombuffer(np.ascontiguousarray(values[:, -spec.length:]).tobytes(),
                                   _INTEGER_FORMATS[spec.length] if spec.length > 1 else "u1")
        mask = (1 << (8 * spec.length)) - 1
        records[name] = values.astype(np.uint64) & np.uint64(mask)
    elif values.ndim == 2:
        records[name] = values[:, -spec.length:] if values.shape[1] >= spec.length else np.pad(
            values, ((0, 0), (spec.length - values.shape[1], 0)))
    else:  # an integer into an odd-sized field (e.g. 3 bytes): big-endian, low bytes
        wide = values.astype(">u8").view(np.uint8).reshape(-1, 8)
        records[name] = wide[:, -spec.length:] if spec.length <= 8 else np.pad(wide, ((0, 0), (spec.length - 8, 0)))


def fixed_records(template: RealTemplate, flows: Flows, export_ms: npt.NDArray[np.int64],
                  uptime_ms: npt.NDArray[np.int64], rng: np.random.Generator) -> bytes:
    """The records of a fixed-length template for all flows, back to back (wire format)."""
    dtype = _fixed_run_dtype(list(template.fields))
    records = np.zeros(len(flows.protocol), dtype)
    v6 = any(f.pen == 0 and f.element_id in (27, 28) for f in template.fields)
    for i, spec in enumerate(template.fields):
        if spec.pen == 0 and spec.element_id == 60:
            records[f"f{i}"] = 6 if v6 else 4
            continue
        _fill(records, f"f{i}", spec, _values_for(spec, flows, export_ms, uptime_ms, rng))
    assert dtype.itemsize == template.fixed_length
    return records.tobytes()


# Variable-length values (NetScaler AppFlow HTTP fields and the like), by words in the element name.
_HOSTS = [b"www.example.com", b"api.example.net", b"cdn.example.org", b"portal.example.com", b"login.example.net"]
_AGENTS = [
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605",
    b"curl/8.5.0", b"okhttp/4.12.0",
]
_TYPES = [b"text/html; charset=utf-8", b"application/json", b"image/png", b"application/javascript", b""]


def _variable_value(name: str, rng: np.random.Generator) -> bytes:
    lowered = name.lower()
    pick = int(rng.integers(0, 1 << 30))
    if "url" in lowered:
        return b"/app/%d/items/%d?session=%x" % (pick % 97, pick % 100_000, pick)
    if "cookie" in lowered:  # sometimes longer than 254 bytes: the 3-byte length form
        return b"sid=" + bytes(rng.integers(97, 123, int(rng.choice([0, 24, 64, 300])), dtype=np.uint8))
    if "referer" in lowered:
        return b"https://" + _HOSTS[pick % len(_HOSTS)] + b"/home" if pick % 3 else b""
    if "method" in lowered:
        return (b"GET", b"GET", b"POST", b"PUT")[pick % 4]
    if "host" in lowered or "domain" in lowered:
        return _HOSTS[pick % len(_HOSTS)]
    if "agent" in lowered:
        return _AGENTS[pick % len(_AGENTS)]
    if "contenttype" in lowered:
        return _TYPES[pick % len(_TYPES)]
    if "user" in lowered:
        return b"user%d" % (pick % 5000) if pick % 4 == 0 else b""
    if "forwarded" in lowered:
        return b"198.51.100.%d" % (pick % 250) if pick % 5 == 0 else b""
    if "multilist" in lowered or "basiclist" in lowered:
        return b""
    return b""


def _length_prefix(value: bytes) -> bytes:
    return bytes([len(value)]) if len(value) < 255 else b"\xff" + struct.pack("!H", len(value))


def variable_records(template: RealTemplate, flows: Flows, export_ms: npt.NDArray[np.int64],
                     uptime_ms: npt.NDArray[np.int64], rng: np.random.Generator) -> list[bytes]:
    """One bytes object per record (fixed runs vectorized, variable fields per record)."""
    n = len(flows.protocol)
    pieces: list[list[bytes]] = []
    run: list[FieldDef] = []
    v6 = any(f.pen == 0 and f.element_id in (27, 28) for f in template.fields)

    def close_run() -> None:
        if not run:
            return
        dtype = _fixed_run_dtype(run)
        records = np.zeros(n, dtype)
        for i, spec in enumerate(run):
            if spec.pen == 0 and spec.element_id == 60:
                records[f"f{i}"] = 6 if v6 else 4
            else:
                _fill(records, f"f{i}", spec, _values_for(spec, flows, export_ms, uptime_ms, rng))
        blob = records.tobytes()
        size = dtype.itemsize
        pieces.append([blob[i * size : (i + 1) * size] for i in range(n)])
        run.clear()

    for spec in template.fields:
        if spec.length == VARIABLE:
            close_run()
            name = spec.name
            column = []
            for _ in range(n):
                value = _variable_value(name, rng)
                column.append(_length_prefix(value) + value)
            pieces.append(column)
        else:
            run.append(spec)
    close_run()
    return [b"".join(parts) for parts in zip(*pieces, strict=True)]


# ----------------------------------------------------------------------------------- datagrams
@dataclass
class Stream:
    """Datagrams of several exporters using one template, interleaved, with their flow counts."""

    template: RealTemplate
    exporters: list[str]
    datagrams: list[tuple[str, int, bytes]]  # (exporter, time_received_ms, payload)
    flows: list[int]  # data records per datagram
    octets_total: int

    @property
    def total_flows(self) -> int:
        return sum(self.flows)

    @property
    def mean_payload_bytes(self) -> float:
        return sum(len(d[2]) for d in self.datagrams) / max(1, len(self.datagrams))


def _template_set(template: RealTemplate) -> bytes:
    set_id = 0 if template.version == 9 else 2
    body = template.record_bytes
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def records_per_datagram(template: RealTemplate, mtu_payload: int, with_template: bool = False) -> int:
    header = {5: 24, 9: 20, 10: 16}[template.version]
    if template.version == 5:
        return min(30, (mtu_payload - header) // 48)
    room = mtu_payload - header - 4 - (len(_template_set(template)) if with_template else 0)
    return max(1, room // template.fixed_length)


def build_stream(template: RealTemplate, datagrams: int, *, exporters: int = 4, mtu_payload: int = 1400,
                 template_every: int = 20, seed: int = 1, start_ms: int = 1_760_000_000_000,
                 datagrams_per_second: float = 20_000.0) -> Stream:
    """``datagrams`` full-size export datagrams from ``exporters`` exporters, round robin."""
    if template.variable:
        return _build_variable_stream(template, datagrams, exporters=exporters, mtu_payload=mtu_payload,
                                      template_every=template_every, seed=seed, start_ms=start_ms,
                                      datagrams_per_second=datagrams_per_second)
    rng = np.random.default_rng(seed)
    names = [f"192.0.2.{i + 1}" for i in range(exporters)]
    full = records_per_datagram(template, mtu_payload)
    reduced = records_per_datagram(template, mtu_payload, with_template=True)
    counts = np.full(datagrams, full, np.int64)
    position = np.arange(datagrams) // exporters  # datagram number within its exporter
    carries_template = (position % template_every == 0) if template.version != 5 else np.zeros(datagrams, bool)
    counts[carries_template] = reduced
    total = int(counts.sum())
    export_ms_dg = start_ms + (np.arange(datagrams) / datagrams_per_second * 1000).astype(np.int64)
    uptime0 = 864_000_000  # exporters up for 10 days
    uptime_dg = uptime0 + (export_ms_dg - start_ms)
    per_flow_dg = np.repeat(np.arange(datagrams), counts)
    flows = make_flows(rng, total)
    export_ms_flow = (export_ms_dg // 1000 * 1000)[per_flow_dg]  # headers carry seconds
    uptime_flow = uptime_dg[per_flow_dg]
    blob = fixed_records(template, flows, export_ms_flow, uptime_flow, rng)
    size = template.fixed_length
    offsets = np.concatenate([[0], np.cumsum(counts)]) * size
    tset = _template_set(template) if template.version != 5 else b""
    out: list[tuple[str, int, bytes]] = []
    sequence = [0] * exporters  # v5/IPFIX: records before; v9: packets before
    for i in range(datagrams):
        e = i % exporters
        count = int(counts[i])
        body = blob[offsets[i] : offsets[i + 1]]
        export_ms = int(export_ms_dg[i])
        secs = export_ms // 1000
        if template.version == 5:
            payload = struct.pack("!HHIIIIBBH", 5, count, int(uptime_dg[i]), secs, (export_ms % 1000) * 1_000_000,
                                  sequence[e], 0, e, 0) + body
            sequence[e] = (sequence[e] + count) & 0xFFFFFFFF
        else:
            pad = (-len(body)) % 4 if template.version == 9 else 0
            data_set = struct.pack("!HH", template.template_id, 4 + len(body) + pad) + body + b"\0" * pad
            sets = (tset + data_set) if carries_template[i] else data_set
            if template.version == 9:
                records = count + (1 if carries_template[i] else 0)
                payload = struct.pack("!HHIIII", 9, records, int(uptime_dg[i]), secs, sequence[e],
                                      template.domain) + sets
                sequence[e] = (sequence[e] + 1) & 0xFFFFFFFF
            else:
                payload = struct.pack("!HHIII", 10, 16 + len(sets), secs, sequence[e], template.domain) + sets
                sequence[e] = (sequence[e] + count) & 0xFFFFFFFF
        out.append((names[e], export_ms + 1, payload))
    return Stream(template, names, out, counts.tolist(), int(flows.octets.sum()))


def _build_variable_stream(template: RealTemplate, datagrams: int, *, exporters: int, mtu_payload: int,
                           template_every: int, seed: int, start_ms: int,
                           datagrams_per_second: float) -> Stream:
    rng = np.random.default_rng(seed)
    names = [f"192.0.2.{i + 1}" for i in range(exporters)]
    estimate = max(1, (mtu_payload - 20) // (template.fixed_length + 60))
    total_guess = datagrams * estimate * 2
    export_ms_dg = start_ms + (np.arange(datagrams) / datagrams_per_second * 1000).astype(np.int64)
    flows = make_flows(rng, total_guess)
    # Times: all records relative to the first export second; good enough for the slow path.
    export_flow = np.full(total_guess, int(export_ms_dg[0]) // 1000 * 1000, np.int64)
    uptime_flow = np.full(total_guess, 864_000_000, np.int64)
    records = variable_records(template, flows, export_flow, uptime_flow, rng)
    tset = _template_set(template)
    out: list[tuple[str, int, bytes]] = []
    counts: list[int] = []
    sequence = [0] * exporters
    octets = 0
    next_record = 0
    for i in range(datagrams):
        e = i % exporters
        with_template = (i // exporters) % template_every == 0
        room = mtu_payload - 16 - 4 - (len(tset) if with_template else 0)
        chosen: list[bytes] = []
        used = 0
        while next_record < len(records) and used + len(records[next_record]) <= room:
            used += len(records[next_record])
            chosen.append(records[next_record])
            next_record += 1
        if not chosen:
            raise RuntimeError("record larger than the datagram or generator exhausted")
        octets += int(flows.octets[next_record - len(chosen) : next_record].sum())
        body = b"".join(chosen)
        data_set = struct.pack("!HH", template.template_id, 4 + len(body)) + body
        sets = (tset + data_set) if with_template else data_set
        secs = int(export_ms_dg[i]) // 1000
        payload = struct.pack("!HHIII", 10, 16 + len(sets), secs, sequence[e], template.domain) + sets
        sequence[e] = (sequence[e] + len(chosen)) & 0xFFFFFFFF
        out.append((names[e], int(export_ms_dg[i]) + 1, payload))
        counts.append(len(chosen))
    return Stream(template, names, out, counts, octets)


# ----------------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    key: str
    label: str
    file: str | None
    template_id: int

    def load(self) -> RealTemplate:
        return V5_TEMPLATE if self.file is None else load_template(self.file, self.template_id)


CASES = {
    "v5": Case("v5", "NetFlow v5", None, 0),
    "v9-softflowd": Case("v9-softflowd", "NetFlow v9, softflowd template 1024 (IPv4)",
                         "python-netflow-v9-softflowd/packet_v9_template.bin", 1024),
    "v9-asr9k": Case("v9-asr9k", "NetFlow v9, Cisco ASR 9000 template 260",
                     "logstash-codec-netflow/netflow9_test_cisco_asr9k_tpl260.dat", 260),
    "ipfix-ipfixcol2": Case("ipfix-ipfixcol2", "IPFIX, ipfixcol2 example_flows template 257 (TCP/IPv4)",
                            "ipfixcol2/example_flows.ipfix", 257),
    "ipfix-softflowd": Case("ipfix-softflowd", "IPFIX, softflowd template 1024 (IPv4)",
                            "python-netflow-v9-softflowd/packet_ipfix_template.bin", 1024),
    "ipfix-netscaler": Case("ipfix-netscaler", "IPFIX, Citrix NetScaler template 258 (12 variable-length fields)",
                            "logstash-codec-netflow/ipfix_test_netscaler_tpl.dat", 258),
}
FIXED_CASES = ("v5", "v9-softflowd", "v9-asr9k", "ipfix-ipfixcol2", "ipfix-softflowd")
VARIABLE_CASES = ("ipfix-netscaler",)
