"""The Spark engine's entry points: the session, the batch report and the streaming job.

``run_spark_report(paths, engine_config)`` is ``flowscope report --input CAPTURE... --engine
spark``: the captures are decoded by flowscope (one ``DecoderSession``, as
``pipeline.offline_results`` does), the normalized flows written as Parquet files to a temporary
directory, and the window statistics computed by Spark from ``StatsSpec``
(``spark.stats.SparkStats``). The JSON equals the embedded engine's for the same input.

``start_stream`` / ``cmd_spark`` (``flowscope spark``) run the Structured Streaming query on the
collector's JSON stream, writing results to the store per micro-batch (``StreamingReport``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)
from pyspark.sql.streaming.query import StreamingQuery

from flowscope.aggregate.engine import EngineConfig, WindowResult
from flowscope.aggregate.windows import Resolution, check_resolutions, format_duration
from flowscope.collect import PathLike
from flowscope.decode.session import DecoderSession
from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import ExporterTable
from flowscope.normalize import NormalizeConfig, Normalizer
from flowscope.spark.hosts import SparkHosts
from flowscope.spark.ipfixcol import JsonInput, file_flows
from flowscope.spark.sink import StoreSink
from flowscope.spark.sources import FLOW_SCHEMA, ArrivalOrder, piece_table, write_parquet
from flowscope.spark.stats import SparkStats
from flowscope.store import ResultStore

__all__ = [
    "StreamingReport", "checked_resolutions", "cmd_spark", "exporter_key", "run_spark_report", "socket_lines",
    "spark_session", "start_stream", "window_results",
]

DEFAULT_MASTER = "local[2]"


def spark_session(master: str = DEFAULT_MASTER, *, app_name: str = "flowscope", shuffle_partitions: int = 4,
                  driver_memory: str = "1g") -> SparkSession:
    """A Spark session sized for flowscope: small shuffles, no web UI, UTC, local networking.

    ``SPARK_LOCAL_IP`` (default 127.0.0.1) and ``PYSPARK_PYTHON`` (default: this interpreter)
    are set in the environment when missing, so a laptop without a resolvable host name works.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder: Any = SparkSession.builder
    session: SparkSession = (
        builder.master(master).appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "false")  # small jobs: re-planning costs more than it saves
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def checked_resolutions(engine_config: EngineConfig) -> list[Resolution]:
    """The configured windows as resolutions; raises ConfigError for what the Spark engine cannot run."""
    SparkHosts(engine_config.stats)  # local networks and watched hosts parse (ConfigError otherwise)
    return check_resolutions(list(engine_config.windows_ms))


def _decoded_tables(
    paths: Iterable[PathLike], engine_config: EngineConfig, finest: Resolution, session: DecoderSession,
    normalizer: Normalizer,
) -> Iterator[pa.Table]:
    order = ArrivalOrder(check_resolutions(list(engine_config.windows_ms)), engine_config.time_base,
                         engine_config.grace_ms)
    for batch in file_flows(paths, session, normalizer):  # captures, or JSON lines files
        if len(batch):
            yield piece_table(batch, order.pieces(batch))
        order.tick()


def window_results(payloads: dict[tuple[int, int, str], dict[str, Any]], views: tuple[str, ...]) -> list[WindowResult]:
    """Final WindowResults (shortest interval first, then start, then view in configured order)."""
    rank = {name: i for i, name in enumerate(views)}
    ordered = sorted(payloads.items(), key=lambda item: (item[0][0], item[0][1], rank[item[0][2]]))
    return [
        WindowResult(format_duration(interval), interval, start, view, True, payload)
        for (interval, start, view), payload in ordered
    ]


def run_spark_report(
    paths: Iterable[PathLike], engine_config: EngineConfig, *, interval_ms: int | None = None,
    view: str | None = None, apply_sampling: bool = True, master: str = DEFAULT_MASTER,
    spark: SparkSession | None = None, counters: Counters | None = None, scratch_dir: PathLike | None = None,
) -> list[dict[str, Any]]:
    """Window results of capture files computed on Spark, as JSON objects (docs/report-schema.md).

    ``interval_ms`` / ``view`` keep one window length / one view (default: all of them). The
    flows pass through a temporary Parquet directory; ``spark`` reuses a running session (else one
    is started on ``master`` and left running for the next call, as Spark sessions are).
    ``scratch_dir`` holds that directory (default: the system's temporary directory; on a
    cluster, storage every executor can read).
    """
    resolutions = checked_resolutions(engine_config)
    views = engine_config.stats.view_names
    if view is not None and view not in views:
        raise ConfigError(f"--view: {view!r} is not a configured view ({', '.join(views)})")
    intervals = [r.duration_ms for r in resolutions]
    if interval_ms is not None:
        if interval_ms not in intervals:
            raise ConfigError(f"--interval: {format_duration(interval_ms)} is not a configured window")
        intervals = [interval_ms]
    counters = counters if counters is not None else Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(NormalizeConfig(apply_sampling=apply_sampling, preserve_order=False),
                            session.options, counters)
    spark = spark if spark is not None else spark_session(master)
    with tempfile.TemporaryDirectory(prefix="flowscope-spark-", dir=scratch_dir) as directory:
        rows = write_parquet(_decoded_tables(paths, engine_config, resolutions[0], session, normalizer), directory)
        if rows == 0:
            return []
        flows = spark.read.schema(FLOW_SCHEMA).parquet(directory)
        payloads = SparkStats(engine_config.stats, intervals).compute(flows, exporter_key(session.exporters))
    results = [r.to_json() for r in window_results(payloads, views)]
    return [r for r in results if view is None or r["view"] == view]


