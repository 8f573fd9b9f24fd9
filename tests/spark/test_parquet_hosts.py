"""The Parquet stream with host statistics and the ``spread`` time base, against the embedded engine.

Each micro-batch's flows are written by the collector's own Parquet writer (``export.parquet``)
and read back with the stream's file schema; ``IncrementalReport`` processes them as the
streaming query's ``foreachBatch`` does. The oracle is the embedded engine with the data as its
clock, one ``process`` + ``tick`` per micro-batch (windows close and flows arrive late at the
same points), then flushed. Host statistics must agree as ``spark.hosts`` states (exact, except
a local host's sketched ``partners`` beyond 8 192 and ``top_ports`` beyond 8 ports, within their
bounds: ``test_hosts.assert_conform``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.stats import StatsSpec
from flowscope.aggregate.windows import Resolution, format_duration
from flowscope.decode.session import DecoderSession
from flowscope.export.parquet import ParquetWriter, ParquetWriterConfig
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch, address_text
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.pipeline import decode_files
from flowscope.spark.hostpartials import HostSums
from flowscope.spark.sink import StoreSink
from flowscope.spark.sources import ArrivalOrder, cut_flows
from flowscope.spark.stream import FILE_SCHEMA, IncrementalReport
from flowscope.store import ResultStore, StoreConfig

from .conftest import embedded_micro_batches
from .test_hosts import (
    GENERATED_LOCAL,
    PRIVATE,
    SCAN_PORTS,
    SCAN_TARGETS,
    Tally,
    assert_conform,
    scan_capture,
    watched,
)
from .test_job import VIEWS, micro_batches, real_captures

pytestmark = pytest.mark.spark


def written_by_the_collector(batch: FlowBatch, exporters: ExporterTable, directory: Path) -> Path:
    """One micro-batch's flows as the collector writes them (``ParquetWriter``: a complete file)."""
    counters = Counters()
    writer = ParquetWriter(ParquetWriterConfig(str(directory), roll_interval_ms=60_000), counters)
    writer.start()
    writer.submit(batch, exporters)
    writer.stop()
    assert counters.get("parquet_rows_total") == len(batch)
    return directory


