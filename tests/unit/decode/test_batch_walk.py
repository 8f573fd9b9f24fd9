"""The batch walk (``decode/batchwalk.py``) against the per-message path: the same results.

Two sessions decode the same batches, one with ``DecoderConfig(batch_walk=False)`` (every datagram
through the per-message walk) and one with the batch walk; after every call their record sets,
normalized flows, counters, templates, held data, sequence state and options state must be equal.
Inputs: every capture of tests/data (in several batchings, twice over so that the second round
meets known templates), generated streams that exercise the fast path and its edges (sequence gaps
and restarts, template refreshes and changes, options data, held data, several exporters and
domains, odd lengths), and hypothesis-made batches of mutated and random datagrams.

Also checked: the normalizer converts adjacent record sets of one layout together
(``_convert_merged``); its output must equal converting each record set alone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.decode.test_fuzz import EXPORTERS, PAYLOADS, SEEDS, fuzz_settings

from flowscope.decode import batchwalk, headerwalk, walkkernel
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.metrics import Counters
from flowscope.model import Datagram, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer
from support.exports import (
    data_set,
    flowset,
    ipfix_message,
    ipfix_options_template,
    ipfix_options_template_set,
    ipfix_template,
    ipfix_template_set,
    ipfix_withdrawal,
    u8,
    u16,
    u32,
    v5_message,
    v5_record,
    v9_message,
    v9_options_template,
    v9_options_template_set,
    v9_template,
    v9_template_set,
)

DATA = Path(__file__).resolve().parents[2] / "data"
T0 = 1_700_000_000_000


def _captures() -> list[tuple[str, bytes]]:
    """Every capture of tests/data as (source directory, datagram payload), in name order."""
    found: list[tuple[str, bytes]] = []
    for directory in ("goflow2", "logstash-codec-netflow", "python-netflow-v9-softflowd"):
        for path in sorted((DATA / directory).iterdir()):
            if path.suffix in (".bin", ".dat"):
                found.append((directory, path.read_bytes()))
    raw = (DATA / "ipfixcol2" / "example_flows.ipfix").read_bytes()
    offset = 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("!H", raw, offset + 2)
        found.append(("ipfixcol2", raw[offset : offset + length]))
        offset += max(length, 4)
    return found


CAPTURES = _captures()


# -- comparing two sessions ---------------------------------------------------------------------


class Pair:
    """The per-message session and the batch-walk session, fed the same calls."""

    def __init__(self, config: DecoderConfig | None = None, retry_batches: int = 0) -> None:
        base = config or DecoderConfig()
        self.reference = DecoderSession(_with(base, batch_walk=False), Counters())
        # retry_batches=0: the batch walk is tried on every call, however little it took before
        self.walking = DecoderSession(_with(base, batch_walk=True, retry_batches=retry_batches), Counters())
        self.config = NormalizeConfig(apply_sampling=True, preserve_order=False)
        self.records = 0
        self.datagrams = 0
        self.one_by_one = 0  # datagrams the batch walk handed to the per-message path
        message = self.walking.message

        def counted(datagram: Datagram) -> None:
            self.one_by_one += 1
            message(datagram)

        self.walking.message = counted  # type: ignore[method-assign]

    def call(self, datagrams: list[Datagram]) -> None:
        self.datagrams += len(datagrams)
        expected = self.reference.decode(datagrams)
        got = self.walking.decode(datagrams)
        assert len(got) == len(expected)
        for a, b in zip(expected, got, strict=True):
            assert_same_records(a, b)
        self.records += sum(len(r) for r in got)
        expected_flows = Normalizer(self.config, self.reference.options, Counters()).normalize(expected)
        got_flows = Normalizer(self.config, self.walking.options, Counters()).normalize(got)
        assert_same_flows(expected_flows, got_flows)
        # the normalizer's merged conversion = each record set converted alone
        alone = Normalizer(self.config, self.walking.options, Counters())
        assert_same_flows(FlowBatch.concat([alone.normalize([r]) for r in got]), got_flows)
        assert_same_state(self.reference, self.walking)


def _with(config: DecoderConfig, *, batch_walk: bool, retry_batches: int = 8) -> DecoderConfig:
    return replace(config, batch_walk=batch_walk, batch_walk_retry_batches=retry_batches)


def assert_same_records(a: RecordSet, b: RecordSet) -> None:
    assert (a.exporter, a.domain, a.version, a.exporter_index) == (b.exporter, b.domain, b.version, b.exporter_index)
    assert a.template.template_id == b.template.template_id
    assert a.template.fields == b.template.fields
    assert a.fixed.dtype == b.fixed.dtype
    assert a.fixed.tobytes() == b.fixed.tobytes()
    assert a.variable == b.variable
    for name in ("export_time_ms", "sys_uptime_ms", "time_received_ms", "order"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), name
    if a.header_sampling_interval is None:
        assert b.header_sampling_interval is None
    else:
        assert b.header_sampling_interval is not None
        assert a.header_sampling_interval.dtype == b.header_sampling_interval.dtype
        assert np.array_equal(a.header_sampling_interval, b.header_sampling_interval)
    assert a.options == b.options
    assert a.extra.keys() == b.extra.keys()


def assert_same_flows(a: FlowBatch, b: FlowBatch) -> None:
    assert a.columns.keys() == b.columns.keys()
    for name, column in a.columns.items():
        assert column.dtype == b[name].dtype, name
        assert np.array_equal(column, b[name]), name


def _counters(counters: Counters) -> dict[str, list[tuple[tuple[tuple[str, str], ...], int]]]:
    return {name: sorted((tuple(sorted(labels.items())), value) for labels, value in series)
            for name, series in counters.snapshot().items()}


def assert_same_state(a: DecoderSession, b: DecoderSession) -> None:
    assert _counters(a.counters) == _counters(b.counters)
    assert a.sequences.states() == b.sequences.states()
    assert [(k, t.fields) for k, t in a.templates.templates_of()] == [
        (k, t.fields) for k, t in b.templates.templates_of()]
    assert a.pending_sets() == b.pending_sets()
    assert {e: [(p.template_id, p.body, p.context.domain) for p in q] for e, q in a._pending.items()} == {
        e: [(p.template_id, p.body, p.context.domain) for p in q] for e, q in b._pending.items()}
    assert a.options._by_scope == b.options._by_scope
    assert a.exporters.key_of(0) == b.exporters.key_of(0) if len(a.exporters) else True


# -- the captures of tests/data -----------------------------------------------------------------


COMPILED = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])


@COMPILED
@pytest.mark.parametrize("batch", [2, 3, 7, 64, 10_000])
def test_captures(batch: int, compiled: bool) -> None:
    """All captures, one exporter per source, twice over (the second round meets known templates);
    the batch walk's loops compiled (walkkernel.py) or in numpy."""
    pair = Pair(DecoderConfig(compiled_kernel=compiled))
    stream = [Datagram(f"192.0.2.{i}", T0 + n * 10, payload)
              for n, (i, (_, payload)) in enumerate(enumerate(CAPTURES))]
    sources = sorted({source for source, _ in CAPTURES})
    by_source = [Datagram(f"198.51.100.{sources.index(source)}", T0 + 1000 + n, payload)
                 for n, (source, payload) in enumerate(CAPTURES * 2)]
    for datagrams in (stream, by_source):
        for start in range(0, len(datagrams), batch):
            pair.call(datagrams[start : start + batch])
    assert pair.records > 1000
    assert pair.one_by_one < pair.datagrams  # some data-only captures did take the batch walk


