"""Conformance: capture files through the embedded engine and through Spark give the same JSON."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.errors import ConfigError
from flowscope.export.flowjson import encode_flows
from flowscope.model import ExporterTable, FlowBatch
from flowscope.pipeline import offline_results
from flowscope.spark.job import StreamingReport, run_spark_report
from flowscope.spark.sink import StoreSink
from flowscope.store import ResultStore, StoreConfig
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

from .conftest import DATA, GENERATED_START_MS, embedded_micro_batches

pytestmark = pytest.mark.spark

VIEWS = (
    ViewSpec("web", "proto tcp and port in [80 443 8080 8443] or proto udp and port 443"),
    ViewSpec("local", "net 10.0.0.0/8 or net fd00:10::/64"),
    ViewSpec("nothing", "proto 250"),
)
WINDOWS = (1_000, 60_000)


def real_captures() -> list[Path]:
    """Every NetFlow/IPFIX sample of tests/data (the zeek folder holds packets, not exports)."""
    files = [DATA / "ipfixcol2" / "example_flows.ipfix"]
    goflow2 = DATA / "goflow2"
    files += [goflow2 / "netflow_v9_template.bin", goflow2 / "netflow_v9_data.bin", goflow2 / "netflow_v5.bin"]
    files += sorted(p for p in (DATA / "python-netflow-v9-softflowd").glob("*.bin") if "invalid" not in p.name)
    files += sorted((DATA / "logstash-codec-netflow").glob("*.dat"))
    return files


def embedded(paths: list[Path], config: EngineConfig) -> list[dict[str, Any]]:
    """The embedded engine's final results, ordered as ``run_spark_report`` orders them."""
    views = config.stats.view_names
    results = [r.to_json() for r in offline_results(paths, config)]
    results.sort(key=lambda r: (r["end_ms"] - r["start_ms"], r["start_ms"], views.index(r["view"])))
    return results


