"""Write classic pcap files of UDP datagrams, for tests that need a real capture on disk.

Each datagram becomes one Ethernet frame carrying IPv4 or IPv6 (chosen by the addresses) and UDP,
with a correct IPv4 header checksum and a correct UDP checksum (so neither Wireshark nor anyone
else has a reason to flag the frame). The file is little-endian pcap with microsecond timestamps
and link type Ethernet (1).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
_IPPROTO_UDP = 17
_SNAPLEN = 262_144
_SRC_MAC = bytes.fromhex("020000000001")  # locally administered
_DST_MAC = bytes.fromhex("020000000002")


@dataclass(frozen=True, slots=True)
class UdpPacket:
    """One UDP datagram as it should appear in the capture."""

    payload: bytes
    src: str  # source address, IPv4 or IPv6 text (both ends must be the same family)
    dst: str
    sport: int
    dport: int
    time_us: int  # capture timestamp, microseconds since the Unix epoch


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit in one datagram")
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, _IPPROTO_UDP, length)
    else:
        pseudo = src + dst + struct.pack("!I3xB", length, _IPPROTO_UDP)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    value = checksum(pseudo + header + payload) or 0xFFFF  # 0 means "no checksum"; RFC 768
    return struct.pack("!HHHH", sport, dport, length, value) + payload


def frame(packet: UdpPacket, identification: int = 0) -> bytes:
    """The Ethernet frame (no FCS) carrying ``packet``."""
    src = ipaddress.ip_address(packet.src)
    dst = ipaddress.ip_address(packet.dst)
    if src.version != dst.version:
        raise ValueError(f"address families differ: {packet.src} → {packet.dst}")
    udp = _udp(src.packed, dst.packed, packet.sport, packet.dport, packet.payload)
    if src.version == 4:
        total = 20 + len(udp)
        if total > 0xFFFF:
            raise ValueError(f"IPv4 packet of {total} bytes is too long")
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, identification & 0xFFFF, 0x4000, 64,
                             _IPPROTO_UDP, 0, src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return _DST_MAC + _SRC_MAC + b"\x08\x00" + header + udp
    header = struct.pack("!IHBB16s16s", 6 << 28, len(udp), _IPPROTO_UDP, 64, src.packed, dst.packed)
    return _DST_MAC + _SRC_MAC + b"\x86\xdd" + header + udp


def write_pcap(path: Path, packets: Iterable[UdpPacket]) -> int:
    """Write ``packets`` to ``path`` as a classic pcap; returns how many frames were written."""
    count = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_ETHERNET))
        for count, packet in enumerate(packets, start=1):
            data = frame(packet, identification=count)
            seconds, micros = divmod(packet.time_us, 1_000_000)
            f.write(struct.pack("<IIII", seconds, micros, len(data), len(data)))
            f.write(data)
    return count