def test_captures_interleaved_exporters() -> None:
    """The same capture list from three exporters at once, interleaved, in batches of 32."""
    pair = Pair()
    datagrams = [Datagram(exporter, T0 + n, payload) for n, (_, payload) in enumerate(CAPTURES * 2)
                 for exporter in ("10.0.0.1", "10.0.0.2", "2001:db8::9")]
    for start in range(0, len(datagrams), 32):
        pair.call(datagrams[start : start + 32])
    assert pair.walking.counters.total("decode_records_total") == pair.reference.counters.total(
        "decode_records_total")


# -- generated streams ----------------------------------------------------------------------------


def _v5(sequence: int, records: int, *, engine: int = 0, sampling: int = 0, **extra: object) -> bytes:
    flows = [v5_record(src=f"10.0.{i}.1", dst="192.0.2.9", packets=i + 1, octets=100 * (i + 1), first=1000 + i,
                       last=2000 + i, src_port=1024 + i, dst_port=443, protocol=6, tcp_flags=0x18)
             for i in range(records)]
    return v5_message(flows, uptime_ms=50_000 + sequence, unix_secs=1_700_000_000 + sequence,
                      unix_nsecs=123_456_789, sequence=sequence, engine_type=engine >> 8, engine_id=engine & 0xFF,
                      sampling_interval=sampling, **extra)  # type: ignore[arg-type]