def assert_same(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> None:
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        where = (want["interval"], want["start_ms"], want["view"])
        for key in want:
            assert got.get(key) == want[key], f"{where} {key}"
        assert json.dumps(got) == json.dumps(want), where  # same keys in the same order too


def has_tie(results: list[dict[str, Any]]) -> bool:
    """Whether some top list ranks two entries with the same metric (so the tie rule decided)."""
    metrics = ("flows", "packets", "bytes")
    for result in results:
        lists = [(result["top_ports"][p][m], m) for p in ("tcp", "udp") for m in metrics]
        lists += [(result["web"][r][m], m) for r in ("top_servers", "top_clients") for m in metrics]
        for entries, metric in lists:
            if any(a[metric] == b[metric] for a, b in itertools.pairwise(entries)):
                return True
    return False


@pytest.mark.parametrize("time_base", ["received", "spread"])
def test_real_captures_give_the_embedded_engines_results(spark: SparkSession, time_base: str) -> None:
    paths = real_captures()
    assert len(paths) > 40
    config = EngineConfig(windows_ms=WINDOWS, grace_ms=1_000, time_base=time_base, stats=StatsSpec(views=VIEWS))
    expected = embedded(paths, config)
    actual = run_spark_report(paths, config, spark=spark)
    assert_same(expected, actual)
    minutes = [r for r in expected if r["interval"] == "1m" and r["view"] == "all"]
    assert sum(r["totals"]["flows"] for r in minutes) > 1_000
    assert len({(e["exporter"], e["domain"]) for r in minutes for e in r["totals"]["by_exporter"]}) > 1
    assert any(r["web"]["top_servers"]["bytes"] for r in minutes)
    assert any(r["top_ports"]["udp"]["flows"] for r in minutes)


@pytest.mark.parametrize(
    ("time_base", "port_side", "top_n"),
    [("received", "dst", 10), ("start", "either", 5), ("end", "dst", 3), ("spread", "either", 4)],
)
def test_generated_traffic_gives_the_embedded_engines_results(
    spark: SparkSession, generated: Path, time_base: str, port_side: str, top_n: int
) -> None:
    stats = StatsSpec(views=VIEWS, port_side=port_side, top_n=top_n)  # type: ignore[arg-type]
    config = EngineConfig(windows_ms=WINDOWS, grace_ms=1_000, time_base=time_base, stats=stats)
    expected = embedded([generated], config)
    actual = run_spark_report([generated], config, spark=spark)
    assert_same(expected, actual)
    minutes = [r for r in expected if r["interval"] == "1m" and r["view"] == "all"]
    assert len(minutes) >= 3
    assert len({e["domain"] for r in minutes for e in r["totals"]["by_exporter"]}) == 2
    assert has_tie(expected)
    if time_base == "start":  # flows up to a minute long reach their start window after it closed
        assert sum(r["late_flows"] for r in minutes) > 0
    if time_base == "spread":  # packets and bytes shared over the seconds a flow lasted
        seconds = [r for r in expected if r["interval"] == "1s" and r["view"] == "all"]
        assert any(r["totals"]["flows"] == 0 and r["totals"]["packets"] > 0 for r in seconds)


def test_one_interval_and_view_as_the_report_command_selects_them(spark: SparkSession, generated: Path) -> None:
    config = EngineConfig(windows_ms=WINDOWS, grace_ms=300_000, stats=StatsSpec(views=VIEWS))
    expected = [r for r in embedded([generated], config) if r["interval"] == "1m" and r["view"] == "web"]
    actual = run_spark_report([generated], config, interval_ms=60_000, view="web", spark=spark)
    assert_same(expected, actual)
    assert [r["start_ms"] for r in actual] == sorted(r["start_ms"] for r in actual)
    assert all(r["totals"]["flows"] == r["web"]["flows"] for r in actual)  # the view holds web traffic only


def test_unsupported_settings_are_refused_before_spark_runs(generated: Path) -> None:
    with pytest.raises(ConfigError, match="not a configured window"):
        run_spark_report([generated], EngineConfig(), interval_ms=300_000)
    with pytest.raises(ConfigError, match="not a configured view"):
        run_spark_report([generated], replace(EngineConfig(), grace_ms=1), view="ssh")


def micro_batches(count: int) -> tuple[list[FlowBatch], ExporterTable]:
    """Generated flow batches from two exporters, as a collector would stream them."""
    exporters = ExporterTable()
    exporters.index_of("192.0.2.1", 1)
    exporters.index_of("2001:db8::9", 7)
    generator = TrafficGenerator(GeneratorConfig(seed=8, local_hosts=30, remote_hosts=100, ipv6_share=0.2,
                                                 export_delay_ms=3_000, active_timeout_ms=20_000))
    batches = []
    for step in range(count):
        batch = generator.flows(400, now_ms=GENERATED_START_MS + step * 4_000)
        batch["exporter"][:] = np.arange(len(batch)) % 2
        batches.append(batch)
    return batches, exporters


def test_micro_batches_replayed_after_a_restart_are_not_counted_twice(spark: SparkSession, tmp_path: Path) -> None:
    config = EngineConfig(windows_ms=(1_000, 10_000), time_base="start", grace_ms=1_000,
                          stats=StatsSpec(views=VIEWS[:2], top_n=4))
    batches, exporters = micro_batches(5)
    frames = [spark.createDataFrame([(line,) for line in encode_flows(b, exporters).decode().splitlines()],
                                    "value STRING") for b in batches]
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    try:
        first = StreamingReport(spark, config, tmp_path / "work", StoreSink(store))
        for batch_id in range(3):
            first.process(frames[batch_id], batch_id)
        # A restart: Spark replays batch 2 (its commit was lost), then goes on.
        second = StreamingReport(spark, config, tmp_path / "work", StoreSink(store))
        for batch_id in range(2, 5):
            second.process(frames[batch_id], batch_id)
        stored = {(r["interval"], r["start_ms"], r["view"]): r for interval in ("1s", "10s")
                  for view in config.stats.view_names for r in store.query(interval, view=view)}
        kept = sorted(p.name for p in (tmp_path / "work" / "flows").glob("*.parquet"))
    finally:
        store.stop()

    # The oracle: the embedded engine, data clock, one process + tick per micro-batch.
    before_flush, sink = embedded_micro_batches(config, batches, exporters)
    closed = {(r.resolution, r.start_ms, r.view) for r in before_flush if r.final}
    expected = {(r.resolution, r.start_ms, r.view): r.to_json() for r in sink if r.final}
    assert set(stored) == set(expected)
    for key, want in expected.items():
        got = stored[key]
        assert got["final"] == (key in closed), key  # final once the data's time passed end + grace
        assert {**got, "final": True} == want, key
    # Flow files whose windows were all final before the last batch began are gone.
    assert "batch-00000000.parquet" not in kept
    assert "batch-00000004.parquet" in kept
    late = sum(r["late_flows"] for key, r in expected.items() if key[0] == "10s" and key[2] == "all")
    assert late > 0
    assert sum(r["totals"]["flows"] for key, r in stored.items() if key[0] == "10s" and key[2] == "all") == 2_000
