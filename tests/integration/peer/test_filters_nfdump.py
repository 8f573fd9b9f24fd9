"""nfdump as the oracle for view filters: the same flows, the same filter text, the same matches.

A few hundred flows (IPv4 and IPv6; TCP, UDP, ICMP, ICMPv6, GRE, ESP; a spread of ports, flags,
TOS, counters, interfaces and AS numbers) are packed into NetFlow v9 export packets and sent over
loopback to a real ``nfcapd``; ``nfdump`` then filters the file nfcapd wrote. flowscope decodes
the very same packets and evaluates its mask. Every flow has a distinct byte count, which serves
as its key. Before any filter is compared, each flow as nfdump stored it must equal the flow as
flowscope decoded it, so a difference found later is a filter difference, not a decoding one.

AS filters are not compared: nfdump 1.7.1 refuses them without a geo location database ("Can
not filter according geo elements without a geo location DB"); the unit tests cover them.

Addresses whose first 64 bits are zero (``::a.b.c.d``, ``::ffff:a.b.c.d``, ``::1``) are left out
on purpose: nfdump 1.7.1 stores IPv4 as ``::a.b.c.d`` internally, so its IPv4 filters also match
such IPv6 addresses, and it treats ``::ffff:a.b.c.d`` as IPv6 while FlowBatch stores IPv4 that
way (see filterparse's documentation of the differences).
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flowscope.aggregate.filters import compile_filter
from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.model import Datagram, FlowBatch, addresses_text
from flowscope.normalize import NormalizeConfig, Normalizer
from support.exports import data_set, ipv4, ipv6, record, u8, u16, u32, u64, v9_message, v9_template, v9_template_set

pytestmark = [pytest.mark.integration, pytest.mark.peer]

FILTERS = [
    "any",
    # protocols
    "proto tcp", "proto udp", "proto icmp", "proto icmp6", "proto 47", "proto esp", "PROTO TCP",
    # hosts and networks
    "host 10.0.0.1", "src host 10.0.0.1", "dst host 192.168.1.10", "ip 8.8.8.8", "host 2001:db8::1",
    "dst ip 2a00:1450:4001::200e", "ip in [8.8.8.8 10.1.0.0/16]", "dst ip in [2001:db8::2, 192.168.1.20]",
    "net 10.0.0.0/8", "src net 10.0.0.0/8", "dst net 192.168.0.0/16", "net 10.0.0.0 255.0.0.0", "net 10.1/16",
    "net 172.16.0.0/12", "src and dst net 10.0.0.0/8", "src or dst net 192.168.1.0/24", "net 2001:db8::/32",
    "net 2001:db8:1::/48", "dst net 2001:db8::/100", "net fe80::/10",
    "ipv4", "inet", "ipv6", "inet6",
    # ports
    "port 80", "src port 53", "dst port 443", "port > 1023", "port < 1024", "dst port >= 8080", "port 771",
    "port in [80 443 8080]", "dst port in [22, 53]", "src and dst port > 1023", "port eq 0", "src port gt 50000",
    # counters
    "packets > 100", "packets > 1k", "packets <= 2", "packets = 1000", "bytes > 1M", "bytes > 1500",
    "bytes < 100", "bytes > 1G", "in bytes > 10k", "bytes >= 0x3e8",
    # TCP flags, TOS, AS, interfaces
    "flags S", "flags SA", "flags R", "flags X", "flags 2", "flags > 16", "flags S and not flags AFRPU",
    "not flags SA", "not (proto udp or not flags SA)",
    "tos 184", "tos > 0",
    "if 3", "in if 3", "out if 5", "if 70000",
    # combinations
    "proto tcp and dst port 22", "not port 53", "proto udp or proto tcp and port 80",
    "(proto udp or proto tcp) and port 80", "not proto tcp and not proto udp",
    "!port 80 && (proto udp || proto icmp)", "host 10.0.0.1 and not (port 80 or port 443)",
    "src net 10.0.0.0/8 and dst port > 1023 and bytes > 1k and flags A and not dst net 192.168.0.0/16",
    "ipv6 and (port 53 or proto icmp6) or net 172.16.0.0/12 and tos > 0",
]

V4_HOSTS = ["10.0.0.1", "10.0.0.2", "10.1.2.3", "10.200.0.9", "192.168.1.10", "192.168.1.20", "192.168.7.1",
            "172.16.5.4", "172.31.255.1", "8.8.8.8", "1.1.1.1", "203.0.113.5", "198.51.100.7"]
V6_HOSTS = ["2001:db8::1", "2001:db8::2", "2001:db8:1::2", "2001:db8::1:0:0:5", "2a00:1450:4001::200e",
            "fe80::1", "ff02::1"]
PORTS = [0, 22, 53, 80, 123, 137, 443, 1023, 1024, 3389, 8080, 8443, 50000, 65535]
TCP_FLAGS = [0x02, 0x12, 0x10, 0x18, 0x1B, 0x11, 0x04, 0x14, 0x3F, 0xC2, 0x19, 0x01]
FLAG_LETTERS = "CEUAPRSF"  # nfdump's %flg, most significant bit first
BYTE_BASES = [40, 1400, 9000, 999_000, 1_000_000, 5_000_000, 1_000_000_000, 3_000_000_000]
PACKETS = [1, 2, 3, 10, 100, 999, 1000, 1001, 150_000, 2_000_000]
FLOWS_PER_PACKET = 20
UPTIME_MS = 3_600_000

# NetFlow v9 field types (RFC 3954) with their lengths; the address pair differs per family.
COMMON_HEAD = [(32, 2), (1, 8), (2, 8), (4, 1), (5, 1), (6, 1), (7, 2)]  # icmp type, bytes, pkts, proto, tos...
COMMON_TAIL = [(10, 4), (11, 2), (14, 4), (16, 4), (17, 4), (21, 4), (22, 4)]
TEMPLATE_V4 = [*COMMON_HEAD, (8, 4), (12, 4), *COMMON_TAIL]
TEMPLATE_V6 = [*COMMON_HEAD, (27, 16), (28, 16), *COMMON_TAIL]


@dataclass(frozen=True)
class Flow:
    src: str
    dst: str
    src_port: int
    dst_port: int  # for ICMP: type * 256 + code, carried in the ICMP_TYPE field
    protocol: int
    tcp_flags: int
    tos: int
    packets: int
    bytes: int  # unique per flow: the key
    in_if: int
    out_if: int
    src_as: int
    dst_as: int

    def v9_record(self) -> bytes:
        icmp = self.protocol in (1, 58)
        pack = ipv4 if ":" not in self.src else ipv6
        return record(
            u16(self.dst_port if icmp else 0), u64(self.bytes), u64(self.packets), u8(self.protocol), u8(self.tos),
            u8(self.tcp_flags), u16(0 if icmp else self.src_port), pack(self.src), pack(self.dst), u32(self.in_if),
            u16(0 if icmp else self.dst_port), u32(self.out_if), u32(self.src_as), u32(self.dst_as),
            u32(UPTIME_MS - 1_000), u32(UPTIME_MS - 5_000),
        )


def make_flows() -> list[Flow]:
    rng = random.Random(20_241_127)
    flows = []
    for index in range(320):
        v6 = index % 4 == 3
        hosts = V6_HOSTS if v6 else V4_HOSTS
        src, dst = rng.sample(hosts, 2)
        protocol = rng.choice([6, 6, 6, 17, 17, 1 if not v6 else 58, 47, 50])
        if protocol in (1, 58):
            icmp = rng.choice([(8, 0), (0, 0), (3, 3), (11, 0)] if protocol == 1 else [(128, 0), (129, 0), (135, 0)])
            src_port, dst_port = 0, icmp[0] * 256 + icmp[1]
        elif protocol in (6, 17):
            src_port = rng.choice([*PORTS, rng.randrange(1024, 65536)])
            dst_port = rng.choice([*PORTS, rng.randrange(1024, 65536)])
        else:
            src_port = dst_port = 0
        flags = rng.choice(TCP_FLAGS) if protocol == 6 else 0
        flows.append(Flow(
            src, dst, src_port, dst_port, protocol, flags, rng.choice([0, 0, 0, 2, 32, 184]),
            rng.choice(PACKETS), rng.choice(BYTE_BASES) + index, rng.choice([1, 2, 3, 4, 5, 70_000]),
            rng.choice([1, 2, 3, 4, 5, 70_000]), rng.choice([0, 0, 15169, 64512, 65000, 4_200_000_000]),
            rng.choice([0, 0, 15169, 64512, 65001, 4_200_000_000]),
        ))
    # a UDP flow carrying a SYN bit: "flags" implies TCP on both sides
    flows.append(Flow("10.0.0.1", "8.8.8.8", 5353, 53, 17, 0x02, 0, 1, 77_777, 1, 2, 0, 0))
    assert len({f.bytes for f in flows}) == len(flows)
    return flows


def export_packets(flows: list[Flow], unix_secs: int) -> list[bytes]:
    templates = v9_template_set(v9_template(256, TEMPLATE_V4), v9_template(257, TEMPLATE_V6))
    packets = []
    for sequence, start in enumerate(range(0, len(flows), FLOWS_PER_PACKET)):
        chunk = flows[start : start + FLOWS_PER_PACKET]
        v4 = [f.v9_record() for f in chunk if ":" not in f.src]
        v6 = [f.v9_record() for f in chunk if ":" in f.src]
        sets = [templates] + ([data_set(256, v4)] if v4 else []) + ([data_set(257, v6)] if v6 else [])
        packets.append(v9_message(sets, uptime_ms=UPTIME_MS, unix_secs=unix_secs, sequence=sequence))
    return packets


# -- nfcapd / nfdump ------------------------------------------------------------------------------


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required for this peer test (Debian package nfdump)")
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def capture_with_nfcapd(packets: list[bytes], directory: Path) -> Path:
    """Sends the packets to a fresh nfcapd on loopback; returns the file it wrote on SIGTERM."""
    nfcapd = tool("nfcapd")
    help_text = subprocess.run([nfcapd, "-h"], capture_output=True, text=True, check=False).stdout
    output_flag = "-w" if "-w flowdir" in help_text else "-l"
    port = free_udp_port()
    process = subprocess.Popen(
        [nfcapd, "-b", "127.0.0.1", "-p", str(port), output_flag, str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_taken(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nfcapd did not start listening on UDP {port}: {process.communicate()[0]}")
            time.sleep(0.02)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in packets:
                sender.sendto(packet, ("127.0.0.1", port))
                time.sleep(0.002)
        time.sleep(0.5)  # nfcapd reads the socket in its own time; the flow count is checked below
    finally:
        process.send_signal(signal.SIGTERM)
        log = process.communicate(timeout=30)[0]
    files = sorted(p for p in directory.glob("nfcapd.*") if not p.name.startswith("nfcapd.current"))
    assert len(files) == 1, f"nfcapd wrote {[p.name for p in directory.iterdir()]}; its log:\n{log}"
    return files[0]


def nfdump(capture: Path, filter_text: str, fmt: str) -> list[str]:
    """nfdump's output lines for ``filter_text``; ``fmt`` is a ``fmt:`` format or ``csv``."""
    result = subprocess.run(
        [tool("nfdump"), "-r", str(capture), "-q", "-N", "-o", fmt if fmt == "csv" else f"fmt:{fmt}", filter_text],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, f"nfdump rejected {filter_text!r}: {result.stdout}{result.stderr}"
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return [] if lines == ["No matching flows"] else lines


# -- the shared capture -----------------------------------------------------------------------------


@dataclass
class Capture:
    flows: list[Flow]
    file: Path
    batch: FlowBatch


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    flows = make_flows()
    packets = export_packets(flows, unix_secs=int(time.time()))
    file = capture_with_nfcapd(packets, tmp_path_factory.mktemp("nfcapd"))
    session = DecoderSession(counters=Counters())
    now_ms = int(time.time() * 1000)
    records = session.decode([Datagram("127.0.0.1", now_ms, p, 50_000) for p in packets])
    batch = Normalizer(NormalizeConfig(), session.options, Counters()).normalize(records)
    assert len(batch) == len(flows)
    yield Capture(flows, file, batch)


def flowscope_rows(batch: FlowBatch) -> dict[int, tuple[object, ...]]:
    src, dst = addresses_text(batch["src_addr"]), addresses_text(batch["dst_addr"])
    names = ("src_port", "dst_port", "protocol", "tcp_flags", "tos", "packets", "in_if", "out_if", "src_as", "dst_as")
    columns = [batch[name].tolist() for name in names]
    return {
        int(key): (src[i], dst[i], *(column[i] for column in columns))
        for i, key in enumerate(batch["bytes"].tolist())
    }


def nfdump_rows(capture_file: Path) -> dict[int, tuple[object, ...]]:
    """Each flow as nfdump stored it. ``-o csv`` prints full addresses (``fmt:`` shortens long ones)
    and ICMP type/code as the destination port; ``%pr`` with ``-N`` gives protocol numbers."""
    protocols = dict(line.replace(" ", "").split("|") for line in nfdump(capture_file, "any", "%ibyt|%pr"))
    rows = {}
    for line in nfdump(capture_file, "any", "csv"):
        fields = line.split(",")
        sa, da, sp, dp, flg, tos, pkts, key, in_if, out_if, sas, das = (fields[i] for i in (3, 4, 5, 6, 8, 10, 11,
                                                                                             12, 15, 16, 17, 18))
        flags = sum(1 << (7 - i) for i, letter in enumerate(flg) if letter == FLAG_LETTERS[i])
        rows[int(key)] = (str(ipaddress.ip_address(sa)), str(ipaddress.ip_address(da)), int(sp), int(dp),
                          int(protocols[key]), flags, int(tos), int(pkts), int(in_if), int(out_if), int(sas), int(das))
    return rows


def test_nfdump_and_flowscope_hold_the_same_flows(capture: Capture) -> None:
    ours, theirs = flowscope_rows(capture.batch), nfdump_rows(capture.file)
    assert len(theirs) == len(capture.flows), "nfcapd lost or merged flows"
    differing = {key: (ours.get(key), theirs[key]) for key in theirs if ours.get(key) != theirs[key]}
    assert not differing, f"decoded flows differ (flowscope, nfdump): {differing}"
    sent = {f.bytes: (f.src, f.dst, f.src_port, f.dst_port, f.protocol, f.tcp_flags, f.tos, f.packets, f.in_if,
                      f.out_if, f.src_as, f.dst_as) for f in capture.flows}
    assert ours == sent


@pytest.mark.parametrize("filter_text", FILTERS)
def test_filter_selects_the_flows_nfdump_selects(capture: Capture, filter_text: str) -> None:
    expected = {int(line) for line in nfdump(capture.file, filter_text, "%ibyt")}
    mask = compile_filter(filter_text).mask(capture.batch)
    selected = set(capture.batch["bytes"][mask].tolist())
    assert selected == expected, (
        f"only flowscope: {sorted(selected - expected)}, only nfdump: {sorted(expected - selected)}"
    )


def test_the_filters_select_neither_nothing_nor_everything(capture: Capture) -> None:
    """Guards the comparison above against vacuous agreement: most filters split the flows."""
    sizes = [int(compile_filter(f).mask(capture.batch).sum()) for f in FILTERS]
    trivial = [f for f, n in zip(FILTERS, sizes, strict=True) if n in (0, len(capture.batch)) and f != "any"]
    assert trivial == [], f"filters matching no flow or every flow: {trivial}"
    assert np.median(sizes) < len(capture.batch) / 2
