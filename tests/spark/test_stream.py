"""The streaming job fed the original way: replay → ``flowscope collect --json-server`` → Spark's
socket source → foreachBatch → the ResultStore, with the embedded engine's offline report as oracle."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from tests.spark.conftest import without_exporter_address

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.pipeline import offline_results
from flowscope.spark.job import socket_lines, start_stream
from flowscope.spark.sink import StoreSink
from flowscope.store import ResultStore, StoreConfig
from support.processes import WatchedProcess

pytestmark = [pytest.mark.spark, pytest.mark.integration]

FLOWSCOPE = [sys.executable, "-m", "flowscope.cli"]
VIEWS = (ViewSpec("web", "proto tcp and port in [80 443]"), ViewSpec("v6", "ipv6"))


def test_stream_from_a_real_collector_reaches_the_store_with_the_embedded_results(
    spark: SparkSession, generated: Path, tmp_path: Path
) -> None:
    # A day of grace: no window closes and no flow is late, whatever the micro-batch boundaries.
    config = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=86_400_000,
                          stats=StatsSpec(views=VIEWS))
    expected = [r.to_json() for r in offline_results([generated], config)]
    total = sum(r["totals"]["flows"] for r in expected if r["interval"] == "1m" and r["view"] == "all")
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    collector = WatchedProcess("collect", [*FLOWSCOPE, "collect", "--log-level", "INFO", "--host", "127.0.0.1",
                                           "--udp-port", "0", "--tcp-port", "0", "--json-server", "127.0.0.1:0"])
    query = None
    try:
        json_port = int(collector.wait_for(r"JSON flow stream on [\d.]+:(\d+)").group(1))
        udp_port = int(collector.wait_for(r"collecting on udp (\d+)").group(1))
        lines = socket_lines(spark, "127.0.0.1", json_port)
        query, report = start_stream(spark, lines, config, tmp_path / "work", StoreSink(store), trigger_seconds=1)
        collector.wait_for("JSON stream consumer connected", timeout_s=60)  # Spark's socket source
        time.sleep(0.5)  # let the server register the consumer before flows arrive
        replay = subprocess.run([*FLOWSCOPE, "replay", "--to", f"127.0.0.1:{udp_port}", "--input", str(generated),
                                 "--no-restamp", "--rate", "4000"], check=False, capture_output=True, text=True,
                                timeout=60)
        assert replay.returncode == 0, replay.stderr
        seen = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            minutes = store.query("1m", view="all")
            seen = sum(r["totals"]["flows"] for r in minutes)
            if seen >= total:
                break
            assert query.exception() is None, query.exception()
            time.sleep(0.5)
        assert seen == total, f"{seen} of {total} flows reached the store"
        assert report.batches >= 2  # the flows spread over several micro-batches
    finally:
        if query is not None:
            query.stop()
        collector.stop()
    try:
        for interval in ("1s", "1m"):
            for view in config.stats.view_names:
                count = sum(1 for r in expected if r["interval"] == interval and r["view"] == view)
                assert len(store.query(interval, view=view)) == count, (interval, view)
        for want in expected:
            got = store.at(want["interval"], want["start_ms"], view=want["view"])
            assert got is not None, (want["interval"], want["start_ms"], want["view"])
            assert without_exporter_address(got) == without_exporter_address(want)
            assert got["final"] is False  # a day of grace: every window is still open
    finally:
        store.stop()
