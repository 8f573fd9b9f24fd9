"""Encoders: flows → NetFlow v5/v9/IPFIX datagrams → DecoderSession + Normalizer → the same flows.

Headers are also read back with ``struct`` straight from the wire formats (an independent check of
lengths, counts and sequence numbers), and the decoder's own sequence tracking must see no loss.
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import numpy.typing as npt
import pytest

from flowscope.decode.session import DecoderSession
from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import FLOW_COLUMNS, Datagram, FlowBatch, ipv4_to_mapped
from flowscope.normalize import Normalizer
from flowscope.tools.encode import (
    EncoderConfig,
    IpfixEncoder,
    V5Encoder,
    V9Encoder,
    ipv4_mask,
    make_encoder,
)

NOW_MS = 1_722_000_000_437  # 2024-07-26, a non-round millisecond
EXPORTER = "192.0.2.7"
CARRIED = ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "tcp_flags", "tos", "packets", "bytes",
           "in_if", "out_if", "src_as", "dst_as", "time_start", "time_end")


def make_flows(count: int, *, seed: int = 7, ipv6_share: float = 0.3, narrow: bool = False) -> FlowBatch:
    """Random flows covering every carried column; ``narrow`` keeps values within v5's field widths."""
    rng = np.random.default_rng(seed)
    v4_src = ipv4_to_mapped(rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(np.uint32))
    v4_dst = ipv4_to_mapped(rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(np.uint32))
    v6_src = rng.integers(0, 256, (count, 16), dtype=np.uint8)
    v6_src[:, 0] = 0x20  # global unicast, never IPv4-mapped
    v6_dst = rng.integers(0, 256, (count, 16), dtype=np.uint8)
    v6_dst[:, 0] = 0xFD
    ipv6 = rng.random(count) < ipv6_share
    wide = not narrow
    end = NOW_MS - rng.integers(0, 30_000, count)
    columns = {
        "time_received": np.full(count, NOW_MS, np.int64),
        "time_start": end - rng.integers(0, 600_000, count),
        "time_end": end,
        "exporter": np.zeros(count, np.uint32),
        "src_addr": np.where(ipv6, v6_src.view("S16").reshape(-1), v4_src),
        "dst_addr": np.where(ipv6, v6_dst.view("S16").reshape(-1), v4_dst),
        "src_port": rng.integers(0, 1 << 16, count).astype(np.uint16),
        "dst_port": rng.integers(0, 1 << 16, count).astype(np.uint16),
        "protocol": rng.integers(0, 256, count).astype(np.uint8),
        "tcp_flags": rng.integers(0, 256, count).astype(np.uint8),
        "tos": rng.integers(0, 256, count).astype(np.uint8),
        "packets": rng.integers(1, 1 << (40 if wide else 31), count, dtype=np.uint64),
        "bytes": rng.integers(1, 1 << (50 if wide else 32), count, dtype=np.uint64),
        "in_if": rng.integers(0, 1 << (32 if wide else 16), count, dtype=np.uint64).astype(np.uint32),
        "out_if": rng.integers(0, 1 << (32 if wide else 16), count, dtype=np.uint64).astype(np.uint32),
        "src_as": rng.integers(0, 1 << (32 if wide else 16), count, dtype=np.uint64).astype(np.uint32),
        "dst_as": rng.integers(0, 1 << (32 if wide else 16), count, dtype=np.uint64).astype(np.uint32),
        "sampling_rate": np.ones(count, np.uint32),
    }
    return FlowBatch({name: columns[name].astype(dtype) for name, dtype in FLOW_COLUMNS.items()})


def decode(payloads: list[bytes]) -> tuple[FlowBatch, Counters, DecoderSession]:
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(None, session.options, counters)
    batch = normalizer.normalize(session.decode([Datagram(EXPORTER, NOW_MS, p, 9995) for p in payloads]))
    return batch, counters, session


def family_order(flows: FlowBatch) -> npt.NDArray[np.intp]:
    """The order the template encoders send flows in: IPv4 flows first, then IPv6, each in batch order."""
    v4 = ipv4_mask(flows["src_addr"], flows["dst_addr"])
    return np.concatenate([np.flatnonzero(v4), np.flatnonzero(~v4)])


