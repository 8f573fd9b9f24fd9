"""Export message encoders: FlowBatch-like numpy columns → NetFlow v5, NetFlow v9 and IPFIX datagrams.

Each encoder turns a whole batch of flows into one numpy structured array per record layout
(big-endian fields, filled column by column), serialises it with one ``tobytes`` and then cuts it
into datagrams of at most ``max_datagram_bytes``: a short Python loop per datagram, never per flow.

What each format carries:

* **NetFlow v5**: IPv4 only (IPv6 flows are skipped and counted), at most 30 records per
  datagram, 16-bit interfaces and AS numbers, 32-bit packet and byte counters (larger values
  saturate), times relative to sysUptime. The flow sequence counts flows.
* **NetFlow v9** (RFC 3954): an IPv4 template (256) and an IPv6 template (257) with 64-bit
  counters, 32-bit interfaces and AS numbers and sysUptime-relative FIRST/LAST_SWITCHED. The
  sequence counts export packets. The header count is template records + data records.
* **IPFIX** (RFC 7011): the same two layouts with flowStart/EndMilliseconds (absolute times).
  The sequence counts data records sent before the message, per observation domain.

Templates travel in datagrams of their own: one before the first data datagram an encoder
produces and again before the next data datagram once ``template_refresh_packets`` data
datagrams have been sent or ``template_refresh_ms`` of export time has passed (UDP gives a
collector that starts late no other way to learn them). Every data datagram holds one data set
of one template.

Time consistency (v5/v9): the header export time is never earlier than the last flow end of the
batch, and sysUptime is taken at exactly the exported time (for v9, whose header has whole
seconds only, at that whole second), so a collector recovers every flow time to the millisecond.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from flowscope.errors import ConfigError
from flowscope.model import FLOW_COLUMNS, IPV4_MAPPED_PREFIX, FlowBatch

__all__ = [
    "FORMATS",
    "Encoded",
    "Encoder",
    "EncoderConfig",
    "IpfixEncoder",
    "V5Encoder",
    "V9Encoder",
    "ipv4_mask",
    "make_encoder",
]

FORMATS = ("v5", "v9", "ipfix")
Columns = Mapping[str, npt.NDArray]

_UINT32 = 1 << 32
_MAX_IPFIX_MESSAGE = 65_535
DEFAULT_UPTIME_MS = 86_400_000  # a fresh encoder's exporter claims to have booted a day ago


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    max_datagram_bytes: int = 1400
    # v5: engine_type << 8 | engine_id (as the decoder reads it back); v9: source id; IPFIX:
    # observation domain id.
    domain: int = 0
    template_refresh_packets: int = 100  # v9/IPFIX: templates again after this many datagrams
    template_refresh_ms: int = 10_000  # ... or after this much export time
    boot_time_ms: int | None = None  # v5/v9 sysUptime origin; None: a day before the first export

    def __post_init__(self) -> None:
        if not 64 <= self.max_datagram_bytes <= _MAX_IPFIX_MESSAGE:
            raise ConfigError(f"max_datagram_bytes: {self.max_datagram_bytes} is not within 64-65535")
        if not 0 <= self.domain < _UINT32:
            raise ConfigError(f"domain: {self.domain} is not a 32-bit unsigned number")
        if self.template_refresh_packets < 1:
            raise ConfigError(f"template_refresh_packets: {self.template_refresh_packets} must be >= 1")
        if self.template_refresh_ms < 0:
            raise ConfigError(f"template_refresh_ms: {self.template_refresh_ms} must be >= 0")


@dataclass(slots=True)
class Encoded:
    """The datagrams of one ``encode`` call and how many flows each one carries."""

    datagrams: list[bytes] = field(default_factory=list)
    flows: list[int] = field(default_factory=list)  # data records per datagram
    skipped: int = 0  # flows the format cannot carry (IPv6 in NetFlow v5)

    @property
    def flow_count(self) -> int:
        return sum(self.flows)

    @property
    def byte_count(self) -> int:
        return sum(map(len, self.datagrams))


# ----------------------------------------------------------------------------- columns
def _column(flows: Columns, name: str, count: int) -> npt.NDArray:
    """A column of the batch, or zeros of its canonical dtype when the batch lacks it."""
    try:
        return np.asarray(flows[name])
    except KeyError:
        return np.zeros(count, FLOW_COLUMNS[name])


def _batch_length(flows: Columns) -> int:
    for name in ("src_addr", "dst_addr", "packets", "bytes", "time_end"):
        try:
            return len(flows[name])
        except KeyError:
            continue
    raise ValueError("flows: no src_addr, dst_addr, packets, bytes or time_end column")


def _address_bytes(column: npt.NDArray) -> npt.NDArray[np.uint8]:
    """An S16 address column as an (n, 16) uint8 array (numpy keeps all 16 bytes in storage)."""
    return np.ascontiguousarray(column, dtype="S16").view(np.uint8).reshape(-1, 16)


def ipv4_mask(src: npt.NDArray, dst: npt.NDArray) -> npt.NDArray[np.bool_]:
    """True where both addresses are IPv4-mapped: the flow fits an IPv4 template."""
    both: npt.NDArray[np.bool_] = _mapped(src) & _mapped(dst)
    return both


_PREFIX_VIEW = np.dtype([("zero", "<u8"), ("ffff", "<u4"), ("v4", "<u4")])
_PREFIX_FFFF = int(np.frombuffer(IPV4_MAPPED_PREFIX[8:12], "<u4")[0])


def _mapped(column: npt.NDArray) -> npt.NDArray[np.bool_]:
    parts = np.ascontiguousarray(column, dtype="S16").view(_PREFIX_VIEW)
    mapped: npt.NDArray[np.bool_] = (parts["zero"] == 0) & (parts["ffff"] == _PREFIX_FFFF)
    return mapped


def _saturate(values: npt.NDArray, dtype: np.dtype) -> npt.NDArray:
    """Unsigned values cast to a (narrower) unsigned dtype, clipped to its maximum."""
    limit = np.iinfo(dtype).max
    as_unsigned = values.astype(np.uint64, copy=False)
    return np.minimum(as_unsigned, np.uint64(limit)).astype(dtype)


def _uptime_relative(times_ms: npt.NDArray, boot_ms: int) -> npt.NDArray[np.uint32]:
    """Absolute ms → sysUptime ms (32 bits, wrapping like a real exporter's counter)."""
    relative = (times_ms.astype(np.int64) - np.int64(boot_ms)) % np.int64(_UINT32)
    return relative.astype(np.uint32)


# ----------------------------------------------------------------------------- layouts
@dataclass(frozen=True, slots=True)
class _Field:
    column: str  # FlowBatch column (times: "time_start"/"time_end")
    element_id: int
    length: int


class _Layout:
    """A template: its fields, the structured dtype of its records, the template record bytes."""

    def __init__(self, template_id: int, fields: tuple[_Field, ...]) -> None:
        self.template_id = template_id
        self.fields = fields
        formats: dict[int, str] = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}
        self.dtype = np.dtype(
            [
                (f.column, ("u1", (f.length,)) if f.column.endswith("_addr") else formats[f.length])
                for f in fields
            ]
        )
        self.record_length = self.dtype.itemsize
        specs = [value for f in fields for value in (f.element_id, f.length)]
        self.template_record = struct.pack(f"!HH{len(specs)}H", template_id, len(fields), *specs)

    def records(self, flows: Columns, index: npt.NDArray, times: Mapping[str, npt.NDArray]) -> npt.NDArray[np.uint8]:
        """The records of the flows at ``index`` (time columns already converted), as wire bytes."""
        out = np.zeros(len(index), self.dtype)
        for spec in self.fields:
            name = spec.column
            if name in times:
                out[name] = times[name][index]
            elif name.endswith("_addr"):
                raw = _address_bytes(np.asarray(flows[name])[index])
                out[name] = raw[:, 16 - spec.length :]
            else:
                values = np.asarray(flows[name])[index] if name in flows else np.zeros(len(index), np.uint64)
                out[name] = _saturate(values, out.dtype[name])
        wire: npt.NDArray[np.uint8] = out.view(np.uint8)
        return wire