def exporter_key(exporters: ExporterTable) -> Any:
    """Exporter index → (address, domain) in ``exporters`` (``("?", 0)`` for an index it lacks)."""
    def key(index: int) -> tuple[str, int]:
        return exporters.key_of(index) if index < len(exporters) else ("?", 0)

    return key


# -- the streaming job ---------------------------------------------------------------------------


class StreamingReport:
    """``foreachBatch`` handler of the streaming job: micro-batches of JSON rows → store results.

    Per micro-batch ``batch_id``:

    1. the rows become a FlowBatch (``ipfixcol.JsonInput``: flowscope's, IPFIXcol's or IPFIXcol2's
       JSON), the late rule assigns each flow its finest window (``ArrivalOrder``, the data as
       the clock, as in offline reports);
    2. they are written to ``WORK/flows/batch-<id>.parquet`` (replacing the file of an earlier
       attempt of the same batch) and the bookkeeping to ``WORK/state/<id>.json``;
    3. every window that received flows or became due (end + grace reached by the data's time)
       is recomputed by Spark from all flows of that window and upserted into the store,
       provisional or final;
    4. flow files whose windows were all final before the batch began are deleted, and
       bookkeeping older than two batches.

    A replayed batch starts from the bookkeeping of the batch before it, rewrites the same file
    and the same results: the store does not double count. Recomputing a whole window per
    micro-batch keeps this simple and exact; its cost grows with the window (an hour of flows per
    micro-batch for the 1 h window): incremental partial states are the next step.
    """

    def __init__(self, spark: SparkSession, engine_config: EngineConfig, work_dir: PathLike, sink: Any,
                 json_input: JsonInput | None = None) -> None:
        self.spark = spark
        self.json_input = json_input if json_input is not None else JsonInput()  # which JSON the lines are
        self.config = engine_config
        self.resolutions = checked_resolutions(engine_config)
        self.work = Path(work_dir)
        (self.work / "flows").mkdir(parents=True, exist_ok=True)
        (self.work / "state").mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self.stats = SparkStats(engine_config.stats, [r.duration_ms for r in self.resolutions])
        self.batches = 0

    # bookkeeping ---------------------------------------------------------------------------------
    def _load(self, batch_id: int) -> tuple[ArrivalOrder, ExporterTable, set[tuple[int, int]], dict[str, int]]:
        order = ArrivalOrder(self.resolutions, self.config.time_base, self.config.grace_ms)
        exporters = ExporterTable()
        pending: set[tuple[int, int]] = set()
        files: dict[str, int] = {}
        earlier = sorted(int(p.stem) for p in (self.work / "state").glob("*.json") if int(p.stem) < batch_id)
        if earlier:
            saved = json.loads((self.work / "state" / f"{earlier[-1]}.json").read_text())
            order.restore(saved["order"])
            for address, domain in saved["exporters"]:
                exporters.index_of(address, domain)
            pending = {(int(d), int(s)) for d, s in saved["pending"]}
            files = saved["files"]
        return order, exporters, pending, files

    def _save(self, batch_id: int, order: ArrivalOrder, exporters: ExporterTable,
              pending: set[tuple[int, int]], files: dict[str, int]) -> None:
        state = {
            "order": order.state(),
            "exporters": exporters.entries(), "pending": sorted(pending), "files": files,
        }
        target = self.work / "state" / f"{batch_id}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, target)
        for old in (self.work / "state").glob("*.json"):  # Spark replays the last batch at most
            if int(old.stem) < batch_id - 2:
                old.unlink(missing_ok=True)

    # one micro-batch -----------------------------------------------------------------------------
    def process(self, frame: DataFrame, batch_id: int) -> None:
        table = self.json_input.table(frame)
        order, exporters, pending, files = self._load(batch_id)
        # Flow files whose windows were all final before this batch began: no replay of this
        # batch recomputes those windows, so their flows can go.
        before = order.watermark_ms if order.watermark_ms is not None else 0
        for name in [name for name, expires in files.items() if expires <= before]:
            (self.work / "flows" / name).unlink(missing_ok=True)
            del files[name]
        batch = self.json_input.flows(table, exporters)
        touched: set[tuple[int, int]] = set()
        target = self.work / "flows" / f"batch-{batch_id:08d}.parquet"
        if len(batch):
            pieces = order.pieces(batch)
            window = pieces.window
            pq.write_table(piece_table(batch, pieces), target)
            longest = self.resolutions[-1]
            files[target.name] = longest.start_of(int(window.max())) + longest.duration_ms + self.config.grace_ms
            for start in np.unique(window).tolist():
                touched.update((r.duration_ms, r.start_of(start)) for r in self.resolutions)
        else:  # an earlier attempt of this batch may have had flows
            target.unlink(missing_ok=True)
            files.pop(target.name, None)
        order.tick()
        now = order.watermark_ms if order.watermark_ms is not None else 0
        pending |= touched
        due = {(d, s) for d, s in pending if s + d + self.config.grace_ms <= now}
        if pending:
            self._write(touched | due, due, exporters)
        self._save(batch_id, order, exporters, pending - due, files)
        self.batches += 1

    def _write(self, windows: set[tuple[int, int]], final: set[tuple[int, int]], exporters: ExporterTable) -> None:
        selected: Column | None = None
        for duration in {d for d, _ in windows}:
            starts = sorted(s for d, s in windows if d == duration)
            test = (F.col("window") - F.pmod(F.col("window"), F.lit(duration))).isin(starts)
            selected = test if selected is None else selected | test
        assert selected is not None
        flows = self.spark.read.schema(FLOW_SCHEMA).parquet(str(self.work / "flows")).filter(selected)
        payloads = self.stats.compute(flows, exporter_key(exporters))
        results = [
            WindowResult(r.resolution, r.duration_ms, r.start_ms, r.view, (r.duration_ms, r.start_ms) in final,
                         r.payload).to_json()
            for r in window_results(payloads, self.config.stats.view_names)
            if (r.duration_ms, r.start_ms) in windows
        ]
        self.sink.write(results)


