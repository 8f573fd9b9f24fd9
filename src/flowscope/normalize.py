"""normalize: record sets of any version → one ``FlowBatch`` of canonical columns.

Each template is planned once (which field feeds which column, which time encoding it uses) and
every record set is then converted with a handful of numpy operations. Times become absolute UTC
milliseconds; packets and bytes are multiplied by the sampling rate the exporter announced; IPv4
addresses become IPv4-mapped IPv6; RFC 5103 biflow records become two unidirectional flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from flowscope.decode import v5kernel
from flowscope.decode.context import RecordColumns
from flowscope.decode.options import (
    SAMPLER_RANDOM_INTERVAL,
    SAMPLING_INTERVAL,
    SAMPLING_PACKET_INTERVAL,
    SAMPLING_PACKET_SPACE,
    SAMPLING_POPULATION,
    SAMPLING_SIZE,
    ExporterOptions,
    OptionsState,
    sampler_ids,
    sampling_rates,
)
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.decode.templates import Template, field_name, layout_number
from flowscope.metrics import Counters
from flowscope.model import FLOW_COLUMNS, Datagram, FlowBatch

REVERSE_PEN = 29305
NTP_UNIX_OFFSET_S = 2_208_988_800
_UPTIME_MODULO = 1 << 32


@dataclass(frozen=True, slots=True)
class NormalizeConfig:
    apply_sampling: bool = True  # multiply packets/bytes by the announced 1-in-N rate
    split_biflows: bool = True  # RFC 5103 records → forward flow + reverse flow
    preserve_order: bool = True  # rows in arrival order (else grouped by template)


# Candidate element ids per column, in order of preference (IANA ids, pen 0).
_CANDIDATES: dict[str, tuple[int, ...]] = {
    "src_v4": (8,),
    "dst_v4": (12,),
    "src_v6": (27,),
    "dst_v6": (28,),
    "src_port": (7, 180, 182),  # sourceTransportPort, udp/tcpSourcePort
    "dst_port": (11, 181, 183),
    "protocol": (4,),
    "tcp_flags": (6,),
    "tos": (5,),
    "packets": (2, 86, 24, 298),  # packetDelta, packetTotal, postPacketDelta, initiatorPackets
    "bytes": (1, 85, 23, 231),  # octetDelta, octetTotal, postOctetDelta, initiatorOctets
    "in_if": (10, 252),
    "out_if": (14, 253),
    "src_as": (16,),
    "dst_as": (17,),
    "icmp_type_code": (32, 139),
    "icmp_type": (176, 178),
    "icmp_code": (177, 179),
    "start_ms": (152,),
    "end_ms": (153,),
    "start_s": (150,),
    "end_s": (151,),
    "start_us": (154,),
    "end_us": (155,),
    "start_ns": (156,),
    "end_ns": (157,),
    "start_delta_us": (158,),
    "end_delta_us": (159,),
    "start_uptime": (22,),
    "end_uptime": (21,),
    "system_init_ms": (160,),
    "duration_ms": (161,),
    "duration_us": (162,),
}
_REVERSE_CANDIDATES = {"rev_packets": (2, 86), "rev_bytes": (1, 85), "rev_tcp_flags": (6,)}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a template feeds, worked out once per template: field positions by column name, and
    the integer columns as (column, field name, dtype, position if the field is not a plain
    integer) for those present and (column, dtype) for those absent."""

    positions: dict[str, int]
    integers: tuple[tuple[str, str, type, int | None], ...] = ()
    absent: tuple[tuple[str, type], ...] = ()
    own_sampling: bool = False  # a field ``options.sampling_rates`` reads
    layout: int = 0  # equal for templates of equal fields (comparing field lists costs ~4 µs)
    # per side ("start", "end"): the time field names in the order they are tried, present ones only
    times: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def get(self, name: str) -> int | None:
        return self.positions.get(name)


_TIME_KINDS = ("ms", "s", "us", "ns", "delta_us", "uptime")  # the order ``Normalizer._times`` tries them

