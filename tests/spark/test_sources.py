"""Flow rows for Spark: JSON lines back to FlowBatches, address words, the late rule."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
import pytest

from flowscope.aggregate.windows import Resolution
from flowscope.errors import ConfigError
from flowscope.export.flowjson import encode_flows
from flowscope.model import ExporterTable, FlowBatch
from flowscope.spark.sources import ArrivalOrder, flow_table, json_flows, piece_table
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

pytestmark = pytest.mark.spark

NOW_MS = 1_795_786_800_000
_JSON_TYPES = {
    "exporter": pa.string(), "src_addr": pa.string(), "dst_addr": pa.string(),
    "packets": pa.decimal128(20, 0), "bytes": pa.decimal128(20, 0),
}


def generated(count: int = 2_000) -> FlowBatch:
    batch = TrafficGenerator(GeneratorConfig(seed=4, ipv6_share=0.3)).flows(count, NOW_MS)
    batch["exporter"][:] = np.arange(count) % 3
    batch["bytes"][0] = np.uint64((1 << 64) - 1)  # the largest counter survives the trip
    return batch


def test_collector_json_lines_come_back_as_the_same_flows() -> None:
    batch = generated()
    sent = ExporterTable()
    for address, domain in (("192.0.2.1", 0), ("2001:db8::7", 3), ("192.0.2.1", 5)):
        sent.index_of(address, domain)
    lines = encode_flows(batch, sent)
    schema = pa.schema([pa.field(name, kind) for name, kind in _JSON_TYPES.items()])
    table = pj.read_json(io.BytesIO(lines), parse_options=pj.ParseOptions(explicit_schema=schema,
                                                                          unexpected_field_behavior="infer"))
    received = ExporterTable()
    flows = json_flows(table, received)
    assert received.entries() == sent.entries()  # first seen first, as the collector numbered them
    for name in FlowBatch.COLUMN_NAMES:
        assert np.array_equal(flows[name], batch[name]), name
        assert flows[name].dtype == batch[name].dtype, name


def test_flow_table_holds_address_words_for_the_filters() -> None:
    batch = generated(50)
    table = flow_table(batch, np.zeros(50, np.int64), np.zeros(50, np.bool_))
    raw = bytes(batch["src_addr"][7]).ljust(16, b"\0")
    assert table["src_addr"][7].as_py() == raw
    assert table["src_hi"][7].as_py() == int.from_bytes(raw[:8], "big", signed=True)
    assert table["src_lo"][7].as_py() == int.from_bytes(raw[8:], "big", signed=True)
    assert table["bytes"][0].as_py() == (1 << 64) - 1
    assert table.schema.field("bytes").type == pa.uint64()


def batch_at(times_ms: list[int]) -> FlowBatch:
    batch = generated(len(times_ms))
    batch["time_received"][:] = times_ms
    return batch


def test_arrival_order_folds_flows_for_closed_windows_into_the_open_one() -> None:
    order = ArrivalOrder([Resolution(1_000)], "received", grace_ms=2_000)
    window, late = order.assign(batch_at([10_500, 11_200]))
    order.tick()
    assert window.tolist() == [10_000, 11_000] and not late.any()
    window, late = order.assign(batch_at([14_100]))  # the data clock reaches 14 999: [10 s, 11 s) closes
    order.tick()
    assert order.horizon_ms == 12_000  # [11 s, 12 s) closed too: 12 000 + 2 000 <= 14 999
    window, late = order.assign(batch_at([10_900, 12_500]))
    assert window.tolist() == [14_000, 12_500 - 500] and late.tolist() == [True, False]
    assert order.late_total == 1


def lifetimes(spans_ms: list[tuple[int, int]], packets: list[int]) -> FlowBatch:
    batch = generated(len(spans_ms))
    batch["time_start"][:] = [start for start, _ in spans_ms]
    batch["time_end"][:] = [end for _, end in spans_ms]
    batch["time_received"][:] = batch["time_end"] + 1_000
    batch["packets"][:] = packets
    batch["bytes"][:] = np.asarray(packets, np.uint64) * np.uint64(100)
    return batch


def test_spread_cuts_flows_into_one_row_per_second_of_their_lifetime() -> None:
    order = ArrivalOrder([Resolution(1_000)], "spread", grace_ms=0)
    with pytest.raises(ConfigError, match="pieces"):
        order.assign(lifetimes([(0, 0)], [1]))
    # 800 + 1000 + 700 ms of a 2 500 ms flow: 3.2, 4 and 2.8 of its 10 packets; what flooring
    # leaves (1) goes to the last piece, which also counts the flow. An instantaneous flow: one piece.
    batch = lifetimes([(10_200, 12_700), (13_500, 13_500)], [10, 7])
    pieces = order.pieces(batch)
    assert pieces.rows is not None and pieces.rows.tolist() == [0, 0, 0, 1]
    assert pieces.window.tolist() == [10_000, 11_000, 12_000, 13_000]
    assert pieces.packets is not None and pieces.packets.tolist() == [3, 4, 3, 7]
    assert pieces.bytes is not None and pieces.bytes.tolist() == [320, 400, 280, 700]
    assert pieces.flows is not None and pieces.flows.tolist() == [0, 0, 1, 1]
    assert not pieces.late.any()
    table = piece_table(batch, pieces)
    assert table["flows"].to_pylist() == [0, 0, 1, 1]
    assert table["time_start"].to_pylist() == [10_200, 10_200, 10_200, 13_500]
    assert table["packets"].to_pylist() == [3, 4, 3, 7]


def test_spread_gives_closed_seconds_nothing() -> None:
    order = ArrivalOrder([Resolution(1_000)], "spread", grace_ms=0)
    order.pieces(lifetimes([(19_000, 19_500), (20_000, 20_500)], [1, 1]))
    order.tick()  # the clock is at 20 999: [19 s, 20 s) has closed, and with it everything before
    assert order.horizon_ms == 20_000
    # Partly before the horizon: the closed seconds' share goes to the first open one (20 s).
    # Entirely before it: one late piece in the window open now.
    pieces = order.pieces(lifetimes([(18_000, 21_000), (15_000, 16_000)], [30, 5]))
    assert pieces.rows is not None and pieces.rows.tolist() == [0, 0, 1]
    assert pieces.window.tolist() == [20_000, 21_000, 21_000]
    assert pieces.packets is not None and pieces.packets.tolist() == [30, 0, 5]
    assert pieces.late.tolist() == [False, False, True]
    assert order.late_total == 1


def test_a_flow_inside_a_closed_hour_is_late_even_if_its_second_never_opened() -> None:
    # The embedded engine's rule: once a window of any length has closed, nothing goes back into it.
    order = ArrivalOrder([Resolution(1_000), Resolution(3_600_000)], "received", grace_ms=0)
    order.assign(batch_at([1_000]))
    order.tick()
    order.assign(batch_at([3_600_000 + 10]))  # the clock passes the end of hour 0
    order.tick()
    order.tick()  # the second closed into hour 0, which is due: it closes as well
    assert order.horizons_ms[1] == 3_600_000
    window, late = order.assign(batch_at([2_000_000]))  # inside hour 0; its second never existed
    assert late.tolist() == [True]
    assert window.tolist() == [3_600_000]
