"""Offline readers: raw payload dumps, RFC 5655 IPFIX files, pcap/pcapng captures, dispatch."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from flowscope.collect.files import read_capture, read_ipfix_file, read_pcap, read_raw_datagrams
from flowscope.metrics import Counters
from flowscope.model import Datagram

DATA = Path(__file__).resolve().parents[2] / "data"
NETFLOW5 = DATA / "logstash-codec-netflow" / "netflow5.dat"
IPFIX_DAT = DATA / "logstash-codec-netflow" / "ipfix.dat"
V5_INVALID = DATA / "logstash-codec-netflow" / "netflow5_test_invalid01.dat"
EXAMPLE_FLOWS = DATA / "ipfixcol2" / "example_flows.ipfix"
SOFTFLOWD = DATA / "python-netflow-v9-softflowd"
WIKIPEDIA = DATA / "zeek" / "wikipedia.pcap"

V5 = (SOFTFLOWD / "packet_v5.bin").read_bytes()
V9 = (SOFTFLOWD / "packet_v9_template.bin").read_bytes()
IPFIX = IPFIX_DAT.read_bytes()[:484]  # first message of ipfix.dat


# -- frame builders ------------------------------------------------------------------------------


def udp(sport: int, dport: int, payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length, 0) + payload


def ipv4(src: str, dst: str, body: bytes, *, proto: int = 17, options: bytes = b"", frag: int = 0) -> bytes:
    ihl = (20 + len(options)) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        ihl * 4 + len(body),
        7,
        frag,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + options + body


def ipv6(src: str, dst: str, body: bytes, *, next_header: int = 17, extensions: bytes = b"") -> bytes:
    header = struct.pack(
        "!IHBB16s16s",
        0x6000_0000,
        len(extensions) + len(body),
        next_header,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return header + extensions + body


def ethernet(ip: bytes, *, tags: tuple[int, ...] = (), ethertype: int | None = None) -> bytes:
    if ethertype is None:
        ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    vlan = b"".join(struct.pack("!HH", tpid, 100 + i) for i, tpid in enumerate(tags))
    frame = (
        b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + vlan + struct.pack("!H", ethertype) + ip
    )
    return frame.ljust(60, b"\x00")  # Ethernet minimum frame: padding the IP length must cut off


def sll(ip: bytes) -> bytes:
    ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x02\x00\x00", ethertype) + ip


def sll2(ip: bytes) -> bytes:
    ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHIHBB8s", ethertype, 0, 3, 1, 0, 6, b"\x02\x00\x00\x00\x00\x02\x00\x00") + ip


def write_pcap(
    path: Path,
    linktype: int,
    records: list[tuple[int, int, bytes]],
    *,
    order: str = "<",
    nanos: bool = False,
    snaplen: int = 65535,
) -> Path:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for seconds, fraction, frame in records:
        kept = frame[:snaplen]
        out.append(struct.pack(order + "IIII", seconds, fraction, len(kept), len(frame)) + kept)
    path.write_bytes(b"".join(out))
    return path


def pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    body = body.ljust((len(body) + 3) // 4 * 4, b"\x00")
    total = 12 + len(body)
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def shb(order: str) -> bytes:
    return pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, *, tsresol: int | None = None, snaplen: int = 0) -> bytes:
    options = b""
    if tsresol is not None:
        options = (
            struct.pack(order + "HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + struct.pack(order + "HH", 0, 0)
        )
    return pcapng_block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + options)


def epb(order: str, interface: int, timestamp: int, frame: bytes) -> bytes:
    header = struct.pack(
        order + "IIIII", interface, timestamp >> 32, timestamp & 0xFFFFFFFF, len(frame), len(frame)
    )
    return pcapng_block(order, 6, header + frame)


def spb(order: str, frame: bytes) -> bytes:
    return pcapng_block(order, 3, struct.pack(order + "I", len(frame)) + frame)


def summary(datagrams: list[Datagram]) -> list[tuple[str, int, bytes, int]]:
    return [(d.exporter, d.port, d.payload, d.time_received_ms) for d in datagrams]


# -- raw payload files ---------------------------------------------------------------------------


def test_raw_netflow5_dat_splits_into_12_datagrams_with_30_records() -> None:
    counters = Counters()
    datagrams = list(read_raw_datagrams(NETFLOW5, counters=counters))
    assert len(datagrams) == 12
    assert b"".join(d.payload for d in datagrams) == NETFLOW5.read_bytes()
    counts = [struct.unpack("!HH", d.payload[:4]) for d in datagrams]
    assert all(version == 5 for version, _ in counts)
    assert [count for _, count in counts] == [2, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2]
    assert all(len(d.payload) == 24 + 48 * count for d, (_, count) in zip(datagrams, counts, strict=True))
    first = datagrams[0].payload
    seconds, nanoseconds = struct.unpack("!II", first[8:16])
    assert datagrams[0].time_received_ms == seconds * 1000 + nanoseconds // 1_000_000
    assert all(d.exporter == "0.0.0.0" and d.port == 0 for d in datagrams)
    assert counters.get("collector_file_datagrams_total", reader="raw") == 12
    assert counters.get("collector_file_bytes_total", reader="raw") == 1728
    assert counters.total("collector_file_errors_total") == 0


def test_raw_ipfix_dat_splits_by_header_length() -> None:
    datagrams = list(read_raw_datagrams(IPFIX_DAT, exporter="192.0.2.9"))
    assert [len(d.payload) for d in datagrams] == [484, 64, 240]
    assert b"".join(d.payload for d in datagrams) == IPFIX_DAT.read_bytes()
    for datagram in datagrams:
        assert datagram.exporter == "192.0.2.9"
        assert datagram.time_received_ms == struct.unpack("!I", datagram.payload[4:8])[0] * 1000


def test_raw_v5_announcing_more_records_than_present_is_one_datagram() -> None:
    counters = Counters()
    datagrams = list(read_raw_datagrams(V5_INVALID, counters=counters))
    assert [len(d.payload) for d in datagrams] == [1464]
    assert counters.get("collector_file_errors_total", reader="raw", reason="count_exceeds_data") == 1


def test_raw_v1_and_v9_headers_give_the_time(tmp_path: Path) -> None:
    (v1,) = read_raw_datagrams(SOFTFLOWD / "packet_v1.bin")
    seconds, nanoseconds = struct.unpack("!II", v1.payload[8:16])
    assert len(v1.payload) == 112
    assert v1.time_received_ms == seconds * 1000 + nanoseconds // 1_000_000
    (v9,) = read_raw_datagrams(SOFTFLOWD / "packet_v9_template.bin")
    assert v9.payload == V9
    assert v9.time_received_ms == struct.unpack("!I", V9[8:12])[0] * 1000


def test_raw_v9_has_no_length_so_the_rest_of_the_file_is_one_datagram(tmp_path: Path) -> None:
    path = tmp_path / "mixed.dat"
    path.write_bytes(V5 + IPFIX + V9 + V9)
    datagrams = list(read_raw_datagrams(path))
    assert [d.payload for d in datagrams] == [V5, IPFIX, V9 + V9]


def test_raw_v7_split_by_52_byte_records(tmp_path: Path) -> None:
    def v7(count: int, seconds: int) -> bytes:
        header = struct.pack("!HHIIIII", 7, count, 1000, seconds, 5_000_000, 1, 0)
        return header + b"\x11" * 52 * count

    path = tmp_path / "v7.dat"
    path.write_bytes(v7(1, 1_600_000_000) + v7(3, 1_600_000_001))
    datagrams = list(read_raw_datagrams(path))
    assert [len(d.payload) for d in datagrams] == [24 + 52, 24 + 3 * 52]
    assert [d.time_received_ms for d in datagrams] == [1_600_000_000_005, 1_600_000_001_005]


def test_raw_unknown_bytes_are_one_datagram_stamped_with_the_file_mtime(tmp_path: Path) -> None:
    path = tmp_path / "packet_invalid.bin"
    shutil.copyfile(SOFTFLOWD / "packet_invalid.bin", path)
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    counters = Counters()
    (datagram,) = read_raw_datagrams(path, counters=counters)
    assert datagram.payload == b"\xff" * 21
    assert datagram.time_received_ms == 1_700_000_000_123
    assert counters.get("collector_file_errors_total", reader="raw", reason="unknown_format") == 1


def test_raw_empty_file_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.dat"
    path.write_bytes(b"")
    assert list(read_raw_datagrams(path)) == []


# -- RFC 5655 IPFIX files ------------------------------------------------------------------------


def test_ipfix_file_example_flows_has_68_messages() -> None:
    counters = Counters()
    datagrams = list(read_ipfix_file(EXAMPLE_FLOWS, exporter="198.51.100.1", counters=counters))
    assert len(datagrams) == 68
    assert b"".join(d.payload for d in datagrams) == EXAMPLE_FLOWS.read_bytes()
    assert len(datagrams[1].payload) == 16  # a header without sets is a valid message
    assert {d.exporter for d in datagrams} == {"198.51.100.1"}
    # export times 2015-08-03 12:12:01..02 UTC
    assert {d.time_received_ms for d in datagrams} <= {1_438_603_921_000, 1_438_603_922_000}
    assert counters.get("collector_file_datagrams_total", reader="ipfix_file") == 68


def test_ipfix_file_truncated_or_damaged_stops_and_counts(tmp_path: Path) -> None:
    data = EXAMPLE_FLOWS.read_bytes()
    truncated = tmp_path / "truncated.ipfix"
    truncated.write_bytes(data[:-10])
    counters = Counters()
    assert len(list(read_ipfix_file(truncated, counters=counters))) == 67
    assert counters.get("collector_file_errors_total", reader="ipfix_file", reason="truncated_message") == 1

    damaged = tmp_path / "damaged.ipfix"
    damaged.write_bytes(IPFIX + b"\x00\x09" + IPFIX[2:])
    counters = Counters()
    assert [d.payload for d in read_ipfix_file(damaged, counters=counters)] == [IPFIX]
    assert counters.get("collector_file_errors_total", reader="ipfix_file", reason="bad_header") == 1


# -- pcap ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nanos: bool) -> None:
    fraction = 123_456_789 if nanos else 123_456
    records = [
        (1_438_603_921, fraction, ethernet(ipv4("192.0.2.1", "192.0.2.100", udp(50001, 2055, V5)))),
        (1_438_603_922, fraction, ethernet(ipv4("192.0.2.2", "192.0.2.100", udp(50002, 4739, IPFIX)))),
        (1_438_603_923, 0, ethernet(ipv6("2001:db8::7", "2001:db8::1", udp(50003, 9995, V9)))),
    ]
    path = write_pcap(tmp_path / "c.pcap", 1, records, order=order, nanos=nanos)
    counters = Counters()
    assert summary(list(read_pcap(path, counters=counters))) == [
        ("192.0.2.1", 50001, V5, 1_438_603_921_123),
        ("192.0.2.2", 50002, IPFIX, 1_438_603_922_123),
        ("2001:db8::7", 50003, V9, 1_438_603_923_000),
    ]
    assert counters.get("collector_file_datagrams_total", reader="pcap") == 3


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_block_kinds(tmp_path: Path, order: str) -> None:
    v4 = ipv4("192.0.2.1", "192.0.2.100", udp(50001, 2055, V5))
    v6 = ipv6("2001:db8::7", "2001:db8::1", udp(50003, 4739, IPFIX))
    blocks = [
        shb(order),
        idb(order, 1),  # Ethernet, default µs
        idb(order, 101, tsresol=9),  # raw IP, ns
        idb(order, 113, tsresol=0x80 | 10),  # Linux SLL, 2^-10 s
        epb(order, 0, 1_438_603_921_250_000, ethernet(v4)),
        pcapng_block(order, 4, b"\x00" * 8),  # name resolution block: ignored
        epb(order, 1, 1_438_603_922_500_000_000, v6),
        epb(order, 2, (1_438_603_923 << 10) + 512, sll(v4)),
        spb(order, ethernet(v4)),  # no timestamp: the previous packet's
        shb(order),  # a new section forgets the interfaces
        idb(order, 276),
        epb(order, 0, 1_438_603_925_000_000, sll2(v6)),
    ]
    path = tmp_path / "n.pcapng"
    path.write_bytes(b"".join(blocks))
    assert summary(list(read_pcap(path))) == [
        ("192.0.2.1", 50001, V5, 1_438_603_921_250),
        ("2001:db8::7", 50003, IPFIX, 1_438_603_922_500),
        ("192.0.2.1", 50001, V5, 1_438_603_923_500),
        ("192.0.2.1", 50001, V5, 1_438_603_923_500),
        ("2001:db8::7", 50003, IPFIX, 1_438_603_925_000),
    ]


@pytest.mark.parametrize(
    ("linktype", "frame_of"),
    [
        (1, lambda ip: ethernet(ip, tags=(0x8100,))),
        (1, lambda ip: ethernet(ip, tags=(0x88A8, 0x8100))),  # QinQ
        (1, lambda ip: ethernet(ip, tags=(0x9100, 0x8100))),
        (113, sll),
        (276, sll2),
        (101, lambda ip: ip),
        (228, lambda ip: ip),  # IPv4-only raw link type still dispatched on the version nibble
        (0, lambda ip: struct.pack("<I", 2 if ip[0] >> 4 == 4 else 30) + ip),  # BSD null, host order
        (0, lambda ip: struct.pack(">I", 2 if ip[0] >> 4 == 4 else 24) + ip),
        (108, lambda ip: struct.pack(">I", 2 if ip[0] >> 4 == 4 else 28) + ip),  # OpenBSD loop
    ],
)
def test_link_types(tmp_path: Path, linktype: int, frame_of: object) -> None:
    assert callable(frame_of)
    v4 = ipv4("10.1.2.3", "10.0.0.1", udp(2055, 2055, V5))
    v6 = ipv6("fd00::3", "fd00::1", udp(4739, 4739, IPFIX))
    path = write_pcap(tmp_path / "l.pcap", linktype, [(1, 0, frame_of(v4)), (2, 0, frame_of(v6))])
    assert summary(list(read_pcap(path))) == [("10.1.2.3", 2055, V5, 1000), ("fd00::3", 4739, IPFIX, 2000)]


def test_ip_options_extension_headers_padding_and_mapped_sources(tmp_path: Path) -> None:
    hop_by_hop = bytes([17, 0, 1, 4, 0, 0, 0, 0])  # next header UDP, PadN option
    frames = [
        ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(1, 2055, V5), options=b"\x01\x01\x01\x00" * 2)),
        ethernet(ipv6("2001:db8::5", "2001:db8::9", udp(2, 2055, V9), next_header=0, extensions=hop_by_hop)),
        ethernet(ipv4("192.0.2.3", "192.0.2.9", udp(3, 2055, b"tiny"))),  # padded to 60 bytes
        ethernet(ipv6("::ffff:192.0.2.4", "2001:db8::9", udp(4, 2055, b"m"))),
    ]
    path = write_pcap(tmp_path / "o.pcap", 1, [(0, 0, f) for f in frames])
    assert [(d.exporter, d.port, d.payload) for d in read_pcap(path)] == [
        ("192.0.2.1", 1, V5),
        ("2001:db8::5", 2, V9),
        ("192.0.2.3", 3, b"tiny"),
        ("192.0.2.4", 4, b"m"),
    ]


def test_non_udp_non_ip_fragments_and_snapped_packets_are_skipped_and_counted(tmp_path: Path) -> None:
    whole = udp(7, 2055, V9)
    fragment_header = bytes([17, 0]) + struct.pack("!HI", (8 << 3) | 0, 99)  # offset 64 bytes, last
    frames = [
        ethernet(ipv4("192.0.2.1", "192.0.2.9", b"\x00" * 20, proto=6)),  # TCP
        ethernet(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, ethertype=0x0806),  # ARP
        ethernet(ipv4("192.0.2.1", "192.0.2.9", whole[:200], frag=0x2000)),  # first fragment (MF)
        ethernet(ipv4("192.0.2.1", "192.0.2.9", whole[200:], frag=200 // 8)),  # later fragment
        ethernet(ipv6("2001:db8::1", "2001:db8::9", whole[64:], next_header=44, extensions=fragment_header)),
        ethernet(ipv4("192.0.2.2", "192.0.2.9", udp(8, 2055, V5))),
    ]
    path = write_pcap(tmp_path / "s.pcap", 1, [(0, 0, f) for f in frames])
    snapped = write_pcap(tmp_path / "snap.pcap", 1, [(0, 0, frames[-1])], snaplen=96)
    counters = Counters()
    datagrams = list(read_pcap(path, counters=counters)) + list(read_pcap(snapped, counters=counters))
    assert [(d.port, d.payload) for d in datagrams] == [(7, whole[8:200]), (8, V5)]

    def skipped(reason: str) -> int:
        return counters.get("collector_file_skipped_total", reader="pcap", reason=reason)

    assert (skipped("not_udp"), skipped("not_ip"), skipped("fragment"), skipped("snapped")) == (1, 1, 2, 1)
    assert counters.get("collector_file_errors_total", reader="pcap", reason="first_fragment_only") == 1


def test_link_layer_and_ip_version_disagreeing_is_malformed(tmp_path: Path) -> None:
    frame = ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(1, 2055, V5)), ethertype=0x86DD)
    counters = Counters()
    assert list(read_pcap(write_pcap(tmp_path / "m.pcap", 1, [(0, 0, frame)]), counters=counters)) == []
    assert counters.get("collector_file_skipped_total", reader="pcap", reason="malformed") == 1


def test_port_filter_matches_source_or_destination(tmp_path: Path) -> None:
    frames = [
        ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(50000, 2055, b"a"))),
        ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(53, 50000, b"b"))),
        ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(4739, 50000, b"c"))),
    ]
    path = write_pcap(tmp_path / "p.pcap", 1, [(0, 0, f) for f in frames])
    counters = Counters()
    assert [d.payload for d in read_pcap(path, ports={2055, 4739}, counters=counters)] == [b"a", b"c"]
    assert counters.get("collector_file_skipped_total", reader="pcap", reason="port_filtered") == 1


def test_damaged_pcaps_never_raise(tmp_path: Path) -> None:
    frame = ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(1, 2055, V5)))
    good = write_pcap(tmp_path / "g.pcap", 1, [(0, 0, frame)] * 3).read_bytes()
    cases = {
        "truncated_record": good[:-30],
        "truncated_header": good[:10],
        "unknown_linktype": write_pcap(tmp_path / "u.pcap", 147, [(0, 0, frame)]).read_bytes(),
        "not_pcap": b"\x00" * 64,
    }
    for reason, data in cases.items():
        path = tmp_path / f"{reason}.pcap"
        path.write_bytes(data)
        counters = Counters()
        datagrams = list(read_pcap(path, counters=counters))
        assert len(datagrams) == (2 if reason == "truncated_record" else 0), reason
        assert counters.get("collector_file_errors_total", reader="pcap", reason=reason) == 1, reason

    pcapng = shb("<") + idb("<", 147) + epb("<", 0, 0, frame) + idb("<", 1) + epb("<", 1, 0, frame)
    (tmp_path / "n.pcapng").write_bytes(pcapng + pcapng_block("<", 6, b"\x00" * 4)[:-6])
    counters = Counters()
    assert len(list(read_pcap(tmp_path / "n.pcapng", counters=counters))) == 1
    assert counters.get("collector_file_skipped_total", reader="pcap", reason="unknown_linktype") == 1
    assert counters.get("collector_file_errors_total", reader="pcap", reason="truncated_record") == 1


def test_counts_are_published_when_iteration_stops_early(tmp_path: Path) -> None:
    frame = ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(1, 2055, V5)))
    path = write_pcap(tmp_path / "g.pcap", 1, [(0, 0, frame)] * 5)
    counters = Counters()
    iterator = read_pcap(path, counters=counters)
    next(iterator)
    iterator.close()
    assert counters.get("collector_file_datagrams_total", reader="pcap") == 1


def test_real_capture_wikipedia_pcap() -> None:
    counters = Counters()
    datagrams = list(read_pcap(WIKIPEDIA, counters=counters))
    # tshark 4.0: -Y 'udp && !icmp && !icmpv6' → 48 packets, 3465 payload bytes
    assert len(datagrams) == 48
    assert sum(len(d.payload) for d in datagrams) == 3465
    assert Counter(d.exporter for d in datagrams) == {
        "141.142.2.2": 14,
        "141.142.220.118": 14,
        "141.142.220.226": 11,
        "fe80::3074:17d5:2052:c324": 4,
        "fe80::217:f2ff:fed7:cf65": 1,
        "141.142.220.202": 1,
        "141.142.220.238": 1,
        "141.142.220.44": 1,
        "141.142.220.50": 1,
    }
    first = datagrams[0]
    assert (first.exporter, first.port, first.time_received_ms) == (
        "141.142.220.202",
        5353,
        1_300_475_167_096,
    )
    assert counters.get("collector_file_skipped_total", reader="pcap", reason="not_udp") > 0


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("text2pcap") is None, reason="text2pcap (Wireshark) not installed")
@pytest.mark.parametrize("pcapng", [False, True])
@pytest.mark.parametrize(("family", "source"), [("-4", "192.0.2.33"), ("-6", "2001:db8::33")])
def test_text2pcap_output_is_read(tmp_path: Path, pcapng: bool, family: str, source: str) -> None:
    hexdump = tmp_path / "v5.txt"
    lines = [f"{at:06x} " + " ".join(f"{b:02x}" for b in V5[at : at + 16]) for at in range(0, len(V5), 16)]
    hexdump.write_text("\n".join(lines) + "\n")
    out = tmp_path / ("v5.pcapng" if pcapng else "v5.pcap")
    help_text = subprocess.run(["text2pcap", "-h"], capture_output=True, text=True, check=False)
    if "-F <capture type>" in help_text.stdout + help_text.stderr:
        file_type = ["-F", "pcapng" if pcapng else "pcap"]
    else:  # Wireshark < 3.6: pcap by default, -n for pcapng
        file_type = ["-n"] if pcapng else []
    destination = "192.0.2.1" if family == "-4" else "2001:db8::1"
    command = ["text2pcap", *file_type, family, f"{source},{destination}", "-u", "40000,2055"]
    subprocess.run([*command, str(hexdump), str(out)], check=True, capture_output=True)
    assert out.read_bytes()[:4] in (
        (b"\x0a\x0d\x0d\x0a",) if pcapng else (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    )
    assert [(d.exporter, d.port, d.payload) for d in read_pcap(out)] == [(source, 40000, V5)]


# -- dispatch by content -------------------------------------------------------------------------


def test_read_capture_dispatches_by_content_not_extension(tmp_path: Path) -> None:
    pcap_named_dat = write_pcap(
        tmp_path / "export.dat", 1, [(0, 0, ethernet(ipv4("192.0.2.1", "192.0.2.9", udp(1, 2, V5))))]
    )
    ipfix_named_pcap = tmp_path / "flows.pcap"
    shutil.copyfile(EXAMPLE_FLOWS, ipfix_named_pcap)
    pcapng_named_bin = tmp_path / "capture.bin"
    pcapng_named_bin.write_bytes(
        shb(">") + idb(">", 101) + epb(">", 0, 0, ipv4("192.0.2.5", "192.0.2.9", udp(1, 2, V9)))
    )
    counters = Counters()
    assert [d.payload for d in read_capture(pcap_named_dat, counters=counters)] == [V5]
    assert [d.exporter for d in read_capture(pcapng_named_bin, counters=counters)] == ["192.0.2.5"]
    assert len(list(read_capture(ipfix_named_pcap, exporter="10.0.0.1", counters=counters))) == 68
    assert len(list(read_capture(IPFIX_DAT, counters=counters))) == 3  # messages tile the file
    assert len(list(read_capture(NETFLOW5, counters=counters))) == 12
    assert [len(d.payload) for d in read_capture(V5_INVALID, counters=counters)] == [1464]
    assert counters.get("collector_file_datagrams_total", reader="pcap") == 2
    assert counters.get("collector_file_datagrams_total", reader="ipfix_file") == 68 + 3
    assert counters.get("collector_file_datagrams_total", reader="raw") == 12 + 1


def test_ipfix_that_does_not_tile_the_file_is_read_as_raw(tmp_path: Path) -> None:
    path = tmp_path / "ipfix_then_v9.dat"
    path.write_bytes(IPFIX + V9)
    counters = Counters()
    assert [d.payload for d in read_capture(path, counters=counters)] == [IPFIX, V9]
    assert counters.get("collector_file_datagrams_total", reader="raw") == 2


@pytest.mark.parametrize("reader", [read_capture, read_pcap, read_ipfix_file, read_raw_datagrams])
def test_missing_file_raises_naming_the_path(tmp_path: Path, reader: object) -> None:
    assert callable(reader)
    missing = tmp_path / "no-such-capture.pcap"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        reader(missing)
