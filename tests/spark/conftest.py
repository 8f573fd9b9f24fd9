"""Shared fixtures of the Spark tests: one SparkSession per test session, generated captures.

Spark's JVM takes 10-20 s to start, so every test reuses the same local[2] session. The tests
need pyspark, pyarrow and a Java runtime (``pip install flowscope[spark]``); without them they
fail with the import error, they are not skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.engine import Engine, EngineConfig, WindowResult
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.spark.job import spark_session
from flowscope.tools.encode import EncoderConfig, make_encoder
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

DATA = Path(__file__).resolve().parents[1] / "data"
GENERATED_START_MS = 1_795_786_740_000  # 2026-11-27 10:19:00 UTC


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session("local[2]", app_name="flowscope-tests", shuffle_partitions=2)
    yield session
    session.stop()


def generated_capture(path: Path, *, seconds: int = 150, flows_per_export: int = 300, seed: int = 11) -> Path:
    """An RFC 5655 IPFIX file of generated traffic from two observation domains.

    Every 5 s each domain exports the flows that ended in the last seconds (some of them up to a
    minute long, so start-time windows see late flows). Few hosts and ports make ties in the top
    lists likely, which exercises the tie rules.
    """
    generators = [
        TrafficGenerator(GeneratorConfig(seed=seed + domain, local_hosts=40, remote_hosts=200, ipv6_share=0.2,
                                         icmp_share=0.05, other_protocol_share=0.03, export_delay_ms=4_000,
                                         active_timeout_ms=60_000))
        for domain in (1, 7)
    ]
    encoders = [make_encoder("ipfix", EncoderConfig(domain=domain, template_refresh_packets=20)) for domain in (1, 7)]
    rng = np.random.default_rng(seed)
    with path.open("wb") as file:
        for step in range(seconds // 5):
            export_ms = GENERATED_START_MS + step * 5_000
            for generator, encoder in zip(generators, encoders, strict=True):
                batch: FlowBatch = generator.flows(flows_per_export, now_ms=export_ms)
                # Small counters make equal packet/byte sums (ties) frequent.
                batch["packets"][:] = rng.integers(1, 4, len(batch)).astype(np.uint64)
                batch["bytes"][:] = batch["packets"] * np.uint64(100)
                encoded = encoder.encode(batch, export_ms)
                for datagram in encoded.datagrams:
                    file.write(datagram)
    return path


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_capture(tmp_path_factory.mktemp("spark") / "generated.ipfix")


def without_exporter_address(result: dict[str, Any]) -> dict[str, Any]:
    """Offline, an IPFIX file's exporter is 0.0.0.0; replayed, it is 127.0.0.1: compare the rest."""
    totals = dict(result["totals"])
    totals["by_exporter"] = [{**e, "exporter": "-"} for e in totals["by_exporter"]]
    return {**result, "totals": totals, "final": None}


def embedded_micro_batches(
    config: EngineConfig, batches: Sequence[FlowBatch], exporters: ExporterTable,
) -> tuple[list[WindowResult], list[WindowResult]]:
    """The streaming tests' oracle: the embedded engine with the data as its clock, one process +
    tick per micro-batch, then flushed. Returns the results emitted before the flush, and all."""
    emitted: list[WindowResult] = []

    class Sink:
        def emit(self, results: list[WindowResult]) -> None:
            emitted.extend(results)

    engine = Engine(replace(config, clock="data"), Sink(), exporters, Counters())
    engine.start()
    for batch in batches:
        engine.process(batch)
        engine.tick()
    before_flush = list(emitted)
    engine.flush()
    return before_flush, emitted
