"""Conformance of host statistics: the embedded engine and Spark on the same captures.

Everything in a result must be identical, the ``hosts`` section included, except where the
embedded engine keeps a sketch for a local host (``spark.hosts`` states the bounds):

- ``partners``: equal up to 8 192 partners, within 2 % beyond (HyperLogLog, 0.41 % standard error);
- ``top_ports``: equal while the host used at most 8 ports, else a Misra–Gries summary whose
  counts are lower bounds, short by at most (the host's flows) / 9 of Spark's exact counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.engine import EngineConfig
from flowscope.aggregate.hosts import HOST_TOP_PORTS, TOP_PORT_SLOTS
from flowscope.aggregate.sketch import HLL
from flowscope.aggregate.stats import StatsSpec
from flowscope.errors import ConfigError
from flowscope.export.flowjson import encode_flows
from flowscope.model import FLOW_COLUMNS, FlowBatch, address_text, ipv4_to_mapped
from flowscope.spark.job import StreamingReport, run_spark_report
from flowscope.spark.sink import StoreSink
from flowscope.store import ResultStore, StoreConfig
from flowscope.tools.encode import EncoderConfig, make_encoder
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

from .conftest import GENERATED_START_MS, embedded_micro_batches
from .test_job import VIEWS, WINDOWS, embedded, micro_batches, real_captures

pytestmark = pytest.mark.spark

PARTNERS_EXACT_UP_TO = HLL.threshold  # 8 192: an exact set in the embedded engine up to there
PARTNERS_RELATIVE_BOUND = 0.02  # beyond: HyperLogLog, ~5 standard errors (0.41 % each)
GENERATED_LOCAL = ("10.0.0.0/16", "fd00:10::/64")  # GeneratorConfig's local networks
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass
class Tally:
    """How the local hosts of the compared top lists matched."""

    hosts: int = 0
    identical_ports: int = 0
    bounded_ports: int = 0  # top ports that differ within the Misra–Gries bound
    estimated_partners: int = 0  # partner counts beyond the exact range, within the bound


def check_ports(want: list[dict[str, int]], got: list[dict[str, int]], host_flows: int) -> bool:
    """Embedded (Misra–Gries lower bounds) against Spark (exact) top ports of one local host.

    True if identical; otherwise asserts the summary's guarantees and returns False.
    """
    if want == got:
        return True
    assert len(got) == HOST_TOP_PORTS, "a host with fewer ports used at most 8: its summary is exact"
    bound = host_flows / (TOP_PORT_SLOTS + 1)
    exact = {e["port"]: e["flows"] for e in got}
    summary = {e["port"]: e["flows"] for e in want}
    for port, flows in summary.items():
        if port in exact:
            assert exact[port] - bound <= flows <= exact[port], (port, flows, exact[port], bound)
        else:  # not among the exact top 5: its true count is at most the fifth's
            assert flows <= min(exact.values()), (port, flows, exact)
    floor = min(summary.values()) if len(summary) == HOST_TOP_PORTS else 0
    for port, flows in exact.items():
        if port not in summary:  # its summary count is at most the embedded list's last one
            assert flows <= floor + bound, (port, flows, floor, bound)
    return False


def check_host(want: dict[str, Any], got: dict[str, Any], tally: Tally) -> None:
    assert got["address"] == want["address"]
    same = {key for key in want if key not in ("partners", "top_ports")}
    assert {key: got[key] for key in same} == {key: want[key] for key in same}, want["address"]
    if got["partners"] <= PARTNERS_EXACT_UP_TO:
        assert want["partners"] == got["partners"], want["address"]
    else:
        assert abs(want["partners"] - got["partners"]) <= PARTNERS_RELATIVE_BOUND * got["partners"]
        tally.estimated_partners += 1
    host_flows = want["sent"]["flows"] + want["received"]["flows"]
    if check_ports(want["top_ports"], got["top_ports"], host_flows):
        tally.identical_ports += 1
    else:
        tally.bounded_ports += 1
    tally.hosts += 1


def assert_conform(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> Tally:
    """Every result identical (same keys, same order), host sketches within their bounds."""
    assert len(actual) == len(expected)
    tally = Tally()
    for want, got in zip(expected, actual, strict=True):
        where = (want["interval"], want["start_ms"], want["view"])
        assert list(got) == list(want), where
        for key in want:
            if key != "hosts":
                assert got[key] == want[key], f"{where} {key}"
        if "hosts" not in want:
            continue
        hosts_want, hosts_got = want["hosts"], got["hosts"]
        assert json.dumps(hosts_got["watched"]) == json.dumps(hosts_want["watched"]), where  # exact in both
        assert hosts_got["local"]["hosts"] == hosts_want["local"]["hosts"], where
        assert list(hosts_got["local"]["top"]) == list(hosts_want["local"]["top"]), where
        for metric, entries in hosts_want["local"]["top"].items():
            found = hosts_got["local"]["top"][metric]
            assert [e["address"] for e in found] == [e["address"] for e in entries], (where, metric)
            for host_want, host_got in zip(entries, found, strict=True):
                check_host(host_want, host_got, tally)
                assert list(host_got) == list(host_want)
    return tally


def minutes(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r["interval"] == "1m" and r["view"] == "all"]


def busiest_local(results: list[dict[str, Any]]) -> str:
    """The local host with the most flows in one minute."""
    tops = [host for r in minutes(results) for host in r["hosts"]["local"]["top"]["flows"][:1]]
    return str(max(tops, key=lambda h: h["sent"]["flows"] + h["received"]["flows"])["address"])


def watched(result: dict[str, Any], address: str) -> dict[str, Any]:
    found: dict[str, Any] = next(h for h in result["hosts"]["watched"] if h["address"] == address)
    return found


@pytest.mark.parametrize("time_base", ["received", "start", "end", "spread"])
def test_generated_traffic_gives_the_embedded_engines_host_statistics(
    spark: SparkSession, generated: Path, time_base: str
) -> None:
    probe = EngineConfig(windows_ms=WINDOWS, stats=StatsSpec(local_networks=GENERATED_LOCAL))
    watched_hosts = (busiest_local(embedded([generated], probe)), "203.0.113.77")  # a local host, one never seen
    stats = StatsSpec(views=VIEWS, local_networks=GENERATED_LOCAL, watched_hosts=watched_hosts, top_n=10)
    config = EngineConfig(windows_ms=WINDOWS, grace_ms=1_000, time_base=time_base, stats=stats)
    expected = embedded([generated], config)
    actual = run_spark_report([generated], config, spark=spark)
    tally = assert_conform(expected, actual)

    hosts = [r["hosts"] for r in minutes(expected)]
    assert all(h["local"]["hosts"] > 10 for h in hosts)
    assert all(len(h["local"]["top"][m]) == 10 for h in hosts for m in ("flows", "bytes", "partners"))
    assert all(watched(r, watched_hosts[0])["sent"]["flows"] > 0 for r in minutes(expected))
    assert all(watched(r, watched_hosts[1])["partners"] == 0 for r in minutes(expected))
    assert tally.identical_ports > 0 and tally.bounded_ports > 0  # both rules were exercised
    if time_base == "spread":  # flows cut over many seconds: more windows than flows' end times give
        assert len(expected) > len(embedded([generated], EngineConfig(windows_ms=WINDOWS, time_base="end")))


def test_real_captures_give_the_embedded_engines_host_statistics(spark: SparkSession) -> None:
    paths = real_captures()
    probe = EngineConfig(windows_ms=WINDOWS, stats=StatsSpec(local_networks=PRIVATE))
    busiest = busiest_local(embedded(paths, probe))
    stats = StatsSpec(views=VIEWS, local_networks=PRIVATE, watched_hosts=(busiest, "2001:db8::1"))
    config = EngineConfig(windows_ms=WINDOWS, grace_ms=1_000, stats=stats)
    expected = embedded(paths, config)
    actual = run_spark_report(paths, config, spark=spark)
    tally = assert_conform(expected, actual)
    assert tally.hosts > 20
    assert sum(r["hosts"]["local"]["hosts"] for r in minutes(expected)) > 100
    assert any(watched(r, busiest)["partners"] > 1 for r in minutes(expected))


SCANNER = 0x0A000009  # 10.0.0.9
SCAN_TARGETS = 20_000  # distinct partners: beyond the embedded engine's exact range
SCAN_PORTS = 3_000  # distinct destination ports: beyond the sparse set, into the bitmap


def scan_capture(path: Path) -> Path:
    """IPFIX of a host scanning 20 000 addresses on 3 000 ports, amid generated traffic."""
    rng = np.random.default_rng(5)
    background = TrafficGenerator(GeneratorConfig(seed=3, local_hosts=50, remote_hosts=300))
    encoder = make_encoder("ipfix", EncoderConfig(domain=3, template_refresh_packets=50))
    targets = (0x64400000 + rng.permutation(1 << 16)[:SCAN_TARGETS]).astype(np.uint32)  # 100.64.0.0/16
    with path.open("wb") as file:
        for step, chunk in enumerate(np.array_split(np.arange(SCAN_TARGETS), 4)):
            export_ms = GENERATED_START_MS + step * 2_000
            count = len(chunk)
            columns = {name: np.zeros(count, dtype) for name, dtype in FLOW_COLUMNS.items()}
            columns.update(
                src_addr=ipv4_to_mapped(np.full(count, SCANNER, np.uint32)),
                dst_addr=ipv4_to_mapped(targets[chunk]),
                src_port=np.full(count, 40_000, np.uint16), dst_port=(1 + chunk % SCAN_PORTS).astype(np.uint16),
                protocol=np.full(count, 6, np.uint8), tcp_flags=np.full(count, 0x02, np.uint8),
                packets=np.ones(count, np.uint64), bytes=np.full(count, 60, np.uint64),
                time_start=np.full(count, export_ms - 900, np.int64),
                time_end=np.full(count, export_ms - 100, np.int64),
                time_received=np.full(count, export_ms, np.int64), sampling_rate=np.ones(count, np.uint32),
            )
            flows = FlowBatch.concat([FlowBatch(columns), background.flows(2_000, now_ms=export_ms)])
            for datagram in encoder.encode(flows, export_ms).datagrams:
                file.write(datagram)
    return path


def test_partner_counts_beyond_the_sketchs_exact_range_stay_within_the_bound(
    spark: SparkSession, tmp_path: Path
) -> None:
    capture = scan_capture(tmp_path / "scan.ipfix")
    stats = StatsSpec(local_networks=GENERATED_LOCAL, watched_hosts=("10.0.0.9",), top_n=5)
    config = EngineConfig(windows_ms=(1_000, 60_000), grace_ms=1_000, stats=stats)
    expected = embedded([capture], config)
    actual = run_spark_report([capture], config, spark=spark)
    tally = assert_conform(expected, actual)
    assert tally.estimated_partners > 0

    minute = minutes(actual)[0]["hosts"]
    scanner = minute["local"]["top"]["partners"][0]
    assert scanner["address"] == "10.0.0.9"
    assert scanner["partners"] == SCAN_TARGETS  # Spark counts exactly ...
    assert minute["watched"][0]["partners"] == SCAN_TARGETS  # ... as the embedded engine's exact set does
    assert scanner["dst_ports"] == SCAN_PORTS  # past the sparse set: a bitmap there, exact in both


def test_bad_host_settings_are_refused_before_spark_runs(generated: Path) -> None:
    with pytest.raises(ConfigError, match="local_networks"):
        run_spark_report([generated], EngineConfig(stats=StatsSpec(local_networks=("10.0.0.0/33",))))
    with pytest.raises(ConfigError, match="watched_hosts"):
        run_spark_report([generated], EngineConfig(stats=StatsSpec(watched_hosts=("host.example",))))


def test_the_json_stream_path_gives_the_host_statistics_with_spread(spark: SparkSession, tmp_path: Path) -> None:
    batches, exporters = micro_batches(4)
    sources, counts = np.unique(np.concatenate([b["src_addr"] for b in batches]), return_counts=True)
    busiest = address_text(bytes(sources[np.argmax(counts)]))
    stats = StatsSpec(views=VIEWS[:1], local_networks=GENERATED_LOCAL, watched_hosts=(busiest,), top_n=4)
    config = EngineConfig(windows_ms=(1_000, 10_000), time_base="spread", grace_ms=1_000, stats=stats)
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    store.start()
    try:
        report = StreamingReport(spark, config, tmp_path / "work", StoreSink(store))
        for batch_id, batch in enumerate(batches):
            lines = encode_flows(batch, exporters).decode().splitlines()
            report.process(spark.createDataFrame([(line,) for line in lines], "value STRING"), batch_id)
        stored = [r for interval in ("1s", "10s") for view in stats.view_names
                  for r in store.query(interval, view=view)]
    finally:
        store.stop()

    # The oracle: the embedded engine, data clock, one process + tick per micro-batch, then flushed.
    _, sink = embedded_micro_batches(config, batches, exporters)
    views = stats.view_names
    expected = sorted((r.to_json() for r in sink if r.final),
                      key=lambda r: (r["end_ms"] - r["start_ms"], r["start_ms"], views.index(r["view"])))
    actual = sorted(({**r, "final": True} for r in stored),
                    key=lambda r: (r["end_ms"] - r["start_ms"], r["start_ms"], views.index(r["view"])))
    tally = assert_conform(expected, actual)
    assert tally.hosts > 20
    tens = [r for r in expected if r["interval"] == "10s" and r["view"] == "all"]
    assert max(r["hosts"]["local"]["hosts"] for r in tens) > 10
    assert sum(watched(r, busiest)["sent"]["flows"] for r in tens) > 0
