"""IPFIXcol / IPFIXcol2 JSON into the Spark streaming job over a real TCP socket, against the
embedded engine on the same flows.

The lines: the records IPFIXcol's and IPFIXcol2's own documentation recorded
(tests/data/ipfixcol/README.md), flowscope-made IPFIXcol2 JSON of a whole capture
(``flowscope decode --format ipfixcol2``), and broken lines. They reach Spark the way an IPFIXcol
JSON server output would deliver them: a TCP server pushing lines to Spark's socket source.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from flowscope.aggregate.engine import Engine, EngineConfig, WindowResult
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.model import FLOW_COLUMNS, IPV4_MAPPED_PREFIX, ExporterTable, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.pipeline import decode_files, offline_results
from flowscope.spark.ipfixcol import JsonInput
from flowscope.spark.job import run_spark_report, socket_lines, start_stream
from flowscope.spark.sink import StoreSink
from flowscope.store import ResultStore, StoreConfig

pytestmark = [pytest.mark.spark, pytest.mark.integration]

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURE = DATA / "ipfixcol2" / "example_flows.ipfix"
RECORDED = DATA / "ipfixcol"
VIEWS = (ViewSpec("web", "proto tcp and port in [80 443]"), ViewSpec("v6", "ipv6"))
# A day of grace: no window closes and no flow is late, whatever the micro-batch boundaries.
CONFIG = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=86_400_000, stats=StatsSpec(views=VIEWS))


class LineServer:
    """A TCP server that pushes lines to the first client, as IPFIXcol's JSON ``server`` output does."""

    def __init__(self, lines: list[str]) -> None:
        self.payload = "".join(line + "\n" for line in lines).encode()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(60)
        connection, _ = self.listener.accept()
        with connection:
            self.connected.set()
            time.sleep(0.5)
            for start in range(0, len(self.payload), 64 * 1024):  # in pieces, over several micro-batches
                connection.sendall(self.payload[start:start + 64 * 1024])
                time.sleep(0.05)
            self.stopping.wait(120)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=10)


def printed_capture(*options: str) -> list[str]:
    """``flowscope decode --format ipfixcol2`` of the capture: flowscope-made IPFIXcol2 JSON."""
    run = subprocess.run([sys.executable, "-m", "flowscope.cli", "decode", "--format", "ipfixcol2", *options,
                          str(CAPTURE)], check=True, capture_output=True, text=True, timeout=60)
    return run.stdout.splitlines()


def decoded_capture() -> tuple[list[FlowBatch], ExporterTable]:
    """The capture through flowscope's decoder, and the exporter table its flows index into."""
    session = DecoderSession(counters=Counters())
    normalizer = Normalizer(NormalizeConfig(preserve_order=False), session.options, Counters())
    return [batch for batch, _ in decode_files([CAPTURE], session, normalizer)], session.exporters


def _v4(text: str) -> bytes:
    return IPV4_MAPPED_PREFIX + bytes(int(part) for part in text.split("."))


def recorded_flows(exporters: ExporterTable) -> FlowBatch:
    """The two documentation records, read by eye: IPFIXcol's (local time, CEST = UTC+2, seconds
    cut to one digit by that version) and IPFIXcol2's (UTC)."""
    rows: list[dict[str, Any]] = [
        {"time_start": 1_438_603_802_012, "time_end": 1_438_603_862_380, "src_addr": _v4("52.24.214.8"),
         "dst_addr": _v4("147.175.54.248"), "src_port": 443, "dst_port": 49285, "protocol": 6, "tcp_flags": 0x1B,
         "tos": 0, "packets": 14, "bytes": 3970, "in_if": 2, "out_if": 0},
        {"time_start": 1_526_067_869_006, "time_end": 1_526_067_870_364, "src_addr": _v4("192.168.0.100"),
         "dst_addr": _v4("192.168.0.101"), "src_port": 47200, "dst_port": 20810, "protocol": 6, "tcp_flags": 0x1A,
         "tos": 0, "packets": 2383, "bytes": 3_568_720, "in_if": 1, "out_if": 0},
    ]
    exporter = exporters.index_of("0.0.0.0", 0)
    columns = {name: np.zeros(len(rows), dtype) for name, dtype in FLOW_COLUMNS.items()}
    for index, row in enumerate(rows):
        for name, value in row.items():
            columns[name][index] = value
    columns["time_received"] = columns["time_end"].copy()
    columns["exporter"][:] = exporter
    columns["sampling_rate"][:] = 1
    return FlowBatch(columns)


class Collected:
    def __init__(self) -> None:
        self.results: list[WindowResult] = []

    def emit(self, results: list[WindowResult]) -> None:
        self.results.extend(r for r in results if r.final)


def embedded_results(batches: list[FlowBatch], exporters: ExporterTable) -> list[dict[str, Any]]:
    """The embedded engine on the flows, the data as its clock, every window flushed at the end."""
    sink = Collected()
    engine = Engine(replace(CONFIG, clock="data", checkpoint_dir=None), sink, exporters, Counters())
    engine.start()
    for batch in batches:
        engine.process(batch)
        engine.tick()
    engine.flush()
    return [r.to_json() for r in sink.results]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    result_store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")))
    result_store.start()
    yield result_store
    result_store.stop()