# The integer columns, each cast straight from its field (high bits dropped, as ``astype`` does:
# tcpControlBits may be 2 bytes, its low 8 bits are the flags).
_INTEGER_COLUMNS: tuple[tuple[str, type], ...] = (
    ("src_port", np.uint16), ("dst_port", np.uint16), ("protocol", np.uint8), ("tcp_flags", np.uint8),
    ("tos", np.uint8), ("in_if", np.uint32), ("out_if", np.uint32), ("src_as", np.uint32), ("dst_as", np.uint32),
)


def _plan(template: Template) -> _Plan:
    plan = template.plans.get("normalize")
    if isinstance(plan, _Plan):
        return plan
    positions: dict[str, int] = {}
    for name, candidates in _CANDIDATES.items():
        for element in candidates:
            position = template.field_position(0, element)
            if position is not None and template.fields[position].length <= 16:
                positions[name] = position
                break
    for name, candidates in _REVERSE_CANDIDATES.items():
        for element in candidates:
            position = template.field_position(REVERSE_PEN, element)
            if position is not None and template.fields[position].length <= 16:
                positions[name] = position
                break
    integers: list[tuple[str, str, type, int | None]] = []
    absent: list[tuple[str, type]] = []
    for column, dtype in _INTEGER_COLUMNS:
        position = positions.get(column)
        if position is None or position not in template.fixed_index:
            absent.append((column, dtype))
            continue
        name = field_name(position)
        plain = template.fixed_dtype[name].ndim == 0
        integers.append((column, name, dtype, None if plain else position))

    def has(*elements: int) -> bool:
        return all(template.field_position(0, e) is not None for e in elements)

    own_sampling = (has(SAMPLING_INTERVAL) or has(SAMPLER_RANDOM_INTERVAL)
                    or has(SAMPLING_PACKET_INTERVAL, SAMPLING_PACKET_SPACE) or has(SAMPLING_SIZE, SAMPLING_POPULATION))
    times = tuple(tuple(f"{side}_{kind}" for kind in _TIME_KINDS
                        if positions.get(f"{side}_{kind}") in template.fixed_index) for side in ("start", "end"))
    plan = _Plan(positions, tuple(integers), tuple(absent), own_sampling, layout_number(template),
                 (times[0], times[1]))
    template.plans["normalize"] = plan
    return plan


class _Fields:
    """The planned fields of one record set, read as unsigned integers by column name."""

    def __init__(self, records: RecordSet, plan: _Plan) -> None:
        self.records = records
        self.plan = plan

    def get(self, name: str) -> npt.NDArray[np.uint64] | None:
        position = self.plan.get(name)
        if position is None or not self.records.has(position):
            return None
        return self.records.unsigned(position)

    def narrow(self, name: str) -> np.ndarray | None:
        """The field's own column if it is an unsigned integer of at most 4 bytes (its values then
        fit int64 arithmetic as they are), else None."""
        position = self.plan.get(name)
        if position is None or not self.records.has(position):
            return None
        column = self.records.fixed[field_name(position)]
        return column if column.ndim == 1 and column.dtype.itemsize <= 4 else None

    def int64(self, name: str) -> npt.NDArray[np.int64] | None:
        """The field as int64, straight from its big-endian column (as ``unsigned`` then int64)."""
        position = self.plan.get(name)
        if position is None or not self.records.has(position):
            return None
        column = self.records.fixed[field_name(position)]
        values: npt.NDArray[np.int64] = (column if column.ndim == 1 else self.records.unsigned(position)).astype(
            np.int64)
        return values

    def has(self, name: str) -> bool:
        return name in self.plan.positions


def _mergeable(records: RecordSet) -> tuple[object, ...] | None:
    """What record sets must share to be converted as one (None: convert this one alone)."""
    template = records.template
    if records.variable or template.variable_index:
        return None
    plan = _plan(template)
    positions = plan.positions
    if "rev_packets" in positions or "rev_bytes" in positions:
        return None  # split biflows append their reverse halves per record set
    if records.version == 10 and ("start_uptime" in positions or "end_uptime" in positions):
        return None  # times from each exporter's own system init time (and counted per exporter)
    return (records.version, plan.layout, records.header_sampling_interval is None)


