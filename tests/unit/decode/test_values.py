"""Typed field values: every abstract data type, reduced-size encoding, odd and wrong lengths.

Records are built as real IPFIX / NetFlow v9 messages and decoded by a ``DecoderSession``.
"""

from __future__ import annotations

import math
import struct

import pytest

from flowscope.decode.fields import Element
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.decode.values import default_name, field_values, record_dicts
from flowscope.metrics import Counters
from flowscope.model import Datagram

EXPORTER = "192.0.2.1"
VARIABLE = 0xFFFF
NTP_1970 = 2_208_988_800


def ipfix_message(*sets: tuple[int, bytes], export_time: int = 1_700_000_000) -> bytes:
    body = b"".join(struct.pack("!HH", set_id, 4 + len(data)) + data for set_id, data in sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export_time, 0, 1) + body


def ipfix_template(template_id: int, fields: list[tuple[int, int, int]]) -> tuple[int, bytes]:
    """A template set; fields are (pen, element id, length)."""
    body = struct.pack("!HH", template_id, len(fields))
    for pen, element_id, length in fields:
        if pen:
            body += struct.pack("!HHI", element_id | 0x8000, length, pen)
        else:
            body += struct.pack("!HH", element_id, length)
    return 2, body


def decode_ipfix(fields: list[tuple[int, int, int]], *records: bytes) -> RecordSet:
    counters = Counters()
    session = DecoderSession(counters=counters)
    message = ipfix_message(ipfix_template(300, fields), (300, b"".join(records)))
    (record_set,) = session.decode([Datagram(EXPORTER, 0, message)])
    assert counters.total("decode_errors_total") == 0
    assert len(record_set) == len(records)
    return record_set


def column(fields: list[tuple[int, int, int]], *records: bytes, position: int = 0) -> list[object]:
    return list(field_values(decode_ipfix(fields, *records), position))


def var(value: bytes) -> bytes:
    """A variable-length field value (RFC 7011 §7), short or long form."""
    if len(value) < 255:
        return bytes([len(value)]) + value
    return b"\xff" + struct.pack("!H", len(value)) + value


# --- integers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 7, 8])
def test_unsigned64_in_any_length(length: int) -> None:
    """octetDeltaCount (unsigned64) with reduced-size encoding, odd lengths included."""
    top = 256**length - 1
    assert column([(0, 1, length)], top.to_bytes(length, "big"), (5).to_bytes(length, "big")) == [top, 5]


def test_three_byte_unsigned32() -> None:
    """flowLabelIPv6 (unsigned32) in 3 bytes, like an MPLS label entry."""
    assert column([(0, 31, 3)], b"\x0a\xbc\xde") == [0x0ABCDE]


def test_unsigned256() -> None:
    """ipv6ExtensionHeadersFull (unsigned256): 32 bytes, and reduced to 2."""
    value = (1 << 255) | 0x1234
    assert column([(0, 515, 32)], value.to_bytes(32, "big")) == [value]
    assert column([(0, 515, 2)], b"\x80\x01") == [0x8001]


def test_unsigned_wider_than_its_type_keeps_every_byte() -> None:
    """A 9-byte packetDeltaCount (wrong length) is still an integer, not truncated."""
    assert column([(0, 2, 9)], b"\x01" + b"\x00" * 8) == [1 << 64]


@pytest.mark.parametrize(
    ("length", "raw", "expected"),
    [
        (4, struct.pack("!i", -5), -5),
        (4, struct.pack("!i", 2**31 - 1), 2**31 - 1),
        (2, b"\xff\xfe", -2),
        (1, b"\x80", -128),
        (3, b"\x7f\xff\xff", 2**23 - 1),
        (3, b"\x80\x00\x00", -(2**23)),
        (8, struct.pack("!q", -(2**63)), -(2**63)),
    ],
)
def test_signed_twos_complement_at_the_field_length(length: int, raw: bytes, expected: int) -> None:
    """mibObjectValueInteger (signed32), reduced or not."""
    assert column([(0, 434, length)], raw) == [expected]


