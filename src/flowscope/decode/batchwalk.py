"""The batch walk: a whole batch of datagrams decoded together, for the common case.

Most export datagrams are alike: a NetFlow v5 message whose length matches its record count, or a
NetFlow v9 / IPFIX message of data sets whose templates are known and of fixed length, perhaps
with a template set that merely repeats the stored templates (the periodic refresh). For those,
the per-message Python walk of ``DecoderSession`` costs far more than the records themselves.
Here the headers of the whole batch are read at once (``headerwalk.py``: the payloads joined into
one buffer, tables of message and set headers), the sets are classified against the session's
templates, the records of each layout are gathered in one step (a fancy index, or the compiled
loop of ``walkkernel.py``), and sequence numbers are checked per exporter scope as whole runs.

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
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from flowscope.decode import walkkernel
from flowscope.decode.context import MessageContext, RecordColumns, SetColumns
from flowscope.decode.headerwalk import VERSIONS, Walk, walk_headers
from flowscope.decode.records import SharedRows
from flowscope.decode.templates import Template, TemplateStore, layout_number
from flowscope.decode.v5 import V5_TEMPLATE
from flowscope.model import Datagram

if TYPE_CHECKING:
    from flowscope.decode.session import DecoderSession

_MAX_RECLASSIFY = 8  # template changes per batch (+1 per 32 datagrams) after which the rest goes
# the per-message path
_SEQUENCE_UNIT = {5: "records", 9: "packets", 10: "records"}


@dataclass(slots=True)
class _Classes:
    """The batch walk's view of the session's templates, valid until a template changes."""

    fast: npt.NDArray[np.bool_]  # per datagram
    templates: list[Template | None]  # per key: the fixed-length data template, else None
    refreshed: dict[int, int]  # template set index → templates it refreshes


_Scope = tuple[str, int, int, int]  # exporter, version, domain, set id
KnownTemplateSet = tuple[bytes, tuple[Template, ...]]  # a scope's last template set and its templates
_CACHE_MAX = 1 << 14  # entries of a WalkCache


@dataclass(slots=True)
class WalkCache:
    """What ``_classify`` found out about scopes, kept across batches: the usable template of a
    scope, valid while the template store does not change (its ``generation``), and whether a
    template set refreshes the stored templates, valid while in addition the scope's last template
    set is the same object."""

    store: TemplateStore | None = None
    generation: int = -1
    templates: dict[_Scope, Template | None] = field(default_factory=dict)
    refreshes: dict[tuple[_Scope, bytes], tuple[KnownTemplateSet, int | None]] = field(default_factory=dict)

    def valid_for(self, store: TemplateStore) -> WalkCache:
        if (store is not self.store or store.generation != self.generation
                or len(self.templates) + len(self.refreshes) > _CACHE_MAX):
            self.templates.clear()
            self.refreshes.clear()
            self.store, self.generation = store, store.generation
        return self


def _key_parts(key: int, walk: Walk) -> tuple[str, int, int, int]:
    """exporter, version, domain, set id of a set key."""
    return (walk.exporters[key >> 50], VERSIONS[(key >> 48) & 3], (key >> 16) & 0xFFFFFFFF, key & 0xFFFF)


def _classify(session: DecoderSession, walk: Walk, first: int) -> _Classes:
    """Which datagrams from ``first`` on the batch walk can decode with the session as it is now."""
    cache = session.walk_cache.valid_for(session.templates)
    scopes = [_key_parts(key, walk) for key in walk.keys.tolist()]
    templates: list[Template | None] = []
    for scope in scopes:
        if scope in cache.templates:
            templates.append(cache.templates[scope])
            continue
        exporter, version, domain, set_id = scope
        template = V5_TEMPLATE if version == 5 else session.templates.get(exporter, domain, set_id, version)
        usable = (template is not None and not template.is_options and not template.variable_index
                  and template.fixed_length > 0 and template.fixed_dtype.itemsize == template.fixed_length)
        templates.append(template if usable else None)
        cache.templates[scope] = templates[-1]
    usable_key = np.array([t is not None for t in templates], np.bool_)
    set_ok = usable_key[walk.set_key] if templates else np.zeros(0, np.bool_)
    refreshed: dict[int, int] = {}
    template_sets = np.flatnonzero(walk.set_is_template if first == 0 else
                                   walk.set_is_template & (walk.set_datagram >= first))
    buffer = walk.buffer
    seen: dict[tuple[int, bytes], int | None] = {}
    for index, key, start, length in zip(template_sets.tolist(), walk.set_key[template_sets].tolist(),
                                         walk.set_start[template_sets].tolist(),
                                         walk.set_length[template_sets].tolist(), strict=True):
        # An exporter repeats the same template set every 20 datagrams or so: the check is made
        # once per scope and content, and holds while that scope's last template set is the same.
        body = buffer[start : start + length]
        count = seen.get((key, body), -1)
        if count == -1:
            count = seen[(key, body)] = _refresh_lookup(session, cache, scopes[key], body)
        if count is not None:
            refreshed[index] = count
            set_ok[index] = True
    if len(refreshed) == len(template_sets) and all(
            t is not None or scope[3] < 256 for t, scope in zip(templates, scopes, strict=True)):
        # every data set has its template and every template set (from ``first`` on) is a refresh
        return _Classes(fast=walk.eligible, templates=templates, refreshed=refreshed)
    failed = walk.set_datagram[~set_ok]
    fast = walk.eligible.copy()
    fast[failed] = False
    return _Classes(fast=fast, templates=templates, refreshed=refreshed)


def _refresh_lookup(session: DecoderSession, cache: WalkCache, scope: _Scope, body: bytes) -> int | None:
    """``_refresh_count``, remembered across batches while the scope's last template set stays."""
    exporter, version, domain, set_id = scope
    known = session.known_template_set(exporter, domain, version, set_id)
    if known is None:
        return None
    checked = cache.refreshes.get((scope, body))
    if checked is not None and checked[0] is known:
        return checked[1]
    count = _refresh_count(session, scope, known, body)
    cache.refreshes[(scope, body)] = (known, count)
    return count