_COMMON = (
    _Field("src_port", 7, 2),
    _Field("dst_port", 11, 2),
    _Field("protocol", 4, 1),
)


def _v9_fields(address_length: int) -> tuple[_Field, ...]:
    src, dst = (8, 12) if address_length == 4 else (27, 28)
    return (
        _Field("src_addr", src, address_length),
        _Field("dst_addr", dst, address_length),
        *_COMMON,
        _Field("tcp_flags", 6, 1),
        _Field("tos", 5, 1),
        _Field("packets", 2, 8),  # IN_PKTS
        _Field("bytes", 1, 8),  # IN_BYTES
        _Field("in_if", 10, 4),
        _Field("out_if", 14, 4),
        _Field("src_as", 16, 4),
        _Field("dst_as", 17, 4),
        _Field("time_start", 22, 4),  # FIRST_SWITCHED (sysUptime ms)
        _Field("time_end", 21, 4),  # LAST_SWITCHED
    )


def _ipfix_fields(address_length: int) -> tuple[_Field, ...]:
    src, dst = (8, 12) if address_length == 4 else (27, 28)
    return (
        _Field("src_addr", src, address_length),
        _Field("dst_addr", dst, address_length),
        *_COMMON,
        _Field("tcp_flags", 6, 2),  # tcpControlBits is 16 bits since RFC 7125
        _Field("tos", 5, 1),  # ipClassOfService
        _Field("packets", 2, 8),  # packetDeltaCount
        _Field("bytes", 1, 8),  # octetDeltaCount
        _Field("in_if", 10, 4),
        _Field("out_if", 14, 4),
        _Field("src_as", 16, 4),
        _Field("dst_as", 17, 4),
        _Field("time_start", 152, 8),  # flowStartMilliseconds
        _Field("time_end", 153, 8),  # flowEndMilliseconds
    )