def test_signed_enterprise_element() -> None:
    """Procera's proceraInternalRtt (PEN 15397, signed32)."""
    assert column([(15397, 11, 4)], struct.pack("!i", -1)) == [-1]


# --- floats, booleans -------------------------------------------------------------------------------


def test_float64_in_8_and_4_bytes() -> None:
    """samplingProbability (float64), and reduced to float32 as RFC 7011 §6.2 allows."""
    assert column([(0, 311, 8)], struct.pack("!d", 0.125)) == [0.125]
    (value,) = column([(0, 311, 4)], struct.pack("!f", 0.1))
    assert isinstance(value, float)
    assert value == struct.unpack("!f", struct.pack("!f", 0.1))[0]


def test_float32_in_4_and_8_bytes() -> None:
    """IXIA's ixiaSrcLatitude (float32) as sent (4 bytes) and widened to 8."""
    (value,) = column([(3054, 126, 4)], bytes.fromhex("41f4a3d7"))
    assert value == pytest.approx(30.58, abs=1e-5)
    assert column([(3054, 126, 8)], struct.pack("!d", -12.5)) == [-12.5]
    (nan,) = column([(3054, 126, 4)], struct.pack("!f", math.nan))
    assert isinstance(nan, float)
    assert math.isnan(nan)


def test_float_with_an_impossible_length_is_raw_bytes() -> None:
    assert column([(0, 311, 3)], b"\x01\x02\x03") == [b"\x01\x02\x03"]


def test_boolean() -> None:
    """dataRecordsReliability: 1 is true, 2 is false (RFC 7011 §6.1.5); anything else stays an int."""
    values = column([(0, 276, 1)], b"\x01", b"\x02", b"\x00", b"\x07")
    assert values == [True, False, 0, 7]
    assert [type(value) for value in values] == [bool, bool, int, int]


# --- addresses, strings, octets -----------------------------------------------------------------------


def test_addresses() -> None:
    fields = [(0, 8, 4), (0, 27, 16), (0, 56, 6)]
    records = decode_ipfix(
        fields,
        bytes([192, 0, 2, 1]) + bytes.fromhex("20010db8000000000000000000000001") + bytes.fromhex("0050560001ff"),
        bytes(4) + bytes.fromhex("00000000000000000000ffff01020304") + bytes.fromhex("aabbccddeeff"),
    )
    assert field_values(records, 0) == ["192.0.2.1", "0.0.0.0"]
    assert field_values(records, 1) == ["2001:db8::1", "::ffff:1.2.3.4"]
    assert field_values(records, 2) == ["00:50:56:00:01:ff", "aa:bb:cc:dd:ee:ff"]


def test_ipv4_address_of_length_2_is_tolerated() -> None:
    """H3C declares ipv4RouterSc (43, ipv4Address) with length 2: raw bytes, no crash."""
    records = decode_ipfix([(0, 43, 2), (0, 8, 4)], b"\x0a\x01" + bytes([10, 0, 0, 1]))
    assert field_values(records, 0) == [b"\x0a\x01"]
    assert field_values(records, 1) == ["10.0.0.1"]
    assert column([(0, 27, 4)], b"\x01\x02\x03\x04") == [b"\x01\x02\x03\x04"]
    assert column([(0, 56, 8)], bytes(8)) == [bytes(8)]


def test_strings() -> None:
    """Trailing NULs stripped, invalid UTF-8 replaced; fixed and variable length."""
    fixed = column([(0, 94, 8)], b"ARGUS\x00\x00\x00", b"caf\xc3\xa9\x00\x00\x00", b"\xff\xfeab\x00\x00\x00\x00")
    assert fixed == ["ARGUS", "café", "\ufffd\ufffdab"]
    long = b"x" * 300
    variable = column([(0, 94, VARIABLE)], var(b"host.example"), var(b""), var(long))
    assert variable == ["host.example", "", "x" * 300]