V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4)]
V9_OTHER = [(27, 16), (28, 16), (4, 1), (2, 8), (1, 8), (152, 8), (153, 8), (48, 1)]
IPFIX_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 8), (1, 8), (152, 8), (153, 8)]


def _v9_record(i: int) -> bytes:
    return (u32(0x0A000001 + i) + u32(0xC0000209) + u16(1000 + i) + u16(53) + u8(17) + u32(i + 1)
            + u32(60 * (i + 1)) + u32(10_000 + i) + u32(20_000 + i))


def _v9_other(i: int) -> bytes:
    addresses = bytes(15) + u8(i) + bytes(15) + u8(1)
    return addresses + u8(6) + struct.pack("!QQQQ", i, 40 * i, T0 + i, T0 + 5 + i) + u8(i % 3)


def _ipfix_record(i: int) -> bytes:
    return (u32(0x0A000001 + i) + u32(0xC0000209) + u16(1000 + i) + u16(443) + u8(6)
            + struct.pack("!QQQQ", i + 1, 100 * i, T0 + i, T0 + 10 + i))


def _v9(sequence: int, sets: list[bytes], source_id: int = 0) -> bytes:
    return v9_message(sets, uptime_ms=100_000 + sequence, unix_secs=1_700_000_100 + sequence, sequence=sequence,
                      source_id=source_id)


def generated_stream() -> list[Datagram]:
    """Exporters of all three kinds with the fast path's usual and unusual cases."""
    out: list[Datagram] = []
    t = T0
    tpl = v9_template_set(v9_template(256, V9_FIELDS), v9_template(257, V9_OTHER))
    tpl_changed = v9_template_set(v9_template(256, [*V9_FIELDS, (5, 1)]))
    options = v9_options_template_set(v9_options_template(300, [(1, 4)], [(34, 4), (36, 2)]))
    ipfix_tpl = ipfix_template_set(ipfix_template(400, [(e, n, 0) for e, n in IPFIX_FIELDS]))
    ipfix_options = ipfix_options_template_set(ipfix_options_template(401, [(149, 4, 0)], [(160, 8, 0)]))
    v5_seq = {0: 0, 0x0102: 7}
    v9_seq, ipfix_seq = {0: 0, 7: 0}, 0
    for n in range(240):
        t += 7
        # NetFlow v5: two engines, a gap at 50, a restart at 120, trailing bytes and a short count now and then
        engine = 0x0102 if n % 3 == 0 else 0
        records = 1 + n % 29
        if n == 50:
            v5_seq[engine] += 5
        if n == 120:
            v5_seq[engine] = 3
        extra: dict[str, object] = {}
        if n % 37 == 5:
            extra = {"trailer": b"\x00\x01"}
        if n % 41 == 7:
            extra = {"count": records + 1}
        out.append(Datagram("192.0.2.5", t, _v5(v5_seq[engine], records, engine=engine, sampling=n % 4 * 100,
                                                 **extra)))
        v5_seq[engine] += records
        # NetFlow v9: template (refreshed every 10), data of two templates, options, a changed template
        sets = []
        source = n % 2 * 7  # two source ids, each with its own templates and sequence numbers
        if n % 10 in (0, 1):
            sets.append(tpl)
        if n == 70:
            sets.append(tpl_changed)
        if n == 90:
            sets.append(tpl)
        if n % 25 == 3:
            sets.append(options)
            sets.append(data_set(300, [u32(1) + u32(10 + n % 2) + u16(2)]))
        fields = 10 if 70 <= n < 90 else 9
        record = (_v9_record(n) + (u8(n % 256) if fields == 10 else b""))
        sets.append(data_set(256, [record] * (1 + n % 5), padding=n % 3))
        if n % 4 == 1:
            sets.append(data_set(257, [_v9_other(n)] * 2))
        if n % 33 == 4:
            sets.append(data_set(999, [b"\x01" * 12]))  # unknown: held
        if n % 29 == 9:
            sets.append(b"\x00\x00")  # padding after the last set
        if n == 200:
            v9_seq[source] += 3
        out.append(Datagram("2001:db8::1", t, _v9(v9_seq[source], sets, source)))
        v9_seq[source] += 1
        # IPFIX: template, data, options data, a withdrawal, two messages in one datagram
        sets = []
        if n % 15 == 0:
            sets.append(ipfix_tpl)
        if n == 60:
            sets.append(ipfix_options)
        if n == 61:
            sets.append(data_set(401, [u32(1) + struct.pack("!Q", T0 - 5000)]))
        if n == 150:
            sets.append(flowset(2, ipfix_withdrawal(400)))
        count = 1 + n % 20
        sets.append(data_set(400, [_ipfix_record(i) for i in range(count)]))
        message = ipfix_message(sets, export_time=1_700_000_000 + n, sequence=ipfix_seq, domain=3)
        if n % 19 == 11:
            message += ipfix_message([data_set(400, [_ipfix_record(0)])], export_time=1_700_000_000 + n,
                                     sequence=ipfix_seq + count, domain=3)
            count += 1
        out.append(Datagram("192.0.2.10", t, message))
        if n not in range(150, 165):  # withdrawn: held records do not advance the sequence
            ipfix_seq += count
        if n % 23 == 0:
            out.append(Datagram("192.0.2.11", t, b"\x00\x05\x00"))  # truncated
    return out


