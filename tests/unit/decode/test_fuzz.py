"""Fuzzing the decoder and the normalizer: bad input is counted, never a crash.

Real packets from tests/data are mutated (bit flips, truncation, byte insertion and deletion, header,
set and template fields rewritten to lie, unknown versions) and mixed with floods of random
templates and data; sequences of such batches go through one ``DecoderSession`` and its
``Normalizer``. After every call:

* nothing raised, and every returned ``RecordSet`` is well formed (equal lengths, dtype of its
  template, arrival orders unique and increasing);
* the counters add up: ``decode_packets_total`` grew by the number of datagrams of 4 bytes or
  more, ``decode_records_total`` by the number of records returned, templates stored = new -
  withdrawn, held sets = held - released - dropped, ``decode_sequence_lost_total`` = the tracker's
  losses; every error is labelled with an exporter that sent something in that call;
* a clean exporter whose pristine packets are interleaved with the garbage decodes exactly as it
  does alone, with no error counted against it;
* ``Normalizer.normalize`` returns a FlowBatch of equal-length columns of the canonical dtypes,
  one row per data record (two for split biflows).

Profiles: ``ci`` (default; derandomized, so CI runs the same examples every time, well under a
minute) and ``soak`` (many more random examples for local runs):
``FLOWSCOPE_FUZZ_PROFILE=soak .venv/bin/pytest tests/unit/decode/test_fuzz.py``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.metrics import Counters
from flowscope.model import FLOW_COLUMNS, Datagram, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer
from support.exports import (
    REVERSE_PEN,
    VARIABLE,
    data_set,
    flowset,
    ipfix_message,
    ipfix_options_template,
    ipfix_options_template_set,
    ipfix_template,
    ipfix_template_set,
    ipfix_withdrawal,
    u32,
    v5_message,
    v5_record,
    v9_message,
    v9_options_template,
    v9_options_template_set,
    v9_template,
    v9_template_set,
    varlen,
)

settings.register_profile(
    "ci",
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
settings.register_profile(
    "soak",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
PROFILE = settings.get_profile(os.environ.get("FLOWSCOPE_FUZZ_PROFILE", "ci"))


def fuzz_settings(scale: float = 1.0) -> settings:
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * scale)))


DATA = Path(__file__).resolve().parents[2] / "data"


def _split_ipfix_file(raw: bytes, limit: int) -> list[bytes]:
    messages, offset = [], 0
    while offset < len(raw) and len(messages) < limit:
        (length,) = struct.unpack_from("!H", raw, offset + 2)
        messages.append(raw[offset : offset + length])
        offset += length
    return messages


SEEDS: list[bytes] = sorted(
    [p.read_bytes() for p in (DATA / "logstash-codec-netflow").glob("*.dat")]
    + [p.read_bytes() for p in (DATA / "python-netflow-v9-softflowd").glob("*.bin")]
    + [p.read_bytes() for p in (DATA / "goflow2").glob("*.bin")]
    + _split_ipfix_file((DATA / "ipfixcol2" / "example_flows.ipfix").read_bytes(), 4)
)

CLEAN = "203.0.113.250"  # never sends anything but pristine packets
CLEAN_STREAM: list[bytes] = [
    (DATA / "python-netflow-v9-softflowd" / name).read_bytes()
    for name in ("packet_ipfix.bin", "packet_v9_template.bin", "packets_v9_0.bin", "packet_ipfix_template.bin",
                 "packet_v5.bin", "packet_ipfix.bin", "packets_v9_1.bin")
]
EXPORTERS = ["192.0.2.1", "192.0.2.2", "2001:db8::7"]
T0 = 1_700_000_000_000
INTERESTING_U16 = [0, 1, 2, 3, 4, 5, 9, 10, 15, 16, 255, 256, 257, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]


# -- where the lengths and ids of a message are ----------------------------------------------------


def structural_fields(payload: bytes) -> list[int]:
    """Offsets of the 16-bit header, set and template fields of a message, found leniently.

    Version, length/count, set ids and lengths, template ids, field counts, scope counts/lengths,
    element ids and field lengths: the places where a lie hurts most.
    """
    fields = [0]
    if len(payload) < 4:
        return fields
    fields.append(2)
    version = int.from_bytes(payload[:2], "big")
    if version not in (9, 10):
        return fields
    offset = 16 if version == 10 else 20
    template_sets = (2, 3) if version == 10 else (0, 1)
    while offset + 4 <= len(payload) and len(fields) < 400:
        set_id, set_length = struct.unpack_from("!HH", payload, offset)
        fields += [offset, offset + 2]
        end = min(offset + set_length, len(payload)) if set_length >= 4 else len(payload)
        if set_id in template_sets:
            _template_fields(payload, offset + 4, end, version, options=set_id == template_sets[1], out=fields)
        if set_length < 4:
            break
        offset += set_length
    return fields


def _template_fields(payload: bytes, offset: int, end: int, version: int, *, options: bool, out: list[int]) -> None:
    while offset + 4 <= end and len(out) < 400:
        if version == 9 and options:
            if offset + 6 > end:
                return
            _, scope_length, option_length = struct.unpack_from("!HHH", payload, offset)
            out += [offset, offset + 2, offset + 4]
            count = (scope_length + option_length) // 4
            offset += 6
        else:
            _, count = struct.unpack_from("!HH", payload, offset)
            out += [offset, offset + 2]
            offset += 4
            if version == 10 and options and count:
                out.append(offset)
                offset += 2
        for _ in range(count):
            if offset + 4 > end:
                return
            element_id = int.from_bytes(payload[offset : offset + 2], "big")
            out += [offset, offset + 2]
            offset += 4
            if version == 10 and element_id & 0x8000:
                offset += 4


# -- strategies -----------------------------------------------------------------------------------

Mutation = Callable[[bytearray, st.DataObject], None]


def _flip(data: bytearray, draw: st.DataObject) -> None:
    if data:
        position = draw.draw(st.integers(0, len(data) - 1))
        data[position] ^= 1 << draw.draw(st.integers(0, 7))


def _truncate(data: bytearray, draw: st.DataObject) -> None:
    del data[draw.draw(st.integers(0, len(data))) :]


def _insert(data: bytearray, draw: st.DataObject) -> None:
    position = draw.draw(st.integers(0, len(data)))
    data[position:position] = draw.draw(st.binary(min_size=1, max_size=16))


def _delete(data: bytearray, draw: st.DataObject) -> None:
    if data:
        start = draw.draw(st.integers(0, len(data) - 1))
        del data[start : start + draw.draw(st.integers(1, 16))]


def _lie(data: bytearray, draw: st.DataObject) -> None:
    """Rewrite a length, count, id or field length with a boundary or random value."""
    offsets = [o for o in structural_fields(bytes(data)) if o + 2 <= len(data)]
    if not offsets:
        return
    offset = draw.draw(st.sampled_from(offsets))
    current = int.from_bytes(data[offset : offset + 2], "big")
    value = draw.draw(
        st.sampled_from(INTERESTING_U16)
        | st.integers(0, 0xFFFF)
        | st.sampled_from([max(current - 1, 0), min(current + 1, 0xFFFF), current ^ 0x8000])
    )
    data[offset : offset + 2] = value.to_bytes(2, "big")


def _version(data: bytearray, draw: st.DataObject) -> None:
    if len(data) >= 2:
        data[0:2] = draw.draw(st.sampled_from([0, 1, 5, 6, 7, 8, 9, 10, 11, 0xFFFF]) | st.integers(0, 0xFFFF)).to_bytes(
            2, "big"
        )


def _zero_fill(data: bytearray, draw: st.DataObject) -> None:
    data.extend(bytes(draw.draw(st.integers(1, 300))))


MUTATIONS: list[Mutation] = [_flip, _truncate, _insert, _delete, _lie, _lie, _lie, _version, _zero_fill]


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    helper = draw(st.data())
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=4)):
        mutation(data, helper)
    return bytes(data)


FIELD_LENGTHS = st.one_of(
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 16]),
    st.just(VARIABLE),
    st.integers(0, 300),
    st.integers(0, 0xFFFF),
)
# elements the normalizer and the options state read (mostly), and any others
ELEMENT_IDS = st.one_of(
    st.sampled_from([1, 2, 4, 6, 7, 8, 10, 11, 12, 14, 21, 22, 27, 28, 32, 34, 48, 50, 82, 85, 86, 139, 150, 151,
                     152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 176, 177, 302, 305, 306, 309, 310]),
    st.sampled_from([1, 2, 6, 10, 34, 48, 50, 160, 302, 305, 306, 309, 310]),
    st.integers(0, 0x7FFF),
)
TEMPLATE_IDS = st.one_of(
    st.integers(256, 260), st.integers(256, 260), st.sampled_from([0, 1, 2, 3, 255, 0xFFFF]), st.integers(0, 0xFFFF)
)
FIELDS = st.lists(
    st.tuples(ELEMENT_IDS, FIELD_LENGTHS, st.sampled_from([0, 0, 0, REVERSE_PEN, 6871, 0xFFFFFFFF])),
    min_size=1,
    max_size=10,
)


def _record(draw: st.DrawFn, fields: list[tuple[int, int, int]]) -> bytes:
    """One record that fits ``fields`` (values random), so odd templates do produce records."""
    parts = []
    for _, length, _ in fields:
        if length == VARIABLE:
            parts.append(varlen(draw(st.binary(max_size=24)), long=draw(st.booleans())))
        elif length <= 32:
            parts.append(draw(st.binary(min_size=length, max_size=length)))
        else:
            parts.append(bytes(length))
    return b"".join(parts)


@st.composite
def template_floods(draw: st.DrawFn) -> bytes:
    """A v9 or IPFIX message with many random (options) templates, withdrawals and data sets.

    Data sets mostly hold records that fit a template announced in the same message (one of the
    random layouts: zero-length, variable-length, reduced-size, enterprise, odd lengths), sometimes
    random bytes.
    """
    ipfix = draw(st.booleans())
    sets: list[bytes] = []
    known: dict[int, list[tuple[int, int, int]]] = {}

    def fitting_data(template_id: int) -> bytes:
        records = [_record(draw, known[template_id]) for _ in range(draw(st.integers(1, 4)))]
        while sum(map(len, records)) > 16_000:
            records.pop()
        return data_set(template_id, records, padding=draw(st.integers(0, 3)))

    def add(kind: str) -> None:
        if kind == "template":
            records = []
            for _ in range(draw(st.integers(1, 6))):
                template_id, fields = draw(TEMPLATE_IDS), draw(FIELDS)
                if not ipfix:
                    fields = [(e, n, 0) for e, n, _ in fields]
                known[template_id] = fields
                if ipfix:
                    records.append(ipfix_template(template_id, fields))
                else:
                    records.append(v9_template(template_id, [(e, n) for e, n, _ in fields]))
            sets.append((ipfix_template_set if ipfix else v9_template_set)(*records, padding=draw(st.integers(0, 3))))
        elif kind == "options":
            template_id, scope, options = draw(TEMPLATE_IDS), draw(FIELDS), draw(FIELDS)
            if ipfix:
                known[template_id] = scope + options
                sets.append(ipfix_options_template_set(ipfix_options_template(template_id, scope, options)))
            else:
                known[template_id] = [(e, n, 0) for e, n, _ in scope + options]
                pairs = [(e, n) for e, n, _ in scope], [(e, n) for e, n, _ in options]
                sets.append(v9_options_template_set(v9_options_template(template_id, *pairs)))
        elif kind == "withdraw":
            withdrawn = draw(st.sampled_from([*known, 2, 3]) if known else TEMPLATE_IDS)
            sets.append(flowset(draw(st.sampled_from([2, 3])), ipfix_withdrawal(withdrawn)))
        elif kind == "data":
            fitting = [t for t in usable() if draw(st.booleans())]
            if fitting:
                sets.append(fitting_data(fitting[0]))
            else:
                sets.append(data_set(max(draw(TEMPLATE_IDS), 256), [draw(st.binary(max_size=200))]))
        else:
            sets.append(draw(st.binary(max_size=64)))

    def usable() -> list[int]:
        return [t for t, fields in known.items() if t >= 256 and sum(n for _, n, _ in fields if n != VARIABLE) < 16_000]

    # templates first, then (mostly) data that fits each of them, then anything
    for kind in draw(st.lists(st.sampled_from(["template", "options"]), min_size=1, max_size=3)):
        add(kind)
    for template_id in usable()[:4]:
        if draw(st.integers(0, 4)) != 4:
            sets.append(fitting_data(template_id))
    for kind in draw(st.lists(st.sampled_from(["data", "withdraw", "raw", "template", "options"]), max_size=4)):
        add(kind)
    while sum(map(len, sets)) > 65_000:  # an export message is at most 65,535 bytes
        sets.pop()
    header = {"sequence": draw(st.integers(0, 2**32 - 1))}
    if ipfix:
        return ipfix_message(sets, export_time=draw(st.integers(0, 2**32 - 1)), domain=draw(st.integers(0, 3)),
                             **header)
    return v9_message(sets, uptime_ms=draw(st.integers(0, 2**32 - 1)), unix_secs=draw(st.integers(0, 2**32 - 1)),
                      source_id=draw(st.integers(0, 3)), **header)


PAYLOADS = st.one_of(
    mutated_packets(),
    mutated_packets(),
    template_floods(),
    st.sampled_from(SEEDS),
    st.binary(max_size=64),
    st.tuples(st.sampled_from([1, 5, 7, 9, 10]), st.binary(max_size=200)).map(lambda v: struct.pack("!H", v[0]) + v[1]),
)


@dataclass
class Call:
    datagrams: list[Datagram]


@st.composite
def calls(draw: st.DrawFn, payloads: st.SearchStrategy[bytes] = PAYLOADS) -> list[Call]:
    now = T0
    result = []
    clean = iter(CLEAN_STREAM)
    for _ in range(draw(st.integers(1, 5))):
        datagrams = []
        for _ in range(draw(st.integers(0, 6))):
            now += draw(st.sampled_from([0, 1, 1000, 30_000, 61_000]))
            datagrams.append(Datagram(draw(st.sampled_from(EXPORTERS)), now, draw(payloads)))
        position = 0
        for _ in range(draw(st.integers(0, 2))):
            payload = next(clean, None)
            if payload is not None:  # in stream order, on its own clock (its held data never expires)
                position = draw(st.integers(position, len(datagrams)))
                datagrams.insert(position, Datagram(CLEAN, T0, payload))
                position += 1
        result.append(Call(datagrams))
    # the rest of the clean stream, so that every example checks all of it
    rest = [Datagram(CLEAN, T0, payload) for payload in clean]
    if rest:
        result.append(Call(rest))
    return result


# -- the invariants -------------------------------------------------------------------------------


def record_fingerprint(records: RecordSet, index: int) -> tuple:
    return (
        records.template.template_id,
        records.domain,
        tuple(bytes(v) for p in range(len(records.template.fields)) for v in [records.values(p)[index]]),
        int(records.export_time_ms[index]),
        int(records.time_received_ms[index]),
    )


def clean_records(record_sets: list[RecordSet]) -> list[tuple]:
    """The clean exporter's records in arrival order."""
    rows = [
        (int(r.order[i]), record_fingerprint(r, i)) for r in record_sets if r.exporter == CLEAN for i in range(len(r))
    ]
    return [fingerprint for _, fingerprint in sorted(rows)]