def assert_same_flows(decoded: FlowBatch, expected: FlowBatch) -> None:
    assert len(decoded) == len(expected)
    for name in CARRIED:
        np.testing.assert_array_equal(decoded[name], expected[name], err_msg=name)


def no_errors(counters: Counters) -> None:
    assert counters.total("decode_errors_total") == 0, counters.snapshot().get("decode_errors_total")
    assert counters.total("decode_sequence_lost_total") == 0
    assert counters.total("decode_pending_sets_total") == 0


# ----------------------------------------------------------------------------- NetFlow v5
def test_v5_round_trip_carries_ipv4_flows_and_skips_ipv6() -> None:
    flows = make_flows(1000, narrow=True)
    encoder = V5Encoder(EncoderConfig(domain=0x0102))
    encoded = encoder.encode(flows, NOW_MS)
    v4 = ipv4_mask(flows["src_addr"], flows["dst_addr"])
    assert encoded.skipped == int((~v4).sum()) > 200
    assert encoded.flow_count == int(v4.sum())
    assert all(len(d) <= 1400 for d in encoded.datagrams)
    decoded, counters, _ = decode(encoded.datagrams)
    assert_same_flows(decoded, flows.take(v4))
    no_errors(counters)
    assert counters.total("decode_packets_total", version="5") == len(encoded.datagrams)
    # engine type 1, engine id 2 → domain 0x0102, as the decoder keys v5 exporters
    assert {domain for _, domain in decode(encoded.datagrams)[2].exporters.entries()} == {0x0102}


def test_v5_headers_count_flows_in_the_sequence_and_fill_28_or_30_records() -> None:
    flows = make_flows(100, ipv6_share=0.0, narrow=True)
    for limit, per_datagram in ((1400, 28), (1464, 30), (9000, 30), (500, 9)):
        encoder = V5Encoder(EncoderConfig(max_datagram_bytes=limit))
        payloads = encoder.encode(flows, NOW_MS).datagrams + encoder.encode(flows, NOW_MS + 1000).datagrams
        sequence = 0
        for payload in payloads:
            version, count, uptime, secs, nsecs, flow_sequence = struct.unpack_from("!HHIIII", payload)
            assert (version, flow_sequence) == (5, sequence)
            assert len(payload) == 24 + 48 * count <= limit
            export_ms = secs * 1000 + nsecs // 1_000_000
            assert export_ms in (NOW_MS, NOW_MS + 1000)
            assert uptime == export_ms - NOW_MS + 86_400_000  # booted a day before the first export
            assert count <= per_datagram
            sequence += count
        assert sequence == 200
        assert [struct.unpack_from("!H", p, 2)[0] for p in payloads[:2]] == [per_datagram, per_datagram]
        assert encoder.sequence == 200


def test_v5_saturates_what_its_fields_cannot_hold() -> None:
    flows = make_flows(50, ipv6_share=0.0)  # wide values: 64-bit counters, 32-bit interfaces
    decoded, counters, _ = decode(V5Encoder().encode(flows, NOW_MS).datagrams)
    no_errors(counters)
    np.testing.assert_array_equal(decoded["bytes"], np.minimum(flows["bytes"], 0xFFFFFFFF))
    np.testing.assert_array_equal(decoded["packets"], np.minimum(flows["packets"], 0xFFFFFFFF))
    np.testing.assert_array_equal(decoded["in_if"], np.minimum(flows["in_if"], 0xFFFF))
    np.testing.assert_array_equal(decoded["dst_as"], np.minimum(flows["dst_as"], 0xFFFF))
    np.testing.assert_array_equal(decoded["src_addr"], flows["src_addr"])


# ----------------------------------------------------------------------------- NetFlow v9 and IPFIX
@pytest.mark.parametrize("fmt", ["v9", "ipfix"])
def test_template_formats_round_trip_ipv4_and_ipv6_exactly(fmt: str) -> None:
    flows = make_flows(2000, seed=11)
    encoder = make_encoder(fmt, EncoderConfig(domain=77))
    encoded = encoder.encode(flows, NOW_MS)
    assert encoded.skipped == 0
    assert encoded.flow_count == 2000
    assert all(len(d) <= 1400 for d in encoded.datagrams)
    decoded, counters, session = decode(encoded.datagrams)
    no_errors(counters)
    assert_same_flows(decoded, flows.take(family_order(flows)))
    assert session.exporters.entries() == [(EXPORTER, 77)]
    assert counters.get("decode_templates_total", exporter=EXPORTER, event="new") == 2