def test_recorded_and_flowscope_made_ipfixcol_json_over_tcp_gives_the_embedded_results(
    spark: SparkSession, store: ResultStore, tmp_path: Path
) -> None:
    recorded_v1 = (RECORDED / "ipfixcol-json-readme.jsonl").read_text().splitlines()
    recorded_v2 = (RECORDED / "ipfixcol2-json-readme.jsonl").read_text().splitlines()
    # IPFIXcol2 with raw values and message details (ipfix:odid 6, as the capture's domain).
    made = printed_capture("--ipfixcol2-tcp-flags", "raw", "--ipfixcol2-timestamp", "unix",
                           "--ipfixcol2-protocol", "raw", "--ipfixcol2-detailed-info")
    broken = ['{"@type":"ipfix.entry","iana:octetDeltaCount":1', "not json at all",
              json.dumps({"@type": "ipfix.optionsEntry", "iana:exportedFlowRecordTotalCount": 3979}),
              json.dumps({"@type": "ipfix.entry", "iana:octetDeltaCount": 10, "iana:flowEndMilliseconds": 0})]
    # Exporters are listed in the order they first appear (the capture's domain 6 before the
    # records without one, as in the oracle); the 2018 record last: once it arrives, every 2015
    # window is a day past due.
    lines = [*made[:2000], *broken, *recorded_v1, *made[2000:], *recorded_v2]

    capture, exporters = decoded_capture()
    batches = [*capture, recorded_flows(exporters)]
    expected = embedded_results(batches, exporters)
    total = sum(r["totals"]["flows"] for r in expected if r["interval"] == "1m" and r["view"] == "all")
    assert total == 3979 + 2

    json_input = JsonInput("auto", timezone="Europe/Prague")
    server = LineServer(lines)
    server.start()
    query = None
    try:
        query, report = start_stream(spark, socket_lines(spark, "127.0.0.1", server.port), CONFIG,
                                     tmp_path / "work", StoreSink(store), trigger_seconds=1, json_input=json_input)
        assert server.connected.wait(60), "Spark's socket source never connected"
        seen = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = sum(r["totals"]["flows"] for r in store.query("1m", view="all"))
            if seen >= total:
                break
            assert query.exception() is None, query.exception()
            time.sleep(0.5)
        assert seen == total, f"{seen} of {total} flows reached the store"
        assert report.batches >= 2
    finally:
        if query is not None:
            query.stop()
        server.stop()
    dropped = {labels["kind"]: value for labels, value in json_input.counters.series("spark_input_dropped_total")}
    assert dropped == {"malformed_json": 2, "not_a_flow": 1, "missing_address": 1}
    for interval in ("1s", "1m"):
        for view in CONFIG.stats.view_names:
            count = sum(1 for r in expected if r["interval"] == interval and r["view"] == view)
            assert len(store.query(interval, view=view, limit=100_000)) == count, (interval, view)
    for want in expected:
        got = store.at(want["interval"], want["start_ms"], view=want["view"])
        assert got is not None, (want["interval"], want["start_ms"], want["view"])
        assert {**got, "final": None} == {**want, "final": None}


def test_spark_parses_formatted_ipfixcol2_lines_as_the_mapping_expects(spark: SparkSession) -> None:
    # Spark's from_json (numbers as their digits, strings unquoted, broken lines in the corrupt
    # column) feeding the mapping: the formatted capture gives the decoder's flows.
    lines = printed_capture()
    frame = spark.createDataFrame([(line,) for line in [*lines, "{broken"]], "value STRING")
    json_input = JsonInput("ipfixcol2")
    exporters = ExporterTable()
    batch = json_input.flows(json_input.table(frame), exporters)
    decoded = FlowBatch.concat(decoded_capture()[0])
    assert len(batch) == len(decoded) == 3979
    order = np.lexsort((batch["bytes"], batch["time_end"], batch["time_start"], batch["src_port"],
                        batch["dst_port"]))
    want_order = np.lexsort((decoded["bytes"], decoded["time_end"], decoded["time_start"], decoded["src_port"],
                             decoded["dst_port"]))
    for name in ("time_start", "time_end", "src_addr", "dst_addr", "src_port", "dst_port", "protocol", "packets",
                 "bytes", "in_if", "out_if"):
        assert np.array_equal(batch[name][order], decoded[name][want_order]), name
    assert np.array_equal(batch["tcp_flags"][order], decoded["tcp_flags"][want_order] & 0x3F)
    assert json_input.counters.get("spark_input_dropped_total", kind="malformed_json", exporter="?") == 1
    assert exporters.entries() == [("0.0.0.0", 0)]


def test_report_on_spark_reads_ipfixcol2_json_files_like_the_capture(spark: SparkSession, tmp_path: Path) -> None:
    # ``flowscope report --input FILE --engine spark``: a JSON lines file instead of the capture.
    lines = printed_capture("--ipfixcol2-timestamp", "unix", "--ipfixcol2-detailed-info")
    path = tmp_path / "ipfixcol2.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    config = replace(CONFIG, grace_ms=1_000)
    expected = [r.to_json() for r in offline_results([CAPTURE], config)]
    got = run_spark_report([path], config, spark=spark)
    assert len(got) == len(expected) > 0
    # Formatted flags drop ECE/CWR, which no statistic reads; everything else is equal.
    assert got == expected