def _refresh_count(session: DecoderSession, scope: _Scope, known: KnownTemplateSet, body: bytes) -> int | None:
    """Templates refreshed by a template set (of ``scope``, bytes ``body``) identical to the last
    one of its scope, ``known`` (see ``DecoderSession._refreshed``), or None if it must be parsed."""
    exporter, version, domain, _ = scope
    if known[0] != body:
        return None
    for template in known[1]:
        if session.templates.get(exporter, domain, template.template_id, version) is not template:
            return None
    return len(known[1])


def decode_batch(session: DecoderSession, datagrams: Sequence[Datagram]) -> bool:
    """Decode a batch into the session's groups, as ``DecoderSession._message`` on each would;
    returns whether the batch walk took any datagram itself (else it was only overhead)."""
    walk = walk_headers(datagrams, session.config.compiled_kernel) if datagrams else None
    if walk is None:
        for datagram in datagrams:
            session.message(datagram)
        return False
    return _decode_walked(session, datagrams, walk)


def _decode_walked(session: DecoderSession, datagrams: Sequence[Datagram], walk: Walk) -> bool:
    n = len(datagrams)
    template_sets = np.flatnonzero(walk.set_is_template).tolist()
    position = 0
    took = False
    for _ in range(_MAX_RECLASSIFY + n // 32):
        classes = _classify(session, walk, position)
        if classes.fast[position:].all():  # the usual case: the rest in one run
            _decode_run(session, walk, classes, position, n)
            return True
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


def _decode_run(session: DecoderSession, walk: Walk, classes: _Classes, first: int, end: int) -> None:
    """Datagrams ``first`` to ``end`` (all fast): records into groups, sequences, counters."""
    lo, hi = (0, len(walk.set_datagram)) if first == 0 and end == len(walk.eligible) else (
        np.searchsorted(walk.set_datagram, [first, end]).tolist())
    set_datagram = walk.set_datagram[lo:hi]
    set_key = walk.set_key[lo:hi]
    is_template = walk.set_is_template[lo:hi]
    if is_template.any():
        template_sets = is_template.nonzero()[0]
        refreshed = np.bincount(walk.code[set_datagram[template_sets]], minlength=len(walk.exporters),
                                weights=[classes.refreshed[i] for i in (template_sets + lo).tolist()]).tolist()
        for code, templates in enumerate(refreshed):
            if templates:
                session.count("decode_templates_total", int(templates), exporter=walk.exporters[code],
                              event="refreshed")
    # (1 for a key without a usable template: its sets here are template sets, counted 0 records)
    record_length = np.array([1 if t is None else t.fixed_length for t in classes.templates], np.int64)
    lengths = record_length[set_key]
    counts = np.where(is_template, 0, walk.set_length[lo:hi] // lengths)
    _sequences(session, walk, first, end, set_datagram, counts)
    data = np.flatnonzero(counts > 0)
    if len(data):
        _gather(session, walk, classes, data + lo if lo else data, counts[data], lengths[data])


def _gather(session: DecoderSession, walk: Walk, classes: _Classes, sets: npt.NDArray[np.int64],
            counts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> None:
    """Data sets (indices into the walk, in wire order) into groups. Groups are made in the order
    their first set arrived, as the per-message path does; the records of all groups of one
    layout are gathered with one fancy index, each group getting a slice, so that they lie end to
    end for the normalizer. (Few numpy calls per batch: each costs 1-3 µs whatever its size.)"""
    order_start = session.take_order(counts)
    keys = walk.set_key[sets]
    by_key = np.argsort(keys, kind="stable")
    sorted_keys = keys[by_key]
    bounds = [0, *(np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1).tolist(), len(keys)]
    # one span of ``by_key`` per group, ordered by the group's first set (the sort is stable)
    spans = sorted(zip(by_key[bounds[:-1]].tolist(), pairwise(bounds), strict=True))
    in_key_order = all(one[1][0] < other[1][0] for one, other in pairwise(spans))
    members = by_key if in_key_order else np.concatenate([by_key[a:b] for _, (a, b) in spans])
    set_index = sets[members]
    datagram = walk.set_datagram[set_index]
    set_counts = counts[members]
    set_lengths = lengths[members]
    ends = np.cumsum(set_counts)
    first_record = ends - set_counts
    record_bounds = [0, *ends.tolist()]
    total = record_bounds[-1]
    group_keys = sorted_keys[[a for _, (a, _) in spans]].tolist()
    templates = [classes.templates[key] for key in group_keys]
    one_layout = len({layout_number(t) for t in templates if t is not None}) == 1
    columns = SetColumns(
        counts=set_counts, order_start=order_start[members], export_time_ms=walk.export_time_ms[datagram],
        sys_uptime_ms=walk.sys_uptime_ms[datagram], time_received_ms=walk.time_received_ms[datagram],
        header_sampling_interval=walk.sampling[datagram],
    )
    with_sampling = any(t is V5_TEMPLATE for t in templates)
    offsets: npt.NDArray[np.int64] | None = None
    gathered: np.ndarray | None
    if one_layout and session.config.compiled_kernel and walkkernel.KERNEL is not None:
        assert templates[0] is not None
        gathered, per_record = walkkernel.gather(walk.buffer, walk.set_start[set_index], columns, templates[0],
                                                 with_sampling)
    else:
        record_index = np.arange(total, dtype=np.int64)
        # Sets of one layout and one record count (full v5 datagrams, say): each set is gathered
        # as one item, 4 times cheaper than record by record.
        per_set = int(set_counts[0]) if one_layout and bool((set_counts == set_counts[0]).all()) else 0
        repeats: int | npt.NDArray[np.int64] = per_set or set_counts
        if per_set:
            gathered = _sets(walk.buffer, walk.set_start[set_index], per_set, templates[0])
        else:
            # record r of set j starts at set_start[j] + (r - first_record[j]) * length[j]
            step = int(set_lengths[0]) if one_layout else np.repeat(set_lengths, set_counts)
            offsets = (np.repeat(walk.set_start[set_index] - first_record * set_lengths, set_counts)
                       + record_index * step)
            gathered = _records(walk.buffer, offsets, templates[0]) if one_layout else None
        per_record = RecordColumns(
            export_time_ms=np.repeat(columns.export_time_ms, repeats),
            sys_uptime_ms=np.repeat(columns.sys_uptime_ms, repeats),
            time_received_ms=np.repeat(columns.time_received_ms, repeats),
            order=np.repeat(columns.order_start - first_record, repeats) + record_index,
            header_sampling_interval=(np.repeat(columns.header_sampling_interval, repeats)
                                      if with_sampling else np.zeros(0, np.uint32)),
        )
    # header values of each group's first set, for its context
    heads = [0]
    for _, (a, b) in spans[:-1]:
        heads.append(heads[-1] + b - a)
    first_datagrams = datagram[heads].tolist()
    key_values = walk.keys[group_keys].tolist()
    heads.append(len(set_index))
    for g, template in enumerate(templates):
        assert template is not None
        span = slice(heads[g], heads[g + 1])
        records_from, records_to = record_bounds[span.start], record_bounds[span.stop]
        if gathered is not None:
            records = gathered[records_from:records_to]
            shared: SharedRows | None = SharedRows(gathered, per_record, records_from, records_to)
        else:
            assert offsets is not None
            records = _records(walk.buffer, offsets[records_from:records_to], template)
            shared = None
        exporter, version, domain, _ = _key_parts(key_values[g], walk)
        head = first_datagrams[g]
        context = MessageContext(version, exporter, domain, int(walk.export_time_ms[head]),
                                 int(walk.sys_uptime_ms[head]), int(walk.time_received_ms[head]))
        session.group(template, context).add_block(records, (columns, span),
                                                   per_record.rows(slice(records_from, records_to)), shared)


def _sets(buffer: bytes, starts: npt.NDArray[np.int64], count: int, template: Template | None) -> np.ndarray:
    """The records of sets of ``count`` records each, starting at byte offsets ``starts`` of the
    buffer, as the template's structured dtype: one copied item per set."""
    assert template is not None
    length = template.fixed_length * count
    windows = np.ndarray(shape=(len(buffer) - length + 1,), dtype=np.dtype((np.void, length)), buffer=buffer,
                         strides=(1,))
    return windows[starts].view(template.fixed_dtype)


def _records(buffer: bytes, offsets: npt.NDArray[np.int64], template: Template | None) -> np.ndarray:
    """Records of one template at byte offsets of the buffer, as its structured dtype."""
    assert template is not None
    length = template.fixed_length
    windows = np.ndarray(shape=(len(buffer) - length + 1,), dtype=np.dtype((np.void, length)), buffer=buffer,
                         strides=(1,))
    return windows[offsets].view(template.fixed_dtype)


def _sequences(session: DecoderSession, walk: Walk, first: int, end: int,
               set_datagram: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> None:
    """Sequence numbers and packet counts of the datagrams ``first`` to ``end``, per exporter scope:
    an unbroken run of a scope is checked here with numpy and handed to the tracker in one step."""
    vcode = walk.vcode[first:end]
    # How far each message moves its sequence number: v5 flows, v9 packets, IPFIX data records.
    advance: npt.NDArray[np.int64] | None = None  # None: 1 each (NetFlow v9 only)
    if walk.only_version == 5 or (walk.only_version is None and (vcode == 0).all()):
        advance = walk.v5_count[first:end]
    elif walk.only_version != 9 and not (vcode == 1).all():
        records = np.bincount(set_datagram - first, weights=counts, minlength=end - first).astype(np.int64)
        advance = np.where(vcode == 0, walk.v5_count[first:end], np.where(vcode == 1, 1, records))
    by_scope = np.argsort(walk.scope[first:end], kind="stable")
    scope, sequence = walk.scope[first:end][by_scope], walk.sequence[first:end][by_scope]
    if advance is not None:
        advance = advance[by_scope]
    following = (sequence + (1 if advance is None else advance)) & 0xFFFFFFFF
    boundary = scope[1:] != scope[:-1]
    heads = [0, *(np.flatnonzero(boundary) + 1).tolist()]
    ends = [*heads[1:], len(scope)]
    # a break inside a scope's run: that scope goes through the tracker message by message
    broken = (sequence[1:] != following[:-1]) & ~boundary
    broken_scopes = (np.logical_or.reduceat(np.concatenate(([False], broken)), heads).tolist() if broken.any()
                     else [False] * len(heads))
    totals = [b - a for a, b in zip(heads, ends, strict=True)] if advance is None else (
        np.add.reduceat(advance, heads).tolist())
    packets: Counter[tuple[str, int]] = Counter()
    tracker = session.sequences
    for i, (a, b, value, sequence_first, following_last) in enumerate(zip(
            heads, ends, scope[heads].tolist(), sequence[heads].tolist(), following[[b - 1 for b in ends]].tolist(),
            strict=True)):
        exporter, version, domain = walk.exporters[value >> 34], VERSIONS[(value >> 32) & 3], value & 0xFFFFFFFF
        packets[(exporter, version)] += b - a
        if not broken_scopes[i] and tracker.observe_unbroken(exporter, version, domain, sequence_first,
                                                             following_last, totals[i]):
            continue
        steps = [1] * (b - a) if advance is None else advance[a:b].tolist()
        lost = sum(tracker.observe(exporter, version, domain, s, n)
                   for s, n in zip(sequence[a:b].tolist(), steps, strict=True))
        if lost:
            session.count("decode_sequence_lost_total", lost, exporter=exporter, unit=_SEQUENCE_UNIT[version])
    session.count_packets(packets)
