"""Builders for NetFlow v5, NetFlow v9 and IPFIX export messages, from plain Python values.

Everything is packed with ``struct`` straight from the wire formats (RFC 3954 for v9, RFC 7011 for
IPFIX, Cisco's NetFlow v5 record layout), so tests can state what they send field by field and
compute the expected decode by hand. Nothing here imports flowscope: the builders are an
independent second implementation of the formats, not a mirror of the decoder.

Conventions:

* a field specifier is ``(element_id, length)`` or ``(element_id, length, pen)``; a non-zero PEN
  makes an IPFIX enterprise field (enterprise bit set, 4-byte PEN after the specifier);
  ``VARIABLE`` (65535) as length declares a variable-length field (RFC 7011 §7);
* sets take their records as ready ``bytes`` and an optional number of zero padding bytes;
  the set length field always covers the padding, unless ``length`` overrides it (to lie);
* message builders take finished sets and compute the lengths/counts, again overridable.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence

VARIABLE = 0xFFFF
ENTERPRISE_BIT = 0x8000
REVERSE_PEN = 29305  # RFC 5103 reverse information elements
NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01

V9_TEMPLATE_SET = 0
V9_OPTIONS_TEMPLATE_SET = 1
IPFIX_TEMPLATE_SET = 2
IPFIX_OPTIONS_TEMPLATE_SET = 3

# NetFlow v9 options scope types (RFC 3954 §6.1)
SCOPE_SYSTEM = 1
SCOPE_INTERFACE = 2

FieldDef = tuple[int, int] | tuple[int, int, int]


# -- values ------------------------------------------------------------------------------------


def uint(value: int, length: int) -> bytes:
    """An unsigned integer in ``length`` bytes, big-endian (any length: reduced-size encoding)."""
    return value.to_bytes(length, "big")


def u8(value: int) -> bytes:
    return uint(value, 1)


def u16(value: int) -> bytes:
    return uint(value, 2)


def u32(value: int) -> bytes:
    return uint(value, 4)


def u64(value: int) -> bytes:
    return uint(value, 8)


def ipv4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def ipv6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def mapped(text: str) -> bytes:
    """The 16-byte form flowscope stores: IPv6 as is, IPv4 as IPv4-mapped ``::ffff:a.b.c.d``."""
    address = ipaddress.ip_address(text)
    if address.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + address.packed
    return address.packed


def ntp(unix_seconds: int, fraction: int = 0) -> bytes:
    """An NTP timestamp (dateTimeMicroseconds/Nanoseconds): seconds since 1900, 32-bit fraction."""
    return struct.pack("!II", unix_seconds + NTP_UNIX_OFFSET_S, fraction)


def varlen(value: bytes, *, long: bool | None = None) -> bytes:
    """A variable-length field value with its length prefix (RFC 7011 §7).

    One length byte for values shorter than 255 bytes, else 255 followed by a 2-byte length;
    ``long=True`` forces the 3-byte form for short values too (allowed by the RFC).
    """
    if long is None:
        long = len(value) >= 255
    if long:
        return b"\xff" + struct.pack("!H", len(value)) + value
    if len(value) >= 255:
        raise ValueError("values of 255 bytes or more need the 3-byte length prefix")
    return bytes([len(value)]) + value


def record(*values: bytes) -> bytes:
    """One data record: its encoded field values in template order."""
    return b"".join(values)


# -- sets (shared by NetFlow v9 and IPFIX) ------------------------------------------------------


def flowset(set_id: int, body: bytes, *, padding: int = 0, length: int | None = None) -> bytes:
    """A set (v9 FlowSet / IPFIX Set): 4-byte header, body, ``padding`` zero bytes."""
    data = body + b"\x00" * padding
    return struct.pack("!HH", set_id, 4 + len(data) if length is None else length) + data


def data_set(template_id: int, records: Iterable[bytes], *, padding: int = 0, length: int | None = None) -> bytes:
    return flowset(template_id, b"".join(records), padding=padding, length=length)


# -- NetFlow v9 (RFC 3954) ----------------------------------------------------------------------


def v9_template(template_id: int, fields: Sequence[tuple[int, int]]) -> bytes:
    """One template record: id, field count, (type, length) pairs."""
    body = struct.pack("!HH", template_id, len(fields))
    return body + b"".join(struct.pack("!HH", t, n) for t, n in fields)


def v9_template_set(*templates: bytes, padding: int = 0, length: int | None = None) -> bytes:
    return flowset(V9_TEMPLATE_SET, b"".join(templates), padding=padding, length=length)


def v9_options_template(
    template_id: int, scope: Sequence[tuple[int, int]], options: Sequence[tuple[int, int]]
) -> bytes:
    """One options template record: id, scope length and option length in bytes, then the pairs."""
    scope_bytes = b"".join(struct.pack("!HH", t, n) for t, n in scope)
    option_bytes = b"".join(struct.pack("!HH", t, n) for t, n in options)
    return struct.pack("!HHH", template_id, len(scope_bytes), len(option_bytes)) + scope_bytes + option_bytes


def v9_options_template_set(*templates: bytes, padding: int = 0, length: int | None = None) -> bytes:
    return flowset(V9_OPTIONS_TEMPLATE_SET, b"".join(templates), padding=padding, length=length)


def v9_message(
    sets: Sequence[bytes],
    *,
    uptime_ms: int = 0,
    unix_secs: int = 0,
    sequence: int = 0,
    source_id: int = 0,
    count: int | None = None,
    trailer: bytes = b"",
) -> bytes:
    """A v9 export packet. ``count`` defaults to the number of sets (the decoder must not trust it)."""
    header = struct.pack(
        "!HHIIII", 9, len(sets) if count is None else count, uptime_ms, unix_secs, sequence, source_id
    )
    return header + b"".join(sets) + trailer


# -- IPFIX (RFC 7011) ---------------------------------------------------------------------------


def field_specifier(element_id: int, length: int, pen: int = 0) -> bytes:
    if pen:
        return struct.pack("!HHI", element_id | ENTERPRISE_BIT, length, pen)
    return struct.pack("!HH", element_id, length)


def _specifiers(fields: Sequence[FieldDef]) -> bytes:
    return b"".join(field_specifier(*spec) for spec in fields)


def ipfix_template(template_id: int, fields: Sequence[FieldDef]) -> bytes:
    return struct.pack("!HH", template_id, len(fields)) + _specifiers(fields)


def ipfix_options_template(template_id: int, scope: Sequence[FieldDef], options: Sequence[FieldDef]) -> bytes:
    """Options template record: id, total field count, scope field count, scope fields first."""
    header = struct.pack("!HHH", template_id, len(scope) + len(options), len(scope))
    return header + _specifiers(scope) + _specifiers(options)


def ipfix_withdrawal(template_id: int) -> bytes:
    """A template withdrawal record (field count 0); the set id as template id withdraws all."""
    return struct.pack("!HH", template_id, 0)


def ipfix_template_set(*templates: bytes, padding: int = 0, length: int | None = None) -> bytes:
    return flowset(IPFIX_TEMPLATE_SET, b"".join(templates), padding=padding, length=length)


def ipfix_options_template_set(*templates: bytes, padding: int = 0, length: int | None = None) -> bytes:
    return flowset(IPFIX_OPTIONS_TEMPLATE_SET, b"".join(templates), padding=padding, length=length)


def ipfix_message(
    sets: Sequence[bytes],
    *,
    export_time: int = 0,
    sequence: int = 0,
    domain: int = 0,
    length: int | None = None,
    trailer: bytes = b"",
) -> bytes:
    """An IPFIX message; ``length`` overrides the header length (to lie), ``trailer`` is appended raw."""
    body = b"".join(sets)
    header = struct.pack("!HHIII", 10, 16 + len(body) if length is None else length, export_time, sequence, domain)
    return header + body + trailer


# -- NetFlow v5 ---------------------------------------------------------------------------------

V5_HEADER_LENGTH = 24
V5_RECORD_LENGTH = 48


def v5_record(
    *,
    src: str = "0.0.0.0",
    dst: str = "0.0.0.0",
    nexthop: str = "0.0.0.0",
    in_if: int = 0,
    out_if: int = 0,
    packets: int = 0,
    octets: int = 0,
    first: int = 0,
    last: int = 0,
    src_port: int = 0,
    dst_port: int = 0,
    tcp_flags: int = 0,
    protocol: int = 0,
    tos: int = 0,
    src_as: int = 0,
    dst_as: int = 0,
    src_mask: int = 0,
    dst_mask: int = 0,
) -> bytes:
    """One 48-byte v5 flow record (first/last are sysUptime milliseconds)."""
    return struct.pack(
        "!4s4s4sHHIIIIHHBBBBHHBBH",
        ipv4(src),
        ipv4(dst),
        ipv4(nexthop),
        in_if,
        out_if,
        packets,
        octets,
        first,
        last,
        src_port,
        dst_port,
        0,
        tcp_flags,
        protocol,
        tos,
        src_as,
        dst_as,
        src_mask,
        dst_mask,
        0,
    )


def v5_message(
    records: Sequence[bytes],
    *,
    uptime_ms: int = 0,
    unix_secs: int = 0,
    unix_nsecs: int = 0,
    sequence: int = 0,
    engine_type: int = 0,
    engine_id: int = 0,
    sampling_interval: int = 0,
    sampling_mode: int = 0,
    count: int | None = None,
    trailer: bytes = b"",
) -> bytes:
    """A v5 export packet; the 16-bit sampling field is mode (2 bits) and interval (14 bits)."""
    header = struct.pack(
        "!HHIIIIBBH",
        5,
        len(records) if count is None else count,
        uptime_ms,
        unix_secs,
        unix_nsecs,
        sequence,
        engine_type,
        engine_id,
        (sampling_mode << 14) | sampling_interval,
    )
    return header + b"".join(records) + trailer
