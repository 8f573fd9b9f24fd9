"""The batch walk's header pass: what the message and set headers of a whole batch say.

Every datagram's header values (exporter, version, domain, sequence, times, v5 count and sampling)
and every set of the datagrams that are well formed as the batch walk expects (a NetFlow v5
message whose length matches its count, a NetFlow v9 / IPFIX message whose sets add up, at most
16 of them), in wire order, over the payloads joined into one buffer. Two ways to make the same
tables: the compiled loop of ``walkkernel.py`` when it is built and wanted, and numpy steps over
the whole batch (message headers at computed offsets, set headers one "set index" at a time
across all messages, the few messages with many sets in Python). ``batchwalk.py`` decides from
these tables what it can decode itself.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from flowscope.decode import walkkernel
from flowscope.decode.v5 import V5_TEMPLATE
from flowscope.model import Datagram

_PAD = bytes(64)  # after the joined payloads: header reads of short datagrams stay in the buffer
_V5_HEADER, _V5_RECORD = 24, V5_TEMPLATE.fixed_length
_V9_HEADER, _IPFIX_HEADER = 20, 16
_MAX_SETS = walkkernel.MAX_SETS  # sets per message walked here; with more: the per-message path
_FEW_MESSAGES = 48  # messages with more sets walked in Python (≈ 0.3 µs a set, a numpy step ≈ 25 µs)
_SET_HEADER = struct.Struct("!HH")
MAX_EXPORTERS = 1 << 13  # exporter codes fit in the 64-bit set key (see _keys)
VERSIONS = (5, 9, 10)  # version code 0, 1, 2

@dataclass(slots=True)
class Walk:
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
    scope: npt.NDArray[np.int64]  # per datagram: exporter code << 34 | version code << 32 | domain
    only_version: int | None  # the version field of every datagram, if they share one
    keys: npt.NDArray[np.int64]  # unique (exporter, version, domain, set id)
    buffer: bytes


def walk_headers(datagrams: Sequence[Datagram], compiled: bool) -> Walk | None:
    """The headers of a batch: through the compiled kernel if asked and built, else with numpy;
    None if the batch has too many exporters to key."""
    walk = _walk_compiled(datagrams) if compiled and walkkernel.KERNEL is not None else None
    return walk if walk is not None else walk_numpy(datagrams)


def walk_numpy(datagrams: Sequence[Datagram]) -> Walk | None:
    """The header tables with numpy steps over the whole batch; None if it has too many exporters."""
    n = len(datagrams)
    payloads = [d.payload for d in datagrams]
    lengths = np.fromiter(map(len, payloads), np.int64, n)
    payloads.append(_PAD)
    buffer = b"".join(payloads)
    exporters = [d.exporter for d in datagrams]
    codes = {e: i for i, e in enumerate(dict.fromkeys(exporters))}
    if len(codes) >= MAX_EXPORTERS:
        return None
    code = np.fromiter(map(codes.__getitem__, exporters), np.int64, n)
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    # the first 24 bytes of every message as six 32-bit words, in one gather and one conversion
    words = np.ndarray(shape=(len(buffer) - 23,), dtype=np.dtype((np.void, 24)), buffer=buffer,
                       strides=(1,))[starts].view(">u4").reshape(n, 6).astype(np.int64)
    version = words[:, 0] >> 16
    h2 = words[:, 0] & 0xFFFF  # v5 record count, IPFIX message length
    w4, w8, w12, w16, w20 = words[:, 1], words[:, 2], words[:, 3], words[:, 4], words[:, 5]  # w4: v5/v9 uptime,
    # IPFIX export seconds; w20: v5 engine type and id (high 16 bits), sampling (low 16 bits)
    # A datagram shorter than its header never passes these (the pad keeps the reads in bounds).
    # Batches of one version (the usual case) skip the selections between versions.
    same = version == version[0]
    only: int | None = None  # the version of every datagram, if they share one
    if same.all():
        only = int(version[0])
        absent = np.zeros(n, np.bool_)  # never changed in place below: only the ``any_`` versions are
        is_v5, is_v9, is_ipfix = (same if only == v else absent for v in (5, 9, 10))
        any_v5, any_v9, any_ipfix = only == 5, only == 9, only == 10
    else:
        is_v5, is_v9, is_ipfix = version == 5, version == 9, version == 10
        any_v5, any_v9, any_ipfix = bool(is_v5.any()), bool(is_v9.any()), bool(is_ipfix.any())
    if any_v5:
        is_v5 &= (h2 > 0) & (lengths == _V5_HEADER + _V5_RECORD * h2)
    if any_v9:
        is_v9 &= lengths >= _V9_HEADER
    if any_ipfix:
        is_ipfix &= (h2 == lengths) & (lengths >= _IPFIX_HEADER)
    # domain, sequence, export time, uptime: where each version keeps them
    sampling = np.zeros(n, np.uint32)
    if not (any_v5 or any_ipfix):
        vcode = is_v9.astype(np.int64)
        domain, sequence, export_time_ms, sys_uptime_ms = w16, w12, w8 * 1000, w4
    elif not (any_v9 or any_ipfix):
        vcode = np.zeros(n, np.int64)
        domain, sequence = w20 >> 16, w16
        export_time_ms, sys_uptime_ms = w8 * 1000 + w12 // 1_000_000, w4
        sampling = (w20 & 0x3FFF).astype(np.uint32)
    else:
        vcode = is_v9 + 2 * is_ipfix.astype(np.int64)
        if any_v5 or any_v9:
            domain = np.where(is_v9, w16, w12)
            sequence = np.where(is_v9, w12, w8)
            export_time_ms = np.where(is_ipfix, w4, w8) * 1000
            sys_uptime_ms = np.where(is_ipfix, 0, w4)
        else:
            domain, sequence, export_time_ms, sys_uptime_ms = w12, w8, w4 * 1000, np.zeros(n, np.int64)
        if any_v5:
            domain = np.where(is_v5, w20 >> 16, domain)  # engine type << 8 | engine id
            sequence = np.where(is_v5, w16, sequence)
            export_time_ms = np.where(is_v5, w8 * 1000 + w12 // 1_000_000, export_time_ms)
            sampling = np.where(is_v5, w20 & 0x3FFF, 0).astype(np.uint32)

    # Set headers, the k-th set of every message at once; once few messages have more sets (a
    # template set before the data, say), those are walked in Python: cheaper than numpy calls.
    bad = np.zeros(n, np.bool_)
    pieces: list[tuple[np.ndarray, ...]] = []
    if any_v9 or any_ipfix:
        set_headers = np.ndarray(shape=(len(buffer) - 3,), dtype=np.dtype((np.void, 4)), buffer=buffer,
                                 strides=(1,))
        walked = (is_v9 | is_ipfix).nonzero()[0] if any_v5 or any_ipfix else is_v9.nonzero()[0]
        # one row each: datagram, position of the next set header, end of the message, 1 if v9
        body = starts[walked] + (np.where(is_v9[walked], _V9_HEADER, _IPFIX_HEADER) if any_ipfix else _V9_HEADER)
        state = np.stack((walked, body, starts[walked] + lengths[walked], is_v9[walked].astype(np.int64)))
        for k in range(_MAX_SETS + 1):
            left = state[2] - state[1]
            if k:
                unfinished = np.flatnonzero(left > 0)  # more sets, or padding after the last one
                if len(unfinished) <= _FEW_MESSAGES:
                    rest = _walk_rest(buffer, state[:, unfinished], k, bad)
                    if rest is not None:
                        pieces.append(rest)
                    break
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
    well_formed = (is_v5 | is_v9 | is_ipfix) if only is None else (is_v5 if any_v5 else is_v9 if any_v9 else is_ipfix)
    any_bad = bool(bad.any())
    eligible = well_formed & ~bad if any_bad else well_formed
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
    if any_bad:
        keep = eligible[set_datagram]
        set_datagram, set_id, set_start, set_length, set_is_template = (
            set_datagram[keep], set_id[keep], set_start[keep], set_length[keep], set_is_template[keep])
    scope, keys, set_key = _keys(code, vcode, domain, set_datagram, set_id)
    return Walk(
        exporters=list(codes), code=code, vcode=vcode, eligible=eligible, domain=domain, sequence=sequence,
        export_time_ms=export_time_ms, sys_uptime_ms=sys_uptime_ms,
        time_received_ms=np.fromiter([d.time_received_ms for d in datagrams], np.int64, n), sampling=sampling,
        v5_count=h2, set_datagram=set_datagram, set_id=set_id, set_start=set_start, set_length=set_length,
        set_is_template=set_is_template, set_key=set_key, scope=scope, only_version=only, keys=keys, buffer=buffer,
    )


def _keys(code: npt.NDArray[np.int64], vcode: npt.NDArray[np.int64], domain: npt.NDArray[np.int64],
          set_datagram: npt.NDArray[np.int64], set_id: npt.NDArray[np.int64]) -> tuple[np.ndarray, ...]:
    """The scope of every datagram, the distinct set keys, and each set's index among them."""
    # (exporter, version, domain) as one integer: 13 + 2 + 32 bits; with the set id, 16 more
    scope = (code << 34) | (vcode << 32) | domain
    raw_keys = (scope[set_datagram] << 16) | set_id
    keys = np.sort(raw_keys)  # np.unique costs 5-15 µs more here (hashing, then sorting)
    if len(keys) > 1:
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return scope, keys, np.searchsorted(keys, raw_keys)


