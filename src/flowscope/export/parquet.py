"""Decoded flows as Parquet files in a directory: the scalable link to Spark's file source.

``flowscope collect --parquet-dir DIR`` (or ``export.parquet_dir``) hands every normalized
FlowBatch to a ``ParquetWriter``. A writer thread gathers the batches and rolls a file every
``roll_interval_ms`` or ``roll_rows`` rows, whichever comes first: the rows are written under a
hidden temporary name (``.NAME.tmp``, which Spark's file source ignores) and renamed to
``flows-<UTC ms>-<pid>-<sequence>.parquet`` once complete, so a reader never sees half a file.

The hand-over to the writer thread is bounded (``queue_batches``): when the disk is slower than
the flows arrive, batches are dropped and counted instead of stalling the decoder. A file that
fails to write is counted by kind and removed; the writer goes on with the next one.

Each row is one flow (``FILE_COLUMNS``): the FlowBatch columns Spark needs, unsigned columns in
the next wider signed type, packets and bytes as unsigned 64-bit (DECIMAL(20,0) in Spark, exact),
addresses as 16-byte binary plus their big-endian halves as signed 64-bit words (the filters'
prefix tests), and the exporter as its address text and observation domain: exporter indices
are per process, the files outlive it and several collectors write to one directory.

pyarrow is imported when the writer starts, so the base install runs without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch

log = logging.getLogger(__name__)

__all__ = [
    "COUNTER_COLUMNS",
    "FILE_COLUMNS",
    "INT32_COLUMNS",
    "INT64_COLUMNS",
    "ParquetOutput",
    "ParquetWriter",
    "ParquetWriterConfig",
    "flow_columns",
    "flow_file_table",
]

INT32_COLUMNS = ("src_port", "dst_port", "protocol", "tcp_flags", "tos")
INT64_COLUMNS = ("in_if", "out_if", "src_as", "dst_as")
COUNTER_COLUMNS = ("packets", "bytes")

# The columns of a flow file with their Spark SQL types (DDL order = file order).
FILE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("exporter", "STRING"), ("domain", "BIGINT"),
    ("time_received", "BIGINT"), ("time_start", "BIGINT"), ("time_end", "BIGINT"),
    *((name, "INT") for name in INT32_COLUMNS),
    *((name, "BIGINT") for name in INT64_COLUMNS),
    *((name, "DECIMAL(20,0)") for name in COUNTER_COLUMNS),
    ("src_addr", "BINARY"), ("dst_addr", "BINARY"),
    ("src_hi", "BIGINT"), ("src_lo", "BIGINT"), ("dst_hi", "BIGINT"), ("dst_lo", "BIGINT"),
)


@dataclass(frozen=True, slots=True)
class ParquetWriterConfig:
    directory: str
    roll_interval_ms: int = 1_000  # a file is closed at least this often (the delay it adds)
    roll_rows: int = 500_000  # ... or once it holds this many rows
    queue_batches: int = 256  # batches waiting for the writer thread before drops
    compression: str = "snappy"


def _require_pyarrow() -> Any:
    try:
        import pyarrow as pa  # noqa: PLC0415  (optional: pip install flowscope[spark])
    except ImportError:
        raise ConfigError("--parquet-dir / export.parquet_dir needs pyarrow: pip install 'flowscope[spark]'") from None
    return pa


def _words(column: npt.NDArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    pairs = np.ascontiguousarray(column, dtype="S16").view(">i8").reshape(-1, 2).astype(np.int64)
    return pairs[:, 0], pairs[:, 1]


def flow_columns(batch: FlowBatch) -> dict[str, Any]:
    """The measured columns of a flow row as Arrow arrays, shared by the collector's flow files and
    the Spark engine's own flow tables: times (int64), ports/protocol/flags/ToS (int32),
    interfaces and AS numbers (int64), packets and bytes (unsigned 64-bit: DECIMAL(20,0) in Spark,
    exact), addresses as 16-byte binary and their big-endian halves as signed 64-bit words."""
    pa = _require_pyarrow()
    columns: dict[str, Any] = {}
    for name in ("time_received", "time_start", "time_end"):
        columns[name] = pa.array(batch[name].astype(np.int64))
    for name in INT32_COLUMNS:
        columns[name] = pa.array(batch[name].astype(np.int32))
    for name in INT64_COLUMNS:
        columns[name] = pa.array(batch[name].astype(np.int64))
    for name in COUNTER_COLUMNS:
        columns[name] = pa.array(batch[name].astype(np.uint64))
    for name in ("src_addr", "dst_addr"):
        raw = np.ascontiguousarray(batch[name], dtype="S16")
        columns[name] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(raw),
                                                              [None, pa.py_buffer(raw.tobytes())])
    src_hi, src_lo = _words(batch["src_addr"])
    dst_hi, dst_lo = _words(batch["dst_addr"])
    columns.update(src_hi=pa.array(src_hi), src_lo=pa.array(src_lo), dst_hi=pa.array(dst_hi), dst_lo=pa.array(dst_lo))
    return columns


def flow_file_table(batch: FlowBatch, exporters: ExporterTable) -> Any:
    """One FlowBatch as an Arrow table with ``FILE_COLUMNS`` (numpy columns in, no loop per flow)."""
    pa = _require_pyarrow()
    # Only the distinct exporters of the batch are looked up; rows carry dictionary indices.
    indices, inverse = np.unique(batch["exporter"], return_inverse=True)
    keys = [exporters.key_of(int(index)) if int(index) < len(exporters) else ("?", 0) for index in indices.tolist()]
    addresses = pa.array([address for address, _ in keys], pa.string())
    domains = np.array([domain for _, domain in keys], np.int64)
    columns: dict[str, Any] = {
        "exporter": pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), addresses),
        "domain": pa.array(domains[inverse]),
    }
    columns.update(flow_columns(batch))
    return pa.table(columns)


class ParquetWriter:
    """Writer thread: batches in through a bounded queue, complete Parquet files out.

    Counters: ``parquet_files_total``, ``parquet_rows_total``, ``parquet_bytes_total``,
    ``parquet_dropped_flows_total`` (hand-over full), ``parquet_errors_total{kind}``.
    """

    def __init__(self, config: ParquetWriterConfig, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self._queue: queue.Queue[tuple[FlowBatch, ExporterTable] | None] = queue.Queue(config.queue_batches)
        self._thread: threading.Thread | None = None
        self._sequence = 0
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._opened_s = 0.0

    def start(self) -> None:
        if self.config.roll_interval_ms <= 0 or self.config.roll_rows <= 0:
            raise ConfigError("export.parquet_roll_interval / export.parquet_roll_rows must be positive")
        _require_pyarrow()
        Path(self.config.directory).mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="parquet-writer", daemon=True)
        self._thread.start()
        log.info("writing flows as Parquet files to %s", self.config.directory)

    def stop(self) -> None:
        """Writes what is queued and the open file, then stops the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout=60)
        self._thread = None

    def submit(self, batch: FlowBatch, exporters: ExporterTable) -> None:
        """Hands a batch over; never blocks: a full hand-over drops the batch and counts its flows."""
        if not len(batch):
            return
        try:
            self._queue.put_nowait((batch, exporters))
        except queue.Full:
            self.counters.add("parquet_dropped_flows_total", len(batch))

    # ------------------------------------------------------------------ thread
    def _loop(self) -> None:
        interval_s = self.config.roll_interval_ms / 1000
        while True:
            timeout = interval_s if not self._pending else max(0.0, self._opened_s + interval_s - time.monotonic())
            try:
                item: tuple[FlowBatch, ExporterTable] | bool | None = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = False  # a timeout: roll if due
            if item is None:
                self._roll()
                return
            if isinstance(item, tuple):
                batch, exporters = item
                try:
                    table = flow_file_table(batch, exporters)
                except Exception:  # a bad batch is counted, never stops the writer
                    log.exception("could not convert a batch to Arrow")
                    self.counters.add("parquet_errors_total", kind="convert")
                    continue
                if not self._pending:
                    self._opened_s = time.monotonic()
                self._pending.append(table)
                self._pending_rows += table.num_rows
            if self._pending and (self._pending_rows >= self.config.roll_rows
                                  or time.monotonic() - self._opened_s >= interval_s):
                self._roll()

    def _roll(self) -> None:
        if not self._pending:
            return
        import pyarrow as pa  # noqa: PLC0415  (checked in start)
        import pyarrow.parquet as pq  # noqa: PLC0415

        tables, rows = self._pending, self._pending_rows
        self._pending, self._pending_rows = [], 0
        self._sequence += 1
        name = f"flows-{int(time.time() * 1000)}-{os.getpid()}-{self._sequence:06d}.parquet"
        target = Path(self.config.directory) / name
        temporary = target.with_name(f".{name}.tmp")
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
            pq.write_table(table, temporary, compression=self.config.compression)
            os.replace(temporary, target)
        except Exception as error:  # a failing disk is counted; the writer goes on
            log.warning("could not write %s: %s", target, error)
            self.counters.add("parquet_errors_total", kind=type(error).__name__)
            self.counters.add("parquet_dropped_flows_total", rows)
            with contextlib.suppress(OSError):
                temporary.unlink()
            return
        self.counters.add("parquet_files_total")
        self.counters.add("parquet_rows_total", rows)
        with contextlib.suppress(OSError):
            self.counters.add("parquet_bytes_total", target.stat().st_size)


class ParquetOutput:
    """The collector's output (``pipeline.FlowOutput``) feeding a started ParquetWriter."""

    def __init__(self, writer: ParquetWriter) -> None:
        self.writer = writer

    def write(self, batch: FlowBatch, records: list[Any], exporters: ExporterTable) -> None:
        self.writer.submit(batch, exporters)
