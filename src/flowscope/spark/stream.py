"""The scalable streaming path: collectors' Parquet files → Spark's file source → incremental state → store.

``flowscope collect --parquet-dir DIR`` writes complete Parquet files into DIR
(``export.parquet``); ``flowscope spark --parquet-source DIR`` reads them with Spark's file source
(fault tolerant: the offsets log records which files each micro-batch read, so a restarted query
replays exactly those) and computes the statistics incrementally (``IncrementalReport``):

1. the flow rows of a micro-batch never reach the driver: one small aggregation (finest window
   start × exporter) gives the driver what the late rule and the exporter table need
   (``ArrivalOrder.place``), and the windows and exporter indices become Spark column expressions;
2. the flows are reduced to *partial sums* per (interval, window, view, facet, key), where a
   facet is one of the sums the results need: per protocol class, web traffic, late flows, per
   exporter, per (protocol, port), per web server and per web client address;
3. the partial sums of the windows still open are merged with the state of the batch before
   (``WORK/state/v-<id-1>``: the same sums, for open windows only) and written as
   ``WORK/state/v-<id>``; the work per micro-batch grows with the number of distinct keys of the
   open windows, not with their flows (the hour window costs what its distinct ports and
   addresses cost);
4. every window that received flows or became due is ranked from that state (``row_number``,
   the tie rules of ``spark.stats``) and assembled into the embedded engine's payloads, then
   upserted into the store, provisional or final.

A replayed micro-batch starts from the bookkeeping and state of the batch before it and rewrites
the same state version and the same results: the store never double counts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)
from pyspark.sql.streaming.query import StreamingQuery

from flowscope.aggregate.engine import EngineConfig, WindowResult
from flowscope.aggregate.stats import METRICS, PROTOCOL_CLASSES, TCP, UDP
from flowscope.collect import PathLike
from flowscope.errors import ConfigError
from flowscope.export.parquet import FILE_COLUMNS
from flowscope.model import ExporterTable
from flowscope.spark.job import _check, _exporter_key, window_results
from flowscope.spark.sources import ArrivalOrder
from flowscope.spark.stats import SparkStats, WindowKey, _Window

__all__ = ["FILE_SCHEMA", "IncrementalReport", "parquet_flows", "start_parquet_stream"]

# The Spark schema of the collectors' flow files (``export.parquet.FILE_COLUMNS``).
FILE_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in FILE_COLUMNS)

_TIME_COLUMNS = {"received": "time_received", "start": "time_start", "end": "time_end"}
# Facets of the partial sums (the ``kind`` column); ``num`` and ``address`` are the key within one.
CLASS, WEB, LATE, EXPORTER, PORT, SERVER, CLIENT = range(7)
_KEY = ("interval_ms", "start_ms", "view", "kind", "num", "address")
_SUM_TYPE = "decimal(38,0)"


def parquet_flows(spark: SparkSession, directory: PathLike, *, max_files_per_trigger: int = 1000,
                  clean_source: str = "off") -> DataFrame:
    """The collectors' flow files in ``directory`` as a streaming DataFrame (``FILE_SCHEMA``).

    Files are read oldest first (``latestFirst`` stays off: the late rule depends on arrival order);
    at most ``max_files_per_trigger`` per micro-batch, so a query catching up after a pause works
    through the backlog in bounded steps. ``clean_source`` ``delete`` / ``archive`` lets Spark
    remove files once a batch that read them has committed (``archive`` moves them to
    ``DIRECTORY/../archive``).
    """
    if clean_source not in ("off", "delete", "archive"):
        raise ConfigError(f"--clean-source: {clean_source!r} is not one of off, delete, archive")
    reader: Any = (
        spark.readStream.schema(FILE_SCHEMA)
        .option("maxFilesPerTrigger", max_files_per_trigger)
        .option("latestFirst", "false")
        .option("cleanSource", clean_source)
    )
    if clean_source == "archive":
        reader = reader.option("sourceArchiveDir", str(Path(directory).resolve().parent / "archive"))
    frame: DataFrame = reader.parquet(str(directory))
    return frame


def _facet(kind: int, num: Column, address: Column | None = None, when: Column | None = None) -> Column:
    value = F.struct(
        F.lit(kind).alias("kind"), num.cast("long").alias("num"),
        (address if address is not None else F.lit(b"")).cast("binary").alias("address"),
    )
    return value if when is None else F.when(when, value)


def _sums() -> list[Column]:
    return [F.sum("flows").alias("flows"), *(F.sum(name).cast(_SUM_TYPE).alias(name) for name in ("packets", "bytes"))]


def _empty_window() -> _Window:
    return _Window({name: dict.fromkeys(METRICS, 0) for name in PROTOCOL_CLASSES}, dict.fromkeys(METRICS, 0))


def _select_windows(windows: set[tuple[int, int]]) -> Column:
    test: Column | None = None
    for duration in sorted({d for d, _ in windows}):
        starts = sorted(s for d, s in windows if d == duration)
        part = (F.col("interval_ms") == F.lit(duration)) & F.col("start_ms").isin(starts)
        test = part if test is None else test | part
    return test if test is not None else F.lit(False)


class IncrementalReport:
    """``foreachBatch`` handler of ``flowscope spark --parquet-source``: flow files → store results."""

    def __init__(self, spark: SparkSession, engine_config: EngineConfig, work_dir: PathLike, sink: Any) -> None:
        self.spark = spark
        self.config = engine_config
        self.resolutions = _check(engine_config)
        if engine_config.stats.local_networks or engine_config.stats.watched_hosts:
            raise ConfigError("stats.local_networks / stats.watched_hosts: host statistics are not on the Parquet "
                              "stream yet (their partial sums are not kept); use the embedded engine for them")
        if engine_config.time_base not in _TIME_COLUMNS:
            raise ConfigError(f"engine.time_base: {engine_config.time_base!r} is not supported by the Spark engine")
        self.work = Path(work_dir)
        self.sink = sink
        self.finest_ms = self.resolutions[0].duration_ms
        self.intervals_ms = [r.duration_ms for r in self.resolutions]
        # Flow rows get their derived columns (view, class, web, server, client) at the finest window.
        self.rows = SparkStats(engine_config.stats, [self.finest_ms])
        self.stats = SparkStats(engine_config.stats, self.intervals_ms)
        self.batches = 0
        self.first_batch_id: int | None = None  # the first micro-batch this instance ran (a replay after a restart)

    # bookkeeping ---------------------------------------------------------------------------------
    def _load(self, batch_id: int) -> tuple[ArrivalOrder, ExporterTable, set[tuple[int, int]], int | None]:
        order = ArrivalOrder(self.resolutions, self.config.time_base, self.config.grace_ms)
        exporters = ExporterTable()
        pending: set[tuple[int, int]] = set()
        version: int | None = None
        earlier = sorted(int(p.stem) for p in (self.work / "books").glob("*.json") if int(p.stem) < batch_id)
        if earlier:
            saved = json.loads((self.work / "books" / f"{earlier[-1]}.json").read_text())
            order.restore(saved["order"])
            for address, domain in saved["exporters"]:
                exporters.index_of(address, domain)
            pending = {(int(d), int(s)) for d, s in saved["pending"]}
            version = saved["state"]
        return order, exporters, pending, version

    def _save(self, batch_id: int, order: ArrivalOrder, exporters: ExporterTable, pending: set[tuple[int, int]],
              version: int | None) -> None:
        books = {"order": order.state(), "exporters": exporters.entries(), "pending": sorted(pending),
                 "state": version}
        target = self.work / "books" / f"{batch_id}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(books))
        os.replace(temporary, target)
        # A restart replays the last batch at most: it needs the books and state of the batch before.
        for old in (self.work / "books").glob("*.json"):
            if int(old.stem) < batch_id - 2:
                old.unlink(missing_ok=True)
        for old in (self.work / "state").glob("v-*"):
            number = int(old.name.removeprefix("v-"))
            if number < batch_id - 2 and number != version:
                shutil.rmtree(old, ignore_errors=True)

    def _state_path(self, version: int) -> str:
        return str(self.work / "state" / f"v-{version:08d}")

    # one micro-batch -----------------------------------------------------------------------------
    def process(self, frame: DataFrame, batch_id: int) -> None:
        (self.work / "books").mkdir(parents=True, exist_ok=True)
        (self.work / "state").mkdir(parents=True, exist_ok=True)
        order, exporters, pending, version = self._load(batch_id)
        if self.first_batch_id is None:
            self.first_batch_id = batch_id
        time_column = F.col(_TIME_COLUMNS[self.config.time_base])
        raw_start = time_column - F.pmod(time_column, F.lit(self.finest_ms))
        # What the driver needs, in one small aggregation: the batch's finest windows and exporters.
        keys = frame.groupBy(raw_start.alias("start"), "exporter", "domain").agg(
            F.min("time_received").alias("first_ms")).collect()
        if not keys:
            self._save(batch_id, order, exporters, pending, version)
            return
        first_seen: dict[tuple[str, int], int] = {}
        for row in keys:
            key = (str(row["exporter"]), int(row["domain"]))
            first_seen[key] = min(first_seen.get(key, int(row["first_ms"])), int(row["first_ms"]))
        for (address, domain), _ in sorted(first_seen.items(), key=lambda item: (item[1], item[0])):
            exporters.index_of(address, domain)  # new exporters in the order they were first received
        starts = np.unique(np.array([int(row["start"]) for row in keys], np.int64))
        placed, late = order.place(starts)
        late_starts = starts[late].tolist()
        window = raw_start
        late_column = F.lit(False)
        if late_starts:  # every late flow lands in the window open now (the same for all of them)
            late_column = raw_start.isin(late_starts)
            window = F.when(late_column, F.lit(int(placed[late][0]))).otherwise(raw_start)
        mapping = F.create_map(*(F.lit(part) for address, domain in exporters.entries()
                                 for part in (f"{address}|{domain}", exporters.index_of(address, domain))))
        flows = frame.select(
            "*", window.alias("window"), late_column.alias("late"),
            mapping[F.concat_ws("|", F.col("exporter"), F.col("domain").cast("string"))].alias("exporter_index"),
        ).drop("exporter").withColumnRenamed("exporter_index", "exporter")
        touched: set[tuple[int, int]] = set()
        for start in np.unique(placed).tolist():
            touched.update((r.duration_ms, r.start_of(start)) for r in self.resolutions)
        order.tick()
        now = order.watermark_ms if order.watermark_ms is not None else 0
        due = {(d, s) for d, s in pending | touched if s + d + self.config.grace_ms <= now}

        # Kept in memory between writing it and ranking from it (else Spark would compute it twice).
        state = self._merge(flows, pending, version).persist()
        try:
            state.write.mode("overwrite").parquet(self._state_path(batch_id))
            self._emit(state, touched | due, due, exporters)
        finally:
            state.unpersist()
        self._save(batch_id, order, exporters, (pending | touched) - due, batch_id)
        self.batches += 1

    def _partials(self, flows: DataFrame) -> DataFrame:
        """One micro-batch's flows as facet rows per (interval, window, view, facet, key), to be summed."""
        rows = self.rows.rows(flows)
        protocol, web = F.col("protocol"), F.col("web")
        in_ports = protocol.isin(TCP, UDP)
        facets = [
            _facet(CLASS, F.col("cls")),
            _facet(WEB, F.lit(0), when=web),
            _facet(LATE, F.lit(0), when=F.col("late")),
            _facet(EXPORTER, F.col("exporter")),
            _facet(PORT, protocol * 65536 + F.col("dst_port"), when=in_ports),
            _facet(SERVER, F.lit(0), F.col("server"), when=web),
            _facet(CLIENT, F.lit(0), F.col("client"), when=web),
        ]
        if self.config.stats.port_side == "either":  # a flow counts for its source port too
            facets.append(_facet(PORT, protocol * 65536 + F.col("src_port"), when=in_ports))
        exploded = (
            rows.select("start_ms", "view", *METRICS, F.explode(F.array(*facets)).alias("f"))
            .filter(F.col("f").isNotNull())
            .select("start_ms", "view", "f.kind", "f.num", "f.address", *METRICS)
        )
        # One row per (flow, view, facet, interval): summed map-side before the one shuffle of ``_merge``.
        interval = F.explode(F.array(*(F.lit(d).cast("long") for d in self.intervals_ms))).alias("interval_ms")
        return exploded.select(interval, "*").withColumn(
            "start_ms", F.col("start_ms") - F.pmod(F.col("start_ms"), F.col("interval_ms")))

    def _merge(self, flows: DataFrame, pending: set[tuple[int, int]], version: int | None) -> DataFrame:
        """The state after this batch: earlier sums of the windows still open plus this batch's."""
        fresh = self._partials(flows).select(*_KEY, "flows", "packets", "bytes")
        if version is not None and pending:
            earlier = self.spark.read.parquet(self._state_path(version)).filter(_select_windows(pending))
            fresh = fresh.unionByName(earlier.select(*_KEY, "flows", "packets", "bytes"))
        return fresh.groupBy(*_KEY).agg(*_sums())

    def _emit(self, state: DataFrame, windows: set[tuple[int, int]], final: set[tuple[int, int]],
              exporters: ExporterTable) -> None:
        selected = state.filter(_select_windows(windows))
        totals = selected.filter(F.col("kind") <= EXPORTER)
        lists = selected.filter(F.col("kind") > EXPORTER).withColumn(
            "grp", F.when(F.col("kind") == PORT, F.floor(F.col("num") / 65536)).otherwise(F.lit(0)))
        for metric in METRICS:
            order = Window.partitionBy("interval_ms", "start_ms", "view", "kind", "grp").orderBy(
                F.col(metric).desc(), F.col("num").asc(), F.col("address").asc())
            lists = lists.withColumn(f"rank_{metric}", F.row_number().over(order))
        best = F.least(*(F.col(f"rank_{metric}") for metric in METRICS))
        top_n = self.config.stats.top_n
        found = totals.unionByName(lists.filter(best <= F.lit(top_n)).drop("grp"), allowMissingColumns=True).collect()

        windows_of: dict[WindowKey, _Window] = {}
        by_exporter: dict[WindowKey, list[tuple[int, dict[str, int]]]] = defaultdict(list)
        port_lists: dict[tuple[WindowKey, int, str], list[tuple[int, int, dict[str, int]]]] = defaultdict(list)
        address_lists: dict[tuple[WindowKey, str, str], list[tuple[int, bytes, dict[str, int]]]] = defaultdict(list)
        for row in found:
            key = (int(row["interval_ms"]), int(row["start_ms"]), str(row["view"]))
            kind, num = int(row["kind"]), int(row["num"])
            values = {name: int(row[name] or 0) for name in METRICS}
            if kind <= LATE:
                window = windows_of.setdefault(key, _empty_window())
                if kind == CLASS:
                    window.by_class[PROTOCOL_CLASSES[num]] = values
                elif kind == WEB:
                    window.web = values
                else:
                    window.late_flows = values["flows"]
            elif kind == EXPORTER:
                by_exporter[key].append((num, values))
            elif kind == PORT:
                for metric in METRICS:
                    rank = int(row[f"rank_{metric}"])
                    if rank <= top_n and values[metric] > 0:
                        port_lists[(key, num >> 16, metric)].append((rank, num & 0xFFFF, values))
            else:
                role = "server" if kind == SERVER else "client"
                for metric in METRICS:
                    rank = int(row[f"rank_{metric}"])
                    if rank <= top_n:
                        address_lists[(key, role, metric)].append((rank, bytes(row["address"]), values))

        exporter_key = _exporter_key(exporters)
        payloads: dict[WindowKey, dict[str, Any]] = {}
        occupied = {(interval, start) for interval, start, view in windows_of if view == "all"}
        for interval, start in occupied:
            for view in self.stats.filters:
                key = (interval, start, view)
                # The one payload builder of both paths (spark.stats), so the JSON shapes cannot drift.
                payloads[key] = self.stats._payload(
                    key, windows_of.get(key) or _empty_window(), by_exporter, port_lists, address_lists, exporter_key)
                if view == "all":  # host statistics are refused above: their empty section, as the engine's
                    payloads[key]["hosts"] = self.stats.hosts.empty()
        results = [
            WindowResult(r.resolution, r.duration_ms, r.start_ms, r.view, (r.duration_ms, r.start_ms) in final,
                         r.payload).to_json()
            for r in window_results(payloads, self.config.stats.view_names)
        ]
        self.sink.write(results)


def start_parquet_stream(
    spark: SparkSession, flows: DataFrame, engine_config: EngineConfig, work_dir: PathLike, sink: Any,
    *, trigger_seconds: float = 1.0,
) -> tuple[StreamingQuery, IncrementalReport]:
    """Starts the streaming query on ``parquet_flows``: micro-batches → ``IncrementalReport`` → ``sink``."""
    report = IncrementalReport(spark, engine_config, work_dir, sink)
    writer: Any = flows.writeStream.foreachBatch(report.process)
    query: StreamingQuery = (
        writer.option("checkpointLocation", str(Path(work_dir) / "checkpoint"))
        .trigger(processingTime=f"{trigger_seconds} seconds").start()
    )
    return query, report
