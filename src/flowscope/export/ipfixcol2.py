"""Decoded records printed exactly as IPFIXcol2's JSON output plugin prints them.

One JSON object per data record, one line each, in arrival order. The formatting is that of the
JSON output plugin of CESNET IPFIXcol2 (``src/plugins/output/json``), which hands every record to
libfds ``fds_drec2json`` (CESNET/libfds ``src/converters/json.c``). What follows are the facts this
module reproduces, each with where it was read (repository + path; all public, BSD-licensed).

Record and names
  * A record is ``{"@type":"ipfix.entry",...}``; a record of an options template is
    ``"ipfix.optionsEntry"`` (libfds ``src/converters/json.c``, ``fds_drec2json``). Compact: no
    blanks between tokens; one record per line, ``"\\n"``-terminated (ipfixcol2
    ``src/plugins/output/json/src/Storage.cpp``, ``Storage::convert``).
  * Fields come in template order as ``"<scope>:<name>"`` (``iana:octetDeltaCount``); elements
    libfds does not know are ``"en<PEN>:id<ID>"`` (json.c ``add_field_name``). The names are those
    of :func:`flowscope.decode.fields.ipfixcol2_name`; NetFlow v9 ids >= 128 live in the libfds
    scopes ``netflow`` (PEN 4294967294, a copy of the IANA elements 128-491) and ``netflowExtra``
    (PEN 4294967295, id = NetFlow id - 32768) (libfds ``config/system/elements/netflow.xml``,
    ``netflowExtra.xml``).
  * ``paddingOctets`` (PEN 0 or 29305, id 210) is never printed (libfds drec iterator,
    ``FDS_DREC_PADDING_SHOW`` unset). Zero-length fields are printed: ``""`` for strings, ``null``
    otherwise; a value whose length its type cannot have is ``null`` (json.c, the ``FDS_ERR_ARG``
    path of ``iter_loop``; README: "null (if conversion ... fails or it is a zero-length field)").
  * An element occurring several times in a record is one key whose value is a JSON array, in
    record order, placed where the *last* occurrence is (json.c ``multi_fields``; libfds
    ``src/template_mgr/template.c`` ``template_fields_calc_flags``; README "Notes").

Values (json.c converters, libfds ``src/converters/converters.c``)
  * unsigned/signed integers of 1-8 bytes: decimal. float32/float64: ``%.6g`` when sent in 4
    bytes, ``%.15g`` in 8 (``FLT_DIG``/``DBL_DIG``); NaN and infinities as the strings ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``. boolean: 1 ``true``, 2 ``false``, else ``null``.
  * macAddress: ``"AA:BB:CC:DD:EE:FF"`` (upper-case hex, ``fds_mac2str`` uses ``%02X``).
    ipv4Address/ipv6Address: dotted quad for 4 bytes, ``inet_ntop`` for 16 (either type).
  * octetArray and unknown elements: with ``octetArrayAsUint`` (default true) 1-8 bytes print as
    an unsigned integer, longer ones as ``"0x"`` + upper-case hex; empty is ``null``
    (json.c ``to_octet``; ipfixcol2 ``Config.cpp`` default ``octets_as_uint = true``).
  * string: ``"`` and ``\\`` always escaped; with ``nonPrintableChar`` true (the default) ``\\n \\r
    \\t \\b \\f`` become two-character escapes, other control bytes (0x00-0x1F, 0x7F and stray
    0x80-0x9F) ``\\u00XX`` (upper-case hex) and malformed UTF-8 lead bytes U+FFFD; with it false
    all of those are dropped. Nothing else is escaped (no ``/``, no HTML). The UTF-8 check only
    looks at the lead byte and the continuation bits, as libfds does (json.c ``to_string``;
    ipfixcol2 ``Storage.cpp`` sets ``FDS_CD2J_NON_PRINTABLE`` when the option is *false*, and
    libfds ``include/libfds/converters.h`` documents that flag as "ignore non-printable
    characters ... instead of escaping them"; the README's wording is the other way round).
  * timestamps, ``timestamp`` = formatted (default): ``"2018-05-11T19:44:29.006Z"``, UTC, always
    milliseconds, for all four dateTime types (``FDS_CONVERT_TF_MSEC_UTC``); NTP fractions are
    first rounded to nanoseconds, then truncated to milliseconds (converters.c
    ``fds_datetime2str_be``, converters.h ``fds_get_datetime_hp_be``). ``unix``: milliseconds since
    the epoch as a number, NTP fractions truncated (``fds_get_datetime_lp_be``). dateTimeMicroseconds
    ignores the low 11 bits of the fraction. dateTimeSeconds must be 4 bytes, the others 8, else
    ``null``.
  * ``tcpFlags`` = formatted (default): ``iana:tcpControlBits`` (and its reverse) of 1 or 2 bytes
    as six characters ``U A P R S F`` (0x20 ... 0x01), ``.`` for a clear bit: SYN+ACK is
    ``".A..S."`` (json.c ``to_flags``); ``raw``: the number.
  * ``protocol`` = formatted (default): ``iana:protocolIdentifier`` of 1 byte as its name from
    ``/etc/protocols`` (``"TCP"``, ``"UDP"``, ``"IPv6-ICMP"``, the number as text when unnamed;
    table of ipfixcol2 ``src/plugins/output/json/src/protocols.cpp``, the awk-generated list libfds
    ships as ``src/converters/protocols.c``); ``raw``: the number.
  * basicList / subTemplateList / subTemplateMultiList (RFC 6313) become objects with ``"@type"``
    and ``"semantic"`` (json.c ``to_blist``, ``to_stlist``, ``to_stMulList``; README "Structured
    data types"). Sub-template records need the session's templates (``templates=``); a list whose
    template is unknown comes out empty, as libfds without ``FDS_STL_REPORT`` does.

Options (ipfixcol2 ``src/plugins/output/json/src/Config.cpp`` ``default_set``; README)
  * ``ignoreUnknown`` true: fields libfds has no definition for are left out.
  * ``ignoreOptions`` true: records of options templates are not printed at all
    (``Storage::records_store``).
  * ``numericNames`` false: when true every key is ``en<PEN>:id<ID>``.
  * ``splitBiflow`` false: when true an RFC 5103 biflow record is printed twice, first without its
    reverse fields, then "from the reverse point of view": reverse fields under their forward
    names, flow keys swapped (source <-> destination, ingress <-> egress, ...), forward-only fields
    left out (``Storage::records_store``; libfds ``template.c`` ``template_ies_biflow`` and
    ``template_ies_biflow_src2dst``; ``FDS_DREC_REVERSE_SKIP``/``FDS_DREC_BIFLOW_REV``).
  * ``detailedInfo`` false: when true each record ends with ``"ipfix:exportTime"`` (seconds),
    ``"ipfix:seqNumber"``, ``"ipfix:odid"``, ``"ipfix:msgLength"``, ``"ipfix:srcAddr"`` (network
    sessions only) and ``"ipfix:templateId"`` (``Storage::addDetailedInfo``). The decoder keeps no
    message sequence number or length per record: those two keys are printed only when the record
    set carries ``extra["sequence_number"]`` / ``extra["message_length"]`` columns. The exporter
    address is left out for the file placeholder exporter ``0.0.0.0``.
  * ``templateInfo`` (template records as JSON) is not offered: record sets carry no templates.

NetFlow (ipfixcol2 ``src/core/netflow2ipfix/netflow5.c``, ``netflow9.c``)
  * IPFIXcol2 converts v5 and v9 to IPFIX before any output sees them; v1 and v7 are not accepted
    (their records are not printed). v5 becomes template 256 with ``flowStartMilliseconds``/
    ``flowEndMilliseconds`` (absolute: header time with nanoseconds - (uptime - first/last)) and the
    header sampling as ``samplingAlgorithm`` (top 2 bits) and ``samplingInterval`` (low 14 bits).
    The decoder keeps only the interval, so ``samplingAlgorithm`` is ``0`` for unsampled exports
    and ``null`` otherwise.
  * v9: FIRST_SWITCHED/LAST_SWITCHED (22/21, 4 bytes) become absolute ``flowStartMilliseconds``/
    ``flowEndMilliseconds`` (header seconds * 1000 - uptime + value); ids 1-127 stay IANA; ids >= 128
    move to PEN 4294967294 (< 32768) or 4294967295 (id - 32768). Options scopes System, Interface,
    Line Card, Template become ``exportingProcessId``, ``ingressInterface``, ``lineCardId``,
    ``templateId``; a template with another scope, or 22/21 of another length, is dropped whole.
    A v9 paddingOctets (210) therefore becomes ``netflow:paddingOctets`` and is printed.

Deliberate difference: a record with no printable field is ``{"@type":"ipfix.entry"}`` where
libfds writes an invalid ``{"@type":"ipfix.entry",}``.
"""