IPV4_TEMPLATE_ID = 256
IPV6_TEMPLATE_ID = 257


# ----------------------------------------------------------------------------- encoders
class Encoder(ABC):
    """Stateful encoder of one exporter scope (sequence numbers, template refresh, boot time)."""

    version: ClassVar[int]
    name: ClassVar[str]

    def __init__(self, config: EncoderConfig | None = None) -> None:
        self.config = config or EncoderConfig()
        self._sequence = 0
        self._boot_ms = self.config.boot_time_ms
        self.datagrams_total = 0
        self.flows_total = 0
        self.skipped_total = 0

    @property
    def sequence(self) -> int:
        """The sequence number the next datagram will carry."""
        return self._sequence

    @property
    def boot_time_ms(self) -> int | None:
        return self._boot_ms

    def encode(self, flows: FlowBatch | Columns, export_time_ms: int) -> Encoded:
        """All flows of the batch as datagrams (in batch order within each address family).

        ``flows`` is a ``FlowBatch`` or any mapping of its column names to arrays; missing
        columns are sent as zeros (times: the export time).
        """
        if isinstance(flows, FlowBatch):
            flows = flows.columns
        count = _batch_length(flows)
        if count == 0:
            return Encoded()
        if self._boot_ms is None:
            self._boot_ms = export_time_ms - DEFAULT_UPTIME_MS
        encoded = self._encode(flows, count, export_time_ms)
        self.datagrams_total += len(encoded.datagrams)
        self.flows_total += encoded.flow_count
        self.skipped_total += encoded.skipped
        return encoded

    @abstractmethod
    def _encode(self, flows: Columns, count: int, export_time_ms: int) -> Encoded: ...


def _split_rows(whole: bytes, count: int, size: int) -> list[bytes]:
    """``count`` consecutive ``size``-byte datagrams of one buffer."""
    return [whole[i * size : (i + 1) * size] for i in range(count)]


def _blocks(total: int, per_datagram: int) -> list[tuple[int, int, int]]:
    """(first record, datagrams, records each): full datagrams, then the partial last one."""
    full, rest = divmod(total, per_datagram)
    blocks = [(0, full, per_datagram)] if full else []
    if rest:
        blocks.append((full * per_datagram, 1, rest))
    return blocks


