"""JSON records of a real IPFIXcol (v1) or IPFIXcol2 as flowscope flows.

An existing IPFIXcol deployment (such as a Stream4Flow one) can feed ``flowscope spark``
directly: ``--input-format ipfixcol|ipfixcol2|auto`` reads the records those collectors print
(one JSON object per line) instead of flowscope's own stream. What the two tools print:

- IPFIXcol (v1) JSON storage plugin: ``{"@type": "ipfix.entry", "ipfix.octetDeltaCount": 3970,
  ...}``; keys are ``ipfix.<IANA name>``. Options (plugins/storage/json/README.md of
  CESNET/ipfixcol): ``timestamp`` formatted = ``"2015-08-03T14:10:23.012"`` in the local time of
  the collector's host (no zone; ``Translator::formatTimestamp`` uses ``localtime``) or ``unix``
  = milliseconds; ``tcpFlags`` formatted = ``".AP.SF"`` or raw; ``protocol`` formatted = ``"TCP"``
  or raw. Stream4Flow runs it with raw flags, unix timestamps and raw protocol.
- IPFIXcol2 JSON output plugin: ``{"@type":"ipfix.entry","iana:octetDeltaCount":...}``; keys are
  ``iana:<name>``, reverse biflow fields ``iana@reverse:<name>@reverse``; formatted timestamps are
  UTC with a ``Z``, ``unix`` ones milliseconds; ``detailedInfo`` adds ``ipfix:srcAddr``,
  ``ipfix:odid`` and ``ipfix:exportTime`` (seconds). flowscope prints the same format
  (``export.ipfixcol2``), whose protocol-name table is reused here.

Per micro-batch, Spark's ``from_json`` extracts every key below as text (a JSON number keeps its
digits, so 64-bit counters stay exact); the rest is vectorized pyarrow/numpy work on the driver,
one pass per column, the way ``sources.json_flows`` treats flowscope's own lines. The element
choice follows ``normalize``: the same candidates in the same order of preference, the sampling
rate a record announces multiplies its counters, ICMP type/code goes into the destination port,
and an RFC 5103 biflow with reverse counters becomes two flows.

Bad input is counted, never fatal: records dropped (``spark_input_dropped_total``, by ``kind``
and exporter: ``malformed_json``, ``unrecognized``, ``not_a_flow``, ``missing_address``,
``bad_address``, ``missing_time``, ``incomplete``) and values replaced by 0 in records that are
kept (``spark_input_bad_values_total``, by ``field``: a missing counter, an unparsable number,
flag string or protocol name).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from flowscope.collect import PathLike
from flowscope.decode.session import DecoderSession
from flowscope.errors import ConfigError
from flowscope.export.ipfixcol2 import PROTOCOL_NAMES  # the libfds / IPFIXcol2 protocol names
from flowscope.metrics import Counters
from flowscope.model import FLOW_COLUMNS, IPV4_MAPPED_PREFIX, ExporterTable, FlowBatch
from flowscope.normalize import Normalizer
from flowscope.pipeline import decode_files
from flowscope.spark.sources import JSON_SCHEMA, json_flows

__all__ = ["INPUT_FORMATS", "JsonInput", "file_flows", "ipfixcol_flows", "is_json_lines", "line_schema"]

log = logging.getLogger(__name__)

INPUT_FORMATS = ("auto", "flowscope", "ipfixcol", "ipfixcol2")
CORRUPT_COLUMN = "_corrupt_record"
FILE_EXPORTER = "0.0.0.0"  # as for IPFIX files: the records do not say who exported them

# Element names per flowscope role, in normalize's order of preference.
_ELEMENTS: dict[str, tuple[str, ...]] = {
    "src_v4": ("sourceIPv4Address",),
    "src_v6": ("sourceIPv6Address",),
    "dst_v4": ("destinationIPv4Address",),
    "dst_v6": ("destinationIPv6Address",),
    "src_port": ("sourceTransportPort", "udpSourcePort", "tcpSourcePort"),
    "dst_port": ("destinationTransportPort", "udpDestinationPort", "tcpDestinationPort"),
    "protocol": ("protocolIdentifier",),
    "tcp_flags": ("tcpControlBits",),
    "tos": ("ipClassOfService",),
    "packets": ("packetDeltaCount", "packetTotalCount", "postPacketDeltaCount", "initiatorPackets"),
    "bytes": ("octetDeltaCount", "octetTotalCount", "postOctetDeltaCount", "initiatorOctets"),
    "in_if": ("ingressInterface", "ingressPhysicalInterface"),
    "out_if": ("egressInterface", "egressPhysicalInterface"),
    "src_as": ("bgpSourceAsNumber",),
    "dst_as": ("bgpDestinationAsNumber",),
    "icmp_type_code": ("icmpTypeCodeIPv4", "icmpTypeCodeIPv6"),
    "icmp_type": ("icmpTypeIPv4", "icmpTypeIPv6"),
    "icmp_code": ("icmpCodeIPv4", "icmpCodeIPv6"),
    "start": ("flowStartMilliseconds", "flowStartSeconds", "flowStartMicroseconds", "flowStartNanoseconds"),
    "end": ("flowEndMilliseconds", "flowEndSeconds", "flowEndMicroseconds", "flowEndNanoseconds"),
    "duration_ms": ("flowDurationMilliseconds",),
    "sampling": ("samplingInterval", "samplerRandomInterval"),
}
_REVERSE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "rev_packets": ("packetDeltaCount", "packetTotalCount"),
    "rev_bytes": ("octetDeltaCount", "octetTotalCount"),
    "rev_tcp_flags": ("tcpControlBits",),
}
# Message details (IPFIXcol2 detailedInfo).
_SOURCE_ADDRESS, _DOMAIN, _EXPORT_TIME, _TYPE = "ipfix:srcAddr", "ipfix:odid", "ipfix:exportTime", "@type"

_PREFIX = {"ipfixcol": "ipfix.", "ipfixcol2": "iana:"}
_FLOWSCOPE_KEYS = tuple(part.split(" ")[0] for part in JSON_SCHEMA.split(", "))
_UINT64_MAX_TEXT = str((1 << 64) - 1)
_PROTOCOL_LOOKUP = pa.array([name.upper() for name in PROTOCOL_NAMES])
_FLAG_BITS = tuple(zip("UAPRSF", (0x20, 0x10, 0x08, 0x04, 0x02, 0x01), strict=True))
_ISO_TIME = (r"^(?P<date>\d{4}-\d{2}-\d{2})T(?P<hour>\d{1,2}):(?P<minute>\d{1,2}):(?P<second>\d{1,2})"
             r"(?:\.(?P<fraction>\d{1,9}))?(?P<zone>Z?)$")


def _keys(input_format: str) -> list[str]:
    """The JSON keys read for one input format (``auto``: all of them)."""
    tools = ("ipfixcol", "ipfixcol2") if input_format == "auto" else (input_format,)
    keys = [_TYPE, _SOURCE_ADDRESS, _DOMAIN, _EXPORT_TIME]
    for tool in tools:
        keys += [_PREFIX[tool] + name for names in _ELEMENTS.values() for name in names]
    if "ipfixcol2" in tools:
        keys += [f"iana@reverse:{name}@reverse" for names in _REVERSE_ELEMENTS.values() for name in names]
    if input_format == "auto":
        keys += list(_FLOWSCOPE_KEYS)
    return list(dict.fromkeys(keys))


def line_schema(input_format: str) -> str:
    """The ``from_json`` schema (DDL) of one line: every key as text, plus the corrupt-record column."""
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"--input-format: expected one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
    if input_format == "flowscope":
        return JSON_SCHEMA
    return ", ".join([*(f"`{key}` STRING" for key in _keys(input_format)), f"{CORRUPT_COLUMN} STRING"])


# -- value parsing (pyarrow kernels over a whole column) ----------------------------------------


def _column(table: pa.Table, names: Iterable[str]) -> pa.Array:
    """The first non-null value per row among ``names`` (missing keys count as null)."""
    present = [table[name].combine_chunks() for name in names if name in table.column_names]
    if not present:
        return pa.nulls(table.num_rows, pa.string())
    if len(present) == 1:
        return present[0]
    return pc.coalesce(*present)


def _role(table: pa.Table, role: str, reverse: bool = False) -> pa.Array:
    names = _REVERSE_ELEMENTS[role] if reverse else _ELEMENTS[role]
    keys: list[str] = []
    for name in names:
        keys += [f"iana@reverse:{name}@reverse"] if reverse else [f"ipfix.{name}", f"iana:{name}"]
    return _column(table, keys)


def _unsigned(values: pa.Array, maximum: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_],
                                                       npt.NDArray[np.bool_]]:
    """Decimal texts → (values, present, valid); invalid or absent values are 0."""
    present = pc.is_valid(values).to_numpy(zero_copy_only=False)
    digits = pc.fill_null(pc.match_substring_regex(values, r"^[0-9]{1,20}$"), False)
    # 20 digits may exceed 2**64 - 1: equal-length decimal texts compare like their numbers.
    too_big = pc.fill_null(pc.and_(pc.equal(pc.utf8_length(values), 20),
                                   pc.greater(values, _UINT64_MAX_TEXT)), False)
    digits = pc.and_(digits, pc.invert(too_big))
    numbers = pc.cast(pc.if_else(digits, values, "0"), pa.uint64()).to_numpy(zero_copy_only=False)
    valid = digits.to_numpy(zero_copy_only=False) & (numbers <= np.uint64(maximum))
    return np.where(valid, numbers, np.uint64(0)), present, valid


def _flags(values: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """TCP flags as a number (low 8 bits, as normalize keeps them) or as ``".AP.S."``."""
    numbers, present, valid = _unsigned(values, 0xFFFF)
    numbers &= np.uint64(0xFF)
    text = pc.fill_null(pc.match_substring_regex(values, r"^[.U][.A][.P][.R][.S][.F]$"), False)
    text_mask = text.to_numpy(zero_copy_only=False)
    if text_mask.any():
        bits = np.zeros(len(values), np.uint64)
        for position, (letter, bit) in enumerate(_FLAG_BITS):
            set_here = pc.fill_null(pc.equal(pc.utf8_slice_codeunits(values, position, position + 1), letter), False)
            bits |= set_here.to_numpy(zero_copy_only=False).astype(np.uint64) * np.uint64(bit)
        numbers = np.where(text_mask, bits, numbers)
    return numbers, present, valid | text_mask


def _protocols(values: pa.Array) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Protocol as a number or as its IPFIXcol name ("TCP", "IPv6-ICMP"; any letter case)."""
    numbers, present, valid = _unsigned(values, 255)
    index = pc.index_in(pc.utf8_upper(values), value_set=_PROTOCOL_LOOKUP)
    named = pc.is_valid(index).to_numpy(zero_copy_only=False) & ~valid
    if named.any():
        positions = pc.fill_null(index, 0).to_numpy(zero_copy_only=False).astype(np.uint64)
        numbers = np.where(named, positions, numbers)
    return numbers, present, valid | named