@COMPILED
@pytest.mark.parametrize(("batch", "retry_batches"), [(2, 0), (5, 0), (64, 0), (256, 0), (4096, 0), (5, 8), (64, 3)])
def test_generated_streams(batch: int, retry_batches: int, compiled: bool) -> None:
    """retry_batches > 0: after a call the batch walk took nothing of, some calls skip it."""
    pair = Pair(DecoderConfig(compiled_kernel=compiled), retry_batches=retry_batches)
    datagrams = generated_stream()
    for start in range(0, len(datagrams), batch):
        pair.call(datagrams[start : start + batch])
    counters = pair.walking.counters
    # the stream does reach the cases it was made for
    assert counters.total("decode_sequence_lost_total") > 0
    assert counters.total("decode_templates_total", event="refreshed") > 0
    assert counters.total("decode_templates_total", event="changed") > 0
    assert counters.total("decode_pending_sets_total") > 0
    assert counters.total("decode_ignored_bytes_total") > 0
    assert counters.total("decode_errors_total") > 0
    assert pair.records > 5000
    if batch >= 64:  # most datagrams did take the batch walk
        assert pair.one_by_one < pair.datagrams / 2


@pytest.mark.parametrize("few_messages", [0, 1_000_000])
def test_later_sets_walked_either_way(few_messages: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sets after a message's first are walked in Python when few messages have them, else with
    numpy steps: forced one way and the other, the results stay the per-message path's."""
    monkeypatch.setattr(headerwalk, "_FEW_MESSAGES", few_messages)
    pair = Pair(DecoderConfig(compiled_kernel=False))  # the compiled walk has no numpy steps
    datagrams = generated_stream()
    for start in range(0, len(datagrams), 256):
        pair.call(datagrams[start : start + 256])
    captures = [Datagram(f"198.51.100.{n % 3}", T0 + n, payload) for n, (_, payload) in enumerate(CAPTURES * 2)]
    for start in range(0, len(captures), 64):
        pair.call(captures[start : start + 64])
    assert pair.one_by_one < pair.datagrams


def _full_v9(sequence: int, with_template: bool, records: int) -> bytes:
    sets = [v9_template_set(v9_template(256, V9_FIELDS))] if with_template else []
    return _v9(sequence, [*sets, data_set(256, [_v9_record(sequence + i) for i in range(records)])])


def _counting(function: Callable[..., np.ndarray], calls: dict[str, int], name: str) -> Callable[..., np.ndarray]:
    def counted(*args: object) -> np.ndarray:
        calls[name] += 1
        return function(*args)

    return counted


@pytest.mark.parametrize("batch", [3, 64, 256])
def test_sets_gathered_whole(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches whose data sets all hold as many records of one layout (full v5 datagrams of two
    exporters and engines; v9 datagrams of a fixed count, some with a template refresh first) are
    gathered set by set; batches with one shorter set fall back to record by record (the numpy
    gather; the compiled one copies set by set always)."""
    calls: dict[str, int] = {"_sets": 0, "_records": 0}
    for name in calls:
        monkeypatch.setattr(batchwalk, name, _counting(getattr(batchwalk, name), calls, name))
    pair = Pair(DecoderConfig(compiled_kernel=False))
    v5_sequence = {("192.0.2.7", 0): 0, ("192.0.2.7", 0x0102): 0, ("192.0.2.8", 0): 0}
    datagrams = []
    for n in range(400):
        exporter, engine = list(v5_sequence)[n % 3]
        records = 29 if n == 333 else 30  # one short datagram
        datagrams.append(Datagram(exporter, T0 + n, _v5(v5_sequence[(exporter, engine)], records, engine=engine)))
        v5_sequence[(exporter, engine)] += records
    for n in range(400):  # the sequence number is n: one per v9 export packet
        datagrams.append(Datagram("192.0.2.9", T0 + 400 + n, _full_v9(n, n % 20 == 0, 12)))
    for start in range(0, len(datagrams), batch):
        pair.call(datagrams[start : start + batch])
    assert calls["_sets"] > 0 and calls["_records"] > 0  # whole sets, and the batch with the short one
    assert pair.walking.counters.total("decode_records_total") == 400 * 30 - 1 + 400 * 12
    assert pair.walking.counters.total("decode_sequence_lost_total") == 0


def test_walk_cache_follows_the_template_store() -> None:
    """Cached template lookups hold while the store does not change, and only for that store."""
    session = DecoderSession()
    cache = batchwalk.WalkCache()
    scope = ("192.0.2.1", 9, 0, 256)
    cache.valid_for(session.templates).templates[scope] = None
    assert scope in cache.valid_for(session.templates).templates
    session.decode([Datagram("192.0.2.1", T0, _v9(0, [v9_template_set(v9_template(256, V9_FIELDS))]))])
    assert scope not in cache.valid_for(session.templates).templates  # a template was stored: cleared
    cache.templates[scope] = None
    assert scope not in cache.valid_for(DecoderSession().templates).templates  # another store


def test_pending_limits_and_expiry() -> None:
    """Small bounds: held sets overflow and expire in both paths alike."""
    pair = Pair(DecoderConfig(pending_max_sets_per_exporter=3, pending_max_age_ms=20))
    datagrams = generated_stream()
    for start in range(0, len(datagrams), 50):
        pair.call(datagrams[start : start + 50])
    assert pair.walking.counters.total("decode_pending_dropped_total") > 0


# -- mutated and random datagrams -----------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> list[list[Datagram]]:
    """A few calls of datagrams: pristine captures (so templates get known), mutated and random ones."""
    pool = st.one_of(st.sampled_from(SEEDS), st.sampled_from(SEEDS), PAYLOADS,
                     st.sampled_from([d.payload for d in generated_stream()[:60]]))
    now = T0
    calls = []
    for _ in range(draw(st.integers(1, 4))):
        datagrams = []
        for _ in range(draw(st.integers(0, 12))):
            now += draw(st.sampled_from([0, 1, 1000, 61_000]))
            datagrams.append(Datagram(draw(st.sampled_from(EXPORTERS[:2])), now, draw(pool)))
        calls.append(datagrams)
    return calls


@fuzz_settings()
@given(batches())
def test_mutated_datagrams(calls: list[list[Datagram]]) -> None:
    for compiled in (True, False):
        pair = Pair(DecoderConfig(compiled_kernel=compiled))
        for datagrams in calls:
            pair.call(datagrams)
        for datagrams in calls:
            assert_same_walks(datagrams)


def assert_same_walks(datagrams: list[Datagram]) -> None:
    """The compiled header pass makes the numpy one's tables: equal for every eligible datagram
    (the numpy pass reads whatever bytes follow a short datagram; neither uses those values)."""
    compiled = headerwalk.walk_headers(datagrams, True) if datagrams else None
    numpy = headerwalk.walk_numpy(datagrams) if datagrams else None
    assert (compiled is None) == (numpy is None)
    if numpy is None or compiled is None:
        return
    assert compiled.exporters == numpy.exporters and compiled.buffer == numpy.buffer
    assert np.array_equal(compiled.eligible, numpy.eligible)
    eligible = numpy.eligible
    for name in ("code", "vcode", "domain", "sequence", "export_time_ms", "sys_uptime_ms", "time_received_ms",
                 "scope", "sampling"):
        x, y = getattr(compiled, name), getattr(numpy, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x[eligible], y[eligible]), name
    v5 = eligible & (numpy.vcode == 0)
    assert np.array_equal(compiled.v5_count[v5], numpy.v5_count[v5])
    for name in ("set_datagram", "set_id", "set_start", "set_length", "set_is_template", "set_key", "keys"):
        x, y = getattr(compiled, name), getattr(numpy, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), name
    if all(len(d.payload) >= 4 for d in datagrams):
        assert compiled.only_version == numpy.only_version


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_compiled_walk_tables(batch: int) -> None:
    assert walkkernel.KERNEL is not None, "flowscope.decode._walkkernel was not built: pip install -e . with gcc"
    datagrams = [Datagram(f"198.51.100.{n % 3}", T0 + n, payload) for n, (_, payload) in enumerate(CAPTURES)]
    datagrams += generated_stream()
    for start in range(0, len(datagrams), batch):
        assert_same_walks(datagrams[start : start + batch])
