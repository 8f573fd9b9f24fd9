"""The Parquet stream's ``spread`` cutting in Spark columns equals ``sources.cut_flows`` (the numpy
cutting of the batch report, the JSON stream and the embedded engine), piece by piece."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.windows import Resolution
from flowscope.export.parquet import flow_file_table
from flowscope.model import FLOW_COLUMNS, ExporterTable, FlowBatch
from flowscope.spark.sources import cut_flows
from flowscope.spark.spreadpieces import MAX_WINDOWS_PER_FLOW, spread_pieces
from flowscope.spark.stream import FILE_SCHEMA

pytestmark = pytest.mark.spark

BASE_MS = 1_795_786_740_000


def awkward_flows(count: int, seed: int) -> FlowBatch:
    """Flows of every shape: instantaneous, start after end, a few ms, across many windows, longer
    than ``MAX_WINDOWS_PER_FLOW`` windows, some before the horizon; counters small and large."""
    rng = np.random.default_rng(seed)
    columns = {name: np.zeros(count, dtype) for name, dtype in FLOW_COLUMNS.items()}
    end = BASE_MS + rng.integers(-20_000, 60_000, count)
    length = rng.choice([0, 1, 7, 999, 1_000, 1_001, 12_345, 59_999, 3_700_000], count)
    start = end - length
    start[::17] = end[::17] + 500  # start after end: treated as instantaneous at the end
    columns.update(
        time_end=end.astype(np.int64), time_start=start.astype(np.int64), time_received=end.astype(np.int64),
        packets=rng.choice([1, 2, 3, 7, 1_000_003, 2**40 + 11, 2**53 + 7], count).astype(np.uint64),
        bytes=rng.integers(0, 2**45, count).astype(np.uint64),
        src_addr=np.full(count, b"\x00" * 10 + b"\xff\xff" + b"\x0a\x00\x00\x01", "S16"),
        dst_addr=np.full(count, b"\x00" * 10 + b"\xff\xff" + b"\x0a\x00\x00\x02", "S16"),
        dst_port=np.arange(count).astype(np.uint16),  # which flow a piece belongs to
    )
    return FlowBatch(columns)


@pytest.mark.parametrize(("finest_ms", "horizon_ms"),
                         [(1_000, BASE_MS), (1_000, -(1 << 62)), (10_000, BASE_MS + 5_000)])
def test_spark_pieces_equal_the_numpy_cutting(spark: SparkSession, tmp_path: Path, finest_ms: int,
                                              horizon_ms: int) -> None:
    batch = awkward_flows(400, seed=finest_ms + horizon_ms % 97)
    exporters = ExporterTable()
    exporters.index_of("192.0.2.1", 1)
    pq.write_table(flow_file_table(batch, exporters), tmp_path / "flows.parquet")
    frame = spark.read.schema(FILE_SCHEMA).parquet(str(tmp_path))

    table = spread_pieces(frame, finest_ms, horizon_ms).select(
        "dst_port", "piece_start", "flows", "packets", "bytes").toArrow()
    got = sorted(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True))

    want_pieces = cut_flows(batch, "spread", Resolution(finest_ms), horizon_ms)
    assert want_pieces.rows is not None and want_pieces.flows is not None
    assert want_pieces.packets is not None and want_pieces.bytes is not None
    want = sorted(zip(batch["dst_port"][want_pieces.rows].tolist(), want_pieces.window.tolist(),
                      want_pieces.flows.tolist(), want_pieces.packets.tolist(), want_pieces.bytes.tolist(),
                      strict=True))
    assert [tuple(int(v) for v in row) for row in got] == want
    # What the cases cover: pieces beyond the per-flow limit folded, closed windows skipped.
    per_flow = np.bincount(want_pieces.rows, minlength=len(batch))
    assert (per_flow == 1).any() and (per_flow > 1).any() and int(want_pieces.flows.sum()) == len(batch)
    if horizon_ms < 0:  # nothing closed: the longest flows are cut at the limit
        assert per_flow.max() == MAX_WINDOWS_PER_FLOW
    else:  # flows entirely before the horizon: one piece each, in a closed window (the late rule moves it)
        assert (want_pieces.window < horizon_ms).any()