class Harness:
    """One session, one normalizer per configuration, and the checks after every call."""

    def __init__(self, config: DecoderConfig | None = None) -> None:
        self.counters = Counters()
        self.session = DecoderSession(config, counters=self.counters)
        self.config = self.session.config
        self.split = Normalizer(None, self.session.options, self.counters)
        self.unsplit = Normalizer(NormalizeConfig(split_biflows=False, preserve_order=False), self.session.options,
                                  self.counters)
        self.clean: list[tuple] = []

    def total(self, name: str, **labels: str) -> int:
        return self.counters.total(name, **labels)

    def call(self, datagrams: list[Datagram]) -> list[RecordSet]:
        before = {name: self.total(name) for name in ("decode_packets_total", "decode_records_total",
                                                      "decode_ignored_bytes_total")}
        errors_before = {tuple(sorted(labels.items())): value for labels, value in
                         self.counters.series("decode_errors_total")}
        out = self.session.decode(datagrams)
        self.check_records(out, datagrams)
        self.check_counters(out, datagrams, before, errors_before)
        self.check_normalize(out)
        self.clean += clean_records(out)
        return out

    def check_records(self, out: list[RecordSet], datagrams: list[Datagram]) -> None:
        senders = {d.exporter for d in datagrams}
        orders = []
        for records in out:
            n = len(records)
            assert n > 0
            assert records.exporter in senders
            assert len(records.fixed) == len(records.export_time_ms) == len(records.sys_uptime_ms) == n
            assert len(records.time_received_ms) == n
            assert records.fixed.dtype == records.template.fixed_dtype
            assert set(records.variable) == set(records.template.variable_index)
            assert all(len(values) == n for values in records.variable.values())
            assert (records.header_sampling_interval is not None) == (records.version == 5)
            assert records.template.template_id >= 256 or records.version in (1, 5, 7)
            assert self.session.exporters.key_of(records.exporter_index) == (records.exporter, records.domain)
            order = records.order
            assert np.all(order[1:] > order[:-1])
            orders.append(order)
        if orders:
            merged = np.concatenate(orders)
            assert len(np.unique(merged)) == len(merged)
            assert merged.min() >= 0

    def check_counters(self, out: list[RecordSet], datagrams: list[Datagram], before: dict[str, int],
                       errors_before: dict[tuple, int]) -> None:
        total = self.total
        assert total("decode_packets_total") - before["decode_packets_total"] == sum(
            len(d.payload) >= 4 for d in datagrams
        )
        records = sum(len(r) for r in out)
        assert total("decode_records_total") - before["decode_records_total"] == records
        assert total("decode_records_total", kind="data") + total("decode_records_total", kind="options") == total(
            "decode_records_total"
        )
        ignored = total("decode_ignored_bytes_total") - before["decode_ignored_bytes_total"]
        assert 0 <= ignored <= sum(len(d.payload) for d in datagrams)
        # every new error is counted against an exporter that sent something in this call
        senders = {d.exporter for d in datagrams}
        for labels, value in self.counters.series("decode_errors_total"):
            key = tuple(sorted(labels.items()))
            if value != errors_before.get(key, 0):
                assert labels["exporter"] in senders, labels
                assert labels["kind"], labels
        assert total("decode_errors_total", exporter=CLEAN) == 0
        # templates stored = new - withdrawn, within the bound of every exporter
        assert len(self.session.templates) == total("decode_templates_total", event="new") - total(
            "decode_templates_total", event="withdrawn"
        )
        for exporter in {*EXPORTERS, CLEAN}:
            assert len(self.session.templates.templates_of(exporter)) <= self.config.max_templates_per_exporter
        # held sets: every one is released, dropped or still waiting
        assert total("decode_pending_sets_total") == (
            total("decode_pending_released_total") + total("decode_pending_dropped_total")
            + self.session.pending_sets()
        )
        assert self.session.pending_sets() <= self.config.pending_max_sets_per_exporter * (len(EXPORTERS) + 1)
        # sequence losses as counted = as tracked
        assert total("decode_sequence_lost_total") == sum(s.lost for s in self.session.sequences.states().values())

    def check_normalize(self, out: list[RecordSet]) -> None:
        data_records = sum(len(r) for r in out if not r.is_options)
        for normalizer in (self.split, self.unsplit):
            batch = normalizer.normalize(out)
            assert isinstance(batch, FlowBatch)
            assert set(batch.columns) == set(FLOW_COLUMNS)
            assert {len(column) for column in batch.columns.values()} == {len(batch)}
            for name, dtype in FLOW_COLUMNS.items():
                assert batch[name].dtype == dtype, name
            if normalizer is self.split:
                assert data_records <= len(batch) <= 2 * data_records
            else:
                assert len(batch) == data_records