def _times_ms(values: pa.Array, timezone: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Timestamps as Unix milliseconds or ISO text (``Z``: UTC; no zone: ``timezone``) → UTC ms."""
    numbers, _, valid = _unsigned(values, (1 << 63) - 1)
    result = numbers.astype(np.int64)
    parts = pc.extract_regex(values, _ISO_TIME)
    matched = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    if not matched.any():
        return result, valid
    fields = {name: pc.struct_field(parts, name) for name in ("date", "hour", "minute", "second", "fraction", "zone")}
    days = pc.strptime(fields["date"], format="%Y-%m-%d", unit="s", error_is_null=True)
    day_ok = pc.is_valid(days).to_numpy(zero_copy_only=False)
    seconds = pc.fill_null(pc.cast(days, pa.int64()), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    for name, scale, limit in (("hour", 3600, 23), ("minute", 60, 59), ("second", 1, 60)):
        amount, _, ok = _unsigned(fields[name], limit)
        day_ok &= ok
        seconds = np.where(day_ok, seconds + amount.astype(np.int64) * scale, 0)
    # Fraction digits → milliseconds: pad to three digits, keep three (truncated, as the tools print).
    fraction = pc.utf8_slice_codeunits(pc.utf8_rpad(pc.fill_null(fields["fraction"], ""), 3, "0"), 0, 3)
    millis, _, _ = _unsigned(fraction, 999)
    parsed = seconds * 1000 + millis.astype(np.int64)
    local = matched & day_ok & ~pc.equal(pc.fill_null(fields["zone"], ""), "Z").to_numpy(zero_copy_only=False)
    if local.any() and timezone.upper() != "UTC":
        naive = pa.array(np.where(local, parsed, 0), pa.timestamp("ms"))
        zoned = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="earliest")
        parsed = np.where(local, pc.cast(zoned, pa.int64()).to_numpy(zero_copy_only=False), parsed)
    ok = matched & day_ok
    return np.where(ok, parsed, result), valid | ok


def _addresses(values: pa.Array) -> tuple[npt.NDArray, npt.NDArray[np.bool_]]:
    """Address texts → 16-byte ``S16`` (IPv4 mapped) and a validity mask; each distinct text parsed once."""
    encoded = pc.fill_null(values, "").dictionary_encode()
    texts = encoded.dictionary.to_pylist()
    packed = np.zeros(len(texts), "S16")
    good = np.zeros(len(texts), np.bool_)
    for position, text in enumerate(texts):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        packed[position] = (IPV4_MAPPED_PREFIX + address.packed) if address.version == 4 else address.packed
        good[position] = True
    rows = encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp)
    result: npt.NDArray = packed[rows]
    return result, good[rows]


# -- records → flows ------------------------------------------------------------------------------


def _exporter_keys(table: pa.Table) -> tuple[pa.Array, npt.NDArray[np.uint64]]:
    address = pc.fill_null(_column(table, [_SOURCE_ADDRESS]), FILE_EXPORTER)
    domain, _, _ = _unsigned(_column(table, [_DOMAIN]), 0xFFFFFFFF)
    return address, domain


def _count(counters: Counters, name: str, mask: npt.NDArray[np.bool_], exporters: pa.Array, **labels: str) -> None:
    """Adds the rows of ``mask`` to counter ``name``, by exporter address (one add per distinct one)."""
    if not mask.any():
        return
    for entry in pc.value_counts(pc.filter(exporters, pa.array(mask))).to_pylist():
        counters.add(name, int(entry["counts"]), exporter=str(entry["values"]), **labels)


def ipfixcol_flows(table: pa.Table, exporters: ExporterTable, counters: Counters, *, timezone: str = "UTC",
                   apply_sampling: bool = True) -> FlowBatch:
    """IPFIXcol / IPFIXcol2 records (text columns named by their JSON keys) as one FlowBatch.

    ``timezone`` is the zone of IPFIXcol v1's formatted timestamps (its host's local time);
    ``apply_sampling`` multiplies counters by the record's samplingInterval, as the collector does.
    """
    rows = table.num_rows
    address_of, domain = _exporter_keys(table)
    kind = _column(table, [_TYPE])
    is_record = pc.is_valid(kind).to_numpy(zero_copy_only=False)
    is_flow = pc.fill_null(pc.equal(kind, "ipfix.entry"), False).to_numpy(zero_copy_only=False)
    _count(counters, "spark_input_dropped_total", is_record & ~is_flow, address_of, kind="not_a_flow")

    src_text = pc.coalesce(_role(table, "src_v4"), _role(table, "src_v6"))
    dst_text = pc.coalesce(_role(table, "dst_v4"), _role(table, "dst_v6"))
    has_address = (pc.is_valid(src_text).to_numpy(zero_copy_only=False)
                   & pc.is_valid(dst_text).to_numpy(zero_copy_only=False))
    _count(counters, "spark_input_dropped_total", is_flow & ~has_address, address_of, kind="missing_address")
    src, src_ok = _addresses(src_text)
    dst, dst_ok = _addresses(dst_text)
    bad_address = is_flow & has_address & ~(src_ok & dst_ok)
    _count(counters, "spark_input_dropped_total", bad_address, address_of, kind="bad_address")

    start_text, end_text = _role(table, "start"), _role(table, "end")
    start, start_ok = _times_ms(start_text, timezone)
    end, end_ok = _times_ms(end_text, timezone)
    for name, text, ok in (("time_start", start_text, start_ok), ("time_end", end_text, end_ok)):
        unreadable = is_flow & pc.is_valid(text).to_numpy(zero_copy_only=False) & ~ok
        _count(counters, "spark_input_bad_values_total", unreadable, address_of, field=name)
    export_s, _, export_ok = _unsigned(_column(table, [_EXPORT_TIME]), (1 << 53))
    duration, _, duration_ok = _unsigned(_role(table, "duration_ms"), (1 << 53))
    end = np.where(~end_ok & start_ok & duration_ok, start + duration.astype(np.int64), end)
    end_ok = end_ok | (start_ok & duration_ok)
    start = np.where(~start_ok & end_ok & duration_ok, end - duration.astype(np.int64), start)
    start_ok = start_ok | (end_ok & duration_ok)
    export_ms = export_s.astype(np.int64) * 1000
    start = np.where(start_ok, start, np.where(end_ok, end, export_ms))
    end = np.where(end_ok, end, np.where(start_ok, start, export_ms))
    timed = start_ok | end_ok | export_ok
    keep = is_flow & has_address & src_ok & dst_ok
    _count(counters, "spark_input_dropped_total", keep & ~timed, address_of, kind="missing_time")
    keep &= timed

    columns: dict[str, npt.NDArray] = {
        "time_received": np.where(export_ok, export_ms, end), "time_start": start, "time_end": end,
        "src_addr": src, "dst_addr": dst,
    }
    limits = {"src_port": 0xFFFF, "dst_port": 0xFFFF, "tos": 0xFF, "in_if": 0xFFFFFFFF, "out_if": 0xFFFFFFFF,
              "src_as": 0xFFFFFFFF, "dst_as": 0xFFFFFFFF, "packets": (1 << 64) - 1, "bytes": (1 << 64) - 1}
    parsed: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]] = {
        name: _unsigned(_role(table, name), limit) for name, limit in limits.items()
    }
    parsed["protocol"] = _protocols(_role(table, "protocol"))
    parsed["tcp_flags"] = _flags(_role(table, "tcp_flags"))
    for name, (values, present, valid) in parsed.items():
        _count(counters, "spark_input_bad_values_total", keep & present & ~valid, address_of, field=name)
        if name in ("packets", "bytes"):  # a flow without a counter is counted, as it adds 0
            _count(counters, "spark_input_bad_values_total", keep & ~present, address_of, field=f"missing_{name}")
        columns[name] = values
    _icmp(columns, table)
    rate, _, rate_ok = _unsigned(_role(table, "sampling"), 0xFFFFFFFF)
    rate = np.maximum(np.where(rate_ok, rate, np.uint64(0)), np.uint64(1))
    columns["sampling_rate"] = rate
    multiplier = rate if apply_sampling else np.ones(rows, np.uint64)
    columns["packets"] = columns["packets"] * multiplier
    columns["bytes"] = columns["bytes"] * multiplier
    columns["exporter"] = _exporter_indices(address_of, domain, keep, exporters)

    batch = FlowBatch({name: columns[name][keep].astype(FLOW_COLUMNS[name]) for name in FLOW_COLUMNS})
    return _with_reverse(batch, table, keep, multiplier)


def _icmp(columns: dict[str, npt.NDArray], table: pa.Table) -> None:
    """ICMP type and code in the destination port (type * 256 + code), as normalize does."""
    icmp = (columns["protocol"] == 1) | (columns["protocol"] == 58)
    if not icmp.any():
        return
    type_code, _, type_code_ok = _unsigned(_role(table, "icmp_type_code"), 0xFFFF)
    icmp_type, _, type_ok = _unsigned(_role(table, "icmp_type"), 0xFF)
    icmp_code, _, _ = _unsigned(_role(table, "icmp_code"), 0xFF)
    value = np.where(type_code_ok, type_code, (icmp_type << np.uint64(8)) | icmp_code)
    use = icmp & (columns["dst_port"] == 0) & (type_code_ok | type_ok)
    columns["dst_port"] = np.where(use, value, columns["dst_port"])


def _exporter_indices(address_of: pa.Array, domain: npt.NDArray[np.uint64], keep: npt.NDArray[np.bool_],
                      exporters: ExporterTable) -> npt.NDArray[np.uint32]:
    """Exporter index per row (only kept rows are registered, in order of first appearance); one
    "address|domain" key per row, dictionary-encoded: each distinct exporter is looked up once."""
    result = np.zeros(len(address_of), np.uint32)
    if not keep.any():
        return result
    rows = pa.array(keep)
    keys = pc.binary_join_element_wise(pc.filter(address_of, rows), pc.cast(pa.array(domain[keep]), pa.string()), "|")
    encoded = keys.dictionary_encode()
    lookup = np.zeros(len(encoded.dictionary), np.uint32)
    for position, key in enumerate(encoded.dictionary.to_pylist()):
        address, _, number = key.rpartition("|")
        lookup[position] = exporters.index_of(address, int(number))
    result[keep] = lookup[encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp)]
    return result


def _with_reverse(batch: FlowBatch, table: pa.Table, keep: npt.NDArray[np.bool_],
                  multiplier: npt.NDArray[np.uint64]) -> FlowBatch:
    """RFC 5103 biflows (IPFIXcol2 ``iana@reverse:`` counters) → a forward and a reverse flow."""
    rev_packets, _, _ = _unsigned(_role(table, "rev_packets", reverse=True), (1 << 64) - 1)
    rev_bytes, _, _ = _unsigned(_role(table, "rev_bytes", reverse=True), (1 << 64) - 1)
    rev_packets, rev_bytes, multiplier = rev_packets[keep], rev_bytes[keep], multiplier[keep]
    present = (rev_packets > 0) | (rev_bytes > 0)
    if not present.any():
        return batch
    reverse = batch.take(present)
    swapped = dict(reverse.columns)
    for a, b in (("src_addr", "dst_addr"), ("src_port", "dst_port"), ("in_if", "out_if"), ("src_as", "dst_as")):
        swapped[a], swapped[b] = reverse.columns[b], reverse.columns[a]
    swapped["packets"] = rev_packets[present] * multiplier[present]
    swapped["bytes"] = rev_bytes[present] * multiplier[present]
    flags, flags_present, flags_ok = _flags(_role(table, "rev_tcp_flags", reverse=True))
    if (flags_present & flags_ok)[keep][present].any():
        swapped["tcp_flags"] = flags[keep][present].astype(np.uint8)
    return FlowBatch.concat([batch, FlowBatch(swapped)])


# -- the micro-batch step -------------------------------------------------------------------------


class JsonInput:
    """How the streaming job turns a micro-batch of JSON lines into a FlowBatch.

    ``input_format``: ``flowscope`` (``flowscope collect --json-server``), ``ipfixcol`` (v1),
    ``ipfixcol2``, or ``auto`` (each line by its keys: flowscope's, ``ipfix.`` or ``iana:``).
    """

    def __init__(self, input_format: str = "flowscope", *, timezone: str = "UTC", apply_sampling: bool = True,
                 counters: Counters | None = None) -> None:
        self.schema = line_schema(input_format)
        self.input_format = input_format
        self.timezone = timezone
        self.apply_sampling = apply_sampling
        self.counters = counters if counters is not None else Counters()

    def table(self, frame: Any) -> pa.Table:
        """Spark: the micro-batch's ``value`` lines parsed with ``line_schema`` (text columns)."""
        from pyspark.sql import functions as F  # noqa: N812, PLC0415  (pyspark only where Spark runs)

        options = {} if self.input_format == "flowscope" else {"columnNameOfCorruptRecord": CORRUPT_COLUMN}
        parsed = frame.select(F.from_json(F.col("value"), self.schema, options).alias("f")).select("f.*")
        table: pa.Table = parsed.toArrow()
        return table

    def flows(self, table: pa.Table, exporters: ExporterTable) -> FlowBatch:
        """The parsed lines as one FlowBatch; lines that are not flows are counted by kind."""
        if self.input_format == "flowscope":
            batch = json_flows(table, exporters)
            self._dropped(table.num_rows - len(batch), "incomplete")
            return batch
        if table.num_rows == 0:
            return _empty_batch()
        corrupt = pc.is_valid(table[CORRUPT_COLUMN]).to_numpy(zero_copy_only=False)
        own = np.zeros(table.num_rows, np.bool_)
        if "time_received" in table.column_names:  # auto: flowscope's own lines
            own = (pc.is_valid(table["time_received"]).to_numpy(zero_copy_only=False)
                   | pc.is_valid(table["src_addr"]).to_numpy(zero_copy_only=False)) & ~corrupt
        record = pc.is_valid(table[_TYPE]).to_numpy(zero_copy_only=False) & ~corrupt & ~own
        self._dropped(int(corrupt.sum()), "malformed_json")
        self._dropped(int((~corrupt & ~own & ~record).sum()), "unrecognized")
        batches = []
        if own.any():
            batches.append(self._flowscope_rows(table.filter(pa.array(own)), exporters))
        if record.any():
            batches.append(ipfixcol_flows(table.filter(pa.array(record)), exporters, self.counters,
                                          timezone=self.timezone, apply_sampling=self.apply_sampling))
        dropped = self.counters.total("spark_input_dropped_total")
        if dropped:
            log.debug("JSON input: %d records dropped so far", dropped)
        return FlowBatch.concat(batches) if batches else _empty_batch()

    def _flowscope_rows(self, table: pa.Table, exporters: ExporterTable) -> FlowBatch:
        """flowscope's own lines read as text (``auto``): typed as ``JSON_SCHEMA`` for ``json_flows``."""
        typed: dict[str, pa.Array] = {}
        for part in JSON_SCHEMA.split(", "):
            name, kind = part.split(" ", 1)
            column = table[name].combine_chunks()
            if kind == "STRING":
                typed[name] = column
                continue
            values, present, valid = _unsigned(column, (1 << 64) - 1)
            _count(self.counters, "spark_input_bad_values_total", present & ~valid,
                   pc.fill_null(table["exporter"].combine_chunks(), "?"), field=name)
            typed[name] = pa.array(values, mask=~present if name in ("packets",) else None)
        rows = pa.table(typed)
        batch = json_flows(rows, exporters)
        self._dropped(rows.num_rows - len(batch), "incomplete")
        return batch

    def _dropped(self, count: int, kind: str) -> None:
        if count > 0:
            self.counters.add("spark_input_dropped_total", count, kind=kind, exporter="?")
            log.warning("JSON input: %d lines dropped (%s)", count, kind)


# -- files for ``flowscope report --engine spark`` ------------------------------------------------


def is_json_lines(path: PathLike) -> bool:
    """Whether a file holds JSON lines (its first non-blank byte is ``{``) rather than a capture."""
    with open(path, "rb") as file:
        start = file.read(4096).lstrip()
    return start[:1] == b"{"


def file_flows(paths: Iterable[PathLike], session: DecoderSession, normalizer: Normalizer) -> Iterator[FlowBatch]:
    """The flows of report input files: captures decoded by flowscope, or JSON lines files
    (flowscope's, IPFIXcol's or IPFIXcol2's, each line by its keys) read by the running Spark
    session, one FlowBatch per file (a file's lines are gathered on the driver)."""
    paths = list(paths)
    kinds = [is_json_lines(path) for path in paths]
    if not any(kinds):
        yield from (batch for batch, _ in decode_files(paths, session, normalizer))
        return
    if not all(kinds):
        raise ConfigError("--input: JSON lines files and captures cannot be mixed in one report")
    from pyspark.sql import SparkSession  # noqa: PLC0415  (pyspark only where Spark runs)

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise ConfigError("JSON input files are read by Spark: start a Spark session first")
    json_input = JsonInput("auto", apply_sampling=normalizer.config.apply_sampling, counters=session.counters)
    for path in paths:
        yield json_input.flows(json_input.table(spark.read.text(str(path))), session.exporters)


def _empty_batch() -> FlowBatch:
    return FlowBatch({name: np.zeros(0, dtype) for name, dtype in FLOW_COLUMNS.items()})
