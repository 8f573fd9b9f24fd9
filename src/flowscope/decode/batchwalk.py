"""The batch walk: the headers of a whole batch of datagrams read with numpy, for the common case.

Most export datagrams are alike: a NetFlow v5 message whose length matches its record count, or a
NetFlow v9 / IPFIX message of data sets whose templates are known and of fixed length, perhaps
with a template set that merely repeats the stored templates (the periodic refresh). For those,
the per-message Python walk of ``DecoderSession`` costs far more than the records themselves.
Here the batch is joined into one buffer once; message headers are read for all datagrams at
offsets computed with numpy, set headers one "set index" at a time across all datagrams, records
are gathered per template with one fancy index, and sequence numbers are checked per exporter
scope as whole runs.

Everything else — templates that are new or changed, options data, data waiting for its template,
variable-length records, any length that does not add up, trailing bytes, other versions — goes
through the per-message path, datagram by datagram, in wire order: the batch is cut into runs of
"fast" datagrams and single "slow" ones, processed in order. A slow datagram that may have changed
templates (any NetFlow v9 / IPFIX one) makes the rest of the batch be classified again. The result
is the same as the per-message path's: the same record sets, arrival orders and counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from flowscope.decode.context import MessageContext, RecordColumns, SetColumns
from flowscope.decode.templates import Template
from flowscope.decode.v5 import V5_TEMPLATE
from flowscope.model import Datagram

if TYPE_CHECKING:
    from flowscope.decode.session import DecoderSession

_PAD = bytes(64)  # after the joined payloads: header reads of short datagrams stay in the buffer
_V5_HEADER, _V5_RECORD = 24, V5_TEMPLATE.fixed_length
_V9_HEADER, _IPFIX_HEADER = 20, 16
_MAX_SETS = 16  # sets per message walked here; a message with more goes the per-message path
_MAX_RECLASSIFY = 8  # template changes per batch (+1 per 32 datagrams) after which the rest goes
# the per-message path
_MAX_EXPORTERS = 1 << 13  # exporter codes fit in the 64-bit set key (see the end of _walk)
_VERSIONS = (5, 9, 10)  # version code 0, 1, 2
_SEQUENCE_UNIT = {5: "records", 9: "packets", 10: "records"}

@dataclass(slots=True)
class _Walk:
    """What the headers of a batch say, independent of the session's state."""

    exporters: list[str]  # by exporter code
    code: npt.NDArray[np.int64]  # per datagram: exporter code
    vcode: npt.NDArray[np.int64]  # per datagram: 0 v5, 1 v9, 2 IPFIX (meaningful where eligible)
    eligible: npt.NDArray[np.bool_]  # per datagram: well formed as the batch walk expects
    domain: npt.NDArray[np.int64]
    sequence: npt.NDArray[np.int64]
    export_time_ms: npt.NDArray[np.int64]
    sys_uptime_ms: npt.NDArray[np.int64]
    time_received_ms: npt.NDArray[np.int64]
    sampling: npt.NDArray[np.uint32]
    v5_count: npt.NDArray[np.int64]
    # Sets of eligible datagrams in wire order (a v5 message is one set of set id 0).
    set_datagram: npt.NDArray[np.int64]
    set_id: npt.NDArray[np.int64]
    set_start: npt.NDArray[np.int64]  # offset of the set body in ``buffer``
    set_length: npt.NDArray[np.int64]  # bytes of the set body
    set_is_template: npt.NDArray[np.bool_]
    set_key: npt.NDArray[np.int64]  # index into ``keys``
    keys: npt.NDArray[np.int64]  # unique (exporter, version, domain, set id)
    buffer: bytes


@dataclass(slots=True)
class _Classes:
    """The batch walk's view of the session's templates, valid until a template changes."""

    fast: npt.NDArray[np.bool_]  # per datagram
    templates: list[Template | None]  # per key: the fixed-length data template, else None
    refreshed: dict[int, int]  # template set index → templates it refreshes


# The first 24 bytes of any message, as one gather: NetFlow v5, v9 and IPFIX headers all fit in it.
_HEADER = np.dtype({"names": ["version", "h2", "w4", "w8", "w12", "w16", "h20", "h22"],
                    "formats": [">u2", ">u2", ">u4", ">u4", ">u4", ">u4", ">u2", ">u2"],
                    "offsets": [0, 2, 4, 8, 12, 16, 20, 22], "itemsize": 24})