def reference_clean_records() -> list[tuple]:
    """The clean stream decoded alone, one datagram per call."""
    harness = Harness()
    for payload in CLEAN_STREAM:
        harness.call([Datagram(CLEAN, T0, payload)])
    return harness.clean


def run(sequence: list[Call], config: DecoderConfig | None = None) -> Harness:
    harness = Harness(config)
    for call in sequence:
        harness.call(call.datagrams)
    return harness


# -- the tests ------------------------------------------------------------------------------------

REFERENCE = reference_clean_records()

SMALL = DecoderConfig(max_templates_per_exporter=16, pending_max_sets_per_exporter=8, pending_max_age_ms=60_000)

# Inputs that broke the decoder or the normalizer before they were fixed (see the report of the
# change that added this file), replayed on every run.
X, Y = EXPORTERS[0], EXPORTERS[1]
REGRESSIONS: dict[str, list[Datagram]] = {
    # options.sampling_rates read a variable-length samplingInterval as an integer column:
    # ValueError "no field of name f1" escaped DecoderSession.decode
    "variable-length sampling interval in options data": [Datagram(X, T0, ipfix_message([
        ipfix_options_template_set(ipfix_options_template(300, [(302, 4)], [(34, VARIABLE)])),
        data_set(300, [u32(1) + varlen(b"\x00\x10")]),
    ]))],
    # the same for selectorId / systemInitTimeMilliseconds / the interface of an interface table
    "variable-length sampler id, init time and interface": [Datagram(X, T0, ipfix_message([
        ipfix_options_template_set(ipfix_options_template(301, [(10, VARIABLE)], [(48, VARIABLE), (34, 4),
                                                                                   (160, VARIABLE), (82, 4)])),
        data_set(301, [varlen(b"\x01") + varlen(b"\x02") + u32(10) + varlen(b"\x01") + b"eth0"]),
    ]))],
    # Normalizer planned a variable-length RFC 5103 reverse counter and read it as an integer:
    # ValueError "no field of name f1" from Normalizer.normalize
    "variable-length reverse packet count": [Datagram(X, T0, ipfix_message([
        ipfix_template_set(ipfix_template(302, [(8, 4), (2, VARIABLE, REVERSE_PEN)])),
        data_set(302, [b"\x0a\x00\x00\x01" + varlen(b"\x05")]),
    ]))],
    # an 8-byte systemInitTimeMilliseconds beyond 2**63 in options data, then uptime-relative data:
    # OverflowError "Python int too large to convert to C long" from Normalizer.normalize
    "huge systemInitTimeMilliseconds from options data": [Datagram(X, T0, ipfix_message([
        ipfix_options_template_set(ipfix_options_template(303, [(149, 4)], [(160, 8)])),
        data_set(303, [u32(0) + (2**64 - 5).to_bytes(8, "big")]),
        ipfix_template_set(ipfix_template(304, [(22, 4), (21, 4)])),
        data_set(304, [u32(1000) + u32(2000)]),
    ]))],
    # v5 records of two exporters in one call came back as one record set of the first exporter
    "v5 from two exporters in one call": [
        Datagram(X, T0, v5_message([v5_record(packets=1)], sequence=0)),
        Datagram(Y, T0, v5_message([v5_record(packets=2)], engine_id=9)),
    ],
    # a v9 template decoded IPFIX data of the same exporter, id and domain number (and back)
    "v9 and IPFIX template 256 of one exporter": [
        Datagram(X, T0, ipfix_message([data_set(256, [u32(1) + u32(2)])])),
        Datagram(X, T0, v9_message([v9_template_set(v9_template(256, [(1, 4), (2, 4)]))])),
    ],
}


