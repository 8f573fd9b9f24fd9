"""The scalable path end to end: replay → ``flowscope collect --parquet-dir`` → Spark's file source →
incremental state → the ResultStore, with the embedded engine's offline report as oracle, across a
query that is stopped and restarted and a micro-batch whose commit was lost (host statistics
included; ``test_parquet_hosts`` checks them and ``spread`` with windows closing between batches)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from tests.spark.conftest import without_exporter_address
from tests.spark.test_hosts import GENERATED_LOCAL, assert_conform, busiest_local, watched
from tests.spark.test_stream import FLOWSCOPE, VIEWS

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.stats import StatsSpec
from flowscope.pipeline import offline_results
from flowscope.spark.sink import StoreSink
from flowscope.spark.stream import IncrementalReport, parquet_flows, start_parquet_stream
from flowscope.store import ResultStore, StoreConfig
from support.processes import WatchedProcess

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def collected_files(capture: Path, directory: Path) -> int:
    """Replays ``capture`` over UDP on loopback into a real collector writing Parquet; returns the rows."""
    collector = WatchedProcess("collect", [*FLOWSCOPE, "collect", "--log-level", "INFO", "--host", "127.0.0.1",
                                           "--udp-port", "0", "--tcp-port", "0", "--parquet-dir", str(directory),
                                           "--parquet-roll", "0.2", "--parquet-roll-rows", "2000", "--stats"])
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


def wait_for_flows(store: ResultStore, query: Any, total: int, timeout_s: float = 180, interval: str = "1m") -> int:
    seen = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = sum(r["totals"]["flows"] for r in store.query(interval, view="all"))
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
        # Identical, but for a local host's sketched partners and top ports (within their bounds).
        assert_conform([without_exporter_address(want)], [without_exporter_address(got)])


def test_parquet_files_from_a_real_collector_give_the_embedded_results_across_restarts(
    spark: SparkSession, generated: Path, tmp_path: Path
) -> None:
    # A day of grace: no window closes and no flow is late, whatever the micro-batch boundaries.
    # With host statistics: their state must not double count across the restart either (spread is
    # replayed in test_parquet_hosts, where windows close between micro-batches).
    probe = EngineConfig(windows_ms=(1_000, 60_000), stats=StatsSpec(local_networks=GENERATED_LOCAL))
    busiest = busiest_local([r.to_json() for r in offline_results([generated], probe)])
    stats = StatsSpec(views=VIEWS, local_networks=GENERATED_LOCAL, watched_hosts=(busiest, "203.0.113.77"))
    config = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=86_400_000, stats=stats)
    expected = [r.to_json() for r in offline_results([generated], config)]
    total = sum(r["totals"]["flows"] for r in expected if r["interval"] == "1m" and r["view"] == "all")
    assert all(watched(r, busiest)["sent"]["flows"] > 0 for r in expected if r["interval"] == "1m"
               and r["view"] == "all")
    flows_dir = tmp_path / "flows"
    assert collected_files(generated, flows_dir) == total
    assert len(list(flows_dir.glob("*.parquet"))) >= 6

    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    work = tmp_path / "work"
    try:
        # First run: two files per micro-batch, stopped (killed between batches) part way.
        source = parquet_flows(spark, flows_dir, max_files_per_trigger=2)
        query, report = start_parquet_stream(spark, source, config, work, StoreSink(store), trigger_seconds=0.5,
                                             coarse_refresh_s=0)
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
        query, report = start_parquet_stream(spark, source, config, work, StoreSink(store), trigger_seconds=0.5,
                                             coarse_refresh_s=0)
        try:
            seen = wait_for_flows(store, query, total)
        finally:
            query.stop()
        assert seen == total, f"{seen} of {total} flows reached the store"
        assert report.first_batch_id == replayed
        assert_store_equals(store, expected, config)
    finally:
        store.stop()


def test_coarse_windows_refreshed_less_often_still_give_exact_results_and_keep_state_for_open_windows_only(
    spark: SparkSession, generated: Path, tmp_path: Path
) -> None:
    # One second of grace: windows close as the data moves on; late flows are folded as the engine does.
    config = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=1_000, stats=StatsSpec(views=VIEWS))
    flows_dir = tmp_path / "flows"
    total = collected_files(generated, flows_dir)
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    work = tmp_path / "work"
    try:
        source = parquet_flows(spark, flows_dir, max_files_per_trigger=3)
        # Provisional minute results held back for an hour: only the seconds and the final minutes
        # come from the micro-batches; refresh() writes the open minute at the end.
        query, report = start_parquet_stream(spark, source, config, work, StoreSink(store), trigger_seconds=0.5,
                                             coarse_refresh_s=3600)
        try:
            seen = wait_for_flows(store, query, total, interval="1s")
        finally:
            query.stop()
        assert seen == total
        assert isinstance(report, IncrementalReport)
        closed = store.query("1m", view="all")
        assert [r["final"] for r in closed] == [True] * len(closed)
        report.refresh(force=True)
        minutes = store.query("1m", view="all")
        assert len(minutes) == len(closed) + 1  # the open minute, held back until now
        assert [r["final"] for r in minutes] == [True] * len(closed) + [False]
        newest_minute = minutes[-1]["start_ms"]
        seconds = store.query("1s", view="all")
        assert sum(r["late_flows"] for r in seconds) == sum(r["late_flows"] for r in minutes)
        for view in config.stats.view_names:  # every minute, final or refreshed, is the sum of its seconds
            per_second = store.query("1s", view=view)
            for minute in store.query("1m", view=view):
                inside = [r for r in per_second if minute["start_ms"] <= r["start_ms"] < minute["start_ms"] + 60_000]
                for metric in ("flows", "packets", "bytes"):
                    assert minute["totals"][metric] == sum(r["totals"][metric] for r in inside), (view, metric)
                    assert minute["web"][metric] == sum(r["web"][metric] for r in inside), (view, metric)
        # The newest books name the open windows only, and the state holds no other window's sums
        # than those the newest two books name (a replay of the last batch needs the one before).
        books = sorted((work / "books").glob("*.json"), key=lambda p: int(p.stem))
        named = [{(d, s) for d, s, _ in json.loads(p.read_text())["open"]} for p in books[-2:]]
        assert {s for d, s in named[-1] if d == 60_000} == {newest_minute}
        kept = {tuple(int(part) for part in d.name.split("-", 1)) for d in (work / "state").iterdir()}
        assert kept <= named[0] | named[1]
        assert len(kept) < len(seconds)
    finally:
        store.stop()


def test_the_spark_command_writes_the_held_back_coarse_results_when_stopped(generated: Path, tmp_path: Path) -> None:
    from flowscope.config import build, load_settings  # noqa: PLC0415  (as the command loads it)

    config_path = tmp_path / "flowscope.toml"
    config_path.write_text(f"""