def _walk_compiled(datagrams: Sequence[Datagram]) -> Walk | None:
    """``walk_numpy``'s tables from the compiled header pass; None if it did not take the batch."""
    headers = walkkernel.walk(datagrams, MAX_EXPORTERS)
    if headers is None:
        return None
    heads, sets, wk = headers.heads, headers.sets, walkkernel
    code, vcode, domain, version = heads[:, wk.CODE], heads[:, wk.VCODE], heads[:, wk.DOMAIN], heads[:, wk.VERSION]
    set_datagram, set_id = sets[:, wk.SET_DATAGRAM], sets[:, wk.SET_ID]
    first = int(version[0])
    only = first if first >= 0 and bool((version == first).all()) else None
    scope, keys, set_key = _keys(code, vcode, domain, set_datagram, set_id)
    return Walk(
        exporters=headers.exporters, code=code, vcode=vcode, eligible=heads[:, wk.ELIGIBLE].astype(np.bool_),
        domain=domain, sequence=heads[:, wk.SEQUENCE], export_time_ms=heads[:, wk.EXPORT],
        sys_uptime_ms=heads[:, wk.UPTIME], time_received_ms=heads[:, wk.RECEIVED],
        sampling=heads[:, wk.SAMPLING].astype(np.uint32), v5_count=heads[:, wk.H2], set_datagram=set_datagram,
        set_id=set_id, set_start=sets[:, wk.SET_START], set_length=sets[:, wk.SET_LENGTH],
        set_is_template=sets[:, wk.SET_TEMPLATE].astype(np.bool_), set_key=set_key, scope=scope, only_version=only,
        keys=keys, buffer=headers.buffer,
    )


