"""pcap and pcapng captures → the UDP datagrams they hold (exporter = IP source address).

Classic pcap in either byte order with µs or ns timestamps; pcapng with section, interface,
enhanced, simple and obsolete packet blocks (link type and timestamp resolution per interface).
Link types: Ethernet (802.1Q / 802.1ad / QinQ tags), Linux cooked SLL and SLL2, raw IP, BSD
null/loopback. IPv4 (with options) and IPv6 (with extension headers). Used through
``flowscope.collect.files``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Collection, Iterator
from typing import BinaryIO

from flowscope.collect import PathLike, ReaderTally, require_file
from flowscope.metrics import Counters
from flowscope.model import Datagram

# classic pcap magic → (byte order, divisor turning the fraction into milliseconds)
PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_MAX_RECORD_BYTES = 16 * 1024 * 1024  # sanity bound against garbage lengths

LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP = 0, 1, 108
LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 101, 113, 276
_RAW_LINKTYPES = frozenset({LINKTYPE_RAW, 12, 14, 228, 229})  # 12/14: DLT_RAW of old BSD savefiles
_LINKTYPES = (
    frozenset({LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2})
    | _RAW_LINKTYPES
)
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
_ETHERTYPE_IP = {0x0800: 4, 0x86DD: 6}
_BSD_AF_INET6 = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, Darwin
_IPV6_EXTENSIONS = frozenset({0, 43, 60, 135, 139, 140})  # (len + 1) × 8 bytes each
_MAPPED = b"\x00" * 10 + b"\xff\xff"


def read_pcap(
    path: PathLike, *, counters: Counters | None = None, ports: Collection[int] | None = None
) -> Iterator[Datagram]:
    """Every UDP datagram in a pcap/pcapng capture: exporter = IP source, port = UDP source port.

    ``ports``, when given, keeps only datagrams whose source or destination port is in it.
    ``time_received_ms`` is the packet timestamp (for pcapng simple packet blocks, which carry
    none, the previous packet's). Non-UDP packets and IP fragments other than the first are
    skipped and counted; a first fragment yields the part of the payload it holds.
    """
    stat = require_file(path)
    return _pcap(path, ReaderTally(counters, "pcap"), frozenset(ports or ()), stat.st_mtime_ns // 1_000_000)


def _pcap(path: PathLike, tally: ReaderTally, ports: frozenset[int], mtime_ms: int) -> Iterator[Datagram]:
    extractor = _UdpExtractor(tally, ports)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic in PCAP_MAGIC:
                yield from _classic(f, magic, tally, extractor)
            elif magic == PCAPNG_MAGIC:
                yield from _pcapng(f, tally, extractor, mtime_ms)
            else:
                tally.error("not_pcap")
    finally:
        tally.publish()


def _classic(f: BinaryIO, magic: bytes, tally: ReaderTally, extractor: _UdpExtractor) -> Iterator[Datagram]:
    order, divisor = PCAP_MAGIC[magic]
    header = f.read(20)
    if len(header) < 20:
        tally.error("truncated_header")
        return
    linktype = struct.unpack(order + "I", header[16:20])[0] & 0xFFFF  # upper bits: FCS info
    if linktype not in _LINKTYPES:
        tally.error("unknown_linktype")
        return
    record = struct.Struct(order + "IIII")
    while head := f.read(16):
        if len(head) < 16:
            tally.error("truncated_record")
            return
        seconds, fraction, caplen, _ = record.unpack(head)
        if caplen > _MAX_RECORD_BYTES:
            tally.error("bad_record_length")
            return
        frame = f.read(caplen)
        if len(frame) < caplen:
            tally.error("truncated_record")
            return
        datagram = extractor.extract(linktype, frame, seconds * 1000 + fraction // divisor)
        if datagram is not None:
            yield datagram


def _pcapng(f: BinaryIO, tally: ReaderTally, extractor: _UdpExtractor, mtime_ms: int) -> Iterator[Datagram]:
    order = ""
    interfaces: list[tuple[int, int, int, int]] = []  # linktype, snaplen, units per second, offset s
    last_ms = mtime_ms
    head = PCAPNG_MAGIC + f.read(4)
    while len(head) == 8:
        if head[:4] == PCAPNG_MAGIC:  # section header: its byte-order magic decides the order
            bom = f.read(4)
            order = {b"\x1a\x2b\x3c\x4d": ">", b"\x4d\x3c\x2b\x1a": "<"}.get(bom, "")
            if not order:
                tally.error("bad_block")
                return
            interfaces = []
            head = head + bom
        elif not order:
            tally.error("bad_block")
            return
        block_type, total = struct.unpack(order + "II", head[:8])
        if total < 12 or total % 4 or total > _MAX_RECORD_BYTES:
            tally.error("bad_block")
            return
        body = f.read(total - len(head))
        if len(body) < total - len(head):
            tally.error("truncated_record")
            return
        body = (head[8:] + body)[:-4]  # block body without the trailing length copy
        head = f.read(8)
        if block_type == 1 and len(body) >= 8:  # interface description
            linktype, _, snaplen = struct.unpack(order + "HHI", body[:8])
            units, offset_s = _idb_options(body[8:], order)
            interfaces.append((linktype, snaplen, units, offset_s))
            continue
        if block_type in (6, 2) and len(body) >= 20:  # enhanced / obsolete packet block
            if block_type == 6:
                interface, high, low, caplen = struct.unpack(order + "IIII", body[:16])
            else:
                interface, _, high, low, caplen = struct.unpack(order + "HHIII", body[:16])
            frame = body[20 : 20 + caplen]
            if interface >= len(interfaces) or len(frame) < caplen:
                tally.error("bad_block")
                continue
            linktype, _, units, offset_s = interfaces[interface]
            last_ms = ((high << 32) | low) * 1000 // units + offset_s * 1000
        elif block_type == 3 and len(body) >= 4:  # simple packet block: interface 0, no time
            if not interfaces:
                tally.error("bad_block")
                continue
            linktype, snaplen, _, _ = interfaces[0]
            (original,) = struct.unpack(order + "I", body[:4])
            frame = body[4 : 4 + min(original, snaplen or original)]
        else:
            continue
        if linktype not in _LINKTYPES:
            tally.skip("unknown_linktype")
            continue
        datagram = extractor.extract(linktype, frame, last_ms)
        if datagram is not None:
            yield datagram
    if head:
        tally.error("truncated_record")


def _idb_options(options: bytes, order: str) -> tuple[int, int]:
    """(timestamp units per second, timestamp offset in seconds) from IDB options."""
    units, offset_s, position = 1_000_000, 0, 0
    while position + 4 <= len(options):
        code, length = struct.unpack(order + "HH", options[position : position + 4])
        value = options[position + 4 : position + 4 + length]
        if code == 0:
            break
        if code == 9 and length == 1:  # if_tsresol
            units = 2 ** (value[0] & 0x7F) if value[0] & 0x80 else 10 ** value[0]
        elif code == 14 and length == 8:  # if_tsoffset
            (offset_s,) = struct.unpack(order + "q", value)
        position += 4 + (length + 3) // 4 * 4
    return units, offset_s


class _UdpExtractor:
    """Link layer → IP → UDP; one frame in, one ``Datagram`` (or a counted skip) out."""

    def __init__(self, tally: ReaderTally, ports: frozenset[int]) -> None:
        self.tally = tally
        self.ports = ports
        self.names: dict[bytes, str] = {}

    def extract(self, linktype: int, frame: bytes, time_ms: int) -> Datagram | None:
        located = _locate_ip(linktype, frame)
        if isinstance(located, str):
            self.tally.skip(located)
            return None
        found = self._udp(frame, *located)
        if isinstance(found, str):
            self.tally.skip(found)
            return None
        source, start, end, src_port, dst_port = found
        if self.ports and src_port not in self.ports and dst_port not in self.ports:
            self.tally.skip("port_filtered")
            return None
        exporter = self.names.get(source)
        if exporter is None:
            if source[:12] == _MAPPED or len(source) == 4:
                exporter = socket.inet_ntoa(source[-4:])
            else:
                exporter = socket.inet_ntop(socket.AF_INET6, source)
            self.names[source] = exporter
        return self.tally.counted(Datagram(exporter, time_ms, frame[start:end], src_port))

    def _udp(self, frame: bytes, offset: int, version: int) -> tuple[bytes, int, int, int, int] | str:
        """(source address, payload start, payload end, source port, destination port) or a reason."""
        size = len(frame)
        first_fragment = False
        if size > offset and frame[offset] >> 4 != version:
            return "malformed"  # link layer and IP header disagree
        if version == 4:
            if size < offset + 20:
                return "truncated"
            header_bytes = (frame[offset] & 0x0F) * 4
            total, flags_offset = struct.unpack_from("!H2xH", frame, offset + 2)
            if flags_offset & 0x1FFF:
                return "fragment"
            if frame[offset + 9] != 17:
                return "not_udp"
            if header_bytes < 20 or (total and total < header_bytes):
                return "malformed"
            first_fragment = bool(flags_offset & 0x2000)
            source = frame[offset + 12 : offset + 16]
            start, end = offset + header_bytes, offset + (total or size - offset)  # 0: TSO
        else:
            if size < offset + 40:
                return "truncated"
            payload_bytes = int.from_bytes(frame[offset + 4 : offset + 6])
            next_header = frame[offset + 6]
            source = frame[offset + 8 : offset + 24]
            start = offset + 40
            end = start + payload_bytes if payload_bytes else size  # 0: jumbogram
            while next_header != 17:
                if start + 8 > size:
                    return "truncated"
                if next_header in _IPV6_EXTENSIONS:
                    length = (frame[start + 1] + 1) * 8
                elif next_header == 44:  # fragment header
                    fragment = int.from_bytes(frame[start + 2 : start + 4])
                    if fragment & 0xFFF8:
                        return "fragment"
                    first_fragment = bool(fragment & 1)
                    length = 8
                elif next_header == 51:  # authentication header
                    length = (frame[start + 1] + 2) * 4
                else:
                    return "not_udp"
                next_header = frame[start]
                start += length
        if end > size:
            return "snapped"  # the capture kept fewer bytes than the IP packet had
        if start + 8 > end:
            return "malformed"
        src_port, dst_port, udp_bytes = struct.unpack_from("!HHH", frame, start)
        stop = start + udp_bytes if udp_bytes else end
        if stop > end:
            if not first_fragment:
                return "malformed"
            self.tally.error("first_fragment_only")
            stop = end
        elif udp_bytes < 8:
            return "malformed"
        return source, start + 8, stop, src_port, dst_port


def _locate_ip(linktype: int, frame: bytes) -> tuple[int, int] | str:
    """(offset of the IP header, IP version) in a link-layer frame, or a skip reason."""
    if linktype == LINKTYPE_ETHERNET:
        return _after_ethertype(frame, 12)
    if linktype == LINKTYPE_LINUX_SLL:
        return _after_ethertype(frame, 14)
    if linktype == LINKTYPE_LINUX_SLL2:
        located = _after_ethertype(frame[:2], 0)  # protocol type first, 20-byte header
        if isinstance(located, tuple) and len(frame) >= 20:
            return 20, located[1]
        return "truncated" if len(frame) < 20 else located
    if linktype in _RAW_LINKTYPES:
        if not frame:
            return "truncated"
        version = frame[0] >> 4
        return (0, version) if version in (4, 6) else "not_ip"
    if len(frame) < 4:  # BSD null/loop: address family, host order (null) or network order (loop)
        return "truncated"
    families = {int.from_bytes(frame[:4], "little"), int.from_bytes(frame[:4], "big")}
    if 2 in families:
        return 4, 4
    return (4, 6) if families & _BSD_AF_INET6 else "not_ip"


def _after_ethertype(frame: bytes, offset: int) -> tuple[int, int] | str:
    """Follows the EtherType at ``offset`` through 802.1Q/802.1ad tags to IPv4/IPv6."""
    if len(frame) < offset + 2:
        return "truncated"
    ethertype = int.from_bytes(frame[offset : offset + 2])
    offset += 2
    while ethertype in _VLAN_TPIDS:
        if len(frame) < offset + 4:
            return "truncated"
        ethertype = int.from_bytes(frame[offset + 2 : offset + 4])
        offset += 4
    version = _ETHERTYPE_IP.get(ethertype)
    return "not_ip" if version is None else (offset, version)
