"""The scalable streaming path: collectors' Parquet files → Spark's file source → per-window sums → store.

``flowscope collect --parquet-dir DIR`` writes complete Parquet files into DIR
(``export.parquet``); ``flowscope spark --parquet-source DIR`` reads them with Spark's file source
(fault tolerant: the offsets log records which files each micro-batch read, so a restarted query
replays exactly those) and computes the statistics incrementally (``IncrementalReport``):

1. the flow rows of a micro-batch never reach the driver: one small aggregation (finest window
   start × exporter) gives the driver what the late rule and the exporter table need
   (``ArrivalOrder.place``), and the windows and exporter indices become Spark column expressions;
   with the ``spread`` time base the flows are first cut into pieces, one per finest window
   their lifetime covers, by Spark expressions (``spark.spreadpieces``);
2. Spark reduces the flows to *partial sums* per (finest window, view, facet, key), where a facet
   is one of the sums the results need: per protocol class, web traffic, late flows, per
   exporter, per (protocol, port), per web server and per web client address; with host
   statistics configured, also to mergeable host rows per (finest window, host)
   (``spark.hostpartials``: sums, distinct partners, per-port sums); only these rows reach the
   driver (as Arrow), their size bounded by the batch's distinct keys;
3. the driver rolls them up to every window length and merges them into the state of each
   window they touched (``spark.partials`` and ``spark.hostpartials``: numpy, files per window
   and version under ``WORK/state``); windows the batch did not touch are neither read nor
   written;
4. the finest windows that received flows are ranked and upserted every micro-batch
   (provisional); the coarser ones (minute, hour) at most every ``coarse_refresh_s`` seconds, as
   their top lists of tens of thousands of keys change little from one second to the next; every
   window's final result is written once, when it becomes due (end + grace reached by the data).

A replayed micro-batch starts from the bookkeeping of the batch before it, which names the state
version of every open window, and rewrites the same versions and the same results: the store
never double counts.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)
from pyspark.sql.streaming.query import StreamingQuery

from flowscope.aggregate.engine import EngineConfig, WindowResult
from flowscope.aggregate.stats import TCP, UDP
from flowscope.collect import PathLike
from flowscope.errors import ConfigError
from flowscope.export.parquet import FILE_COLUMNS
from flowscope.model import ExporterTable
from flowscope.spark import partials
from flowscope.spark.hostpartials import HostSums, host_partials, host_section, rolled_up_hosts
from flowscope.spark.job import checked_resolutions, exporter_key, window_results
from flowscope.spark.partials import Window, WindowSums, payload_inputs, rank_window, window_dir
from flowscope.spark.sources import ArrivalOrder
from flowscope.spark.spreadpieces import spread_pieces
from flowscope.spark.stats import SparkStats, WindowKey

__all__ = ["FILE_SCHEMA", "IncrementalReport", "parquet_flows", "start_parquet_stream"]

# The Spark schema of the collectors' flow files (``export.parquet.FILE_COLUMNS``).
FILE_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in FILE_COLUMNS)

# The column holding each row's time (spread: each piece's own finest window, ``spreadpieces``).
_TIME_COLUMNS = {"received": "time_received", "start": "time_start", "end": "time_end", "spread": "piece_start"}
_KEY = ("start_ms", "view", "kind", "num", "hi", "lo")
# packets and bytes are unsigned 64-bit (DECIMAL(20,0) in Spark): summed as two long halves, exact,
# and joined on the driver into uint64 (wrapping as the embedded engine's counters do).
_HALF = 1 << 32
_SPLIT = ("flows", "packets_hi", "packets_lo", "bytes_hi", "bytes_lo")
DEFAULT_COARSE_REFRESH_S = 10.0
State = tuple[WindowSums, HostSums]  # a window's traffic sums and host statistics


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


def _facet(kind: int, num: Column, hi: Column | None = None, lo: Column | None = None,
           when: Column | None = None) -> Column:
    value = F.struct(
        F.lit(kind).alias("kind"), num.cast("long").alias("num"),
        (hi if hi is not None else F.lit(0)).cast("long").alias("hi"),
        (lo if lo is not None else F.lit(0)).cast("long").alias("lo"),
    )
    return value if when is None else F.when(when, value)


def _halves(name: str) -> list[Column]:
    low = F.pmod(F.col(name), F.lit(_HALF))
    return [((F.col(name) - low) / F.lit(_HALF)).cast("long").alias(f"{name}_hi"), low.cast("long").alias(f"{name}_lo")]


def _joined(high: npt.NDArray[np.int64], low: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        joined: npt.NDArray[np.uint64] = (high.astype(np.uint64) << np.uint64(32)) + low.astype(np.uint64)
    return joined


def _linked(source: Path, target: Path) -> bool:
    """``target`` as a hard link to ``source`` (a state version the batch left unchanged is not
    rewritten); False where that fails (no ``source``, or a file system without hard links)."""
    try:
        target.unlink(missing_ok=True)
        os.link(source, target)
    except OSError:
        return False
    return True


class IncrementalReport:
    """``foreachBatch`` handler of ``flowscope spark --parquet-source``: flow files → store results.

    ``coarse_refresh_s``: provisional results of the windows longer than the finest at most this
    often (0: every micro-batch); ``refresh()`` writes those held back (call it when the stream
    is idle: ``cmd_spark`` does, every second).
    """

    def __init__(self, spark: SparkSession, engine_config: EngineConfig, work_dir: PathLike, sink: Any,
                 *, coarse_refresh_s: float = DEFAULT_COARSE_REFRESH_S) -> None:
        self.spark = spark
        self.config = engine_config
        self.resolutions = checked_resolutions(engine_config)
        if engine_config.time_base not in _TIME_COLUMNS:
            raise ConfigError(f"engine.time_base: {engine_config.time_base!r} is not supported by the Spark engine")
        if coarse_refresh_s < 0:
            raise ConfigError("--coarse-refresh must not be negative")
        self.work = Path(work_dir)
        self.sink = sink
        self.coarse_refresh_s = coarse_refresh_s
        self.finest_ms = self.resolutions[0].duration_ms
        self.intervals_ms = [r.duration_ms for r in self.resolutions]
        # Flow rows get their derived columns (view, class, web, server, client) at the finest window.
        self.rows = SparkStats(engine_config.stats, [self.finest_ms])
        self.stats = SparkStats(engine_config.stats, self.intervals_ms)
        self.views = list(self.stats.filters)
        self.hosts = self.stats.hosts  # host statistics: ``spark.hostpartials``
        self.batches = 0
        self.first_batch_id: int | None = None  # the first micro-batch this instance ran (a replay after a restart)
        self._cache: dict[Window, tuple[int, State]] = {}  # window → (state version, its state)
        self._held: set[Window] = set()  # coarse windows changed since their last provisional result
        self._refreshed_s = float("-inf")  # monotonic time of the last coarse refresh
        self._exporters = ExporterTable()
        self._lock = threading.Lock()  # process() and refresh() come from different threads

    # bookkeeping ---------------------------------------------------------------------------------
    def _load(self, batch_id: int) -> tuple[ArrivalOrder, ExporterTable, dict[Window, int]]:
        order = ArrivalOrder(self.resolutions, self.config.time_base, self.config.grace_ms)
        exporters = ExporterTable()
        versions: dict[Window, int] = {}
        earlier = sorted(int(p.stem) for p in (self.work / "books").glob("*.json") if int(p.stem) < batch_id)
        if earlier:
            saved = json.loads((self.work / "books" / f"{earlier[-1]}.json").read_text())
            order.restore(saved["order"])
            for address, domain in saved["exporters"]:
                exporters.index_of(address, domain)
            versions = {(int(d), int(s)): int(v) for d, s, v in saved["open"]}
        return order, exporters, versions

    def _save(self, batch_id: int, order: ArrivalOrder, exporters: ExporterTable, versions: dict[Window, int],
              before: dict[Window, int]) -> None:
        books = {"order": order.state(), "exporters": exporters.entries(),
                 "open": sorted([d, s, v] for (d, s), v in versions.items())}
        target = self.work / "books" / f"{batch_id}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(books))
        os.replace(temporary, target)
        # A restart replays the last batch at most: it needs the books of the batch before and
        # the state versions they name; everything else can go.
        for old in (self.work / "books").glob("*.json"):
            if int(old.stem) < batch_id - 2:
                old.unlink(missing_ok=True)
        keep = {(window, version) for window, version in (*versions.items(), *before.items())}
        state = self.work / "state"
        for directory in state.iterdir():
            interval, _, start = directory.name.partition("-")
            if not (interval.isdigit() and start.lstrip("-").isdigit()):
                continue
            window = (int(interval), int(start))
            for file in directory.glob("[vh]-*.npz"):  # traffic sums, host state
                if (window, int(file.stem[2:])) not in keep:
                    file.unlink(missing_ok=True)
            if not any(directory.iterdir()):
                directory.rmdir()

    def _state(self, window: Window, version: int | None) -> State:
        if version is None:
            return WindowSums.empty(), HostSums.empty()
        cached = self._cache.get(window)
        if cached is not None and cached[0] == version:
            return cached[1]
        directory = window_dir(self.work / "state", window)
        hosts = directory / f"h-{version:08d}.npz"
        return (WindowSums.load(directory / f"v-{version:08d}.npz"),
                HostSums.load(hosts) if hosts.exists() else HostSums.empty())

    def _store(self, window: Window, batch_id: int, state: State, previous: int | None, hosts_changed: bool) -> None:
        """Writes the window's state as version ``batch_id``; host state only when host statistics
        are configured, and when the batch left it unchanged as a link to the previous version."""
        directory = window_dir(self.work / "state", window)
        state[0].save(directory / f"v-{batch_id:08d}.npz")
        if self.hosts.configured:
            target = directory / f"h-{batch_id:08d}.npz"
            source = directory / f"h-{previous:08d}.npz" if previous is not None and previous != batch_id else None
            if hosts_changed or source is None or not _linked(source, target):
                state[1].save(target)
        self._cache[window] = (batch_id, state)

    # one micro-batch -----------------------------------------------------------------------------
    def process(self, frame: DataFrame, batch_id: int) -> None:
        with self._lock:
            self._process(frame, batch_id)

    def _process(self, frame: DataFrame, batch_id: int) -> None:
        (self.work / "books").mkdir(parents=True, exist_ok=True)
        (self.work / "state").mkdir(parents=True, exist_ok=True)
        order, exporters, before = self._load(batch_id)
        if self.first_batch_id is None:
            self.first_batch_id = batch_id
        pieces: DataFrame | None = None
        if self.config.time_base == "spread":  # cut by Spark expressions; read thrice below, so cached
            pieces = spread_pieces(frame, self.finest_ms, order.horizon_ms).persist()
            frame = pieces
        try:
            self._process_flows(frame, batch_id, order, exporters, before)
        finally:
            if pieces is not None:
                pieces.unpersist()

    def _process_flows(self, frame: DataFrame, batch_id: int, order: ArrivalOrder, exporters: ExporterTable,
                       before: dict[Window, int]) -> None:
        time_column = F.col(_TIME_COLUMNS[self.config.time_base])
        raw_start = time_column - F.pmod(time_column, F.lit(self.finest_ms))
        # What the driver needs, in one small aggregation: the batch's finest windows and exporters.
        keys = frame.groupBy(raw_start.alias("start"), "exporter", "domain").agg(
            F.min("time_received").alias("first_ms")).collect()
        if not keys:
            self._save(batch_id, order, exporters, before, before)
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

        versions = dict(before)
        touched: set[Window] = set()
        host_rows: dict[Window, HostSums] = {}
        if self.hosts.configured:  # the "all" view's flows only, as in the embedded engine
            host_rows = rolled_up_hosts(host_partials(flows, self.hosts).toArrow(), self.intervals_ms)
        for window_key, sums in self._rolled_up(self._partials(flows)).items():
            old_sums, old_hosts = self._state(window_key, before.get(window_key))
            new_hosts = host_rows.get(window_key)
            merged = (old_sums.merged(sums), old_hosts if new_hosts is None else old_hosts.merged(new_hosts))
            self._store(window_key, batch_id, merged, before.get(window_key), new_hosts is not None)
            versions[window_key] = batch_id
            touched.add(window_key)
        order.tick()
        now = order.watermark_ms if order.watermark_ms is not None else 0
        due = {(d, s) for d, s in versions if s + d + self.config.grace_ms <= now}
        coarse = {w for w in touched if w[0] != self.finest_ms}
        self._held = (self._held | coarse) - due
        provisional = {w for w in touched if w[0] == self.finest_ms} - due
        if time.monotonic() - self._refreshed_s >= self.coarse_refresh_s:
            provisional |= self._held
            self._held = set()
            self._refreshed_s = time.monotonic()
        self._exporters = exporters
        self._emit({w: self._state(w, versions[w]) for w in provisional | due}, due, exporters)
        for window_key in due:
            del versions[window_key]
            self._cache.pop(window_key, None)
        self._save(batch_id, order, exporters, versions, before)
        self.batches += 1

    def refresh(self, *, force: bool = False) -> None:
        """Writes the provisional results held back by ``coarse_refresh_s`` once it has passed (``force``: now)."""
        with self._lock:
            if not self._held or (not force and time.monotonic() - self._refreshed_s < self.coarse_refresh_s):
                return
            windows = {w: self._cache[w][1] for w in self._held if w in self._cache}
            self._held = set()
            self._refreshed_s = time.monotonic()
            self._emit(windows, set(), self._exporters)

    def _partials(self, flows: DataFrame) -> DataFrame:
        """One micro-batch's flows as summed facet rows per (finest window, view, facet, key)."""
        rows = self.rows.rows(flows)
        protocol, web = F.col("protocol"), F.col("web")
        in_ports = protocol.isin(TCP, UDP)
        to_server = F.col("server") == F.col("dst_addr")  # rows() picks the server side the same way
        server_hi, server_lo = (F.when(to_server, F.col(f"dst_{half}")).otherwise(F.col(f"src_{half}"))
                                for half in ("hi", "lo"))
        client_hi, client_lo = (F.when(to_server, F.col(f"src_{half}")).otherwise(F.col(f"dst_{half}"))
                                for half in ("hi", "lo"))
        facets = [
            _facet(partials.CLASS, F.col("cls")),
            _facet(partials.WEB, F.lit(0), when=web),
            _facet(partials.LATE, F.lit(0), when=F.col("late")),
            _facet(partials.EXPORTER, F.col("exporter")),
            _facet(partials.PORT, protocol * 65536 + F.col("dst_port"), when=in_ports),
            _facet(partials.SERVER, F.lit(0), server_hi, server_lo, when=web),
            _facet(partials.CLIENT, F.lit(0), client_hi, client_lo, when=web),
        ]
        if self.config.stats.port_side == "either":  # a flow counts for its source port too
            facets.append(_facet(partials.PORT, protocol * 65536 + F.col("src_port"), when=in_ports))
        view_index = F.create_map(*(F.lit(part) for index, name in enumerate(self.views) for part in (name, index)))
        return (
            rows.select("start_ms", view_index[F.col("view")].alias("view"), "flows", *_halves("packets"),
                        *_halves("bytes"), F.explode(F.array(*facets)).alias("f"))
            .filter(F.col("f").isNotNull())
            .groupBy("start_ms", "view", "f.kind", "f.num", "f.hi", "f.lo")
            .agg(*(F.sum(name).alias(name) for name in _SPLIT))
        )

    def _rolled_up(self, partials: DataFrame) -> dict[Window, WindowSums]:
        """The batch's partial sums (to the driver as Arrow) per window of every length."""
        table = partials.toArrow()
        if table.num_rows == 0:
            return {}
        column = {name: table.column(name).to_numpy().astype(np.int64) for name in (*_KEY, *_SPLIT)}
        keys = np.stack([column[name] for name in _KEY[1:]], axis=1)
        sums = np.stack([column["flows"].astype(np.uint64), _joined(column["packets_hi"], column["packets_lo"]),
                         _joined(column["bytes_hi"], column["bytes_lo"])], axis=1)
        found: dict[Window, WindowSums] = {}
        for interval in self.intervals_ms:
            starts = column["start_ms"] - column["start_ms"] % interval
            for start in np.unique(starts).tolist():
                rows = starts == start
                found[(interval, int(start))] = WindowSums.combined(keys[rows], sums[rows])
        return found

    def _emit(self, windows: dict[Window, State], final: set[Window], exporters: ExporterTable) -> None:
        if not windows:
            return
        key_of = exporter_key(exporters)
        top_n = self.config.stats.top_n
        payloads: dict[WindowKey, dict[str, Any]] = {}
        for (interval, start), (sums, hosts) in windows.items():
            if not len(sums):
                continue
            for index, view in enumerate(self.views):
                key = (interval, start, view)
                ranked = rank_window(sums, index, top_n)
                by_exporter, port_lists, address_lists = payload_inputs(key, ranked)
                # The one payload builder of both paths (spark.stats), so the JSON shapes cannot drift.
                payloads[key] = self.stats.payload(key, ranked.totals, by_exporter, port_lists, address_lists,
                                                   key_of)
                if view == "all":  # host statistics: the unfiltered view only, as in the embedded engine
                    payloads[key]["hosts"] = (host_section(hosts, self.config.stats, self.hosts.watched)
                                              if self.hosts.configured else self.hosts.empty())
        results = [
            WindowResult(r.resolution, r.duration_ms, r.start_ms, r.view, (r.duration_ms, r.start_ms) in final,
                         r.payload).to_json()
            for r in window_results(payloads, self.config.stats.view_names)
        ]
        self.sink.write(results)


def start_parquet_stream(
    spark: SparkSession, flows: DataFrame, engine_config: EngineConfig, work_dir: PathLike, sink: Any,
    *, trigger_seconds: float = 1.0, coarse_refresh_s: float = DEFAULT_COARSE_REFRESH_S,
) -> tuple[StreamingQuery, IncrementalReport]:
    """Starts the streaming query on ``parquet_flows``: micro-batches → ``IncrementalReport`` → ``sink``."""
    report = IncrementalReport(spark, engine_config, work_dir, sink, coarse_refresh_s=coarse_refresh_s)
    writer: Any = flows.writeStream.foreachBatch(report.process)
    query: StreamingQuery = (
        writer.option("checkpointLocation", str(Path(work_dir) / "checkpoint"))
        .trigger(processingTime=f"{trigger_seconds} seconds").start()
    )
    return query, report