def _walk_rest(buffer: bytes, state: npt.NDArray[np.int64], index: int,
               bad: npt.NDArray[np.bool_]) -> tuple[np.ndarray, ...] | None:
    """The sets from set index ``index`` on of a few messages (rows of ``state`` as in ``_walk``),
    one by one: the same checks as the numpy steps, marking ``bad`` alike."""
    unpack = _SET_HEADER.unpack_from
    rows: list[tuple[int, int, int, int, bool]] = []
    for datagram, body, end, v9 in zip(*state.tolist(), strict=True):
        k, position = index, body
        while True:
            left = end - position
            if left < 4:
                if left > 0:
                    bad[datagram] = True  # padding after the last set: counted there
                break
            if k == _MAX_SETS:
                bad[datagram] = True
                break
            set_id, set_length = unpack(buffer, position)
            template_set = (set_id >> 1) == 1 - v9  # v9: set id 0 or 1, IPFIX: 2 or 3
            if set_length < 4 or set_length > left or (set_id < 256 and not template_set):
                bad[datagram] = True
                break
            rows.append((datagram, set_id, position + 4, set_length - 4, template_set))
            position += set_length
            k += 1
    if not rows:
        return None
    datagram_column, id_column, start_column, length_column, template_column = zip(*rows, strict=True)
    return (np.array(datagram_column, np.int64), np.array(id_column, np.int64), np.array(start_column, np.int64),
            np.array(length_column, np.int64), np.array(template_column, np.bool_))