from __future__ import annotations

import functools
import math
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from flowscope.decode.fields import REVERSE_PEN, by_name, ipfixcol2_name, lookup
from flowscope.decode.records import RecordSet
from flowscope.decode.templates import VARIABLE_LENGTH, FieldSpec, Template
from flowscope.decode.v9 import V9_SCOPE_PEN
from flowscope.decode.values import FieldValue, field_values

__all__ = ["PROTOCOL_NAMES", "Ipfixcol2Formatter", "Ipfixcol2Options", "TemplateLookup"]

TemplateLookup = Callable[[str, int, int], Template | None]
"""(exporter, observation domain, template id) -> template; ``TemplateStore.get`` fits."""

# ------------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Ipfixcol2Options:
    """The formatting parameters of IPFIXcol2's JSON output, with its defaults."""

    tcp_flags: Literal["formatted", "raw"] = "formatted"
    timestamp: Literal["formatted", "unix"] = "formatted"
    protocol: Literal["formatted", "raw"] = "formatted"
    ignore_unknown: bool = True
    ignore_options: bool = True
    non_printable_char: bool = True  # true: escape them; false: drop them
    octet_array_as_uint: bool = True
    numeric_names: bool = False
    split_biflow: bool = False
    detailed_info: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("tcp_flags", ("formatted", "raw")), ("timestamp", ("formatted", "unix")),
                              ("protocol", ("formatted", "raw"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


# ------------------------------------------------------------------------ element model
CERT_PEN = 6871  # CERT/YAF: reverse elements are the forward id with bit 0x4000 (libfds mode "split")
NETFLOW_PEN = 4294967294  # libfds scope "netflow": NetFlow v9 ids 128-32767
NETFLOW_EXTRA_PEN = 4294967295  # libfds scope "netflowExtra": NetFlow v9 ids >= 32768, minus 32768
_CERT_REVERSE_BIT = 0x4000
_PADDING_ID = 210
_NUMERIC_NAME = re.compile(r"en\d+:id\d+")

# libfds config/system/elements/netflowExtra.xml (id after subtracting 32768, name, type).
_NETFLOW_EXTRA: dict[int, tuple[str, str]] = {
    232: ("ingressAclId", "octetArray"), 233: ("egressAclId", "octetArray"),
    234: ("firewallEventExtended", "unsigned16"), 4315: ("tcpWindowSizeMin", "unsigned32"),
    4316: ("tcpWindowSizeMax", "unsigned32"), 4318: ("tcpMaximumSegmentSize", "unsigned16"),
    4324: ("tcpWindowSizeSum", "unsigned64"), 7232: ("userName", "string"),
    8232: ("classHierarchy", "octetArray"), 9252: ("servicesWaasSegment", "unsigned8"),
    9253: ("servicesWaasPassThroughReason", "unsigned8"), 9268: ("clientRetransPackets", "unsigned32"),
    9272: ("transactionCountDelta", "unsigned32"), 9273: ("sumTransactionTime", "unsigned32"),
    9274: ("maxTransactionTime", "unsigned32"), 9275: ("minTransactionTime", "unsigned32"),
    9292: ("numRespsCountDelta", "unsigned32"),
    **{9292 + n: (f"numResps{n}CountDelta", "unsigned32") for n in range(1, 8)},
    9300: ("numLateRespsCountDelta", "unsigned32"),
    9303: ("sumRespTime", "unsigned32"), 9304: ("maxRespTime", "unsigned32"), 9305: ("minRespTime", "unsigned32"),
    9306: ("sumServerRespTime", "unsigned32"), 9307: ("maxServerRespTime", "unsigned32"),
    9308: ("minServerRespTime", "unsigned32"), 9309: ("sumTotalRespTime", "unsigned32"),
    9310: ("maxTotalRespTime", "unsigned32"), 9311: ("minTotalRespTime", "unsigned32"),
    9313: ("sumNwkTime", "unsigned32"), 9314: ("maxNwkTime", "unsigned32"), 9315: ("minNwkTime", "unsigned32"),
    9316: ("sumClientNwkTime", "unsigned32"), 9317: ("maxClientNwkTime", "unsigned32"),
    9318: ("minClientNwkTime", "unsigned32"), 9319: ("sumServerNwkTime", "unsigned32"),
    9320: ("maxServerNwkTime", "unsigned32"), 9321: ("minServerNwkTime", "unsigned32"),
    9360: ("policyQosQueueID", "unsigned32"), 9361: ("policyQosQueueDrop", "unsigned64"),
    12236: ("clientIPv4Address", "ipv4Address"), 12237: ("serverIPv4Address", "ipv4Address"),
    12238: ("clientIPv6Address", "ipv6Address"), 12239: ("serverIPv6Address", "ipv6Address"),
    12240: ("clientTransportPort", "unsigned16"), 12241: ("serverTransportPort", "unsigned16"),
    12242: ("connectionId", "unsigned32"),
}
# libfds netflow.xml: the IANA elements 128-491 under the scope "netflow", plus two Cisco ETA ids.
_NETFLOW_IANA_RANGE = range(128, 492)
_NETFLOW_EXTRAS: dict[int, tuple[str, str]] = {
    16386: ("ETAInitialDataPacketOld", "octetArray"),
    16387: ("ETASequenceofPktLengthsandTimesOld", "octetArray"),
}

# libfds template.c template_ies_biflow_src2dst: IANA flow keys that swap in the reverse view.
_OPPOSITE_PAIRS = (
    (7, 11), (8, 12), (9, 13), (10, 14), (16, 17), (27, 28), (29, 30), (44, 45), (56, 80), (58, 59), (81, 57),
    (92, 93), (128, 129), (170, 169), (180, 181), (182, 183), (225, 226), (227, 228), (234, 235), (281, 282),
    (368, 369), (414, 415), (484, 485), (487, 488), (490, 491),
)
_OPPOSITE: dict[int, int] = {a: b for a, b in _OPPOSITE_PAIRS} | {b: a for a, b in _OPPOSITE_PAIRS}


@dataclass(frozen=True, slots=True)
class _Definition:
    """What libfds knows about an element: its printed name, data type, and if it is reverse."""

    name: str
    data_type: str
    reverse: bool


@functools.cache
def _definition(pen: int, element_id: int) -> _Definition | None:
    """libfds's definition of an element, or None when libfds does not know it."""
    if pen == NETFLOW_PEN:
        if element_id in _NETFLOW_IANA_RANGE:
            iana = lookup(0, element_id)
            return _Definition(f"netflow:{iana.name}", iana.data_type, False) if iana.known else None
        extra = _NETFLOW_EXTRAS.get(element_id)
        return _Definition(f"netflow:{extra[0]}", extra[1], False) if extra else None
    if pen == NETFLOW_EXTRA_PEN:
        extra = _NETFLOW_EXTRA.get(element_id)
        return _Definition(f"netflowExtra:{extra[0]}", extra[1], False) if extra else None
    element = lookup(pen, element_id)
    name = ipfixcol2_name(element)
    if _NUMERIC_NAME.fullmatch(name):
        return None
    return _Definition(name, element.data_type, name.endswith("@reverse"))


def _counterpart(pen: int, element_id: int) -> tuple[int, int] | None:
    """The reverse element of a forward one and vice versa (IANA by PEN 29305, CERT by bit 0x4000)."""
    if pen == 0:
        other = (REVERSE_PEN, element_id)
    elif pen == REVERSE_PEN:
        other = (0, element_id)
    elif pen == CERT_PEN:
        other = (CERT_PEN, element_id ^ _CERT_REVERSE_BIT)
    else:
        return None
    return other if _definition(*other) is not None else None


def _opposite_key(pen: int, element_id: int) -> int | None:
    """The opposite-direction flow key (source <-> destination), as libfds maps it; IANA only."""
    if pen != 0:
        return None
    if element_id in _OPPOSITE:
        return _OPPOSITE[element_id]
    name = lookup(0, element_id).name
    lowered = name.lower()
    if lowered.startswith("source"):
        wanted = "destination" + name[6:]
    elif lowered.startswith("destination"):
        wanted = "source" + name[11:]
    else:
        return None
    other = by_name(wanted)
    return other.element_id if other is not None and other.pen == 0 and other.known else None


# ------------------------------------------------------------------------ value rendering
_KINDS = {
    **dict.fromkeys(("unsigned8", "unsigned16", "unsigned32", "unsigned64"), "uint"),
    **dict.fromkeys(("signed8", "signed16", "signed32", "signed64"), "int"),
    "float32": "float", "float64": "float", "boolean": "bool", "macAddress": "mac", "string": "string",
    "dateTimeSeconds": "time_s", "dateTimeMilliseconds": "time_ms", "dateTimeMicroseconds": "time_us",
    "dateTimeNanoseconds": "time_ntp", "ipv4Address": "ip", "ipv6Address": "ip", "basicList": "blist",
    "subTemplateList": "stlist", "subTemplateMultiList": "stmlist",
}
# Kinds taken from flowscope.decode.values when the field has a length libfds accepts for them
# (and the values come back as the Python type below); every other field is rendered from its bytes.
_TYPED_LENGTHS = {"uint": range(1, 9), "int": range(1, 9), "float": (4, 8), "mac": (6,), "time_s": (4,),
                  "time_ms": (8,)}
_PYTHON_TYPES: dict[str, type] = {"uint": int, "int": int, "float": float, "mac": str, "time_s": int, "time_ms": int}

# ipfixcol2 src/plugins/output/json/src/protocols.cpp (generated from /etc/protocols by awk).
PROTOCOL_NAMES = (
    "IP", "ICMP", "IGMP", "GGP", "IPv4", "ST", "TCP", "CBT", "EGP", "IGP", "BBN-RCC-MON", "NVP-II", "PUP", "ARGUS",
    "EMCON", "XNET", "CHAOS", "UDP", "MUX", "DCN-MEAS", "HMP", "PRM", "XNS-IDP", "TRUNK-1", "TRUNK-2", "LEAF-1",
    "LEAF-2", "RDP", "IRTP", "ISO-TP4", "NETBLT", "MFE-NSP", "MERIT-INP", "DCCP", "3PC", "IDPR", "XTP", "DDP",
    "IDPR-CMTP", "TP++", "IL", "IPv6", "SDRP", "IPv6-Route", "IPv6-Frag", "IDRP", "RSVP", "GRE", "DSR", "BNA", "ESP",
    "AH", "I-NLSP", "SWIPE", "NARP", "MOBILE", "TLSP", "SKIP", "IPv6-ICMP", "IPv6-NoNxt", "IPv6-Opts", "61", "CFTP",
    "63", "SAT-EXPAK", "KRYPTOLAN", "RVD", "IPPC", "68", "SAT-MON", "VISA", "IPCV", "CPNX", "CPHB", "WSN", "PVP",
    "BR-SAT-MON", "SUN-ND", "WB-MON", "WB-EXPAK", "ISO-IP", "VMTP", "SECURE-VMTP", "VINES", "TTP", "NSFNET-IGP",
    "DGP", "TCF", "EIGRP", "OSPFIGP", "Sprite-RPC", "LARP", "MTP", "AX.25", "IPIP", "MICP", "SCC-SP", "ETHERIP",
    "ENCAP", "99", "GMTP", "IFMP", "PNNI", "PIM", "ARIS", "SCPS", "QNX", "A/N", "IPComp", "SNP", "Compaq-Peer",
    "IPX-in-IP", "VRRP", "PGM", "114", "L2TP", "DDX", "IATP", "STP", "SRP", "UTI", "SMP", "SM", "PTP", "ISIS",
    "FIRE", "CRTP", "CRUDP", "SSCOPMCE", "IPLT", "SPS", "PIPE", "SCTP", "FC", "RSVP-E2E-IGNORE", "Mobility-Header",
    "UDPLite", "MPLS-in-IP", "manet", "HIP", "Shim6", "WESP", "ROHC",
)
_PROTOCOLS = tuple(f'"{name}"' for name in PROTOCOL_NAMES) + tuple(f'"{n}"' for n in range(143, 256))

_SEMANTICS = {0: "noneOf", 1: "exactlyOneOf", 2: "oneOrMoreOf", 3: "allOf", 4: "ordered"}
_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}
_NEEDS_CARE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_U64 = 1 << 64
_NTP_UNIX_OFFSET_S = 2_208_988_800
_MICROSECOND_FRACTION_MASK = 0xFFFF_F800
_NULL = "null"


def _utf8_length(data: bytes, at: int) -> int:
    """Length of the UTF-8 character at ``at`` as libfds judges it (lead + continuation bits), 0 if bad."""
    lead, left = data[at], len(data) - at
    if lead < 0x80:
        return 1
    if lead & 0xE0 == 0xC0 and left >= 2:
        return 2 if data[at + 1] & 0xC0 == 0x80 else 0
    if lead & 0xF0 == 0xE0 and left >= 3:
        return 3 if all(b & 0xC0 == 0x80 for b in data[at + 1 : at + 3]) else 0
    if lead & 0xF8 == 0xF0 and left >= 4:
        return 4 if all(b & 0xC0 == 0x80 for b in data[at + 1 : at + 4]) else 0
    return 0


def _json_string(data: bytes, escape_non_printable: bool) -> str:
    """libfds to_string. Raw bytes pass through as surrogate escapes (the line is encoded back)."""
    if not _NEEDS_CARE.search(data):
        return '"' + data.decode("ascii") + '"'
    out: list[str] = ['"']
    at, start, end = 0, 0, len(data)
    while at < end:
        byte = data[at]
        length = _utf8_length(data, at)
        if length and byte not in _ESCAPES and byte > 0x1F and byte != 0x7F and byte not in (0x22, 0x5C):
            at += length  # an ordinary character (control bytes 0x80-0x9F never start a valid one)
            continue
        out.append(data[start:at].decode("utf-8", "surrogateescape"))
        start = at = at + 1
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif not escape_non_printable:
            continue
        elif byte in _ESCAPES:
            out.append(_ESCAPES[byte])
        elif byte <= 0x1F or byte == 0x7F or 0x80 <= byte <= 0x9F:
            out.append(f"\\u00{byte:02X}")
        else:
            out.append("\ufffd")
    out.append(data[start:].decode("utf-8", "surrogateescape"))
    out.append('"')
    return "".join(out)


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01, proleptic Gregorian, any year."""
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _iso_ms(seconds: int, nanoseconds: int) -> str:
    """``gmtime`` + ``"%FT%T"`` + ``".%03u"`` of the nanoseconds / 10^6 + ``"Z"``, as libfds does."""
    days, rest = divmod(seconds, 86_400)
    year, month, day = _civil(days)
    hour, rest = divmod(rest, 3600)
    return f'"{year}-{month:02d}-{day:02d}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}.{nanoseconds // 1_000_000:03d}Z"'


def _ms_value(milliseconds: int, formatted: bool) -> str:
    """A dateTimeSeconds/Milliseconds value (already in ms, as an unsigned 64-bit number)."""
    milliseconds %= _U64
    if not formatted:
        return str(milliseconds)
    return _iso_ms(milliseconds // 1000, milliseconds % 1000 * 1_000_000)


def _ntp_value(data: bytes, micro: bool, formatted: bool) -> str:
    seconds, fraction = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")
    if micro:
        fraction &= _MICROSECOND_FRACTION_MASK
    if not formatted:  # fds_get_datetime_lp_be: unsigned 64-bit arithmetic, fraction truncated
        return str(((seconds - _NTP_UNIX_OFFSET_S) * 1000 + ((fraction * 1000) >> 32)) % _U64)
    halves = (fraction * 1_000_000_000) >> 31  # fds_get_datetime_hp_be: round half up to ns
    return _iso_ms(seconds - _NTP_UNIX_OFFSET_S, (halves + (halves & 1)) >> 1)


def _float_value(value: float, length: int) -> str:
    if math.isnan(value):
        return '"NaN"'
    if value in (float("inf"), float("-inf")):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    return ("%.6g" if length == 4 else "%.15g") % value


def _tcp_flags(value: int) -> str:
    return '"' + "".join(c if value & bit else "." for c, bit in zip("UAPRSF", (32, 16, 8, 4, 2, 1), strict=True)) + '"'


# ---------------------------------------------------------------------- field selection
@dataclass(frozen=True, slots=True)
class _Emit:
    """One key of the printed record: its text, how to render, and the fields that feed it."""

    key: str  # '"iana:octetDeltaCount":'
    kind: str
    positions: tuple[int, ...]
    multi: bool


def _layout(specs: Sequence[FieldSpec], options: Ipfixcol2Options, *, reverse_view: bool) -> list[_Emit]:
    """The keys libfds iter_loop prints for a template (forward or reverse point of view)."""
    forward = [(spec.pen, spec.element_id) for spec in specs]
    defs = [_definition(*key) for key in forward]
    biflow = any(d is not None and d.reverse for d in defs)
    view: list[tuple[int, int, _Definition | None, bool]] = []  # pen, id, definition, reverse flag
    for (pen, element_id), definition in zip(forward, defs, strict=True):
        if definition is None or not (biflow and reverse_view):
            view.append((pen, element_id, definition, definition is not None and definition.reverse))
            continue
        other = _counterpart(pen, element_id)
        if definition.reverse and other is not None:  # reverse-only field: shown as its forward twin
            view.append((*other, _definition(*other), False))
        elif other is not None and other in forward:  # forward-only field: becomes reverse, skipped
            view.append((*other, _definition(*other), True))
        elif (opposite := _opposite_key(pen, element_id)) is not None:  # directional flow key
            view.append((pen, opposite, _definition(pen, opposite), False))
        else:  # non-directional flow key
            view.append((pen, element_id, definition, False))

    def shown(entry: tuple[int, int, _Definition | None, bool]) -> bool:
        pen, element_id, definition, is_reverse = entry
        if element_id == _PADDING_ID and pen in (0, REVERSE_PEN):
            return False
        if options.ignore_unknown and definition is None:
            return False
        return not (options.split_biflow and is_reverse)

    emits: list[_Emit] = []
    for index, entry in enumerate(view):
        if not shown(entry):
            continue
        repeated = forward.count(forward[index]) > 1  # libfds flags MULTI/LAST on the forward ids
        if repeated and forward[index] in forward[index + 1 :]:
            continue  # printed at the last occurrence
        pen, element_id, definition, _ = entry
        if repeated:
            positions = tuple(i for i, other in enumerate(view) if other[:2] == (pen, element_id) and shown(other))
        else:
            positions = (index,)
        name = definition.name if definition is not None and not options.numeric_names else f"en{pen}:id{element_id}"
        if pen in (0, REVERSE_PEN) and element_id == 6 and options.tcp_flags == "formatted":
            kind = "flags"
        elif pen in (0, REVERSE_PEN) and element_id == 4 and options.protocol == "formatted":
            kind = "proto"
        else:
            kind = _KINDS.get(definition.data_type, "octets") if definition is not None else "octets"
        emits.append(_Emit(f'"{name}":', kind, positions, repeated))
    return emits


def _is_biflow(specs: Sequence[FieldSpec]) -> bool:
    return any((d := _definition(s.pen, s.element_id)) is not None and d.reverse for s in specs)


# ------------------------------------------------------------------ NetFlow -> IPFIX view
@dataclass(frozen=True, slots=True)
class _Source:
    """A field of the IPFIX record IPFIXcol2 would see, and where its value comes from."""

    spec: FieldSpec  # IPFIX element and length
    position: int | None  # field of the record set, or None when computed from the header
    derive: str | None = None  # "uptime_ms" (relative -> absolute ms), "sampling_interval", "sampling_algorithm"


_V9_SCOPES = {1: (144, 4), 2: (10, 4), 3: (141, 4), 5: (145, 2)}  # netflow9.c nf2ipx_opts_table
_V9_TIMES = {21: 153, 22: 152}  # LAST_SWITCHED -> flowEndMilliseconds, FIRST_SWITCHED -> flowStartMilliseconds
_V5_FIELDS = (  # netflow5.c nf5_tmpl_set without its two paddingOctets (never printed)
    (8, 4, 8), (12, 4, 12), (15, 4, 15), (10, 2, 10), (14, 2, 14), (2, 4, 2), (1, 4, 1), (152, 8, 22),
    (153, 8, 21), (7, 2, 7), (11, 2, 11), (6, 1, 6), (4, 1, 4), (5, 1, 5), (16, 2, 16), (17, 2, 17),
    (9, 1, 9), (13, 1, 13),
)


def _ipfix_sources(template: Template) -> list[_Source] | None:
    return [_Source(spec, position) for position, spec in enumerate(template.fields)]


def _v9_sources(template: Template) -> list[_Source] | None:
    if template.is_options and template.scope_count == 0:
        return None
    sources: list[_Source] = []
    for position, spec in enumerate(template.fields):
        if position < template.scope_count:
            mapped = _V9_SCOPES.get(spec.element_id) if spec.pen == V9_SCOPE_PEN else None
            if mapped is None or spec.length > mapped[1]:
                return None
            sources.append(_Source(FieldSpec(0, mapped[0], spec.length), position))
        elif spec.element_id in _V9_TIMES:
            if spec.length != 4:
                return None
            sources.append(_Source(FieldSpec(0, _V9_TIMES[spec.element_id], 8), position, "uptime_ms"))
        elif spec.element_id < 128:
            sources.append(_Source(FieldSpec(0, spec.element_id, spec.length), position))
        elif spec.element_id < 0x8000:
            sources.append(_Source(FieldSpec(NETFLOW_PEN, spec.element_id, spec.length), position))
        else:
            sources.append(_Source(FieldSpec(NETFLOW_EXTRA_PEN, spec.element_id & 0x7FFF, spec.length), position))
    return sources


def _v5_sources(template: Template) -> list[_Source] | None:
    sources: list[_Source] = []
    for element_id, length, source_id in _V5_FIELDS:
        position = template.field_position(0, source_id)
        if position is None:
            return None
        sources.append(_Source(FieldSpec(0, element_id, length), position, "uptime_ms" if length == 8 else None))
    sources.append(_Source(FieldSpec(0, 35, 1), None, "sampling_algorithm"))
    sources.append(_Source(FieldSpec(0, 34, 4), None, "sampling_interval"))
    return sources


_SOURCES: dict[int, Callable[[Template], list[_Source] | None]] = {10: _ipfix_sources, 9: _v9_sources, 5: _v5_sources}


@dataclass(frozen=True, slots=True)
class _Plan:
    record_type: str  # "ipfix.entry" or "ipfix.optionsEntry"
    sources: list[_Source]
    views: tuple[list[_Emit], ...]  # one per printed line of a record


# ----------------------------------------------------------------------------- formatter
class Ipfixcol2Formatter:
    """Encodes decoded record sets as IPFIXcol2's JSON output plugin prints them.

    ``templates`` resolves the sub-templates of subTemplateList/subTemplateMultiList fields
    (pass the decoder session's ``templates.get``); without it those lists come out empty.
    """

    def __init__(self, options: Ipfixcol2Options | None = None, *, templates: TemplateLookup | None = None) -> None:
        self.options = options if options is not None else Ipfixcol2Options()
        self.templates = templates

    # ---------------------------------------------------------------- public
    def encode(self, records: list[RecordSet]) -> bytes:
        """One JSON line per data record (two for a split biflow), in arrival order."""
        orders: list[np.ndarray] = []
        lines: list[str] = []
        for record_set in records:
            encoded = self._encode_set(record_set)
            if encoded is not None:
                orders.append(encoded[0])
                lines.extend(encoded[1])
        if not lines:
            return b""
        order = np.argsort(np.concatenate(orders), kind="stable")
        return "".join([lines[i] for i in order.tolist()]).encode("utf-8", "surrogateescape")

    # ------------------------------------------------------------ record sets
    def _plan(self, records: RecordSet) -> _Plan | None:
        template = records.template
        cache: dict[tuple[int, Ipfixcol2Options], _Plan | None] = template.plans.setdefault("ipfixcol2", {})
        key = (records.version, self.options)
        if key in cache:
            return cache[key]
        plan: _Plan | None = None
        make_sources = _SOURCES.get(records.version)
        sources = make_sources(template) if make_sources is not None else None
        if sources is not None and not (template.is_options and self.options.ignore_options):
            specs = [source.spec for source in sources]
            views = [_layout(specs, self.options, reverse_view=False)]
            if self.options.split_biflow and _is_biflow(specs):
                views.append(_layout(specs, self.options, reverse_view=True))
            record_type = "ipfix.optionsEntry" if template.is_options else "ipfix.entry"
            plan = _Plan(record_type, sources, tuple(views))
        cache[key] = plan
        return plan

    def _encode_set(self, records: RecordSet) -> tuple[np.ndarray, list[str]] | None:
        plan = self._plan(records)
        if plan is None or len(records) == 0:
            return None
        columns: dict[tuple[int, str], list[str]] = {}

        def column(position: int, kind: str) -> list[str]:
            cached = columns.get((position, kind))
            if cached is None:
                cached = columns[(position, kind)] = self._column(records, plan.sources[position], kind)
            return cached

        head = '{"@type":"' + plan.record_type + '"'
        tails = self._detailed_info(records) if self.options.detailed_info else None
        lines: list[str] = []
        per_view = []
        for emits in plan.views:
            rendered = [(e.key, [column(p, e.kind) for p in e.positions], e.multi) for e in emits]
            per_view.append(rendered)
        for index in range(len(records)):
            for rendered in per_view:
                parts = [head]
                for key, value_columns, multi in rendered:
                    if multi:
                        parts.append(key + "[" + ",".join(values[index] for values in value_columns) + "]")
                    else:
                        parts.append(key + value_columns[0][index])
                if tails is not None:
                    parts.append(tails[index])
                lines.append(",".join(parts) + "}\n")
        order = records.order if len(plan.views) == 1 else np.repeat(records.order, len(plan.views))
        return order, lines

    def _detailed_info(self, records: RecordSet) -> list[str]:
        export_s = (records.export_time_ms // 1000).tolist()
        sequence = records.extra.get("sequence_number")
        length = records.extra.get("message_length")
        sequence_list = sequence.tolist() if sequence is not None else None
        length_list = length.tolist() if length is not None else None
        source = "" if records.exporter in ("", "0.0.0.0") else f',"ipfix:srcAddr":"{records.exporter}"'
        tail = f'{source},"ipfix:templateId":{records.template.template_id}'
        out = []
        for index, seconds in enumerate(export_s):
            text = f'"ipfix:exportTime":{seconds}'
            if sequence_list is not None:
                text += f',"ipfix:seqNumber":{sequence_list[index]}'
            text += f',"ipfix:odid":{records.domain}'
            if length_list is not None:
                text += f',"ipfix:msgLength":{length_list[index]}'
            out.append(text + tail)
        return out

    # --------------------------------------------------------------- columns
    def _column(self, records: RecordSet, source: _Source, kind: str) -> list[str]:
        """The JSON text of one field for every record of the set."""
        formatted_time = self.options.timestamp == "formatted"
        if source.derive in ("sampling_interval", "sampling_algorithm"):
            header = records.header_sampling_interval
            intervals: list[int] = header.tolist() if header is not None else [0] * len(records)
            if source.derive == "sampling_interval":
                return [str(v) for v in intervals]
            return ["0" if v == 0 else _NULL for v in intervals]  # the mode bits do not survive decoding
        assert source.position is not None
        if source.derive == "uptime_ms":  # netflow5.c / netflow9.c: export time - (uptime - value)
            relative = records.unsigned(source.position)
            absolute = records.export_time_ms.astype(np.uint64) - records.sys_uptime_ms.astype(np.uint64) + relative
            return [_ms_value(v, formatted_time) for v in absolute.tolist()]
        spec = records.template.fields[source.position]
        own_kind = _KINDS.get(lookup(spec.pen, spec.element_id).data_type, "octets")
        if own_kind == kind and spec.length in _TYPED_LENGTHS.get(kind, ()) and source.position not in records.variable:
            typed = field_values(records, source.position)
            expected = _PYTHON_TYPES[kind]
            if all(type(value) is expected for value in typed):
                return [self._typed(kind, value, spec.length) for value in typed]
        return [self._raw(kind, data, records) for data in records.values(source.position)]

    def _typed(self, kind: str, value: FieldValue, length: int) -> str:
        """A value typed by :func:`field_values` (kinds and lengths of ``_TYPED_LENGTHS`` only)."""
        if isinstance(value, str):  # macAddress
            return f'"{value.upper()}"'
        if not isinstance(value, int | float) or isinstance(value, bool):
            return _NULL
        if kind == "float":
            return _float_value(float(value), length)
        if kind == "time_s":
            return _ms_value(int(value) * 1000, self.options.timestamp == "formatted")
        if kind == "time_ms":
            return _ms_value(int(value), self.options.timestamp == "formatted")
        return str(value)

    def _raw(self, kind: str, data: bytes, records: RecordSet | None) -> str:
        """libfds's converter for ``kind`` applied to the field's bytes."""
        size = len(data)
        if kind == "string":
            return _json_string(data, self.options.non_printable_char)
        if kind in ("uint", "int"):
            return str(int.from_bytes(data, "big", signed=kind == "int")) if 1 <= size <= 8 else _NULL
        if kind == "octets":
            if size == 0:
                return _NULL
            if self.options.octet_array_as_uint and size <= 8:
                return str(int.from_bytes(data, "big"))
            return '"0x' + data.hex().upper() + '"'
        if kind == "ip":
            if size == 4:
                return '"' + ".".join(str(b) for b in data) + '"'
            return '"' + socket.inet_ntop(socket.AF_INET6, data) + '"' if size == 16 else _NULL
        if kind == "mac":
            return '"' + data.hex(":").upper() + '"' if size == 6 else _NULL
        if kind == "float":
            if size not in (4, 8):
                return _NULL
            return _float_value(float(np.frombuffer(data, ">f4" if size == 4 else ">f8")[0]), size)
        if kind == "bool":
            return {b"\x01": "true", b"\x02": "false"}.get(data, _NULL)
        if kind == "flags":
            return _tcp_flags(data[-1]) if size in (1, 2) else _NULL
        if kind == "proto":
            return _PROTOCOLS[data[0]] if size == 1 else _NULL
        formatted = self.options.timestamp == "formatted"
        if kind == "time_s":
            return _ms_value(int.from_bytes(data, "big") * 1000, formatted) if size == 4 else _NULL
        if kind == "time_ms":
            return _ms_value(int.from_bytes(data, "big"), formatted) if size == 8 else _NULL
        if kind == "time_ntp":
            return _ntp_value(data, False, formatted) if size == 8 else _NULL
        if kind == "time_us":
            return _ntp_value(data, True, formatted) if size == 8 else _NULL
        return self._structured(kind, data, records)

    # ------------------------------------------------------ structured data
    def _structured(self, kind: str, data: bytes, records: RecordSet | None) -> str:
        try:
            if kind == "blist":
                return self._basic_list(data)
            if kind == "stlist":
                return self._sub_template_list(data, records)
            return self._sub_template_multi_list(data, records)
        except _MalformedListError:
            return _NULL

    def _basic_list(self, data: bytes) -> str:
        if len(data) < 5:
            raise _MalformedListError
        semantic, field_id, length = data[0], int.from_bytes(data[1:3], "big"), int.from_bytes(data[3:5], "big")
        offset, pen = 5, 0
        if field_id & 0x8000:
            if len(data) < 9:
                raise _MalformedListError
            pen, offset = int.from_bytes(data[5:9], "big"), 9
        element_id = field_id & 0x7FFF
        definition = _definition(pen, element_id)
        kind = _KINDS.get(definition.data_type, "octets") if definition is not None else "octets"
        if length == 0 and offset < len(data):
            raise _MalformedListError  # fixed zero-length values: the list cannot be walked
        values: list[str] = []
        while offset < len(data):
            value, offset = _field_bytes(data, offset, length)
            values.append(self._raw(kind, value, None))
        name = definition.name if definition is not None and not self.options.numeric_names else (
            f"en{pen}:id{element_id}")
        return ('{"@type":"basicList","data":[' + ",".join(values) + '],"semantic":"'
                + _SEMANTICS.get(semantic, "undefined") + '","fieldID":"' + name + '"}')

    def _sub_template_list(self, data: bytes, records: RecordSet | None) -> str:
        if len(data) < 3:
            raise _MalformedListError
        template_id = int.from_bytes(data[1:3], "big")
        if template_id < 256:
            raise _MalformedListError
        template = self._sub_template(records, template_id)
        rendered = self._sub_records(template, data[3:], records) if template is not None else []
        return ('{"@type":"subTemplateList","semantic":"' + _SEMANTICS.get(data[0], "undefined")
                + '","data":[' + ",".join(rendered) + "]}")

    def _sub_template_multi_list(self, data: bytes, records: RecordSet | None) -> str:
        if len(data) < 1:
            raise _MalformedListError
        blocks: list[str] = []
        offset = 1
        while offset < len(data):
            if len(data) - offset < 4:
                raise _MalformedListError
            template_id = int.from_bytes(data[offset : offset + 2], "big")
            length = int.from_bytes(data[offset + 2 : offset + 4], "big")
            if length < 4 or offset + length > len(data):
                raise _MalformedListError
            template = self._sub_template(records, template_id)
            if template is not None:
                blocks.append("[" + ",".join(self._sub_records(template, data[offset + 4 : offset + length],
                                                               records)) + "]")
            offset += length
        return ('{"@type":"subTemplateMultiList","semantic":"' + _SEMANTICS.get(data[0], "undefined")
                + '","data":[' + ",".join(blocks) + "]}")

    def _sub_template(self, records: RecordSet | None, template_id: int) -> Template | None:
        if self.templates is None or records is None:
            return None
        return self.templates(records.exporter, records.domain, template_id)

    def _sub_records(self, template: Template, data: bytes, records: RecordSet | None) -> list[str]:
        """Records of a sub-template list: every field read, then printed like a top-level record."""
        emits = _layout(template.fields, self.options, reverse_view=False)
        out: list[str] = []
        offset = 0
        while offset < len(data):
            start = offset
            values: list[bytes] = []
            for spec in template.fields:
                value, offset = _field_bytes(data, offset, spec.length)
                values.append(value)
            if offset == start:
                raise _MalformedListError  # a record of zero bytes: the list cannot be walked
            parts = []
            for emit in emits:
                texts = [self._raw(emit.kind, values[p], records) for p in emit.positions]
                parts.append(emit.key + ("[" + ",".join(texts) + "]" if emit.multi else texts[0]))
            out.append("{" + ",".join(parts) + "}")
        return out


class _MalformedListError(Exception):
    """A structured field that libfds's list iterators would reject (printed as null)."""


def _field_bytes(data: bytes, offset: int, length: int) -> tuple[bytes, int]:
    """One field value at ``offset`` (RFC 7011 variable-length encoding when length is 65535)."""
    if length == VARIABLE_LENGTH:
        if offset >= len(data):
            raise _MalformedListError
        length, offset = data[offset], offset + 1
        if length == 255:
            if offset + 2 > len(data):
                raise _MalformedListError
            length, offset = int.from_bytes(data[offset : offset + 2], "big"), offset + 2
    if offset + length > len(data):
        raise _MalformedListError
    return data[offset : offset + length], offset + length