def _walk(datagrams: Sequence[Datagram]) -> _Walk | None:
    n = len(datagrams)
    payloads = [d.payload for d in datagrams]
    lengths = np.fromiter(map(len, payloads), np.int64, n)
    payloads.append(_PAD)
    buffer = b"".join(payloads)
    exporters = [d.exporter for d in datagrams]
    codes = {e: i for i, e in enumerate(dict.fromkeys(exporters))}
    if len(codes) >= _MAX_EXPORTERS:
        return None
    code = np.fromiter(map(codes.__getitem__, exporters), np.int64, n)
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    header = np.ndarray(shape=(len(buffer) - 23,), dtype=np.dtype((np.void, 24)), buffer=buffer,
                        strides=(1,))[starts].view(_HEADER)
    version = header["version"]
    h2 = header["h2"].astype(np.int64)  # v5 record count, IPFIX message length
    w4 = header["w4"].astype(np.int64)  # v5/v9 uptime, IPFIX export seconds
    w8 = header["w8"].astype(np.int64)
    w12 = header["w12"].astype(np.int64)
    # A datagram shorter than its header never passes these (the pad keeps the reads in bounds).
    is_v5 = (version == 5) & (h2 > 0) & (lengths == _V5_HEADER + _V5_RECORD * h2)
    is_v9 = (version == 9) & (lengths >= _V9_HEADER)
    is_ipfix = (version == 10) & (h2 == lengths) & (lengths >= _IPFIX_HEADER)
    any_v5, any_v9, any_ipfix = bool(is_v5.any()), bool(is_v9.any()), bool(is_ipfix.any())
    vcode = is_v9 + 2 * is_ipfix.astype(np.int64)
    # domain, sequence, export time, uptime: where each version keeps them
    if any_v5 or any_v9:
        w16 = header["w16"].astype(np.int64)
        domain = np.where(is_v9, w16, w12)
        sequence = np.where(is_v9, w12, w8)
        export_time_ms = np.where(is_ipfix, w4, w8) * 1000
        sys_uptime_ms = np.where(is_ipfix, 0, w4)
    else:
        domain, sequence, export_time_ms, sys_uptime_ms = w12, w8, w4 * 1000, np.zeros(n, np.int64)
    sampling = np.zeros(n, np.uint32)
    if any_v5:
        domain = np.where(is_v5, header["h20"], domain)  # engine type << 8 | engine id
        sequence = np.where(is_v5, w16, sequence)
        export_time_ms = np.where(is_v5, w8 * 1000 + w12 // 1_000_000, export_time_ms)
        sampling = np.where(is_v5, header["h22"] & 0x3FFF, 0).astype(np.uint32)

    # Set headers, the k-th set of every message at once.
    bad = np.zeros(n, np.bool_)
    pieces: list[tuple[np.ndarray, ...]] = []
    if any_v9 or any_ipfix:
        set_headers = np.ndarray(shape=(len(buffer) - 3,), dtype=np.dtype((np.void, 4)), buffer=buffer,
                                 strides=(1,))
        walked = (is_v9 | is_ipfix).nonzero()[0]
        # one row each: datagram, position of the next set header, end of the message, 1 if v9
        state = np.stack((walked, starts[walked] + np.where(is_v9[walked], _V9_HEADER, _IPFIX_HEADER),
                          starts[walked] + lengths[walked], is_v9[walked].astype(np.int64)))
        for k in range(_MAX_SETS + 1):
            left = state[2] - state[1]
            going = left >= 4
            if not going.all():
                bad[state[0][(left > 0) & ~going]] = True  # padding after the last set: counted there
                state, left = state[:, going], left[going]
                if not state.shape[1]:
                    break
            if k == _MAX_SETS:
                bad[state[0]] = True
                break
            header_words = set_headers[state[1]].view(">u2").reshape(-1, 2).astype(np.int64)
            set_id, set_length = header_words[:, 0], header_words[:, 1]
            template_set = (set_id >> 1) == 1 - state[3]  # v9: set id 0 or 1, IPFIX: 2 or 3
            wrong = (set_length < 4) | (set_length > left) | ((set_id < 256) & ~template_set)
            if wrong.any():
                bad[state[0][wrong]] = True
                keep = ~wrong
                state, set_id, set_length, template_set = state[:, keep], set_id[keep], set_length[keep], \
                    template_set[keep]
            pieces.append((state[0], set_id, state[1] + 4, set_length - 4, template_set))
            state[1] += set_length  # rows 0 (kept in pieces), 2 and 3 do not change
    if any_v5:
        rows = is_v5.nonzero()[0]
        none = np.zeros(len(rows), np.int64)
        pieces.append((rows, none, starts[rows] + _V5_HEADER, h2[rows] * _V5_RECORD, none.astype(np.bool_)))
    eligible = (is_v5 | is_v9 | is_ipfix) & ~bad
    if len(pieces) == 1:
        set_datagram, set_id, set_start, set_length, set_is_template = pieces[0]
    else:
        set_datagram, set_id, set_start, set_length, set_is_template = (
            np.concatenate(parts) for parts in zip(*pieces, strict=True)) if pieces else (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros(0, np.bool_))
        # pieces come set index by set index: a stable sort by datagram puts them in wire order
        wire = np.argsort(set_datagram, kind="stable")
        set_datagram, set_id, set_start, set_length, set_is_template = (
            set_datagram[wire], set_id[wire], set_start[wire], set_length[wire], set_is_template[wire])
    if bad.any():
        keep = eligible[set_datagram]
        set_datagram, set_id, set_start, set_length, set_is_template = (
            set_datagram[keep], set_id[keep], set_start[keep], set_length[keep], set_is_template[keep])
    # (exporter, version, domain, set id) as one integer: 13 + 2 + 32 + 16 bits
    raw_keys = ((code << 50) | (vcode << 48) | (domain << 16))[set_datagram] | set_id
    keys = np.unique(raw_keys)
    set_key = np.searchsorted(keys, raw_keys)
    return _Walk(
        exporters=list(codes), code=code, vcode=vcode, eligible=eligible, domain=domain, sequence=sequence,
        export_time_ms=export_time_ms, sys_uptime_ms=sys_uptime_ms,
        time_received_ms=np.fromiter([d.time_received_ms for d in datagrams], np.int64, n), sampling=sampling,
        v5_count=h2, set_datagram=set_datagram, set_id=set_id, set_start=set_start, set_length=set_length,
        set_is_template=set_is_template, set_key=set_key, keys=keys, buffer=buffer,
    )


def _key_parts(key: int, walk: _Walk) -> tuple[str, int, int, int]:
    """exporter, version, domain, set id of a set key."""
    return (walk.exporters[key >> 50], _VERSIONS[(key >> 48) & 3], (key >> 16) & 0xFFFFFFFF, key & 0xFFFF)


def _classify(session: DecoderSession, walk: _Walk, first: int) -> _Classes:
    """Which datagrams from ``first`` on the batch walk can decode with the session as it is now."""
    templates: list[Template | None] = []
    for key in walk.keys.tolist():
        exporter, version, domain, set_id = _key_parts(key, walk)
        template = V5_TEMPLATE if version == 5 else session.templates.get(exporter, domain, set_id, version)
        usable = (template is not None and not template.is_options and not template.variable_index
                  and template.fixed_length > 0 and template.fixed_dtype.itemsize == template.fixed_length)
        templates.append(template if usable else None)
    usable_key = np.array([t is not None for t in templates], np.bool_)
    set_ok = usable_key[walk.set_key] if templates else np.zeros(0, np.bool_)
    refreshed: dict[int, int] = {}
    for index in np.flatnonzero(walk.set_is_template & (walk.set_datagram >= first)).tolist():
        count = _refresh_count(session, walk, index)
        if count is not None:
            refreshed[index] = count
            set_ok[index] = True
    failed = walk.set_datagram[~set_ok]
    fast = walk.eligible.copy()
    fast[failed] = False
    return _Classes(fast=fast, templates=templates, refreshed=refreshed)


def _refresh_count(session: DecoderSession, walk: _Walk, index: int) -> int | None:
    """Templates refreshed by a template set identical to the last one of its scope (see
    ``DecoderSession._refreshed``), or None if it must be parsed."""
    exporter, version, domain, set_id = _key_parts(int(walk.keys[walk.set_key[index]]), walk)
    known = session.known_template_set(exporter, domain, version, set_id)
    if known is None:
        return None
    start = int(walk.set_start[index])
    if known[0] != walk.buffer[start : start + int(walk.set_length[index])]:
        return None
    for template in known[1]:
        if session.templates.get(exporter, domain, template.template_id, version) is not template:
            return None
    return len(known[1])


def decode_batch(session: DecoderSession, datagrams: Sequence[Datagram]) -> bool:
    """Decode a batch into the session's groups, as ``DecoderSession._message`` on each would;
    returns whether the batch walk took any datagram itself (else it was only overhead)."""
    walk = _walk(datagrams) if datagrams else None
    if walk is None:
        for datagram in datagrams:
            session.message(datagram)
        return False
    return _decode_walked(session, datagrams, walk)


def _decode_walked(session: DecoderSession, datagrams: Sequence[Datagram], walk: _Walk) -> bool:
    n = len(datagrams)
    template_sets = np.flatnonzero(walk.set_is_template).tolist()
    position = 0
    took = False
    for _ in range(_MAX_RECLASSIFY + n // 32):
        classes = _classify(session, walk, position)
        # Datagrams after which the rest must be classified again: a template set that is not a
        # mere refresh, or a NetFlow v9 / IPFIX message the walk did not take apart.
        changing = ~walk.eligible
        changing[walk.set_datagram[[i for i in template_sets if i not in classes.refreshed]]] = True
        slow_ones = np.flatnonzero(~classes.fast[position:]) + position
        took = took or len(slow_ones) < n - position
        message = session.message
        for slow, may_change in zip([*slow_ones.tolist(), n], [*changing[slow_ones].tolist(), False],
                                    strict=True):
            if slow > position:
                _decode_run(session, walk, classes, position, slow)
            position = slow
            if slow == n:
                return took
            message(datagrams[slow])
            position = slow + 1
            if may_change and (walk.eligible[slow] or _may_carry_templates(datagrams[slow])):
                break  # templates may have changed: classify the rest again
        if position >= n:
            return took
    for datagram in datagrams[position:]:  # templates keep changing: the per-message path is cheaper
        session.message(datagram)
    return took


def _may_carry_templates(datagram: Datagram) -> bool:
    """A NetFlow v9 or IPFIX message the batch walk did not take apart."""
    payload = datagram.payload
    return len(payload) >= 2 and payload[0] == 0 and payload[1] in (9, 10)


def _decode_run(session: DecoderSession, walk: _Walk, classes: _Classes, first: int, end: int) -> None:
    """Datagrams ``first`` to ``end`` (all fast): records into groups, sequences, counters."""
    lo, hi = np.searchsorted(walk.set_datagram, [first, end])
    set_datagram = walk.set_datagram[lo:hi]
    set_key = walk.set_key[lo:hi]
    is_template = walk.set_is_template[lo:hi]
    if is_template.any():
        refreshed: Counter[str] = Counter()
        exporters = walk.code[set_datagram[is_template]].tolist()
        for index, code in zip((is_template.nonzero()[0] + lo).tolist(), exporters, strict=True):
            refreshed[walk.exporters[code]] += classes.refreshed[index]
        for exporter, templates in refreshed.items():
            session.count("decode_templates_total", templates, exporter=exporter, event="refreshed")
    record_length = np.array([0 if t is None else t.fixed_length for t in classes.templates], np.int64)
    lengths = record_length[set_key]
    counts = np.where(is_template, 0, walk.set_length[lo:hi] // np.maximum(lengths, 1))
    _sequences(session, walk, first, end, set_datagram, counts)
    data = np.flatnonzero(counts > 0)
    if len(data):
        _gather(session, walk, classes, data + lo, counts[data], lengths[data])


def _gather(session: DecoderSession, walk: _Walk, classes: _Classes, sets: npt.NDArray[np.int64],
            counts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> None:
    """Data sets (indices into the walk, in wire order) into groups. Groups are made in the order
    their first set arrived, as the per-message path does; the records of all groups of one
    layout are gathered with one fancy index, each group getting a slice, so that they lie end to
    end for the normalizer."""
    order_start = session.take_order(counts)
    keys = walk.set_key[sets]
    by_key = np.argsort(keys, kind="stable")
    bounds = np.concatenate(([0], (np.diff(keys[by_key]) != 0).nonzero()[0] + 1, [len(keys)])).tolist()
    spans = sorted(pairwise(bounds), key=lambda span: int(by_key[span[0]]))
    members = np.concatenate([by_key[a:b] for a, b in spans]) if len(spans) > 1 else by_key
    set_index = sets[members]
    datagram = walk.set_datagram[set_index]
    set_counts = counts[members]
    set_lengths = lengths[members]
    first_record = np.cumsum(set_counts) - set_counts
    total = int(first_record[-1] + set_counts[-1])
    templates = [classes.templates[int(keys[by_key[a]])] for a, _ in spans]
    dtypes = {t.fixed_dtype for t in templates if t is not None}
    # record r of set j starts at set_start[j] + (r - first_record[j]) * length[j]
    step = int(set_lengths[0]) if len(dtypes) == 1 else np.repeat(set_lengths, set_counts)
    offsets = (np.repeat(walk.set_start[set_index] - first_record * set_lengths, set_counts)
               + np.arange(total, dtype=np.int64) * step)
    gathered = _records(walk.buffer, offsets, templates[0]) if len(dtypes) == 1 else None
    columns = SetColumns(
        counts=set_counts, order_start=order_start[members], export_time_ms=walk.export_time_ms[datagram],
        sys_uptime_ms=walk.sys_uptime_ms[datagram], time_received_ms=walk.time_received_ms[datagram],
        header_sampling_interval=walk.sampling[datagram],
    )
    per_record = RecordColumns(
        export_time_ms=np.repeat(columns.export_time_ms, set_counts),
        sys_uptime_ms=np.repeat(columns.sys_uptime_ms, set_counts),
        time_received_ms=np.repeat(columns.time_received_ms, set_counts),
        order=np.repeat(columns.order_start - first_record, set_counts) + np.arange(total, dtype=np.int64),
        header_sampling_interval=(np.repeat(columns.header_sampling_interval, set_counts)
                                  if any(t is V5_TEMPLATE for t in templates) else np.zeros(0, np.uint32)),
    )
    position = 0
    record_bounds = np.concatenate((first_record, [total])).tolist()
    for template, (a, b) in zip(templates, spans, strict=True):
        assert template is not None
        span = slice(position, position + b - a)
        position += b - a
        records_from, records_to = record_bounds[span.start], record_bounds[span.stop]
        if gathered is not None:
            records = gathered[records_from:records_to]
        else:
            records = _records(walk.buffer, offsets[records_from:records_to], template)
        first = int(datagram[span.start])
        exporter, version, domain, _ = _key_parts(int(walk.keys[keys[by_key[a]]]), walk)
        context = MessageContext(version, exporter, domain, int(walk.export_time_ms[first]),
                                 int(walk.sys_uptime_ms[first]), int(walk.time_received_ms[first]))
        session.group(template, context).add_block(records, columns.rows(span),
                                                   per_record.rows(slice(records_from, records_to)))


def _records(buffer: bytes, offsets: npt.NDArray[np.int64], template: Template | None) -> np.ndarray:
    """Records of one template at byte offsets of the buffer, as its structured dtype."""
    assert template is not None
    length = template.fixed_length
    windows = np.ndarray(shape=(len(buffer) - length + 1,), dtype=np.dtype((np.void, length)), buffer=buffer,
                         strides=(1,))
    return windows[offsets].view(template.fixed_dtype)


def _sequences(session: DecoderSession, walk: _Walk, first: int, end: int,
               set_datagram: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> None:
    """Sequence numbers and packet counts of the datagrams ``first`` to ``end``, per exporter scope:
    an unbroken run of a scope is checked here with numpy and handed to the tracker in one step."""
    vcode = walk.vcode[first:end]
    # How far each message moves its sequence number: v5 flows, v9 packets, IPFIX data records.
    if (vcode == 1).all():
        advance = np.ones(end - first, np.int64)
    else:
        records = np.bincount(set_datagram - first, weights=counts, minlength=end - first).astype(np.int64)
        advance = np.where(vcode == 0, walk.v5_count[first:end], np.where(vcode == 1, 1, records))
    scope = (walk.code[first:end] << 34) | (vcode << 32) | walk.domain[first:end]
    by_scope = np.argsort(scope, kind="stable")
    scope, sequence, advance = scope[by_scope], walk.sequence[first:end][by_scope], advance[by_scope]
    following = (sequence + advance) & 0xFFFFFFFF
    head = np.ones(len(scope), np.bool_)
    np.not_equal(scope[1:], scope[:-1], out=head[1:])
    broken = np.zeros(len(scope), np.bool_)
    np.not_equal(sequence[1:], following[:-1], out=broken[1:])
    heads = head.nonzero()[0]
    tails = np.append(heads[1:], len(scope)) - 1
    broken_scopes = np.logical_or.reduceat(broken & ~head, heads).tolist()
    totals = np.add.reduceat(advance, heads).tolist()
    packets: Counter[tuple[str, int]] = Counter()
    tracker = session.sequences
    for i, (a, b, value, sequence_first, following_last) in enumerate(zip(
            heads.tolist(), (tails + 1).tolist(), scope[heads].tolist(), sequence[heads].tolist(),
            following[tails].tolist(), strict=True)):
        exporter, version, domain = walk.exporters[value >> 34], _VERSIONS[(value >> 32) & 3], value & 0xFFFFFFFF
        packets[(exporter, version)] += b - a
        if not broken_scopes[i] and tracker.observe_unbroken(exporter, version, domain, sequence_first,
                                                             following_last, totals[i]):
            continue
        lost = sum(tracker.observe(exporter, version, domain, s, n)
                   for s, n in zip(sequence[a:b].tolist(), advance[a:b].tolist(), strict=True))
        if lost:
            session.count("decode_sequence_lost_total", lost, exporter=exporter, unit=_SEQUENCE_UNIT[version])
    session.count_packets(packets)