def test_v9_header_export_time_is_whole_seconds_not_before_the_last_flow_end() -> None:
    flows = make_flows(10, ipv6_share=0.0)
    flows.columns["time_end"][3] = NOW_MS + 1_500  # ended after the nominal export time
    encoder = V9Encoder()
    payloads = encoder.encode(flows, NOW_MS).datagrams
    seconds = {struct.unpack_from("!I", p, 8)[0] for p in payloads}
    assert seconds == {(NOW_MS + 1_500 + 999) // 1000}
    decoded, counters, _ = decode(payloads)
    no_errors(counters)
    assert_same_flows(decoded, flows)


def test_sysuptime_wrapping_after_49_days_still_gives_exact_times() -> None:
    flows = make_flows(300, ipv6_share=0.0, narrow=True)
    boot = NOW_MS - (1 << 32) - 123_456  # the 32-bit uptime counter has wrapped once
    for encoder in (V5Encoder(EncoderConfig(boot_time_ms=boot)), V9Encoder(EncoderConfig(boot_time_ms=boot))):
        decoded, counters, _ = decode(encoder.encode(flows, NOW_MS).datagrams)
        no_errors(counters)
        np.testing.assert_array_equal(decoded["time_start"], flows["time_start"])
        np.testing.assert_array_equal(decoded["time_end"], flows["time_end"])


def _sets(payload: bytes, header_length: int) -> list[tuple[int, int]]:
    """(set id, set length) of every set of a message."""
    sets, offset = [], header_length
    while offset < len(payload):
        set_id, length = struct.unpack_from("!HH", payload, offset)
        sets.append((set_id, length))
        offset += length
    assert offset == len(payload)
    return sets


def test_v9_sequence_counts_packets_and_templates_are_refreshed_every_n_packets() -> None:
    encoder = V9Encoder(EncoderConfig(template_refresh_packets=5, template_refresh_ms=3_600_000, domain=9))
    payloads: list[bytes] = []
    for call in range(4):
        payloads += encoder.encode(make_flows(300, seed=call), NOW_MS + call * 1000).datagrams
    template_at = []
    data_since_template = 0
    for index, payload in enumerate(payloads):
        version, count, _, _, sequence, source_id = struct.unpack_from("!HHIIII", payload)
        assert (version, sequence, source_id) == (9, index, 9)  # every packet, template packets too
        sets = _sets(payload, 20)
        assert len(sets) == 1 and all(length % 4 == 0 for _, length in sets)
        if sets[0][0] == 0:
            template_at.append(index)
            assert count == 2  # two template records
            data_since_template = 0
        else:
            data_since_template += 1
            assert data_since_template <= 5
    assert template_at[0] == 0
    assert [b - a for a, b in itertools.pairwise(template_at)] == [6] * (len(template_at) - 1)
    decoded, counters, _ = decode(payloads)
    no_errors(counters)
    assert len(decoded) == 1200
    assert counters.get("decode_templates_total", exporter=EXPORTER, event="refreshed") == 2 * (len(template_at) - 1)


def test_ipfix_sequence_counts_data_records_and_message_lengths_add_up() -> None:
    encoder = IpfixEncoder(EncoderConfig(template_refresh_packets=7, domain=3))
    payloads: list[bytes] = []
    for call in range(3):
        payloads += encoder.encode(make_flows(500, seed=call), NOW_MS + call).datagrams
    records_before = 0
    for payload in payloads:
        version, length, export_s, sequence, domain = struct.unpack_from("!HHIII", payload)
        assert (version, length, domain) == (10, len(payload), 3)
        assert sequence == records_before
        assert export_s == NOW_MS // 1000
        for set_id, set_length in _sets(payload, 16):
            if set_id == 256:
                records_before += (set_length - 4) // 64
            elif set_id == 257:
                records_before += (set_length - 4) // 88
            else:
                assert set_id == 2
    assert records_before == 1500 == encoder.sequence
    decoded, counters, _ = decode(payloads)
    no_errors(counters)
    assert len(decoded) == 1500


@pytest.mark.parametrize("fmt", ["v9", "ipfix"])
def test_templates_are_resent_after_the_refresh_time(fmt: str) -> None:
    encoder = make_encoder(fmt, EncoderConfig(template_refresh_packets=1000, template_refresh_ms=5_000))
    header = 20 if fmt == "v9" else 16
    template_set = 0 if fmt == "v9" else 2
    kinds = []
    for offset_ms in (0, 1_000, 4_000, 6_000, 7_000):
        first = encoder.encode(make_flows(20, seed=offset_ms), NOW_MS + offset_ms).datagrams[0]
        kinds.append(_sets(first, header)[0][0] == template_set)
    assert kinds == [True, False, False, True, False]


@pytest.mark.parametrize("fmt", ["v9", "ipfix"])
def test_a_collector_that_starts_late_decodes_from_the_next_template_refresh(fmt: str) -> None:
    encoder = make_encoder(fmt, EncoderConfig(template_refresh_packets=10))
    encoded = encoder.encode(make_flows(1000, seed=3), NOW_MS)
    late = 15  # the collector missed the first 15 datagrams (the first templates among them)
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(None, session.options, counters)
    decoded = normalizer.normalize(
        session.decode([Datagram(EXPORTER, NOW_MS, p) for p in encoded.datagrams[late:]])
    )
    # Data before the first refresh is held for its template and released when it arrives.
    assert len(decoded) == sum(encoded.flows[late:])
    assert counters.total("decode_errors_total") == 0


@pytest.mark.parametrize("fmt", ["v5", "v9", "ipfix"])
@pytest.mark.parametrize("limit", [300, 576, 1400, 8_000])
def test_datagrams_never_exceed_the_size_limit(fmt: str, limit: int) -> None:
    flows = make_flows(3000, seed=limit)
    encoded = make_encoder(fmt, EncoderConfig(max_datagram_bytes=limit)).encode(flows, NOW_MS)
    assert max(map(len, encoded.datagrams)) <= limit
    assert encoded.flow_count + encoded.skipped == 3000
    assert len(encoded.flows) == len(encoded.datagrams)
    decoded, counters, _ = decode(encoded.datagrams)
    no_errors(counters)
    assert len(decoded) == encoded.flow_count
    # well filled: per address family (set id), every data datagram but the last one is full
    header = {"v5": 24, "v9": 20, "ipfix": 16}[fmt]
    per_family: dict[int, list[int]] = {}
    for payload, flows_in in zip(encoded.datagrams, encoded.flows, strict=True):
        if flows_in:
            family = 5 if fmt == "v5" else struct.unpack_from("!H", payload, header)[0]
            per_family.setdefault(family, []).append(flows_in)
    for counts in per_family.values():
        assert len(set(counts[:-1])) <= 1 and counts[-1] <= counts[0]


def test_flows_without_some_columns_are_sent_with_zeros_and_the_export_time() -> None:
    flows = make_flows(40, ipv6_share=0.0)
    partial = {name: flows[name] for name in ("src_addr", "dst_addr", "packets", "bytes")}
    decoded, counters, _ = decode(IpfixEncoder().encode(partial, NOW_MS).datagrams)
    no_errors(counters)
    np.testing.assert_array_equal(decoded["bytes"], flows["bytes"])
    assert not decoded["src_port"].any() and not decoded["in_if"].any()
    assert set(decoded["time_start"].tolist()) == {NOW_MS}


def test_empty_batches_produce_nothing_and_do_not_advance_sequences() -> None:
    for fmt in ("v5", "v9", "ipfix"):
        encoder = make_encoder(fmt)
        encoded = encoder.encode(FlowBatch.empty(), NOW_MS)
        assert encoded.datagrams == [] and encoder.sequence == 0


def test_invalid_configurations_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="max_datagram_bytes"):
        V9Encoder(EncoderConfig(max_datagram_bytes=120))
    with pytest.raises(ConfigError, match="max_datagram_bytes"):
        EncoderConfig(max_datagram_bytes=70_000)
    with pytest.raises(ConfigError, match="domain"):
        V5Encoder(EncoderConfig(domain=0x10000))
    with pytest.raises(ConfigError, match="format"):
        make_encoder("v7")
