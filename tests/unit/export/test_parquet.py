"""The collector's Parquet writer: files appear whole, roll by rows and by time, a full hand-over drops and counts."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flowscope.errors import ConfigError
from flowscope.export.parquet import FILE_COLUMNS, ParquetWriter, ParquetWriterConfig, flow_file_table
from flowscope.metrics import Counters
from flowscope.model import IPV4_MAPPED_PREFIX, ExporterTable, FlowBatch
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

NOW_MS = 1_795_786_740_000


def generated(count: int, seed: int = 3) -> FlowBatch:
    return TrafficGenerator(GeneratorConfig(seed=seed, ipv6_share=0.3)).flows(count, now_ms=NOW_MS)


def exporter_table() -> ExporterTable:
    table = ExporterTable()
    table.index_of("192.0.2.1", 1)
    table.index_of("2001:db8::7", 9)
    return table


def test_a_batch_becomes_rows_with_exporter_text_and_exact_counters() -> None:
    batch = generated(50)
    batch["exporter"][:] = np.arange(50) % 2
    batch["packets"][0] = np.uint64(2**64 - 1)  # beyond a signed long: kept exactly
    batch["src_addr"][1] = IPV4_MAPPED_PREFIX + bytes([198, 51, 100, 200])
    table = flow_file_table(batch, exporter_table())
    assert table.column_names == [name for name, _ in FILE_COLUMNS]
    assert table.column("exporter").to_pylist()[:4] == ["192.0.2.1", "2001:db8::7", "192.0.2.1", "2001:db8::7"]
    assert table.column("domain").to_pylist()[:2] == [1, 9]
    assert table.column("packets").to_pylist()[0] == 2**64 - 1
    assert table.column("src_addr").to_pylist()[1] == IPV4_MAPPED_PREFIX + bytes([198, 51, 100, 200])
    # The address words: ::ffff:198.51.100.200 is 0 / 0x0000ffffc63364c8.
    assert table.column("src_hi").to_pylist()[1] == 0
    assert table.column("src_lo").to_pylist()[1] == 0x0000FFFFC63364C8
    assert table.column("dst_port").to_pylist() == batch["dst_port"].astype(int).tolist()


def test_files_roll_by_rows_and_appear_only_complete(tmp_path: Path) -> None:
    counters = Counters()
    writer = ParquetWriter(ParquetWriterConfig(str(tmp_path), roll_interval_ms=60_000, roll_rows=1_000), counters)
    writer.start()
    try:
        exporters = exporter_table()
        for seed in range(5):
            writer.submit(generated(400, seed), exporters)
    finally:
        writer.stop()
    files = sorted(tmp_path.glob("*.parquet"))
    rows = [pq.read_metadata(path).num_rows for path in files]
    assert sum(rows) == 2_000
    assert rows[:1] == [1_200]  # 3 batches of 400 passed 1,000 rows: a file
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    assert counters.total("parquet_files_total") == len(files)
    assert counters.total("parquet_rows_total") == 2_000
    assert counters.total("parquet_dropped_flows_total") == 0


def test_files_roll_by_time(tmp_path: Path) -> None:
    counters = Counters()
    writer = ParquetWriter(ParquetWriterConfig(str(tmp_path), roll_interval_ms=200, roll_rows=10**9), counters)
    writer.start()
    try:
        writer.submit(generated(100), exporter_table())
        deadline = time.monotonic() + 5
        while not list(tmp_path.glob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = list(tmp_path.glob("*.parquet"))
        assert len(files) == 1  # written while the writer still runs: the interval closed it
        assert pq.read_table(files[0]).num_rows == 100
    finally:
        writer.stop()


def test_a_full_hand_over_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    counters = Counters()
    writer = ParquetWriter(ParquetWriterConfig(str(tmp_path), queue_batches=2), counters)
    # Not started: nothing drains the hand-over, as with a disk that stopped.
    batch = generated(10)
    started = time.monotonic()
    for _ in range(5):
        writer.submit(batch, exporter_table())
    assert time.monotonic() - started < 1
    assert counters.total("parquet_dropped_flows_total") == 30


def test_a_failing_directory_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    counters = Counters()
    target = tmp_path / "out"
    writer = ParquetWriter(ParquetWriterConfig(str(target), roll_interval_ms=60_000, roll_rows=10), counters)
    writer.start()
    try:
        target.rmdir()
        target.write_text("not a directory")  # every write now fails
        writer.submit(generated(20), exporter_table())
        deadline = time.monotonic() + 5
        while counters.total("parquet_errors_total") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counters.total("parquet_errors_total") == 1
        assert counters.total("parquet_dropped_flows_total") == 20
        target.unlink()
        target.mkdir()
        writer.submit(generated(20, seed=5), exporter_table())
    finally:
        writer.stop()
    assert counters.total("parquet_rows_total") == 20


def test_roll_settings_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        ParquetWriter(ParquetWriterConfig(str(tmp_path), roll_rows=0), Counters()).start()