class V5Encoder(Encoder):
    """NetFlow v5: 24-byte header + up to 30 records of 48 bytes, IPv4 only."""

    version = 5
    name = "v5"
    HEADER = (
        ("version", ">u2"), ("count", ">u2"), ("uptime", ">u4"), ("secs", ">u4"), ("nsecs", ">u4"),
        ("sequence", ">u4"), ("engine_type", "u1"), ("engine_id", "u1"), ("sampling", ">u2"),
    )
    HEADER_LENGTH = 24
    MAX_RECORDS = 30
    RECORD = np.dtype(
        [
            ("src_addr", "u1", (4,)), ("dst_addr", "u1", (4,)), ("nexthop", ">u4"),
            ("in_if", ">u2"), ("out_if", ">u2"), ("packets", ">u4"), ("bytes", ">u4"),
            ("time_start", ">u4"), ("time_end", ">u4"), ("src_port", ">u2"), ("dst_port", ">u2"),
            ("pad1", "u1"), ("tcp_flags", "u1"), ("protocol", "u1"), ("tos", "u1"),
            ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2"),
        ]
    )

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__(config)
        if self.config.domain > 0xFFFF:
            raise ConfigError(f"domain: {self.config.domain} does not fit v5 engine type/id (16 bits)")
        fit = (self.config.max_datagram_bytes - self.HEADER_LENGTH) // self.RECORD.itemsize
        self.records_per_datagram = min(self.MAX_RECORDS, fit)

    def _encode(self, flows: Columns, count: int, export_time_ms: int) -> Encoded:
        v4 = ipv4_mask(_column(flows, "src_addr", count), _column(flows, "dst_addr", count))
        index = np.flatnonzero(v4)
        result = Encoded(skipped=count - len(index))
        if len(index) == 0:
            return result
        assert self._boot_ms is not None
        ends = np.asarray(flows["time_end"])[index] if "time_end" in flows else None
        export_ms = export_time_ms if ends is None else max(export_time_ms, int(ends.max()))
        records = np.zeros(len(index), self.RECORD)
        for name in ("src_addr", "dst_addr"):
            records[name] = _address_bytes(np.asarray(flows[name])[index])[:, 12:]
        for name in ("in_if", "out_if", "packets", "bytes", "src_port", "dst_port", "tcp_flags", "protocol",
                     "tos", "src_as", "dst_as"):
            if name in flows:
                records[name] = _saturate(np.asarray(flows[name])[index], self.RECORD[name])
        for name in ("time_start", "time_end"):
            times = np.asarray(flows[name])[index] if name in flows else np.full(len(index), export_ms)
            records[name] = _uptime_relative(times, self._boot_ms)
        body = records.view(np.uint8)
        size = self.RECORD.itemsize
        for first, datagrams, per in _blocks(len(index), self.records_per_datagram):
            dtype = np.dtype([*self.HEADER, ("records", "u1", (per * size,))])
            out = np.zeros(datagrams, dtype)
            out["version"] = 5
            out["count"] = per
            out["uptime"] = (export_ms - self._boot_ms) % _UINT32
            out["secs"] = (export_ms // 1000) % _UINT32
            out["nsecs"] = (export_ms % 1000) * 1_000_000
            out["sequence"] = (self._sequence + per * np.arange(datagrams, dtype=np.int64)) % _UINT32
            out["engine_type"] = self.config.domain >> 8
            out["engine_id"] = self.config.domain & 0xFF
            out["records"] = body[first * size : (first + datagrams * per) * size].reshape(datagrams, per * size)
            result.datagrams.extend(_split_rows(out.tobytes(), datagrams, dtype.itemsize))
            result.flows.extend([per] * datagrams)
            self._sequence = (self._sequence + per * datagrams) % _UINT32
        return result


class _TemplateEncoder(Encoder):
    """What NetFlow v9 and IPFIX share: two templates, whole data sets per datagram, refresh.

    Every data datagram holds one data set of one template; the templates travel in datagrams of
    their own, inserted before the first data datagram and again when a refresh is due. The
    datagrams of a batch are built as one structured array per shape (full / last partial).
    """

    HEADER: ClassVar[tuple[tuple[str, str], ...]]
    HEADER_LENGTH: ClassVar[int]
    TEMPLATE_SET_ID: ClassVar[int]
    PAD_SETS: ClassVar[bool]
    layouts: tuple[_Layout, _Layout]

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__(config)
        self._since_template: int | None = None  # data datagrams since templates were last sent
        self._template_ms = 0
        records = b"".join(layout.template_record for layout in self.layouts)
        self._template_set = struct.pack("!HH", self.TEMPLATE_SET_ID, 4 + len(records)) + records
        limit = self.config.max_datagram_bytes
        self._per_datagram: list[int] = []
        for layout in self.layouts:
            fit = (limit - self.HEADER_LENGTH - 4) // layout.record_length
            while fit > 0 and self.HEADER_LENGTH + 4 + self._padded(fit * layout.record_length) > limit:
                fit -= 1
            self._per_datagram.append(fit)
        needed = self.HEADER_LENGTH + max(len(self._template_set),
                                          4 + self._padded(max(layout.record_length for layout in self.layouts)))
        if limit < needed or min(self._per_datagram) < 1:
            raise ConfigError(
                f"max_datagram_bytes: {limit} is too small for {self.name} (templates or one record need {needed})"
            )

    def _padded(self, length: int) -> int:
        return length + (-length % 4 if self.PAD_SETS else 0)

    @abstractmethod
    def _times(self, flows: Columns, count: int, export_ms: int) -> tuple[dict[str, npt.NDArray], int]:
        """Time columns in wire form and the export time (ms) the header will carry."""

    @abstractmethod
    def _sequences(
        self, counts: npt.NDArray[np.int64], positions: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Sequence numbers of the data datagrams and of the template datagrams (before them)."""

    @abstractmethod
    def _header_values(self, sequences: npt.NDArray[np.int64], records: int, length: int,
                       export_ms: int) -> dict[str, object]: ...

    @abstractmethod
    def _template_datagram(self, sequence: int, export_ms: int) -> bytes: ...

    def _template_positions(self, datagrams: int, export_ms: int) -> npt.NDArray[np.int64]:
        """Indexes of the data datagrams that get a template datagram in front of them."""
        since = self._since_template
        refresh = self.config.template_refresh_packets
        due = since is None or since >= refresh or export_ms - self._template_ms >= self.config.template_refresh_ms
        first = 0 if due or since is None else refresh - since
        positions = np.arange(first, datagrams, refresh, dtype=np.int64)
        if len(positions):
            self._since_template = datagrams - int(positions[-1])
            self._template_ms = export_ms
        else:
            assert since is not None
            self._since_template = since + datagrams
        return positions

    def _encode(self, flows: Columns, count: int, export_time_ms: int) -> Encoded:
        v4 = ipv4_mask(_column(flows, "src_addr", count), _column(flows, "dst_addr", count))
        times, export_ms = self._times(flows, count, export_time_ms)
        plan: list[tuple[_Layout, npt.NDArray[np.uint8], int, int, int]] = []
        for layout, per_datagram, mask in zip(self.layouts, self._per_datagram, (v4, ~v4), strict=True):
            index = np.flatnonzero(mask)
            if len(index):
                body = layout.records(flows, index, times)
                plan.extend((layout, body, *block) for block in _blocks(len(index), per_datagram))
        counts = np.concatenate([np.full(datagrams, per, np.int64) for _, _, _, datagrams, per in plan])
        positions = self._template_positions(len(counts), export_ms)
        data_sequences, template_sequences = self._sequences(counts, positions)
        datagrams_out: list[bytes] = []
        done = 0
        for layout, body, first, datagrams, per in plan:
            size = layout.record_length
            set_length = 4 + self._padded(per * size)
            fields = [*self.HEADER, ("set_id", ">u2"), ("set_length", ">u2"), ("records", "u1", (per * size,))]
            if set_length - 4 > per * size:
                fields.append(("padding", "u1", (set_length - 4 - per * size,)))
            dtype = np.dtype(fields)
            out = np.zeros(datagrams, dtype)
            for name, value in self._header_values(data_sequences[done : done + datagrams], per, dtype.itemsize,
                                                   export_ms).items():
                out[name] = value
            out["set_id"] = layout.template_id
            out["set_length"] = set_length
            out["records"] = body[first * size : (first + datagrams * per) * size].reshape(datagrams, per * size)
            datagrams_out.extend(_split_rows(out.tobytes(), datagrams, dtype.itemsize))
            done += datagrams
        result = Encoded()
        flows_out = counts.tolist()
        previous = 0
        for position, sequence in zip(positions.tolist(), template_sequences.tolist(), strict=True):
            result.datagrams.extend(datagrams_out[previous:position])
            result.flows.extend(flows_out[previous:position])
            result.datagrams.append(self._template_datagram(sequence, export_ms))
            result.flows.append(0)
            previous = position
        result.datagrams.extend(datagrams_out[previous:])
        result.flows.extend(flows_out[previous:])
        return result


class V9Encoder(_TemplateEncoder):
    """NetFlow v9 (RFC 3954): 20-byte header, template flowset 0, sets padded to 32 bits."""

    version = 9
    name = "v9"
    HEADER = (("version", ">u2"), ("count", ">u2"), ("uptime", ">u4"), ("secs", ">u4"), ("sequence", ">u4"),
              ("source_id", ">u4"))
    HEADER_LENGTH = 20
    TEMPLATE_SET_ID = 0
    PAD_SETS = True
    layouts = (_Layout(IPV4_TEMPLATE_ID, _v9_fields(4)), _Layout(IPV6_TEMPLATE_ID, _v9_fields(16)))

    def _times(self, flows: Columns, count: int, export_ms: int) -> tuple[dict[str, npt.NDArray], int]:
        assert self._boot_ms is not None
        latest = int(np.asarray(flows["time_end"]).max()) if "time_end" in flows else export_ms
        # Whole seconds in the header, never before the last flow end; uptime at that second.
        header_ms = max(export_ms // 1000, math.ceil(latest / 1000)) * 1000
        times = {
            name: _uptime_relative(
                np.asarray(flows[name]) if name in flows else np.full(count, header_ms, np.int64), self._boot_ms
            )
            for name in ("time_start", "time_end")
        }
        return times, header_ms

    def _sequences(
        self, counts: npt.NDArray[np.int64], positions: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        # Packets: every datagram, template datagrams included, takes the next number.
        index = np.arange(len(counts), dtype=np.int64)
        data = self._sequence + index + np.searchsorted(positions, index, side="right")
        templates = self._sequence + positions + np.arange(len(positions), dtype=np.int64)
        self._sequence = (self._sequence + len(counts) + len(positions)) % _UINT32
        return data % _UINT32, templates % _UINT32

    def _uptime(self, export_ms: int) -> int:
        assert self._boot_ms is not None
        return (export_ms - self._boot_ms) % _UINT32

    def _header_values(self, sequences: npt.NDArray[np.int64], records: int, length: int,
                       export_ms: int) -> dict[str, object]:
        return {"version": 9, "count": records, "uptime": self._uptime(export_ms),
                "secs": (export_ms // 1000) % _UINT32, "sequence": sequences, "source_id": self.config.domain}

    def _template_datagram(self, sequence: int, export_ms: int) -> bytes:
        header = struct.pack("!HHIIII", 9, len(self.layouts), self._uptime(export_ms), (export_ms // 1000) % _UINT32,
                             sequence, self.config.domain)
        return header + self._template_set


class IpfixEncoder(_TemplateEncoder):
    """IPFIX (RFC 7011): 16-byte header, template set 2, absolute millisecond times."""

    version = 10
    name = "ipfix"
    HEADER = (("version", ">u2"), ("length", ">u2"), ("export_time", ">u4"), ("sequence", ">u4"),
              ("domain", ">u4"))
    HEADER_LENGTH = 16
    TEMPLATE_SET_ID = 2
    PAD_SETS = False
    layouts = (_Layout(IPV4_TEMPLATE_ID, _ipfix_fields(4)), _Layout(IPV6_TEMPLATE_ID, _ipfix_fields(16)))

    def _times(self, flows: Columns, count: int, export_ms: int) -> tuple[dict[str, npt.NDArray], int]:
        times = {
            name: np.maximum(np.asarray(flows[name]).astype(np.int64), 0).astype(np.uint64)
            if name in flows
            else np.full(count, export_ms, np.uint64)
            for name in ("time_start", "time_end")
        }
        return times, export_ms

    def _sequences(
        self, counts: npt.NDArray[np.int64], positions: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        # Data records sent before each message; template-only messages carry none.
        before = self._sequence + np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)])
        self._sequence = int(before[-1]) % _UINT32
        return before[:-1] % _UINT32, before[positions] % _UINT32

    def _header_values(self, sequences: npt.NDArray[np.int64], records: int, length: int,
                       export_ms: int) -> dict[str, object]:
        return {"version": 10, "length": length, "export_time": (export_ms // 1000) % _UINT32,
                "sequence": sequences, "domain": self.config.domain}

    def _template_datagram(self, sequence: int, export_ms: int) -> bytes:
        length = self.HEADER_LENGTH + len(self._template_set)
        header = struct.pack("!HHIII", 10, length, (export_ms // 1000) % _UINT32, sequence, self.config.domain)
        return header + self._template_set


_ENCODERS: dict[str, type[Encoder]] = {"v5": V5Encoder, "v9": V9Encoder, "ipfix": IpfixEncoder}


def make_encoder(fmt: str, config: EncoderConfig | None = None) -> Encoder:
    """An encoder by format name: ``v5``, ``v9`` or ``ipfix``."""
    try:
        cls = _ENCODERS[fmt]
    except KeyError:
        raise ConfigError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}") from None
    return cls(config)