[engine]
windows = ["1s", "1m"]
time_base = "end"
grace = "1h"
[store]
path = "{tmp_path / 'results.db'}"
""")
    config = build(load_settings(config_path)).engine  # an hour of grace: nothing closes, nothing is late
    expected = [r.to_json() for r in offline_results([generated], config)]
    flows_dir = tmp_path / "flows"
    total = collected_files(generated, flows_dir)
    spark = WatchedProcess("spark", [*FLOWSCOPE, "spark", "--config", str(config_path), "--parquet-source",
                                     str(flows_dir), "--work-dir", str(tmp_path / "work"), "--master", "local[2]",
                                     "--shuffle-partitions", "2", "--trigger", "0.5", "--max-files-per-trigger", "2",
                                     "--coarse-refresh", "3600"])
    try:
        spark.wait_for(r"Spark streaming from", timeout_s=180)
        deadline = time.monotonic() + 180
        seen = 0
        while seen < total and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(sqlite3.OperationalError), \
                    contextlib.closing(sqlite3.connect(f"file:{tmp_path / 'results.db'}?mode=ro", uri=True)) as db:
                seen = db.execute("SELECT COALESCE(SUM(flows), 0) FROM results WHERE interval = '1s' AND view = 'all'"
                                  ).fetchone()[0]
        assert seen == total
    finally:
        spark.stop()
    assert spark.process.returncode == 0, "".join(spark.stderr)[-3000:]
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    try:
        # The minute results were held back after the first micro-batch; the stop wrote the newest.
        assert_store_equals(store, expected, config)
    finally:
        store.stop()