def test_octet_arrays_lists_and_unknown_elements_are_bytes() -> None:
    fields = [(0, 70, 3), (0, 293, VARIABLE), (9999, 7, 2), (0, 1000, 1)]
    records = decode_ipfix(fields, b"\x01\x02\x03" + var(b"\x03\xc0\x04") + b"\xbe\xef" + b"\x09")
    assert field_values(records, 0) == [b"\x01\x02\x03"]
    assert field_values(records, 1) == [b"\x03\xc0\x04"]
    assert field_values(records, 2) == [b"\xbe\xef"]
    assert field_values(records, 3) == [b"\x09"]


def test_empty_variable_length_values() -> None:
    """Zero-length values: "" for strings, b"" for octets, None for numbers and addresses."""
    fields = [(0, 94, VARIABLE), (0, 70, VARIABLE), (0, 1, VARIABLE), (0, 8, VARIABLE)]
    records = decode_ipfix(fields, var(b"") * 4)
    assert [field_values(records, position) for position in range(4)] == [[""], [b""], [None], [None]]


# --- times ---------------------------------------------------------------------------------------------


def test_seconds_and_milliseconds() -> None:
    raw = struct.pack("!IQ", 1_438_603_921, 1_438_603_921_123) + (1_438_603_921_456).to_bytes(6, "big")
    records = decode_ipfix([(0, 150, 4), (0, 152, 8), (0, 152, 6)], raw)
    assert [field_values(records, position) for position in range(3)] == [
        [1_438_603_921], [1_438_603_921_123], [1_438_603_921_456]
    ]


def test_nanoseconds_from_ntp() -> None:
    """dateTimeNanoseconds: NTP seconds since 1900 and a 2**-32 s fraction, to ns since 1970."""
    half = struct.pack("!II", NTP_1970 + 1_700_000_000, 2**31)
    smallest = struct.pack("!II", NTP_1970 + 1, 5)  # 5 * 2**-32 s = 1.16 ns
    assert column([(0, 156, 8)], half, smallest) == [1_700_000_000_500_000_000, 1_000_000_001]


def test_microseconds_ignore_the_low_11_fraction_bits() -> None:
    """dateTimeMicroseconds (RFC 7011 §6.1.9): fraction bits 0-10 are not part of the value."""
    fraction = 0x0000_0FFF  # bits 0-11 set: only bit 11 (2**-21 s) counts
    raw = struct.pack("!II", NTP_1970 + 10, fraction)
    (value,) = column([(0, 154, 8)], raw)
    assert value == 10 * 10**9 + (0x800 * 10**9 >> 32)  # 10 s + 476 ns
    (nano,) = column([(0, 156, 8)], raw)
    assert nano == 10 * 10**9 + (0xFFF * 10**9 >> 32)  # 10 s + 953 ns: all bits count


def test_ntp_time_with_an_impossible_length_is_raw_bytes() -> None:
    assert column([(0, 156, 4)], b"\x01\x02\x03\x04") == [b"\x01\x02\x03\x04"]


# --- record_dicts --------------------------------------------------------------------------------------


def test_record_dicts_in_field_order_without_padding_or_empty_fields() -> None:
    fields = [(0, 8, 4), (0, 210, 3), (0, 1, 4), (0, 82, 0), (0, 7, 2), (0, 8, 4)]
    records = decode_ipfix(
        fields,
        bytes([10, 0, 0, 1]) + bytes(3) + struct.pack("!IH", 1500, 443) + bytes([10, 0, 0, 2]),
        bytes([10, 0, 0, 3]) + bytes(3) + struct.pack("!IH", 40, 53) + bytes([10, 0, 0, 4]),
    )
    rows = record_dicts(records)
    assert rows == [
        {"sourceIPv4Address": "10.0.0.1", "octetDeltaCount": 1500, "sourceTransportPort": 443},
        {"sourceIPv4Address": "10.0.0.3", "octetDeltaCount": 40, "sourceTransportPort": 53},
    ]
    assert list(rows[0]) == ["sourceIPv4Address", "octetDeltaCount", "sourceTransportPort"]
    named = record_dicts(records, names=lambda element: f"{element.pen}:{element.element_id}")
    assert named[1] == {"0:8": "10.0.0.3", "0:1": 40, "0:7": 53}