def through_the_parquet_path(
    spark: SparkSession, config: EngineConfig, batches: list[FlowBatch], exporters: ExporterTable, tmp_path: Path,
    *, restart_at: int | None = None,
) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Every result the store holds after the micro-batches (keyed by interval, start, view).

    ``restart_at``: a new ``IncrementalReport`` on the same work directory takes over before that
    batch and first replays the batch before it (its commit lost), as a restarted query does.
    """
    directories = [written_by_the_collector(batch, exporters, tmp_path / "flows" / f"{number:03d}")
                   for number, batch in enumerate(batches)]
    frames = [spark.read.schema(FILE_SCHEMA).parquet(str(directory)) for directory in directories]
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    try:
        report = IncrementalReport(spark, config, tmp_path / "work", StoreSink(store), coarse_refresh_s=0)
        for batch_id, frame in enumerate(frames):
            if batch_id == restart_at:
                report = IncrementalReport(spark, config, tmp_path / "work", StoreSink(store), coarse_refresh_s=0)
                report.process(frames[batch_id - 1], batch_id - 1)
            report.process(frame, batch_id)
        return {(r["interval"], r["start_ms"], r["view"]): r for interval in map(format_duration, config.windows_ms)
                for view in config.stats.view_names for r in store.query(interval, view=view)}
    finally:
        store.stop()


def exporters_by_address(result: dict[str, Any]) -> dict[str, Any]:
    """``by_exporter`` lists exporters in the order of their indices, which each process gives out
    its own way (the embedded engine as it decodes them, the Parquet stream as it first receives
    them): compared in address order."""
    totals = dict(result["totals"])
    totals["by_exporter"] = sorted(totals["by_exporter"], key=lambda e: (e["exporter"], e["domain"]))
    return {**result, "totals": totals}


def assert_embedded(stored: dict[tuple[str, int, str], dict[str, Any]], config: EngineConfig,
                    batches: list[FlowBatch], exporters: ExporterTable) -> tuple[list[dict[str, Any]], Tally]:
    """The store holds the embedded engine's results (final where it had closed them); returns
    them, and how the local hosts of their top lists compared."""
    before_flush, emitted = embedded_micro_batches(config, batches, exporters)
    closed = {(r.resolution, r.start_ms, r.view) for r in before_flush if r.final}
    expected = {(r.resolution, r.start_ms, r.view): r.to_json() for r in emitted if r.final}
    assert set(stored) == set(expected)
    total = Tally()
    for key, want in expected.items():
        got = stored[key]
        assert got["final"] == (key in closed), key
        tally = assert_conform([exporters_by_address(want)], [exporters_by_address({**got, "final": True})])
        for name in ("hosts", "identical_ports", "bounded_ports", "estimated_partners"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
    return list(expected.values()), total


def test_generated_micro_batches_with_spread_give_the_embedded_host_statistics_across_a_restart(
    spark: SparkSession, tmp_path: Path
) -> None:
    batches, exporters = micro_batches(5)
    # An exporter's delayed export: flows of the first batch again in the last, their windows long closed.
    delayed = FlowBatch({name: column[:50].copy() for name, column in batches[0].columns.items()})
    batches[4] = FlowBatch.concat([batches[4], delayed])
    sources, counts = np.unique(np.concatenate([b["src_addr"] for b in batches]), return_counts=True)
    busiest = address_text(bytes(sources[np.argmax(counts)]))
    stats = StatsSpec(views=VIEWS[:2], local_networks=GENERATED_LOCAL, watched_hosts=(busiest, "203.0.113.77"),
                      top_n=4)
    # One second of grace: windows close between micro-batches, so shares of closed seconds move
    # to the earliest open one and some flows arrive late.
    config = EngineConfig(windows_ms=(1_000, 10_000), time_base="spread", grace_ms=1_000, stats=stats)
    stored = through_the_parquet_path(spark, config, batches, exporters, tmp_path, restart_at=3)
    expected, tally = assert_embedded(stored, config, batches, exporters)
    assert tally.hosts > 20 and tally.identical_ports > 0

    tens = [r for r in expected if r["interval"] == "10s" and r["view"] == "all"]
    assert sum(r["totals"]["flows"] for r in tens) == sum(len(b) for b in batches)  # none counted twice
    assert sum(r["late_flows"] for r in tens) == len(delayed)
    # Long flows reached back into closed seconds: those shares went to the earliest open one.
    finest, moved = Resolution(1_000), 0
    order = ArrivalOrder([finest, Resolution(10_000)], "spread", 1_000)
    for batch in batches:
        moved += len(cut_flows(batch, "spread", finest, -(1 << 62))) - len(order.pieces(batch))
        order.tick()
    assert moved > 0
    seconds = [r for r in expected if r["interval"] == "1s" and r["view"] == "all"]
    assert any(r["totals"]["flows"] == 0 and r["totals"]["packets"] > 0 for r in seconds)  # shares only
    assert max(r["hosts"]["local"]["hosts"] for r in tens) > 10
    assert all(len(r["hosts"]["local"]["top"]["partners"]) == min(4, r["hosts"]["local"]["hosts"]) for r in tens)
    assert sum(watched(r, busiest)["sent"]["flows"] for r in tens) > 0
    assert all(watched(r, "203.0.113.77")["partners"] == 0 for r in tens)
    # The state kept: the windows the newest books name, each with its traffic sums and host state.
    state = tmp_path / "work" / "state"
    for directory in state.iterdir():
        versions = {kind: {p.stem[2:] for p in directory.glob(f"{kind}-*.npz")} for kind in "vh"}
        assert versions["v"] and versions["v"] == versions["h"], directory.name
    assert any(len(HostSums.load(p)) > 0 for p in state.glob("*/h-*.npz"))


@pytest.mark.parametrize("time_base", ["received", "spread"])
def test_real_captures_give_the_embedded_host_statistics(spark: SparkSession, tmp_path: Path, time_base: str) -> None:
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(NormalizeConfig(preserve_order=False), session.options, counters)
    decoded = [batch for batch, _ in decode_files(real_captures(), session, normalizer) if len(batch)]
    batches = [FlowBatch.concat(list(part)) for part in np.array_split(np.array(decoded, dtype=object), 4)]
    probe = [r.to_json() for r in embedded_micro_batches(
        EngineConfig(windows_ms=(1_000, 60_000), stats=StatsSpec(local_networks=PRIVATE)),
        batches, session.exporters)[1]]
    minutes = [r for r in probe if r["interval"] == "1m" and r["view"] == "all"]
    tops = [host for r in minutes for host in r["hosts"]["local"]["top"]["flows"][:1]]
    busiest = max(tops, key=lambda h: h["sent"]["flows"] + h["received"]["flows"])["address"]
    stats = StatsSpec(views=VIEWS, local_networks=PRIVATE, watched_hosts=(busiest, "2001:db8::1"))
    config = EngineConfig(windows_ms=(1_000, 60_000), time_base=time_base, grace_ms=1_000, stats=stats)
    stored = through_the_parquet_path(spark, config, batches, session.exporters, tmp_path)
    expected, tally = assert_embedded(stored, config, batches, session.exporters)
    assert tally.hosts > 20 and tally.identical_ports > 0

    minutes = [r for r in expected if r["interval"] == "1m" and r["view"] == "all"]
    assert sum(r["totals"]["flows"] for r in minutes) > 1_000
    assert sum(r["hosts"]["local"]["hosts"] for r in minutes) > 100
    assert any(watched(r, busiest)["partners"] > 1 for r in minutes)


def test_a_scanner_beyond_the_sketchs_exact_range_is_counted_exactly_across_micro_batches(
    spark: SparkSession, tmp_path: Path
) -> None:
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(NormalizeConfig(preserve_order=False), session.options, counters)
    capture = scan_capture(tmp_path / "scan.ipfix")  # 20 000 partners on 3 000 ports, in 4 exports
    decoded = [batch for batch, _ in decode_files([capture], session, normalizer) if len(batch)]
    batches = [FlowBatch.concat(list(part)) for part in np.array_split(np.array(decoded, dtype=object), 3)]
    stats = StatsSpec(local_networks=GENERATED_LOCAL, watched_hosts=("10.0.0.9",), top_n=5)
    config = EngineConfig(windows_ms=(1_000, 60_000), grace_ms=1_000, stats=stats)
    stored = through_the_parquet_path(spark, config, batches, session.exporters, tmp_path)
    _, tally = assert_embedded(stored, config, batches, session.exporters)
    assert tally.estimated_partners > 0  # the embedded engine's HyperLogLog, within its bound

    minute = next(r for key, r in stored.items() if key[0] == "1m" and key[2] == "all")["hosts"]
    scanner = minute["local"]["top"]["partners"][0]
    assert scanner["address"] == "10.0.0.9"
    assert scanner["partners"] == minute["watched"][0]["partners"] == SCAN_TARGETS  # exact, merged over batches
    assert scanner["dst_ports"] == SCAN_PORTS