# ... and all of them in one sequence, followed by the clean stream, through the fuzz test
REGRESSION_CALLS = [Call(d) for d in REGRESSIONS.values()] + [Call([Datagram(CLEAN, T0, p)]) for p in CLEAN_STREAM]


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regressions(name: str) -> None:
    harness = Harness()
    out = harness.call(REGRESSIONS[name])
    for records in out:
        assert harness.session.exporters.key_of(records.exporter_index) == (records.exporter, records.domain)
    groups = [(id(r.template), r.exporter, r.domain) for r in out]
    assert len(set(groups)) == len(groups)
    if name == "v5 from two exporters in one call":
        assert sorted((r.exporter, r.domain, len(r)) for r in out) == [(X, 0, 1), (Y, 9, 1)]
    if name == "v9 and IPFIX template 256 of one exporter":
        assert out == []
        assert harness.session.pending_sets() == 1


@fuzz_settings()
@given(calls())
@example(REGRESSION_CALLS)
def test_mutated_real_packets(sequence: list[Call]) -> None:
    harness = run(sequence)
    # the clean exporter got every record it gets alone, in the same order
    assert harness.clean == REFERENCE


@fuzz_settings()
@given(calls(st.one_of(template_floods(), mutated_packets())))
def test_template_floods_with_small_bounds(sequence: list[Call]) -> None:
    harness = run(sequence, SMALL)
    assert harness.clean == REFERENCE


