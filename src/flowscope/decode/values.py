"""Typed field values: any field of a :class:`RecordSet` rendered as Python values.

The decoder keeps fields as raw big-endian bytes (numpy columns); this module interprets them by
the element's IANA abstract data type (:func:`flowscope.decode.fields.lookup`). It serves output
formatting and tests, not the flow hot path, but still converts whole columns with numpy where the
type allows it (integers, floats, IPv4 addresses, NTP timestamps).

Rules (RFC 7011 §6):

* unsigned*/signed* -> ``int``, whatever the length: reduced-size encoding (§6.2: an unsigned64
  sent in 1, 2 or 4 bytes), odd lengths (3-byte MPLS labels) and unsigned256 all work; signed
  values are two's complement at the field's own length.
* float32/float64 -> ``float``, from 4 or 8 bytes whichever was declared (§6.2 allows a float64
  in 4 bytes; devices also send float32 elements in 8).
* boolean -> ``bool``: 1 is true, 2 is false (§6.1.5). Any other octet is not a boolean: it comes
  back as its ``int`` value so nothing is lost.
* ipv4Address -> dotted text; ipv6Address -> compressed text (``inet_ntop``, the rendering of
  IPFIXcol2 and Logstash: IPv4-mapped addresses keep the dotted tail); macAddress ->
  ``"aa:bb:cc:dd:ee:ff"``.
* string -> ``str``: trailing NULs stripped, UTF-8 with invalid bytes replaced.
* dateTimeSeconds/dateTimeMilliseconds -> ``int`` in that unit (reduced size allowed).
  dateTimeMicroseconds/dateTimeNanoseconds -> ``int`` nanoseconds since the Unix epoch, from the
  NTP format of §6.1.9-10 (32-bit seconds since 1900, 32-bit binary fraction); the microsecond
  variant ignores the low 11 bits of the fraction, as §6.1.9 requires.
* octetArray, basicList, subTemplateList, subTemplateMultiList and unknown elements -> ``bytes``.
* A length the type cannot have (an IPv4 address in 2 bytes, as H3C sends; a float in 3 bytes;
  a timestamp in 4) is never an error: the value comes back as its raw ``bytes``.
* An empty value (a variable-length field carrying 0 bytes, or a 0-length template field) is
  ``""`` for strings, ``b""`` for byte types and ``None`` for every other type.

NetFlow v9 types above 32767 (vendor-specific, sent with PEN 0) are unknown elements (``bytes``).
NetFlow v9 options scope fields (pseudo enterprise :data:`~flowscope.decode.v9.V9_SCOPE_PEN`)
are identifiers: they are rendered as unsigned integers and named ``scopeSystem``,
``scopeInterface``, ... by :func:`default_name`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from flowscope.decode.fields import Element, lookup
from flowscope.decode.records import RecordSet
from flowscope.decode.v9 import SCOPE_NAMES, V9_SCOPE_PEN

__all__ = ["FieldValue", "default_name", "field_values", "record_dicts"]

FieldValue = int | float | bool | str | bytes | None

PADDING_ELEMENT_ID = 210  # paddingOctets (IANA)
NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_MICROSECOND_FRACTION_MASK = 0xFFFF_F800  # RFC 7011 §6.1.9: ignore the low 11 bits
_NS_PER_S = 1_000_000_000

_UNSIGNED_TYPES = frozenset(
    {"unsigned8", "unsigned16", "unsigned32", "unsigned64", "unsigned256", "dateTimeSeconds",
     "dateTimeMilliseconds"}
)
_SIGNED_TYPES = frozenset({"signed8", "signed16", "signed32", "signed64"})
_FLOAT_TYPES = frozenset({"float32", "float64"})
_NTP_TYPES = frozenset({"dateTimeMicroseconds", "dateTimeNanoseconds"})
_BYTES_TYPES = frozenset({"octetArray", "basicList", "subTemplateList", "subTemplateMultiList"})
_V9_SCOPE_TYPE = "unsigned256"  # scope values are identifiers of any length


def default_name(element: Element) -> str:
    """The element's registry name; NetFlow v9 scope fields become ``scopeSystem`` etc."""
    if element.pen == V9_SCOPE_PEN:
        scope = SCOPE_NAMES.get(element.element_id)
        if scope is None:
            return f"scope{element.element_id}"
        return "scope" + "".join(part.capitalize() for part in scope.split("_"))
    return element.name


def _data_type(element: Element) -> str:
    return _V9_SCOPE_TYPE if element.pen == V9_SCOPE_PEN else element.data_type


# --- one value from bytes (variable-length fields and the types numpy cannot batch) ----------


def _empty(data_type: str) -> FieldValue:
    if data_type == "string":
        return ""
    if data_type in _BYTES_TYPES:
        return b""
    return None


def _ntp_to_ns(seconds: int, fraction: int, data_type: str) -> int:
    if data_type == "dateTimeMicroseconds":
        fraction &= _MICROSECOND_FRACTION_MASK
    return (seconds - NTP_UNIX_OFFSET_S) * _NS_PER_S + ((fraction * _NS_PER_S) >> 32)