def socket_lines(spark: SparkSession, host: str, port: int) -> DataFrame:
    """The collector's JSON stream (``flowscope collect --json-server HOST:PORT``) as lines."""
    reader: Any = spark.readStream.format("socket")
    lines: DataFrame = reader.option("host", host).option("port", port).load()
    return lines


def start_stream(
    spark: SparkSession, lines: DataFrame, engine_config: EngineConfig, work_dir: PathLike, sink: Any,
    *, trigger_seconds: float = 1.0, json_input: JsonInput | None = None,
) -> tuple[StreamingQuery, StreamingReport]:
    """Starts the streaming query: micro-batches of JSON lines → ``StreamingReport`` → ``sink``.

    ``json_input`` says which JSON the lines are (default: flowscope's own stream).
    """
    report = StreamingReport(spark, engine_config, work_dir, sink, json_input)
    writer: Any = lines.writeStream.foreachBatch(report.process)
    query: StreamingQuery = (
        writer.option("checkpointLocation", str(Path(work_dir) / "checkpoint"))
        .trigger(processingTime=f"{trigger_seconds} seconds").start()
    )
    return query, report


# -- the `flowscope spark` command ---------------------------------------------------------------


def cmd_spark(args: Any) -> int:
    """``flowscope spark``: the streaming job until interrupted (see ``flowscope.spark.add_spark_parser``)."""
    from flowscope.config import build, load_settings  # noqa: PLC0415  (config imports the pipeline)

    config = build(load_settings(getattr(args, "config", None) or os.environ.get("FLOWSCOPE_CONFIG"),
                                 overrides=getattr(args, "set", None)))
    parquet_source = getattr(args, "parquet_source", None)
    host, _, port = str(args.json_source).rpartition(":")
    if not parquet_source and (not host or not port.isdigit()):
        raise ConfigError(f"--json-source: expected HOST:PORT, got {args.json_source!r}")
    store = ResultStore(config.store)
    store.start()
    spark = spark_session(args.master, shuffle_partitions=getattr(args, "shuffle_partitions", 4))
    try:
        if parquet_source:
            from flowscope.spark.stream import parquet_flows, start_parquet_stream  # noqa: PLC0415  (uses this module)

            flows = parquet_flows(spark, parquet_source, max_files_per_trigger=args.max_files_per_trigger,
                                  clean_source=args.clean_source)
            query, report = start_parquet_stream(spark, flows, config.engine, args.work_dir, StoreSink(store),
                                                 trigger_seconds=args.trigger,
                                                 coarse_refresh_s=getattr(args, "coarse_refresh", 10.0))
            refresh = report.refresh
        else:
            refresh = None
            query, _ = start_stream(spark, socket_lines(spark, host.strip("[]"), int(port)), config.engine,
                                    args.work_dir, StoreSink(store), trigger_seconds=args.trigger,
                                    json_input=JsonInput(getattr(args, "input_format", "flowscope"),
                                                         timezone=getattr(args, "input_timezone", "UTC")))
        print(f"flowscope: Spark streaming from {parquet_source or args.json_source} into {config.store.path}",
              file=sys.stderr, flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        # Wait in short steps so a signal stops the query between micro-batches, not inside one.
        while not stop.is_set() and query.isActive:
            query.awaitTermination(1)
            if refresh is not None:  # provisional results of the coarse windows held back while idle
                refresh()
        query.stop()
        if refresh is not None:  # the newest sums of the open coarse windows, before the store closes
            refresh(force=True)
        if query.exception() is not None:
            print(f"flowscope: the Spark query failed: {query.exception()}", file=sys.stderr)
            return 1
    finally:
        spark.stop()
        store.stop()
    return 0