def test_reverse_and_enterprise_names() -> None:
    records = decode_ipfix([(29305, 1, 8), (6871, 33, 2)], struct.pack("!QH", 77, 53))
    assert record_dicts(records) == [{"reverseOctetDeltaCount": 77, "silkAppLabel": 53}]


def v9_message(*sets: tuple[int, bytes], source_id: int = 7) -> bytes:
    body = b"".join(struct.pack("!HH", set_id, 4 + len(data)) + data for set_id, data in sets)
    return struct.pack("!HHIIII", 9, len(sets), 1000, 1_700_000_000, 1, source_id) + body


def test_netflow_v9_scope_fields_and_vendor_types() -> None:
    """v9 scope fields are integers named scope*; v9 types above 32767 are vendor types, not IANA ids."""
    options = struct.pack("!HHH", 260, 4, 8) + struct.pack("!HH", 1, 4) + struct.pack("!HHHH", 42, 4, 95, 4)
    template = struct.pack("!HH", 270, 3) + struct.pack("!HHHHHH", 33002, 2, 40000, 6, 8, 4)
    counters = Counters()
    session = DecoderSession(counters=counters)
    message = v9_message(
        (1, options), (0, template),
        (260, struct.pack("!III", 0x0A0B0C0D, 12, 0x0D00000C)),
        (270, struct.pack("!H", 2030) + b"admin\x00" + bytes([10, 1, 2, 3])),
    )
    decoded = session.decode([Datagram(EXPORTER, 0, message)])
    by_template = {records.template.template_id: records for records in decoded}
    assert counters.total("decode_errors_total") == 0
    assert record_dicts(by_template[260]) == [
        {"scopeSystem": 0x0A0B0C0D, "exportedFlowRecordTotalCount": 12, "applicationId": b"\x0d\x00\x00\x0c"}
    ]
    assert record_dicts(by_template[270]) == [
        {"id33002": b"\x07\xee", "id40000": b"admin\x00", "sourceIPv4Address": "10.1.2.3"}
    ]


def test_default_name_of_unlisted_v9_scope() -> None:
    assert default_name(Element(0xFFFFFFFF, 9, "e4294967295id9", "octetArray", known=False)) == "scope9"
    assert default_name(Element(0xFFFFFFFF, 3, "e4294967295id3", "octetArray", known=False)) == "scopeLineCard"


def test_many_records_vectorised_columns_match_per_record_decoding() -> None:
    """The numpy column paths agree with one-value conversion on a larger set."""
    fields = [(0, 1, 3), (0, 434, 2), (0, 8, 4), (0, 156, 8), (0, 311, 4)]
    rows = [
        i.to_bytes(3, "big") + struct.pack("!h", i - 500) + struct.pack("!I", 0x0A000000 + i)
        + struct.pack("!II", NTP_1970 + i, i * 4096) + struct.pack("!f", i / 8)
        for i in range(1000)
    ]
    records = decode_ipfix(fields, *rows)
    assert field_values(records, 0) == list(range(1000))
    assert field_values(records, 1) == [i - 500 for i in range(1000)]
    assert field_values(records, 2)[257] == "10.0.1.1"
    assert field_values(records, 3) == [i * 10**9 + (i * 4096 * 10**9 >> 32) for i in range(1000)]
    assert field_values(records, 4) == [i / 8 for i in range(1000)]