def _convert(data_type: str, data: bytes) -> FieldValue:
    """One value of ``data_type`` from its wire bytes; never raises."""
    length = len(data)
    if length == 0:
        return _empty(data_type)
    if data_type in _UNSIGNED_TYPES:
        return int.from_bytes(data, "big")
    if data_type in _SIGNED_TYPES:
        return int.from_bytes(data, "big", signed=True)
    if data_type == "string":
        return data.rstrip(b"\x00").decode("utf-8", errors="replace")
    if data_type == "ipv4Address" and length == 4:
        return socket.inet_ntop(socket.AF_INET, data)
    if data_type == "ipv6Address" and length == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    if data_type == "macAddress" and length == 6:
        return data.hex(":")
    if data_type == "boolean" and length == 1:
        return {1: True, 2: False}.get(data[0], data[0])
    if data_type in _FLOAT_TYPES and length in (4, 8):
        return float(np.frombuffer(data, dtype=">f4" if length == 4 else ">f8")[0])
    if data_type in _NTP_TYPES and length == 8:
        return _ntp_to_ns(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big"), data_type)
    return bytes(data)  # octet arrays, lists, unknown elements and impossible lengths


# --- whole fixed-length columns --------------------------------------------------------------


def _unsigned_column(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """(n, length <= 8) big-endian bytes -> uint64."""
    padded = np.zeros((raw.shape[0], 8), dtype=np.uint8)
    padded[:, 8 - raw.shape[1] :] = raw
    return padded.view(">u8").reshape(-1).astype(np.uint64)


def _fixed_column(data_type: str, raw: npt.NDArray[np.uint8]) -> list[FieldValue] | None:
    """Vectorised conversion of a fixed column, or None when the type needs the per-value path."""
    length = raw.shape[1]
    if data_type in _UNSIGNED_TYPES and length <= 8:
        values: list[Any] = _unsigned_column(raw).tolist()
        return values
    if data_type in _SIGNED_TYPES and length <= 8:
        unsigned = _unsigned_column(raw)
        signed = unsigned.view(np.int64).copy()
        if length < 8:
            negative = (unsigned >> np.uint64(8 * length - 1)) & np.uint64(1) == 1
            signed[negative] -= np.int64(1) << np.int64(8 * length)
        values = signed.tolist()
        return values
    if data_type in _FLOAT_TYPES and length in (4, 8):
        floats = np.ascontiguousarray(raw).view(">f4" if length == 4 else ">f8").reshape(-1)
        return cast("list[FieldValue]", floats.astype(np.float64).tolist())
    if data_type == "ipv4Address" and length == 4:
        columns = raw.astype(np.uint32).T.tolist()
        return [f"{a}.{b}.{c}.{d}" for a, b, c, d in zip(*columns, strict=True)]
    if data_type in _NTP_TYPES and length == 8:
        words = np.ascontiguousarray(raw).view(">u4").reshape(-1, 2).astype(np.int64)
        fraction = words[:, 1]
        if data_type == "dateTimeMicroseconds":
            fraction = fraction & _MICROSECOND_FRACTION_MASK
        # fraction * 1e9 < 2**62: no overflow in int64.
        nanoseconds = (words[:, 0] - NTP_UNIX_OFFSET_S) * _NS_PER_S + ((fraction * _NS_PER_S) >> 32)
        values = nanoseconds.tolist()
        return values
    return None


def field_values(records: RecordSet, position: int) -> list[FieldValue]:
    """The values of the field at ``position``, one per record, typed by its element."""
    spec = records.template.fields[position]
    data_type = _data_type(lookup(spec.pen, spec.element_id))
    if position in records.variable:
        return [_convert(data_type, value) for value in records.variable[position]]
    if spec.length == 0 or len(records) == 0:
        return [_empty(data_type)] * len(records)
    raw = records.raw(position)
    converted = _fixed_column(data_type, raw)
    if converted is not None:
        return converted
    return [_convert(data_type, bytes(row)) for row in raw]


def record_dicts(
    records: RecordSet, *, names: Callable[[Element], str] = default_name
) -> list[dict[str, FieldValue]]:
    """One dict per record, fields in template order, keyed by ``names(element)``.

    Zero-length template fields and paddingOctets are skipped. When a template carries the same
    name twice, the first occurrence is kept (RFC 7011 §8: the first is the primary one).
    """
    columns: list[tuple[str, list[FieldValue]]] = []
    seen: set[str] = set()
    for position, spec in enumerate(records.template.fields):
        if spec.length == 0 or (spec.pen == 0 and spec.element_id == PADDING_ELEMENT_ID):
            continue
        name = names(lookup(spec.pen, spec.element_id))
        if name in seen:
            continue
        seen.add(name)
        columns.append((name, field_values(records, position)))
    return [
        {name: values[index] for name, values in columns} for index in range(len(records))
    ]
