"""The decoder session: export messages in, record sets out, for all versions at once.

One session holds the state that outlives a message: templates per exporter scope, data waiting
for its template, sequence numbers, and what options data said. ``decode`` takes a whole batch of
datagrams; the common ones are taken apart for the whole batch at once with numpy (batchwalk.py),
the others here, with a short Python loop per message (never per record) over their headers and
sets. Either way the data sets of each template are gathered and every template's records are
decoded in one piece per batch.

Bad input never raises out of ``decode``: every problem is counted in ``decode_errors_total``
by kind and exporter, and logged at a limited rate.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from flowscope.decode import ipfix, v9
from flowscope.decode.batchwalk import WalkCache, decode_batch
from flowscope.decode.context import MessageContext, RecordColumns
from flowscope.decode.groups import Group
from flowscope.decode.options import ExporterOptions, OptionsState
from flowscope.decode.records import RecordSet
from flowscope.decode.sequence import SequenceTracker
from flowscope.decode.templates import Template, TemplateStore
from flowscope.decode.v5 import FORMATS as LEGACY_FORMATS
from flowscope.decode.v5 import parse_header as parse_legacy_header
from flowscope.decode.variable import walk_records
from flowscope.metrics import Counters
from flowscope.model import Datagram, ExporterTable

log = logging.getLogger(__name__)

_VERSION = struct.Struct("!H")
_SET_HEADER = struct.Struct("!HH")  # set id, set length: the same in NetFlow v9 and IPFIX
_KNOWN_TEMPLATE_SETS_MAX = 4096  # template-set scopes remembered for the refresh fast path


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    max_templates_per_exporter: int = 4096
    pending_max_sets_per_exporter: int = 1024  # data sets held while their template is unknown
    pending_max_age_ms: int = 60_000
    error_log_interval_ms: int = 10_000
    # Read the headers of a whole batch with numpy (batchwalk.py) and take only the unusual
    # datagrams one by one; off: every datagram goes the per-message path (same results, slower).
    batch_walk: bool = True
    # After a batch the batch walk could not take any datagram of (variable-length records, say),
    # this many batches go the per-message path before it is tried again.
    batch_walk_retry_batches: int = 8
    # The compiled loops, where they were built: plain NetFlow v5 batches straight to flows
    # (v5kernel.py), the batch walk's header pass and gather (walkkernel.py); off: numpy only
    # (same results, slower).
    compiled_kernel: bool = True


_Context = MessageContext  # the per-message path's name for it


def _contradicts(before: ExporterOptions, after: ExporterOptions) -> bool:
    """Did new options data change a fact already known (not merely add one)?"""
    if before.default_sampling_rate and after.default_sampling_rate != before.default_sampling_rate:
        return True
    if before.system_init_ms is not None and after.system_init_ms != before.system_init_ms:
        return True
    return any(after.sampling_by_id.get(sampler) != rate for sampler, rate in before.sampling_by_id.items())


@dataclass(frozen=True, slots=True)
class _Pending:
    context: _Context
    template_id: int
    body: bytes


class DecoderSession:
    """Stateful decoder for NetFlow v1/v5/v7/v9 and IPFIX messages from any number of exporters."""

    def __init__(
        self,
        config: DecoderConfig | None = None,
        counters: Counters | None = None,
        exporters: ExporterTable | None = None,
    ) -> None:
        self.config = config or DecoderConfig()
        self.counters = counters if counters is not None else Counters()
        self.exporters = exporters if exporters is not None else ExporterTable()
        self.templates = TemplateStore(self.config.max_templates_per_exporter)
        self.options = OptionsState()
        self.sequences = SequenceTracker()
        self._pending: dict[str, deque[_Pending]] = {}
        self._groups: dict[tuple[int, str, int], Group] = {}
        self._sealed: list[tuple[Group, ExporterOptions | None]] = []  # groups closed by new options data
        self._options_sets: list[RecordSet] = []
        self._order = 0
        self._walk_skips = 0  # batches left to decode per message before the batch walk is tried again
        self.walk_cache = WalkCache()  # the batch walk's template lookups, across batches
        self._tally: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._packets: Counter[tuple[str, int]] = Counter()  # per message: kept apart from _tally for speed
        self._last_log_ms: dict[tuple[str, str], float] = {}
        # (exporter, domain, version, set id) → (bytes of the last template set, the templates it stored)
        self._known_template_sets: dict[tuple[str, int, int, int], tuple[bytes, tuple[Template, ...]]] = {}

    # ------------------------------------------------------------------ public
    def decode(self, datagrams: Sequence[Datagram]) -> list[RecordSet]:
        """Decode a batch of datagrams; returns data and options record sets in template order."""
        self._groups = {}
        self._sealed = []
        self._options_sets = []
        self._order = 0
        if self.config.batch_walk and len(datagrams) > 1 and self._walk_skips <= 0:
            # A stream the batch walk cannot take (variable-length records, say) only pays for
            # its header pass: then skip it for a few batches before trying again.
            self._walk_skips = 0 if decode_batch(self, datagrams) else self.config.batch_walk_retry_batches
        else:
            self._walk_skips -= 1
            message = self._message
            for datagram in datagrams:
                message(datagram)
        record_sets = [self._finish(group, options) for group, options in self._sealed]
        record_sets += [self._finish(group) for group in self._groups.values()]
        record_sets += self._options_sets
        self._groups, self._sealed, self._options_sets = {}, [], []
        tally = self._tally
        for records in record_sets:  # labels sorted by name, as _count makes them
            kind = "options" if records.is_options else "data"
            tally[("decode_records_total", (("exporter", records.exporter), ("kind", kind)))] += len(records)
        self._flush_tally()
        return record_sets

    # ------------------------------------------------- used by the batch walk
    def message(self, datagram: Datagram) -> None:
        """One datagram through the per-message path."""
        self._message(datagram)

    def group(self, template: Template, context: MessageContext) -> Group:
        return self._group(template, context)

    def take_order(self, counts: np.ndarray) -> np.ndarray:
        """Arrival orders of the first records of sets of ``counts`` records, in wire order."""
        ends = np.cumsum(counts)
        starts: np.ndarray = ends - counts + self._order
        self._order += int(ends[-1]) if len(ends) else 0
        return starts

    def count(self, name: str, value: int = 1, **labels: str) -> None:
        self._count(name, value, **labels)

    def count_packets(self, packets: Mapping[tuple[str, int], int]) -> None:
        self._packets.update(packets)

    def flush_counts(self) -> None:
        """What ``count`` and ``count_packets`` gathered, into the counters (``decode`` does it itself)."""
        self._flush_tally()

    def known_template_set(self, exporter: str, domain: int, version: int,
                           set_id: int) -> tuple[bytes, tuple[Template, ...]] | None:
        """The last template set of a scope kept for the refresh fast path (see ``_refreshed``)."""
        return self._known_template_sets.get((exporter, domain, version, set_id))

    # --------------------------------------------------------------- messages
    def _message(self, datagram: Datagram) -> None:
        payload = datagram.payload
        exporter = datagram.exporter
        if len(payload) < 4:
            self._error(exporter, "truncated", f"{len(payload)}-byte datagram")
            return
        (version,) = _VERSION.unpack_from(payload)
        self._packets[(exporter, version)] += 1
        if version == 10:
            self._ipfix(datagram)
        elif version == 9:
            self._v9(datagram)
        elif version in LEGACY_FORMATS:
            self._legacy(datagram, version)
        else:
            self._error(exporter, "unknown_version", f"version {version}")

    def _legacy(self, datagram: Datagram, version: int) -> None:
        fmt = LEGACY_FORMATS[version]
        header_length, record_length = fmt.header_length, fmt.record_length
        payload, exporter = datagram.payload, datagram.exporter
        if len(payload) < header_length:
            self._error(exporter, "truncated", f"v{version} header needs {header_length} bytes")
            return
        header = parse_legacy_header(fmt, payload)
        available = (len(payload) - header_length) // record_length
        count = header.count
        if count > available:
            self._error(exporter, "truncated", f"v{version} announces {count} records, {available} present")
            count = available
        elif len(payload) > header_length + count * record_length:
            self._count("decode_ignored_bytes_total", len(payload) - header_length
                        - count * record_length, exporter=exporter, kind="trailing")
        if header.flow_sequence is not None:
            lost = self.sequences.observe(exporter, version, header.domain, header.flow_sequence, header.count)
            if lost:
                self._count("decode_sequence_lost_total", lost, exporter=exporter, unit="records")
        if count == 0:
            return
        context = _Context(version, exporter, header.domain, header.export_time_ms, header.sys_uptime_ms,
                           datagram.time_received_ms, header.sampling_interval)
        body = memoryview(payload)[header_length : header_length + count * record_length]
        self._add_fixed(fmt.template, context, body, count)

    def _v9(self, datagram: Datagram) -> None:
        payload, exporter = datagram.payload, datagram.exporter
        if len(payload) < v9.HEADER.size:
            self._error(exporter, "truncated", "v9 header needs 20 bytes")
            return
        _, _, uptime_ms, export_s, sequence, source_id = v9.HEADER.unpack_from(payload)
        lost = self.sequences.observe(exporter, 9, source_id, sequence, 1)
        if lost:
            self._count("decode_sequence_lost_total", lost, exporter=exporter, unit="packets")
        context = _Context(9, exporter, source_id, export_s * 1000, uptime_ms, datagram.time_received_ms)
        self._sets(context, memoryview(payload)[v9.HEADER.size :])

    def _ipfix(self, datagram: Datagram) -> None:
        payload, exporter = datagram.payload, datagram.exporter
        view = memoryview(payload)
        offset = 0
        while offset < len(view):
            if len(view) - offset < ipfix.HEADER_LENGTH:
                self._error(exporter, "truncated", f"IPFIX header needs 16 bytes, {len(view) - offset} left")
                return
            if offset and _VERSION.unpack_from(view, offset)[0] != 10:
                self._count("decode_ignored_bytes_total", len(view) - offset, exporter=exporter,
                            kind="trailing")
                return
            _, length, export_s, sequence, domain = ipfix.HEADER.unpack_from(view, offset)
            if length < ipfix.HEADER_LENGTH:
                self._error(exporter, "bad_length", f"IPFIX message length {length} < 16")
                return
            if length > len(view) - offset:
                self._error(exporter, "truncated",
                            f"IPFIX message length {length}, {len(view) - offset} bytes present")
                length = len(view) - offset
            context = _Context(10, exporter, domain, export_s * 1000, 0, datagram.time_received_ms)
            records = self._sets(context, view[offset + ipfix.HEADER_LENGTH : offset + length])
            if records is None:
                self.sequences.forget(exporter, 10, domain)
            else:
                lost = self.sequences.observe(exporter, 10, domain, sequence, records)
                if lost:
                    self._count("decode_sequence_lost_total", lost, exporter=exporter, unit="records")
            offset += length

    # ------------------------------------------------------------------- sets
    def _sets(self, context: _Context, body: memoryview) -> int | None:
        """Walk the sets of one message; returns data records added (None if some were held)."""
        offset, end = 0, len(body)
        records: int | None = 0
        ipfix_message = context.version == 10
        while end - offset >= 4:
            set_id, set_length = _SET_HEADER.unpack_from(body, offset)
            if set_length < 4 or set_length > end - offset:
                if not any(body[offset:]):
                    self._count("decode_ignored_bytes_total", end - offset, exporter=context.exporter,
                                kind="zero_fill")
                else:
                    self._error(context.exporter, "set_length",
                                f"set {set_id} length {set_length} at offset {offset}, {end - offset} left",
                                context)
                return records
            set_body = body[offset + 4 : offset + set_length]
            offset += set_length
            if set_id >= 256:
                added = self._data_set(context, set_id, set_body)
                records = None if added is None or records is None else records + added
            elif ipfix_message and set_id in (ipfix.TEMPLATE_SET_ID, ipfix.OPTIONS_TEMPLATE_SET_ID):
                self._ipfix_templates(context, set_id, set_body)
            elif not ipfix_message and set_id in (v9.TEMPLATE_SET_ID, v9.OPTIONS_TEMPLATE_SET_ID):
                self._v9_templates(context, set_id, set_body)
            else:
                self._error(context.exporter, "set_id_reserved", f"set id {set_id}", context)
        if offset != end:
            self._count("decode_ignored_bytes_total", end - offset, exporter=context.exporter, kind="padding")
        return records

    def _v9_templates(self, context: _Context, set_id: int, body: memoryview) -> None:
        if self._refreshed(context, set_id, body):
            return
        result = v9.parse_template_set(body) if set_id == v9.TEMPLATE_SET_ID else v9.parse_options_template_set(body)
        for kind, detail in result.errors:
            self._error(context.exporter, kind, detail, context)
        for template in result.templates:
            self._learn(context, template)
        self._remember_template_set(context, set_id, body, None if result.errors else result.templates)

    def _ipfix_templates(self, context: _Context, set_id: int, body: memoryview) -> None:
        if self._refreshed(context, set_id, body):
            return
        options = set_id == ipfix.OPTIONS_TEMPLATE_SET_ID
        result = ipfix.parse_template_set(body, options=options)
        for kind, detail in result.errors:
            self._error(context.exporter, kind, detail, context)
        for template_id in result.withdrawals:
            if template_id == set_id:
                removed = self.templates.withdraw_all(context.exporter, context.domain, options=options,
                                                      version=context.version)
            else:
                removed = int(self.templates.withdraw(context.exporter, context.domain, template_id,
                                                      context.version))
            self._count("decode_templates_total", max(removed, 1) if removed else 1,
                        exporter=context.exporter, event="withdrawn" if removed else "withdraw_unknown")
        for template in result.templates:
            self._learn(context, template)
        plain = not result.errors and not result.withdrawals
        self._remember_template_set(context, set_id, body, result.templates if plain else None)

    def _refreshed(self, context: _Context, set_id: int, body: memoryview) -> bool:
        """The periodic template refresh, fast: a template set byte-identical to the last one of its
        scope, whose templates are all still the stored ones, is counted as refreshed without being
        parsed again (parsing it would find the same layouts and change nothing; should the store
        ever track refresh times, they must be updated here too)."""
        known = self._known_template_sets.get((context.exporter, context.domain, context.version, set_id))
        if known is None or known[0] != body:
            return False
        for template in known[1]:
            if self.templates.get(context.exporter, context.domain, template.template_id,
                                  context.version) is not template:
                return False
        self._count("decode_templates_total", len(known[1]), exporter=context.exporter, event="refreshed")
        return True

    def _remember_template_set(self, context: _Context, set_id: int, body: memoryview,
                               parsed: list[Template] | None) -> None:
        """Keep a template set for ``_refreshed`` if it only defined templates, each stored once."""
        key = (context.exporter, context.domain, context.version, set_id)
        stored = tuple(self.templates.get(context.exporter, context.domain, t.template_id, context.version)
                       for t in parsed or ())
        ids = {t.template_id for t in parsed or ()}
        if not parsed or len(ids) != len(parsed) or any(t is None for t in stored):
            self._known_template_sets.pop(key, None)  # errors, withdrawals, refusals: always parsed
            return
        if len(self._known_template_sets) >= _KNOWN_TEMPLATE_SETS_MAX and key not in self._known_template_sets:
            self._known_template_sets.clear()
        self._known_template_sets[key] = (bytes(body), tuple(t for t in stored if t is not None))

    def _learn(self, context: _Context, template: Template) -> None:
        # v9 and IPFIX templates are apart even for equal domain numbers: they are separate namespaces
        stored = self.templates.put(context.exporter, context.domain, template, context.version)
        if not stored.accepted:
            self._error(context.exporter, stored.reason,
                        f"template {template.template_id} refused: limit "
                        f"{self.config.max_templates_per_exporter} per exporter", context)
            return
        event = "refreshed" if stored.refreshed else "changed" if stored.changed else "new"
        self._count("decode_templates_total", exporter=context.exporter, event=event)
        if not stored.refreshed:
            self._release_pending(context, template.template_id)

    # ------------------------------------------------------------------- data
    def _data_set(self, context: _Context, template_id: int, body: memoryview) -> int | None:
        template = self.templates.get(context.exporter, context.domain, template_id, context.version)
        if template is None:
            self._hold(context, template_id, body)
            return None
        if template.is_options:
            return self._options_set(template, context, body)
        if template.variable_index:
            return self._add_variable(template, context, body)
        length = template.fixed_length
        if length == 0:
            self._error(context.exporter, "zero_length_record",
                        f"template {template_id} has only zero-length fields", context)
            return 0
        count = len(body) // length
        if count:
            group = self._group(template, context)
            group.chunks.append(body[: count * length])
            self._note_set(group, context, count)
        return count

    def _options_set(self, template: Template, context: _Context, body: memoryview) -> int:
        """Options data takes effect where it stands in the stream, not at the end of the batch.

        Its records are decoded at once and learned; if they change what the exporter announced
        (sampling, system init time), the data records gathered so far for that exporter scope
        are sealed with the options they were sent under, so a restart or a new sampling rate in
        the middle of a batch never rewrites the records before it.
        """
        gathered = self._groups
        self._groups = {}
        try:
            if template.variable_index:
                count = self._add_variable(template, context, body)
            else:
                count = len(body) // template.fixed_length if template.fixed_length else 0
                if count:
                    self._add_fixed(template, context, body[: count * template.fixed_length], count)
            decoded = [self._finish(group) for group in self._groups.values()]
        finally:
            self._groups = gathered
        before = self.options.snapshot(context.exporter, context.domain)
        for records in decoded:
            self.options.learn(records)
        after = self.options.get(context.exporter, context.domain)
        if before is not None and after is not None and _contradicts(before, after):
            self._seal(context.exporter, context.domain, before)
        self._options_sets.extend(decoded)
        return count

    def _seal(self, exporter: str, domain: int, options: ExporterOptions | None) -> None:
        for key, group in list(self._groups.items()):
            if group.context.exporter == exporter and group.context.domain == domain:
                self._sealed.append((group, options))
                del self._groups[key]

    def _group(self, template: Template, context: _Context) -> Group:
        # The exporter scope is part of the key: the fixed v1/v5/v7 templates are shared by every
        # exporter, and one record set must never mix exporters (or v5 engines).
        key = (id(template), context.exporter, context.domain)
        group = self._groups.get(key)
        if group is None or group.template is not template:
            group = Group(template, context)
            self._groups[key] = group
        return group

    def _note_set(self, group: Group, context: _Context, count: int) -> None:
        group.per_record = None
        group.shared = None
        group.sets.append((count, context, self._order))
        self._order += count

    def _add_fixed(self, template: Template, context: _Context, body: memoryview, count: int) -> None:
        group = self._group(template, context)
        group.chunks.append(body)
        self._note_set(group, context, count)

    def _add_variable(self, template: Template, context: _Context, body: memoryview) -> int:
        """Records with variable-length fields, walked one by one (``variable.py``): the slow path."""
        walked = walk_records(template, body)
        if walked.overrun:
            self._error(context.exporter, "record_truncated",
                        f"variable-length record of template {template.template_id} overruns its set", context)
        if walked.count:
            group = self._group(template, context)
            if group.variable is None:
                group.variable = {p: [] for p in template.variable_index}
            for position, column in walked.values.items():
                group.variable[position].extend(column)
            group.chunks.append(walked.fixed)
            self._note_set(group, context, walked.count)
        return walked.count

    def _finish(self, group: Group, options: ExporterOptions | None = None) -> RecordSet:
        template = group.template
        per_record = group.per_record
        shared = group.shared if per_record is not None else None
        chunks = group.chunks
        context = group.context
        if per_record is not None and template.fixed_length and isinstance(chunks[0], np.ndarray):
            fixed = chunks[0]  # gathered by the batch walk, with its per-record columns
        else:
            columns = group.columns()
            counts = columns.counts
            total = int(counts.sum())
            if not template.fixed_length:
                fixed = np.zeros(total, dtype=template.fixed_dtype)
            elif len(chunks) == 1 and isinstance(chunks[0], np.ndarray):
                fixed = chunks[0]  # gathered by the batch walk, already of the template's dtype
            else:
                buffer = chunks[0] if len(chunks) == 1 else b"".join(cast("list[bytes]", chunks))  # any buffer joins
                fixed = np.frombuffer(buffer, dtype=template.fixed_dtype, count=total)
            if per_record is None:
                per_record = RecordColumns(
                    export_time_ms=np.repeat(columns.export_time_ms, counts),
                    sys_uptime_ms=np.repeat(columns.sys_uptime_ms, counts),
                    time_received_ms=np.repeat(columns.time_received_ms, counts),
                    order=(np.repeat(columns.order_start - np.cumsum(counts) + counts, counts)
                           + np.arange(total, dtype=np.int64)),
                    header_sampling_interval=(np.repeat(columns.header_sampling_interval, counts)
                                              if context.version == 5 else np.zeros(0, np.uint32)),
                )
        return RecordSet(
            template=template,
            exporter=context.exporter,
            domain=context.domain,
            version=context.version,
            fixed=fixed,
            variable=group.variable or {},
            export_time_ms=per_record.export_time_ms,
            sys_uptime_ms=per_record.sys_uptime_ms,
            time_received_ms=per_record.time_received_ms,
            order=per_record.order,
            header_sampling_interval=per_record.header_sampling_interval if context.version == 5 else None,
            exporter_index=self.exporters.index_of(context.exporter, context.domain),
            options=options,
            shared=shared,
        )

    # ---------------------------------------------------------------- pending
    def _hold(self, context: _Context, template_id: int, body: memoryview) -> None:
        queue = self._pending.setdefault(context.exporter, deque())
        self._expire(context.exporter, queue, context.time_received_ms)
        if len(queue) >= self.config.pending_max_sets_per_exporter:
            queue.popleft()
            self._count("decode_pending_dropped_total", exporter=context.exporter, reason="overflow")
        queue.append(_Pending(context, template_id, bytes(body)))
        self._count("decode_pending_sets_total", exporter=context.exporter)

    def _expire(self, exporter: str, queue: deque[_Pending], now_ms: int) -> None:
        limit = now_ms - self.config.pending_max_age_ms
        while queue and queue[0].context.time_received_ms < limit:
            queue.popleft()
            self._count("decode_pending_dropped_total", exporter=exporter, reason="expired")

    def _release_pending(self, context: _Context, template_id: int) -> None:
        exporter, domain, version = context.exporter, context.domain, context.version
        queue = self._pending.get(exporter)
        if not queue:
            return

        def waits(p: _Pending) -> bool:
            return p.template_id == template_id and p.context.domain == domain and p.context.version == version

        ready = [p for p in queue if waits(p)]
        if not ready:
            return
        self._pending[exporter] = deque(p for p in queue if not waits(p))
        limit = context.time_received_ms - self.config.pending_max_age_ms
        for pending in ready:
            if pending.context.time_received_ms < limit:
                # Held longer than the age bound: dropped as expired, never released late.
                self._count("decode_pending_dropped_total", exporter=exporter, reason="expired")
                continue
            self._count("decode_pending_released_total", exporter=exporter)
            self._data_set(pending.context, template_id, memoryview(pending.body))

    def pending_sets(self) -> int:
        return sum(len(q) for q in self._pending.values())

    # --------------------------------------------------------------- counting
    def _count(self, name: str, value: int = 1, **labels: str) -> None:
        self._tally[(name, tuple((label, str(labels[label])) for label in sorted(labels)))] += value

    def _flush_tally(self) -> None:
        packets = [(("decode_packets_total", (("exporter", exporter), ("version", str(version)))), value)
                   for (exporter, version), value in self._packets.items()]
        self.counters.add_series([*packets, *self._tally.items()])
        self._packets.clear()
        self._tally.clear()

    def _error(self, exporter: str, kind: str, detail: str, context: _Context | None = None) -> None:
        self._count("decode_errors_total", exporter=exporter, kind=kind)
        now = time.monotonic() * 1000
        key = (exporter, kind)
        if now - self._last_log_ms.get(key, -1e18) >= self.config.error_log_interval_ms:
            self._last_log_ms[key] = now
            where = f"exporter={exporter}"
            if context is not None:
                where += f" version={context.version} domain={context.domain}"
            log.warning("decode error %s: %s (%s)", kind, detail, where)
