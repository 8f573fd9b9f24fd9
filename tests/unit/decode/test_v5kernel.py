"""The compiled NetFlow v5 kernel (``decode/v5kernel.py``, ``_v5kernel.c``) against the general path.

Two sessions see the same batches: the reference with ``DecoderConfig(compiled_kernel=False)``
(``DecoderSession.decode`` then ``Normalizer.normalize``, rows in arrival order), the other through
``v5kernel.decode_flows``. Where the kernel takes a batch, its flow columns must equal the
reference's, column for column, and so must the sessions' counters, sequence state and exporter
tables. Where it declines (anything but plain v5 messages, exporters with options data), nothing
may have changed, and ``decode_and_normalize`` must give the general path's result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.decode.test_batch_walk import assert_same_flows, assert_same_state
from tests.unit.decode.test_fuzz import fuzz_settings

from flowscope.decode import v5kernel
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.metrics import Counters
from flowscope.model import FLOW_COLUMNS, Datagram, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer, decode_and_normalize
from support.exports import (
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
V5_CAPTURES = sorted(p for d in ("logstash-codec-netflow", "python-netflow-v9-softflowd", "goflow2")
                     for p in (DATA / d).iterdir() if p.suffix in (".bin", ".dat") and "5" in p.name
                     and p.read_bytes()[:2] == b"\x00\x05")


class Pair:
    """The general path and the kernel, fed the same batches."""

    def __init__(self, *, apply_sampling: bool = True) -> None:
        self.reference = DecoderSession(DecoderConfig(compiled_kernel=False), Counters())
        self.kernel = DecoderSession(DecoderConfig(), Counters())
        self.config = NormalizeConfig(apply_sampling=apply_sampling, preserve_order=True)
        self.apply_sampling = apply_sampling
        self.taken = self.declined = self.flows = 0

    def call(self, datagrams: list[Datagram]) -> FlowBatch | None:
        expected = Normalizer(self.config, self.reference.options, self.reference.counters).normalize(
            self.reference.decode(datagrams))
        before = _state(self.kernel)
        got = v5kernel.decode_flows(self.kernel, datagrams, apply_sampling=self.apply_sampling)
        if got is None:
            self.declined += 1
            assert _state(self.kernel) == before, "a declined batch changed the session"
            got = Normalizer(self.config, self.kernel.options, self.kernel.counters).normalize(
                self.kernel.decode(datagrams))
        else:
            self.taken += 1
        assert_same_flows(expected, got)
        assert_same_state(self.reference, self.kernel)
        assert [self.reference.exporters.key_of(i) for i in range(len(self.reference.exporters))] == [
            self.kernel.exporters.key_of(i) for i in range(len(self.kernel.exporters))]
        self.flows += len(got)
        return got


def _state(session: DecoderSession) -> tuple[object, ...]:
    return (session.counters.snapshot(), session.sequences.states(), len(session.exporters))


def _v5(sequence: int, records: int, *, engine: int = 0, sampling: int = 0, mode: int = 0, uptime_ms: int = 50_000,
        first: int = 1_000, **extra: object) -> bytes:
    flows = [v5_record(src=f"10.0.{i}.1", dst=f"192.0.2.{i + 100}", nexthop="10.255.0.1", in_if=3 + i,
                       out_if=65_535 - i, packets=i + 1, octets=100 * (i + 1), first=(first + i) % (1 << 32),
                       last=(first + 500 + i) % (1 << 32), src_port=1024 + i, dst_port=443 if i % 3 else 0,
                       protocol=(6, 17, 1)[i % 3], tcp_flags=0x18 + i % 4, tos=i % 256, src_as=64_512 + i,
                       dst_as=65_535 - i, src_mask=24, dst_mask=16) for i in range(records)]
    return v5_message(flows, uptime_ms=uptime_ms, unix_secs=1_700_000_000 + sequence, unix_nsecs=987_654_321,
                      sequence=sequence % (1 << 32), engine_type=engine >> 8, engine_id=engine & 0xFF,
                      sampling_interval=sampling, sampling_mode=mode, **extra)  # type: ignore[arg-type]


def test_kernel_is_built() -> None:
    """`make test` installs flowscope with its compiled kernel (needs a C compiler and Python
    headers, which .ci/run installs); without it every other test here would test nothing new."""
    assert v5kernel.KERNEL is not None, "flowscope.decode._v5kernel was not built: pip install -e . with gcc"


def test_fill_writes_every_flow_column() -> None:
    assert sorted(v5kernel.FILL_COLUMNS) == sorted(FLOW_COLUMNS)
    assert len(set(v5kernel.FILL_COLUMNS)) == len(v5kernel.FILL_COLUMNS)


def test_captures() -> None:
    """The v5 captures of tests/data (Cisco, Juniper MX80, MikroTik, softflowd, goflow2), alone and together."""
    assert len(V5_CAPTURES) >= 5
    pair = Pair()
    payloads = [p.read_bytes() for p in V5_CAPTURES]
    for n, payload in enumerate(payloads):
        pair.call([Datagram("192.0.2.1", T0 + n, payload)])
    pair.call([Datagram(f"192.0.2.{n % 3}", T0 + 100 + n, p) for n, p in enumerate(payloads * 3)])
    assert pair.taken >= 1 and pair.flows > 50


def test_interleaved_exporters_engines_gaps_and_restarts() -> None:
    """Four exporters (one IPv6), two engines each, in interleaved batches of 1 to 256 datagrams:
    sequence gaps, a late message, a restart, sampling with the mode bits set, uptime wrapped."""
    pair = Pair()
    exporters = ["192.0.2.1", "192.0.2.2", "2001:db8::5", "198.51.100.77"]
    sequences = {(e, g): 1000 * i for i, e in enumerate(exporters) for g in (0, 0x0102)}
    stream: list[Datagram] = []
    for n in range(900):
        exporter = exporters[n % 4]
        engine = 0x0102 if n % 7 < 3 else 0
        key = (exporter, engine)
        if n == 300:
            sequences[key] += 17  # a gap: 17 flows lost
        if n == 500:
            sequences[key] = 5  # a restart
        records = 1 + (n * 7) % 30
        late = n == 600
        sequence = sequences[key] - 40 if late else sequences[key]
        uptime = 2_000 if n % 11 == 0 else 50_000 + n  # wrapped: the first switched is "after" the uptime
        first = (1 << 32) - 3_000 if n % 11 == 0 else 10_000 + n
        stream.append(Datagram(exporter, T0 + n, _v5(sequence, records, engine=engine, sampling=(n % 5) * 10,
                                                     mode=n % 4, uptime_ms=uptime, first=first)))
        if not late:
            sequences[key] += records
    start = 0
    for size in [1, 2, 256, 3, 64, 255, 17, 100, 200, 2]:
        pair.call(stream[start : start + size])
        start += size
    assert start == len(stream) and pair.taken == 10
    assert pair.flows == sum(int.from_bytes(d.payload[2:4], "big") for d in stream)
    assert pair.kernel.counters.total("decode_sequence_lost_total") > 0


@pytest.mark.parametrize("apply_sampling", [True, False])
def test_sampling(apply_sampling: bool) -> None:
    pair = Pair(apply_sampling=apply_sampling)
    batch = [Datagram("192.0.2.9", T0 + n, _v5(n * 30, 30, sampling=s, mode=1)) for n, s in
             enumerate([0, 1, 2, 100, 16_383])]
    flows = pair.call(batch)
    assert flows is not None and pair.taken == 1
    assert sorted(set(flows["sampling_rate"].tolist())) == [1, 2, 100, 16_383]
    assert int(flows["packets"].max()) == 30 * (16_383 if apply_sampling else 1)


def test_large_counters() -> None:
    """Packets and bytes at the 32-bit limit, times the largest v5 sampling interval: no overflow."""
    pair = Pair()
    record = v5_record(src="203.0.113.1", dst="203.0.113.2", packets=(1 << 32) - 1, octets=(1 << 32) - 1)
    flows = pair.call([Datagram("192.0.2.9", T0, v5_message([record] * 2, sampling_interval=16_383)),
                       Datagram("192.0.2.9", T0, v5_message([record], sequence=2))])
    assert flows is not None and pair.taken == 1
    assert flows["bytes"].tolist() == [((1 << 32) - 1) * 16_383] * 2 + [(1 << 32) - 1]


@pytest.mark.parametrize("odd", ["v9", "count_zero", "trailing", "short_count", "header_only", "tiny", "version1"])
def test_declines_what_is_not_plain_v5(odd: str) -> None:
    """One unusual datagram among plain ones: the kernel declines the batch and the general path
    counts what is wrong."""
    pair = Pair()
    unusual = {
        "v9": v9_message([v9_template_set(v9_template(256, [(8, 4)]))], sequence=1),
        "count_zero": v5_message([], sequence=0),
        "trailing": _v5(0, 2, trailer=b"\x00\x00\x00"),
        "short_count": _v5(0, 3, count=2),
        "header_only": v5_message([], count=1),
        "tiny": b"\x00\x05",
        "version1": b"\x00\x01" + _v5(0, 1)[2:],
    }[odd]
    batch = [Datagram("192.0.2.1", T0, _v5(0, 5)), Datagram("192.0.2.1", T0 + 1, unusual),
             Datagram("192.0.2.1", T0 + 2, _v5(5, 5))]
    pair.call(batch)
    assert pair.declined == 1
    pair.call([Datagram("192.0.2.1", T0 + 3, _v5(10, 5))])  # the next plain batch is taken again
    assert pair.taken == 1


def test_declines_exporters_with_options_data() -> None:
    """An exporter whose v9 options data announce a sampling rate for the v5 engine's domain: the
    normalizer applies it, so the kernel leaves that batch alone."""
    pair = Pair()
    options = v9_message([v9_options_template_set(v9_options_template(300, [(1, 4)], [(34, 4), (35, 1)])),
                          v9_template_set(v9_template(256, [(8, 4)]))], sequence=0, source_id=0)
    options_data = v9_message([bytes.fromhex("012c000f") + u32(7) + u32(64) + b"\x02" + b"\x00" * 2],
                              sequence=1, source_id=0)
    pair.call([Datagram("192.0.2.1", T0, options), Datagram("192.0.2.1", T0 + 1, options_data)])
    pair.call([Datagram("192.0.2.1", T0 + 2, _v5(0, 4)), Datagram("192.0.2.1", T0 + 3, _v5(4, 4))])
    assert pair.declined == 2
    pair.call([Datagram("192.0.2.2", T0 + 4, _v5(0, 4)), Datagram("192.0.2.2", T0 + 5, _v5(4, 4))])
    assert pair.taken == 1  # another exporter: taken


def test_off_and_empty() -> None:
    session = DecoderSession(DecoderConfig(compiled_kernel=False), Counters())
    assert v5kernel.decode_flows(session, [Datagram("192.0.2.1", T0, _v5(0, 1))], apply_sampling=True) is None
    assert v5kernel.decode_flows(DecoderSession(), [], apply_sampling=True) is None


def test_decode_and_normalize_keeps_records_on_request() -> None:
    session = DecoderSession()
    normalizer = Normalizer(None, session.options, session.counters)
    batch = [Datagram("192.0.2.1", T0, _v5(0, 3)), Datagram("192.0.2.1", T0 + 1, _v5(3, 3))]
    flows, records = decode_and_normalize(session, normalizer, batch)
    assert len(flows) == 6 and records == []
    flows_kept, records_kept = decode_and_normalize(session, normalizer, batch, keep_records=True)
    assert [len(r) for r in records_kept] == [6]
    assert_same_flows(flows, flows_kept)
    assert session.counters.get("decode_batches_total", path="v5_kernel") == 1
    assert session.counters.get("decode_batches_total", path="general") == 1


# -- the C functions' own checks -----------------------------------------------------------------


def _scanned(datagrams: list[Datagram]) -> tuple[np.ndarray, int, list[tuple[int, ...]]]:
    kernel = v5kernel.KERNEL
    assert kernel is not None
    heads = np.empty((len(datagrams), 9), np.int64)
    scanned = kernel.scan(datagrams, {}, [], heads)
    assert scanned is not None
    total, scopes = scanned
    return heads, total, scopes


def test_scan_reports_scopes_in_order_of_arrival() -> None:
    datagrams = [Datagram("b", T0, _v5(10, 2, engine=1)), Datagram("a", T0, _v5(0, 3)),
                 Datagram("b", T0, _v5(12, 1, engine=1)), Datagram("b", T0, _v5(99, 1, engine=1)),
                 Datagram("a", T0, _v5(3, 4))]
    heads, total, scopes = _scanned(datagrams)
    assert total == 11
    # (code, domain, first sequence, sequence after the last, records, messages, broken)
    assert scopes == [(0, 1, 10, 100, 4, 3, True), (1, 0, 0, 7, 7, 2, False)]
    assert heads[:, 8].tolist() == [0, 1, 0, 0, 1]


def test_fill_refuses_buffers_that_do_not_fit() -> None:
    kernel = v5kernel.KERNEL
    assert kernel is not None
    datagrams = [Datagram("192.0.2.1", T0, _v5(0, 4))]
    heads, total, scopes = _scanned(datagrams)
    columns = [np.empty(total, FLOW_COLUMNS[name]) for name in v5kernel.FILL_COLUMNS]
    index = np.zeros(len(scopes), np.uint32)
    for short in range(len(columns)):
        shorter = [c[:-1] if i == short else c for i, c in enumerate(columns)]
        with pytest.raises(ValueError):
            kernel.fill(datagrams, heads, index, True, *shorter)
    with pytest.raises(ValueError):
        kernel.fill(datagrams, heads[:0], index, True, *columns)
    with pytest.raises(IndexError):
        kernel.fill(datagrams, heads, index[:0], True, *columns)
    changed = [Datagram("192.0.2.1", T0, _v5(0, 5))]  # not what scan saw: refused, not overrun
    with pytest.raises(ValueError):
        kernel.fill(changed, heads, index, True, *columns)
    with pytest.raises(TypeError):
        kernel.scan(tuple(datagrams), {}, [], heads)
    assert kernel.fill(datagrams, heads, index, True, *columns) == 4


def test_scan_declines_payloads_that_are_not_bytes() -> None:
    kernel = v5kernel.KERNEL
    assert kernel is not None
    heads = np.empty((1, 9), np.int64)
    odd = Datagram("192.0.2.1", T0, memoryview(_v5(0, 1)))  # type: ignore[arg-type]
    assert kernel.scan([odd], {}, [], heads) is None


# -- hypothesis -------------------------------------------------------------------------------------


@st.composite
def v5_batches(draw: st.DrawFn) -> list[Datagram]:
    """Plain v5 datagrams with arbitrary header values and record bytes, from a few exporters."""
    datagrams = []
    for _ in range(draw(st.integers(1, 12))):
        count = draw(st.integers(1, 30))
        header = (b"\x00\x05" + count.to_bytes(2, "big") + draw(st.binary(min_size=20, max_size=20)))
        body = draw(st.binary(min_size=48 * count, max_size=48 * count))
        exporter = draw(st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1"]))
        datagrams.append(Datagram(exporter, draw(st.integers(0, 1 << 45)), header + body))
    return datagrams


@fuzz_settings(0.5)
@given(st.lists(v5_batches(), min_size=1, max_size=4), st.booleans())
def test_random_v5_batches(batches: list[list[Datagram]], apply_sampling: bool) -> None:
    pair = Pair(apply_sampling=apply_sampling)
    for batch in batches:
        pair.call(batch)
    assert pair.taken == len(batches)


@fuzz_settings(0.5)
@given(v5_batches(), st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
       st.integers(-3, 3))
def test_mutated_v5_batches(batch: list[Datagram], flips: list[tuple[int, int]], cut: int) -> None:
    """Bytes changed and lengths cut or grown: taken and equal, or declined and equal."""
    payload = bytearray(batch[0].payload)
    for position, value in flips:
        payload[position % len(payload)] = value
    payload = payload[:cut] if cut < 0 else payload + bytes(cut)
    pair = Pair()
    pair.call([Datagram(batch[0].exporter, batch[0].time_received_ms, bytes(payload)), *batch[1:]])
    assert pair.taken + pair.declined == 1
