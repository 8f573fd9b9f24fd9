"""Wiring: the one module that knows every stage (collect → decode → normalize → outputs).

``Collector`` runs the listeners, hands their datagram batches over a bounded queue to one
decoding thread, and gives each resulting ``FlowBatch`` to its outputs. ``decode_files`` does the
same for capture files, as fast as they can be read.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from flowscope.aggregate.engine import Engine, EngineConfig, WindowResult
from flowscope.collect import PathLike
from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.files import read_capture
from flowscope.collect.tcp import TcpIpfixListener, TcpListenerConfig
from flowscope.collect.udp import UdpListener, UdpListenerConfig
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.export.flowjson import encode_flows
from flowscope.export.jsonserver import JsonServer, JsonServerConfig
from flowscope.export.parquet import ParquetOutput, ParquetWriter
from flowscope.metrics import Counters
from flowscope.model import Datagram, ExporterTable, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer, decode_and_normalize
from flowscope.serve.sinks import ExporterTraffic, FanOut, LiveBroadcaster
from flowscope.store import ResultStore

if TYPE_CHECKING:
    from flowscope.config import Config
    from flowscope.serve.server import WebServer
    from flowscope.workers import WorkerPool

log = logging.getLogger(__name__)


class FlowOutput(Protocol):
    """Receives every normalized batch, on the decoding thread (must not block for long); the
    record sets are empty for a batch the compiled NetFlow v5 kernel decoded straight to flows."""

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None: ...


@dataclass(frozen=True, slots=True)
class CollectConfig:
    udp: tuple[UdpListenerConfig, ...] = (UdpListenerConfig(port=2055), UdpListenerConfig(port=4739))
    tcp: tuple[TcpListenerConfig, ...] = (TcpListenerConfig(port=4739),)
    allowed_exporters: tuple[str, ...] = ()  # networks; empty = everyone
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    queue_batches: int = 4096  # datagram batches waiting for the decoder before drops
    queue_max_bytes: int = 256 << 20  # ... and their payload bytes: memory stays bounded under overload
    decode_batch_datagrams: int = 4096  # the decoder merges waiting batches up to this size


class Collector:
    """Listeners → bounded queue → decoder thread → outputs."""

    def __init__(
        self, config: CollectConfig, outputs: list[FlowOutput], counters: Counters,
        exporters: ExporterTable | None = None,
    ) -> None:
        self.config = config
        self.outputs = outputs
        self.counters = counters
        self.exporters = exporters if exporters is not None else ExporterTable()
        self.session: DecoderSession | None = None
        self.normalizer: Normalizer | None = None
        self.udp_listeners: list[UdpListener] = []
        self.tcp_listeners: list[TcpIpfixListener] = []
        self._queue: queue.Queue[list[Datagram] | None] = queue.Queue(config.queue_batches)
        self._queued_bytes = 0
        self._queued_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.session = DecoderSession(self.config.decoder, self.counters, self.exporters)
        self.normalizer = Normalizer(self.config.normalize, self.session.options, self.counters)
        allowlist = ExporterAllowlist(self.config.allowed_exporters) if self.config.allowed_exporters else None
        self._thread = threading.Thread(target=self._decode_loop, name="flowscope-decode", daemon=True)
        self._thread.start()
        try:
            for udp in self.config.udp:
                listener = UdpListener(udp, self._enqueue, self.counters, allowlist)
                listener.start()
                self.udp_listeners.append(listener)
            for tcp in self.config.tcp:
                tcp_listener = TcpIpfixListener(tcp, self._enqueue, self.counters, allowlist)
                tcp_listener.start()
                self.tcp_listeners.append(tcp_listener)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for listener in self.udp_listeners:
            listener.stop()
        for tcp_listener in self.tcp_listeners:
            tcp_listener.stop()
        self.udp_listeners, self.tcp_listeners = [], []
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _enqueue(self, batch: list[Datagram]) -> None:
        size = sum(len(datagram.payload) for datagram in batch)
        with self._queued_lock:
            accepted = self._queued_bytes + size <= self.config.queue_max_bytes
            if accepted:
                try:
                    self._queue.put_nowait(batch)
                    self._queued_bytes += size
                except queue.Full:
                    accepted = False
        if not accepted:
            for datagram in batch:
                self.counters.add("collector_dropped_total", exporter=datagram.exporter, reason="decoder_busy")

    def _dequeued(self, batch: list[Datagram]) -> None:
        with self._queued_lock:
            self._queued_bytes -= sum(len(datagram.payload) for datagram in batch)

    def _decode_loop(self) -> None:
        assert self.session is not None and self.normalizer is not None
        limit = self.config.decode_batch_datagrams
        while True:
            first = self._queue.get()
            if first is None:
                return
            self._dequeued(first)
            datagrams = list(first)
            stop = False
            while len(datagrams) < limit:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                self._dequeued(more)
                datagrams.extend(more)
            self._process(datagrams)
            if stop:
                return

    def _process(self, datagrams: list[Datagram]) -> None:
        assert self.session is not None and self.normalizer is not None
        try:
            batch, records = decode_and_normalize(self.session, self.normalizer, datagrams)
        except Exception:  # a decoder bug must not kill collection; it is counted and logged
            log.exception("decoding a batch of %d datagrams failed", len(datagrams))
            self.counters.add("decode_batch_failures_total")
            return
        self.counters.add("flows_total", len(batch))
        for output in self.outputs:
            try:
                output.write(batch, records, self.session.exporters)
            except Exception:
                log.exception("output %s failed", type(output).__name__)
                self.counters.add("output_failures_total", output=type(output).__name__)


def decode_files(
    paths: Iterable[PathLike],
    session: DecoderSession,
    normalizer: Normalizer,
    *,
    exporter: str = "0.0.0.0",
    batch_datagrams: int = 1024,
    keep_records: bool = False,
) -> Iterator[tuple[FlowBatch, list[RecordSet]]]:
    """Decode capture files in order through one session, a batch of datagrams at a time (the
    record sets are empty for batches decoded straight to flows, unless ``keep_records``)."""
    for path in paths:
        pending: list[Datagram] = []
        for datagram in read_capture(path, exporter=exporter, counters=session.counters):
            pending.append(datagram)
            if len(pending) >= batch_datagrams:
                yield decode_and_normalize(session, normalizer, pending, keep_records=keep_records)
                pending = []
        if pending:
            yield decode_and_normalize(session, normalizer, pending, keep_records=keep_records)


class EngineOutput:
    """Feeds every batch to the engine; a ticker thread closes windows on the clock meanwhile.

    ``maintenance`` (if given) runs on the same thread every ``maintenance_interval_ms``: store
    retention, for instance.
    """

    def __init__(
        self, engine: Engine, tick_interval_ms: int = 100, maintenance: Callable[[int], object] | None = None,
        maintenance_interval_ms: int = 60_000,
    ) -> None:
        self.engine = engine
        self.tick_interval_ms = tick_interval_ms
        self.maintenance = maintenance
        self.maintenance_interval_ms = maintenance_interval_ms
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick_loop, name="flowscope-engine-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None:
        with self.lock:
            self.engine.process(batch)

    def _tick_loop(self) -> None:
        last_maintenance_ms = 0
        while not self._stop.wait(self.tick_interval_ms / 1000):
            try:
                with self.lock:
                    self.engine.tick()
                now_ms = self.engine.clock_ms()
                if self.maintenance is not None and now_ms - last_maintenance_ms >= self.maintenance_interval_ms:
                    last_maintenance_ms = now_ms
                    self.maintenance(now_ms)
            except Exception:  # a failing sink must not stop the clock
                log.exception("engine tick failed")
                self.engine.counters.add("engine_tick_failures_total")


class Service:
    """`flowscope run`: store, engine, collector, web server (and the JSON stream) in one process."""

    def __init__(self, config: Config, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self.exporters = ExporterTable()
        self.store = ResultStore(config.store, counters)
        # Window results go to the store, to the live subscribers and to the per-exporter totals.
        self.broadcaster = LiveBroadcaster(counters)
        self.traffic = ExporterTraffic(min(config.engine.windows_ms))
        sink = FanOut([self.store, self.broadcaster, self.traffic], counters)
        self.engine = Engine(config.engine, sink, self.exporters, counters)
        self.engine_output = EngineOutput(self.engine, maintenance=self._maintain, maintenance_interval_ms=2_000)
        self._last_prune_ms = 0
        self.json_server: JsonServer | None = None
        self.parquet: ParquetWriter | None = None
        self.collector: Collector | None = None
        self.workers: WorkerPool | None = None
        self.web: WebServer | None = None

    def start(self) -> None:
        self.store.start()
        self.engine.start()  # restores the checkpoint, and with it the exporter indices
        if self.config.web_host:  # an empty web.host turns the web server off
            from flowscope.serve.server import start_dashboard  # noqa: PLC0415  (web libraries only when on)

            self.web = start_dashboard(self)
        outputs: list[FlowOutput] = [self.engine_output]
        if self.config.json_server:
            host, _, port = self.config.json_server.rpartition(":")
            self.json_server = JsonServer(JsonServerConfig(host=host.strip("[]"), port=int(port)), self.counters)
            self.json_server.start()
            outputs.append(JsonStreamOutput(self.json_server))
        if self.config.parquet is not None:
            self.parquet = ParquetWriter(self.config.parquet, self.counters)
            self.parquet.start()
            outputs.append(ParquetOutput(self.parquet))
        collect = self.config.collect
        if self.config.workers > 0:
            from flowscope.workers import WorkerPool  # noqa: PLC0415  (workers imports this module)

            self.workers = WorkerPool(self.config.workers, collect, self.engine, self.engine_output.lock,
                                      self.counters)
            collect = replace(collect, udp=())  # the workers own the UDP ports; TCP stays here
        self.collector = Collector(collect, outputs, self.counters, exporters=self.exporters)
        self.engine_output.start()
        if self.workers is not None:
            self.workers.start()
        self.collector.start()

    def udp_ports(self) -> list[int]:
        if self.workers is not None:
            return [port for _, port in self.workers.bound_addresses]
        return [listener.bound_address[1] for listener in self.collector.udp_listeners] if self.collector else []

    def stats(self) -> dict[str, object]:
        """Counters, kernel drops and the live delay, for the stats file (and later /metrics)."""
        kernel_drops: dict[str, int | None] = {}
        if self.collector is not None:
            kernel_drops = {listener.listener: listener.kernel_drops() for listener in self.collector.udp_listeners}
        if self.workers is not None:
            kernel_drops.update(self.workers.kernel_drops)
        return {
            "counters": self.counters.snapshot(),
            "kernel_drops": kernel_drops,
            "live_delay": self.engine.live_delay_quantiles(),
        }

    def _maintain(self, now_ms: int) -> None:
        if now_ms - self._last_prune_ms >= 60_000:
            self._last_prune_ms = now_ms
            self.store.prune(now_ms)
        if self.config.stats_path:
            target = Path(self.config.stats_path)
            temporary = target.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.stats()))
            os.replace(temporary, target)

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.workers is not None:
            self.workers.stop()
        if self.collector is not None:
            self.collector.stop()
        self.engine_output.stop()
        with self.engine_output.lock:
            self.engine.tick()
            self.engine.stop()
        if self.json_server is not None:
            self.json_server.stop()
        if self.parquet is not None:
            self.parquet.stop()
        self.store.stop()


class JsonStreamOutput:
    """Publishes every batch as JSON lines to the consumers of a JsonServer (if any are connected)."""

    def __init__(self, server: JsonServer, *, padded: bool = False) -> None:
        self.server = server
        self.padded = padded

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None:
        if len(batch) and self.server.client_count:
            self.server.publish(encode_flows(batch, exporters, padded=self.padded), len(batch))


class _Collected:
    def __init__(self) -> None:
        self.results: list[WindowResult] = []

    def emit(self, results: list[WindowResult]) -> None:
        self.results.extend(r for r in results if r.final)


def offline_results(
    paths: Iterable[PathLike], engine_config: EngineConfig, *, apply_sampling: bool = True,
    counters: Counters | None = None,
) -> list[WindowResult]:
    """Run capture files through the engine as fast as they can be read, with the data as the clock.

    The result is deterministic for a given input: windows close by the data's own time, so
    neither the machine's speed nor the wall clock changes it.
    """
    counters = counters if counters is not None else Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(NormalizeConfig(apply_sampling=apply_sampling, preserve_order=False),
                            session.options, counters)
    sink = _Collected()
    engine = Engine(replace(engine_config, clock="data", checkpoint_dir=None), sink, session.exporters, counters)
    engine.start()
    for batch, _ in decode_files(paths, session, normalizer):
        engine.process(batch)
        engine.tick()
    engine.flush()
    return sink.results