@fuzz_settings(0.5)
@given(st.lists(st.tuples(st.sampled_from(EXPORTERS), PAYLOADS), max_size=30))
@example([("192.0.2.1", b"")])  # empty datagram
def test_one_datagram_per_call(items: list[tuple[str, bytes]]) -> None:
    harness = Harness(SMALL)
    for index, (exporter, payload) in enumerate(items):
        harness.call([Datagram(exporter, T0 + index * 20_000, payload)])



def test_reference_clean_stream_is_error_free() -> None:
    # the oracle of the tests above: 3 IPFIX records held then released, 8 + 12 + 12 v9, 20 IPFIX
    # (1 options + 19 data) + 3 + 3, 3 v5
    assert len(REFERENCE) == 3 + 8 + 12 + 20 + 3 + 3 + 12


# -- exhaustive truncation of a few rich packets -------------------------------------------------

TRUNCATION_CASES = {
    # (template packet fed first, packet truncated at every length)
    "netscaler variable-length": ("logstash-codec-netflow/ipfix_test_netscaler_tpl.dat",
                                  "logstash-codec-netflow/ipfix_test_netscaler_data.dat"),
    "yaf enterprise": ("logstash-codec-netflow/ipfix_test_yaf_tpls_option_tpl.dat",
                       "logstash-codec-netflow/ipfix_test_yaf_tpl45841.dat"),
    "ipfix templates + options": (None, "python-netflow-v9-softflowd/packet_ipfix_template.bin"),
    "v9 options data": ("logstash-codec-netflow/netflow9_test_cisco_nbar_opttpl260.dat",
                        "logstash-codec-netflow/netflow9_test_cisco_nbar_opttpl260.dat"),
    "v9 h3c varstring": ("logstash-codec-netflow/netflow9_test_h3c_netstream_varstring_tpl3281.dat",
                         "logstash-codec-netflow/netflow9_test_h3c_netstream_varstring_data3281.dat"),
    "v5": (None, "logstash-codec-netflow/netflow5_test_juniper_mx80.dat"),
}


@pytest.mark.parametrize("case", sorted(TRUNCATION_CASES))
def test_truncation_at_every_length(case: str) -> None:
    template, packet = TRUNCATION_CASES[case]
    payload = (DATA / packet).read_bytes()
    harness = Harness()
    if template is not None:
        harness.call([Datagram(EXPORTERS[0], T0, (DATA / template).read_bytes())])
    for length in range(len(payload) + 1):
        harness.call([Datagram(EXPORTERS[0], T0, payload[:length])])
    assert harness.total("decode_packets_total") == len(payload) - 3 + (template is not None)
    assert harness.total("decode_errors_total") > 0