def _mergeable_runs(record_sets: list[RecordSet]) -> list[list[RecordSet]]:
    """Data record sets in order, adjacent ones of one layout together (the row order stays)."""
    runs: list[list[RecordSet]] = []
    last: tuple[object, ...] | None = None
    for records in record_sets:
        if records.is_options or len(records) == 0:
            continue
        key = _mergeable(records)
        if key is not None and key == last:
            runs[-1].append(records)
        else:
            runs.append([records])
        last = key
    return runs


def _shared_rows(run: list[RecordSet]) -> tuple[np.ndarray, RecordColumns, slice] | None:
    """The arrays and rows that hold a whole run, when the batch walk made its record sets end to
    end in shared arrays (then joining them is one slice per column, no copy)."""
    first = run[0].shared
    if first is None:
        return None
    position = first.start
    for records in run:
        shared = records.shared
        if shared is None or shared.fixed is not first.fixed or shared.start != position:
            return None
        position = shared.stop
    return first.fixed, first.columns, slice(first.start, position)


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """1-D arrays of one dtype end to end; no copy when they already are (the decoder's batch
    walk makes the record sets of one batch as slices of shared arrays)."""
    first = arrays[0]
    base = first.base
    itemsize = first.dtype.itemsize
    start = address = first.ctypes.data
    adjacent = isinstance(base, np.ndarray) and base.flags.c_contiguous
    for array in arrays:
        if not adjacent or array.base is not base or array.ctypes.data != address or not array.flags.c_contiguous:
            # into the same dtype: concatenate alone would make structured fields native-endian
            out = np.empty(sum(len(a) for a in arrays), first.dtype)
            return np.concatenate(arrays, out=out)
        address += len(array) * itemsize
    assert isinstance(base, np.ndarray)
    return np.ndarray(((address - start) // itemsize,), first.dtype, buffer=base,
                      offset=start - base.ctypes.data)


_MAPPED_WORD = np.frombuffer(b"\x00\x00\xff\xff", np.uint32)[0]  # bytes 8-11 of ::ffff:a.b.c.d


def _mapped(column: np.ndarray) -> npt.NDArray:
    """A 4-byte address field (big-endian, as on the wire) → 16-byte IPv4-mapped addresses: as
    ``model.ipv4_to_mapped`` but writing 4-byte words (the field's bytes are copied unchanged).
    Zeroed memory and two column writes: writing the two zero words as a 2-wide block costs
    three times more."""
    words = np.zeros((len(column), 4), np.uint32)
    words[:, 2] = _MAPPED_WORD
    words[:, 3] = column.astype(">u4", copy=False).view(np.uint32)  # the wire bytes, not swapped
    return words.view("S16").reshape(-1)


def _ntp_to_ms(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    seconds = (values >> np.uint64(32)).astype(np.int64) - NTP_UNIX_OFFSET_S
    fraction_ms = ((values & np.uint64(0xFFFFFFFF)) * np.uint64(1000)) >> np.uint64(32)
    return seconds * 1000 + fraction_ms.astype(np.int64)


class Normalizer:
    """Turns decoded record sets into FlowBatches (no state of its own but the options it reads)."""

    def __init__(self, config: NormalizeConfig | None, options: OptionsState, counters: Counters | None = None):
        self.config = config or NormalizeConfig()
        self.options = options
        self.counters = counters if counters is not None else Counters()

    def normalize(self, record_sets: list[RecordSet]) -> FlowBatch:
        parts: list[FlowBatch] = []
        orders: list[npt.NDArray[np.int64]] = []
        for run in _mergeable_runs(record_sets):
            batch, order = self._convert(run[0]) if len(run) == 1 else self._convert_merged(run)
            parts.append(batch)
            orders.append(order)
        if not parts:
            return FlowBatch.empty()
        batch = FlowBatch.concat(parts)
        if self.config.preserve_order:
            # Several record sets interleave, and a split biflow appends its reverse halves at the
            # end of its part: sort whenever the rows are not already in arrival order.
            order = np.concatenate(orders)
            if len(order) > 1 and bool(np.any(order[1:] < order[:-1])):
                batch = batch.take(np.argsort(order, kind="stable"))
        return batch

    # ---------------------------------------------------------------- columns
    def _convert_merged(self, run: list[RecordSet]) -> tuple[FlowBatch, npt.NDArray[np.int64]]:
        """Record sets of one layout (several exporters of one device type) converted together:
        every column is computed row by row, so this is their conversions one after the other,
        with the fixed cost of the numpy calls paid once."""
        first = run[0]
        lengths = [len(r) for r in run]
        shared = _shared_rows(run)
        if shared is not None:
            fixed, columns, rows = shared
            sampling = None if first.header_sampling_interval is None else columns.header_sampling_interval[rows]
            merged = RecordSet(
                template=first.template, exporter=first.exporter, domain=first.domain, version=first.version,
                fixed=fixed[rows], variable={}, export_time_ms=columns.export_time_ms[rows],
                sys_uptime_ms=columns.sys_uptime_ms[rows], time_received_ms=columns.time_received_ms[rows],
                order=columns.order[rows], header_sampling_interval=sampling, exporter_index=first.exporter_index,
                options=first.options,
            )
        else:
            sampling = None
            if first.header_sampling_interval is not None:
                sampling = _join([cast(np.ndarray, r.header_sampling_interval) for r in run])
            merged = RecordSet(
                template=first.template, exporter=first.exporter, domain=first.domain, version=first.version,
                fixed=_join([r.fixed for r in run]), variable={},
                export_time_ms=_join([r.export_time_ms for r in run]),
                sys_uptime_ms=_join([r.sys_uptime_ms for r in run]),
                time_received_ms=_join([r.time_received_ms for r in run]),
                order=_join([r.order for r in run]),
                header_sampling_interval=sampling, exporter_index=first.exporter_index, options=first.options,
            )
        exporter = np.repeat(np.array([r.exporter_index for r in run], np.uint32), lengths)
        if all(self._options_of(r) is None for r in run):
            rate = self._sampling(merged)  # no options anywhere: the rate depends on the row alone
        else:
            rates = [self._sampling(r) for r in run]
            rate = None if all(r is None for r in rates) else np.concatenate(
                [np.ones(n, np.uint64) if r is None else r for r, n in zip(rates, lengths, strict=True)])
        return self._convert(merged, exporter, rate, rate_known=True)

    def _convert(self, records: RecordSet, exporter: npt.NDArray[np.uint32] | None = None,
                 rate: npt.NDArray[np.uint64] | None = None,
                 rate_known: bool = False) -> tuple[FlowBatch, npt.NDArray[np.int64]]:
        plan = _plan(records.template)
        fields = _Fields(records, plan)
        count = len(records)
        fixed = records.fixed
        columns: dict[str, npt.NDArray] = {
            "time_received": records.time_received_ms,
            "exporter": np.full(count, records.exporter_index, np.uint32) if exporter is None else exporter,
            "src_addr": self._address(records, plan, "src"),
            "dst_addr": self._address(records, plan, "dst"),
        }
        for column, name, dtype, position in plan.integers:
            columns[column] = (fixed[name] if position is None else records.unsigned(position)).astype(dtype)
        for column, dtype in plan.absent:
            columns[column] = np.zeros(count, dtype)
        self._icmp(columns, fields)
        columns["time_start"], columns["time_end"] = self._times(records, fields)
        if not rate_known:
            rate = self._sampling(records)
        columns["sampling_rate"] = np.ones(count, np.uint32) if rate is None else rate.astype(np.uint32)
        packets = fields.get("packets")
        octets = fields.get("bytes")
        multiplier = rate if self.config.apply_sampling else None  # None: times 1
        packets = np.zeros(count, np.uint64) if packets is None else packets
        octets = np.zeros(count, np.uint64) if octets is None else octets
        columns["packets"] = packets if multiplier is None else packets * multiplier
        columns["bytes"] = octets if multiplier is None else octets * multiplier
        batch = FlowBatch({name: columns[name] for name in FLOW_COLUMNS})
        reverse = self.config.split_biflows and (fields.has("rev_packets") or fields.has("rev_bytes"))
        if not (reverse or self.config.preserve_order):
            return batch, records.order  # the order is not used
        # Orders are doubled so that a biflow's reverse half sorts right after its forward half.
        order = records.order * 2
        if reverse:
            return self._with_reverse(batch, order, fields, multiplier)
        return batch, order

    @staticmethod
    def _address(records: RecordSet, plan: _Plan, side: str) -> npt.NDArray:
        v4 = plan.get(f"{side}_v4")
        v6 = plan.get(f"{side}_v6")
        if v4 is not None and records.template.fields[v4].length == 4:
            return _mapped(records.fixed[field_name(v4)])
        if v6 is not None and records.template.fields[v6].length == 16:
            return np.ascontiguousarray(records.raw(v6)).view("S16").reshape(-1)
        return np.zeros(len(records), "S16")

    @staticmethod
    def _icmp(columns: dict[str, npt.NDArray], fields: _Fields) -> None:
        """ICMP type and code go into the destination port (type * 256 + code), as nfdump does."""
        get = fields.get
        if not (fields.has("icmp_type_code") or fields.has("icmp_type")):
            return  # nothing to put there (the check below costs ~5 µs)
        protocol = columns["protocol"]
        icmp = (protocol == 1) | (protocol == 58)  # ICMP, ICMPv6 (np.isin costs ~30 µs per call)
        if not icmp.any():
            return
        type_code = get("icmp_type_code")
        if type_code is None:
            icmp_type, icmp_code = get("icmp_type"), get("icmp_code")
            if icmp_type is None:
                return
            type_code = (icmp_type << np.uint64(8)) | (icmp_code if icmp_code is not None else np.uint64(0))
        use = icmp & (columns["dst_port"] == 0)
        columns["dst_port"] = np.where(use, type_code.astype(np.uint16), columns["dst_port"])

    def _times(self, records: RecordSet, fields: _Fields) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        get = fields.get
        export_ms = records.export_time_ms

        def absolute(side: str, present: tuple[str, ...]) -> npt.NDArray[np.int64] | None:
            """From the first time field of the side the template has (in ``_TIME_KINDS`` order)."""
            if not present:
                return None
            name = present[0]
            kind = name[len(side) + 1 :]
            if kind == "uptime":
                if records.version != 10 and (narrow := fields.narrow(name)) is not None:
                    return self._from_uptime(records, narrow, fields)  # read from the record in the subtraction
                uptime = fields.int64(name)
                assert uptime is not None  # present: the template has it
                return self._from_uptime(records, uptime, fields)
            value = get(name)
            assert value is not None
            if kind == "ms":
                return value.astype(np.int64)
            if kind == "s":
                return value.astype(np.int64) * 1000
            if kind in ("us", "ns"):
                return _ntp_to_ms(value)
            # delta_us: round the delta up so the start is the floor of the exact time, as elsewhere
            return export_ms - ((value + np.uint64(999)) // np.uint64(1000)).astype(np.int64)

        start = absolute("start", fields.plan.times[0])
        end = absolute("end", fields.plan.times[1])
        duration = get("duration_ms")
        if duration is None and (micro := get("duration_us")) is not None:
            duration = micro // np.uint64(1000)
        if duration is not None:
            if start is not None and end is None:
                end = start + duration.astype(np.int64)
            elif end is not None and start is None:
                start = end - duration.astype(np.int64)
        if start is None and end is None:
            return export_ms.copy(), export_ms.copy()
        if start is None:
            assert end is not None
            start = end
        if end is None:
            end = start
        return start, end

    def _from_uptime(
        self, records: RecordSet, value: np.ndarray, fields: _Fields
    ) -> npt.NDArray[np.int64]:
        """sysUpTime-relative milliseconds → UTC ms.

        NetFlow v5/v9: relative to the header's uptime and export time; the 32-bit counter wraps
        every 49.7 days, so the difference is taken modulo 2**32. IPFIX: relative to
        systemInitTimeMilliseconds, from the record or from options data.
        """
        if records.version == 10:
            init = fields.get("system_init_ms")
            if init is not None:
                since_init: npt.NDArray[np.int64] = init.astype(np.int64) + value
                return since_init
            state = self._options_of(records)
            if state is not None and state.system_init_ms is not None:
                absolute: npt.NDArray[np.int64] = value + state.system_init_ms  # value: int64 here
                return absolute
            self.counters.add("normalize_time_unknown_total", len(records), exporter=records.exporter)
            return records.export_time_ms.copy()
        # & (2**32 - 1) is % 2**32 for int64 (non-negative result), and cheaper; in place: one
        # array instead of three
        behind: npt.NDArray[np.int64] = np.subtract(records.sys_uptime_ms, value)
        np.bitwise_and(behind, _UPTIME_MODULO - 1, out=behind)
        np.subtract(records.export_time_ms, behind, out=behind)
        return behind

    def _options_of(self, records: RecordSet) -> ExporterOptions | None:
        """What options data said when these records were sent (else what it says now)."""
        if records.options is not None:
            return records.options
        return self.options.get(records.exporter, records.domain)

    def _sampling(self, records: RecordSet) -> npt.NDArray[np.uint64] | None:
        """The 1-in-N rate of every record; None if nothing announces one (1 for all)."""
        count = len(records)
        own = sampling_rates(records) if _plan(records.template).own_sampling else None
        state = self._options_of(records)
        ids = sampler_ids(records) if state is not None and state.sampling_by_id else None
        header = records.header_sampling_interval
        if (own is None and ids is None and (header is None or not header.any())
                and (state is None or not state.default_sampling_rate)):
            return None  # every rate would be max(0, 1) = 1
        rate = np.zeros(count, np.uint64) if own is None else own.astype(np.uint64)
        if state is not None:
            if ids is not None and state.sampling_by_id:
                for sampler, sampler_rate in state.sampling_by_id.items():
                    rate = np.where((rate == 0) & (ids == sampler), np.uint64(sampler_rate), rate)
            if state.default_sampling_rate:
                rate = np.where(rate == 0, np.uint64(state.default_sampling_rate), rate)
        if records.header_sampling_interval is not None:
            rate = np.where(rate == 0, records.header_sampling_interval.astype(np.uint64), rate)
        return np.maximum(rate, np.uint64(1))

    @staticmethod
    def _with_reverse(
        batch: FlowBatch, order: npt.NDArray[np.int64], fields: _Fields, multiplier: npt.NDArray[np.uint64] | None
    ) -> tuple[FlowBatch, npt.NDArray[np.int64]]:
        get = fields.get
        count = len(batch)
        rev_packets = get("rev_packets")
        rev_bytes = get("rev_bytes")
        rev_packets = np.zeros(count, np.uint64) if rev_packets is None else rev_packets
        rev_bytes = np.zeros(count, np.uint64) if rev_bytes is None else rev_bytes
        present = (rev_packets > 0) | (rev_bytes > 0)
        if not present.any():
            return batch, order
        reverse = batch.take(present)
        swapped = dict(reverse.columns)
        for a, b in (("src_addr", "dst_addr"), ("src_port", "dst_port"), ("in_if", "out_if"), ("src_as", "dst_as")):
            swapped[a], swapped[b] = reverse.columns[b], reverse.columns[a]
        swapped["packets"] = rev_packets[present] if multiplier is None else rev_packets[present] * multiplier[present]
        swapped["bytes"] = rev_bytes[present] if multiplier is None else rev_bytes[present] * multiplier[present]
        flags = get("rev_tcp_flags")
        if flags is not None:
            swapped["tcp_flags"] = flags[present].astype(np.uint8)
        reverse_batch = FlowBatch(swapped)
        return FlowBatch.concat([batch, reverse_batch]), np.concatenate([order, order[present] + 1])


def decode_and_normalize(session: DecoderSession, normalizer: Normalizer, datagrams: Sequence[Datagram], *,
                         keep_records: bool = False) -> tuple[FlowBatch, list[RecordSet]]:
    """A batch of datagrams → its flows and the record sets they came from. A batch of plain
    NetFlow v5 goes straight to flow columns through the compiled kernel, with no record sets
    (unless ``keep_records``: output formats that print records need them)."""
    if not keep_records:
        flows = v5kernel.decode_flows(session, datagrams, apply_sampling=normalizer.config.apply_sampling)
        if flows is not None:
            session.counters.add("decode_batches_total", path="v5_kernel")
            return flows, []
    records = session.decode(datagrams)
    session.counters.add("decode_batches_total", path="general")
    return normalizer.normalize(records), records
