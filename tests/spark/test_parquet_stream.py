"""The scalable path end to end: replay → ``flowscope collect --parquet-dir`` → Spark's file source →
incremental state → the ResultStore, with the embedded engine's offline report as oracle, across a
query that is stopped and restarted and a micro-batch whose commit was lost."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from tests.spark.test_stream import FLOWSCOPE, VIEWS, Process, without_exporter_address

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.stats import StatsSpec
from flowscope.pipeline import offline_results
from flowscope.spark.sink import StoreSink
from flowscope.spark.stream import IncrementalReport, parquet_flows, start_parquet_stream
from flowscope.store import ResultStore, StoreConfig

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def collected_files(capture: Path, directory: Path) -> int:
    """Replays ``capture`` over UDP on loopback into a real collector writing Parquet; returns the rows."""
    collector = Process(["collect", "--log-level", "INFO", "--host", "127.0.0.1", "--udp-port", "0",
                         "--tcp-port", "0", "--parquet-dir", str(directory), "--parquet-roll", "0.2",
                         "--parquet-roll-rows", "2000", "--stats"])
    try:
        udp_port = int(collector.wait_for(r"collecting on udp (\d+)").group(1))
        replay = subprocess.run([*FLOWSCOPE, "replay", "--to", f"127.0.0.1:{udp_port}", "--input", str(capture),
                                 "--no-restamp", "--rate", "4000"], check=False, capture_output=True, text=True,
                                timeout=60)
        assert replay.returncode == 0, replay.stderr
        time.sleep(1)  # the last datagrams reach the decoder
    finally:
        collector.stop()
    assert '"parquet_errors_total"' not in "".join(collector.stderr)
    return sum(pq.read_metadata(path).num_rows for path in directory.glob("*.parquet"))


def wait_for_flows(store: ResultStore, query: Any, total: int, timeout_s: float = 180) -> int:
    seen = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = sum(r["totals"]["flows"] for r in store.query("1m", view="all"))
        if seen >= total:
            return seen
        assert query.exception() is None, query.exception()
        time.sleep(0.5)
    return seen


def assert_store_equals(store: ResultStore, expected: list[dict[str, Any]], config: EngineConfig) -> None:
    for interval in ("1s", "1m"):
        for view in config.stats.view_names:
            count = sum(1 for r in expected if r["interval"] == interval and r["view"] == view)
            assert len(store.query(interval, view=view)) == count, (interval, view)
    for want in expected:
        got = store.at(want["interval"], want["start_ms"], view=want["view"])
        assert got is not None, (want["interval"], want["start_ms"], want["view"])
        got_view, want_view = without_exporter_address(got), without_exporter_address(want)
        differing = sorted(k for k in want_view if got_view.get(k) != want_view[k])
        assert got_view == want_view, (want["interval"], want["start_ms"], want["view"], differing,
                                       [(got_view.get(k), want_view[k]) for k in differing][:1])


def test_parquet_files_from_a_real_collector_give_the_embedded_results_across_restarts(
    spark: SparkSession, generated: Path, tmp_path: Path
) -> None:
    # A day of grace: no window closes and no flow is late, whatever the micro-batch boundaries.
    config = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=86_400_000,
                          stats=StatsSpec(views=VIEWS))
    expected = [r.to_json() for r in offline_results([generated], config)]
    total = sum(r["totals"]["flows"] for r in expected if r["interval"] == "1m" and r["view"] == "all")
    flows_dir = tmp_path / "flows"
    assert collected_files(generated, flows_dir) == total
    assert len(list(flows_dir.glob("*.parquet"))) >= 6

    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    work = tmp_path / "work"
    try:
        # First run: two files per micro-batch, stopped (killed between batches) part way.
        source = parquet_flows(spark, flows_dir, max_files_per_trigger=2)
        query, report = start_parquet_stream(spark, source, config, work, StoreSink(store), trigger_seconds=0.5)
        deadline = time.monotonic() + 120
        while report.batches < 2 and time.monotonic() < deadline:
            assert query.exception() is None, query.exception()
            time.sleep(0.2)
        query.stop()
        assert report.batches >= 2
        partial = sum(r["totals"]["flows"] for r in store.query("1m", view="all"))
        assert 0 < partial < total
        # A crash after the results were written but before Spark committed the batch: the newest
        # batch's commit entry is gone (or was never written, when the stop interrupted it), so the
        # restarted query runs that micro-batch again on the same files.
        replayed = max(int(p.name) for p in (work / "checkpoint" / "offsets").glob("[0-9]*"))
        commits = work / "checkpoint" / "commits"
        (commits / str(replayed)).unlink(missing_ok=True)
        (commits / f".{replayed}.crc").unlink(missing_ok=True)  # Hadoop's checksum file

        source = parquet_flows(spark, flows_dir, max_files_per_trigger=2)
        query, report = start_parquet_stream(spark, source, config, work, StoreSink(store), trigger_seconds=0.5)
        try:
            seen = wait_for_flows(store, query, total)
        finally:
            query.stop()
        assert seen == total, f"{seen} of {total} flows reached the store"
        assert report.first_batch_id == replayed
        assert_store_equals(store, expected, config)
    finally:
        store.stop()


def test_an_incremental_state_is_kept_only_for_open_windows(spark: SparkSession, generated: Path,
                                                           tmp_path: Path) -> None:
    # One second of grace: windows close as the data moves on; late flows are folded as the engine does.
    config = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=1_000, stats=StatsSpec(views=VIEWS))
    flows_dir = tmp_path / "flows"
    total = collected_files(generated, flows_dir)
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    try:
        source = parquet_flows(spark, flows_dir, max_files_per_trigger=3)
        query, report = start_parquet_stream(spark, source, config, tmp_path / "work", StoreSink(store),
                                             trigger_seconds=0.5)
        try:
            seen = wait_for_flows(store, query, total)
        finally:
            query.stop()
        assert seen == total
        assert isinstance(report, IncrementalReport)
        minutes = store.query("1m", view="all")
        assert [r["final"] for r in minutes[:-1]] == [True] * (len(minutes) - 1)  # all but the newest closed
        seconds = store.query("1s", view="all")
        assert sum(r["totals"]["flows"] for r in seconds) == total
        assert sum(r["late_flows"] for r in seconds) == sum(r["late_flows"] for r in minutes)
        # The newest state version holds the open windows only: the closed minutes are gone from it.
        versions = sorted((tmp_path / "work" / "state").glob("v-*"))
        newest = spark.read.parquet(str(versions[-1]))
        open_minutes = {row["start_ms"] for row in newest.filter("interval_ms = 60000").select("start_ms").collect()}
        assert open_minutes <= {minutes[-1]["start_ms"]}
    finally:
        store.stop()
