"""Collector worker processes: several cores for one UDP port.

With ``collect.workers = N``, N processes bind the same UDP ports with SO_REUSEPORT (the kernel
hashes each exporter's address and port to one socket, so an exporter's templates and sequence
numbers stay in one process). Each worker receives, decodes, normalizes and pre-aggregates into
its own finest-window states, and every ``ship_interval_ms`` sends those partial states (never raw
flows) to the aggregating process, which merges them into its engine exactly as if it had
computed them itself. Exporter indices are local to a worker; its exporter table travels with
each shipment and the aggregator maps them to its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import pickle
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from flowscope.aggregate.engine import Engine
from flowscope.aggregate.state import TrafficState
from flowscope.decode.records import RecordSet
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.pipeline import CollectConfig, Collector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Shipment:
    worker: int
    exporters: list[tuple[str, int]]  # the worker's exporter table, index order
    windows: dict[int, dict[str, TrafficState]]  # finest window start → view → partial state
    arrival_ms: int | None  # oldest arrival among the shipped flows (for the live delay)
    counters: dict[str, list[tuple[dict[str, str], int]]]  # cumulative, this worker's
    kernel_drops: dict[str, int | None]


class _PartialOutput:
    """Aggregates batches into the worker's engine; the shipper takes the states away."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.oldest_arrival_ms: int | None = None

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None:
        if not len(batch):
            return
        with self.lock:
            self.engine.process(batch)
            arrival = int(batch["time_received"].min())
            if self.oldest_arrival_ms is None or arrival < self.oldest_arrival_ms:
                self.oldest_arrival_ms = arrival


class _NullSink:
    def emit(self, results: list[Any]) -> None:  # a worker never closes windows
        raise AssertionError("worker engines do not emit results")


def worker_main(index: int, collect: CollectConfig, engine_config: Any, ship_interval_ms: int,
                connection: multiprocessing.connection.Connection) -> None:
    """Entry point of one worker process (spawned; everything it needs arrives pickled)."""
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker-{index} %(levelname)s %(message)s")
    counters = Counters()
    exporters = ExporterTable()
    engine = Engine(replace(engine_config, checkpoint_dir=None), _NullSink(), exporters, counters)
    engine.start()
    output = _PartialOutput(engine)
    collector = Collector(replace(collect, tcp=()), [output], counters, exporters=exporters)
    collector.start()
    connection.send(("ready", [listener.bound_address for listener in collector.udp_listeners]))
    try:
        while not connection.poll(ship_interval_ms / 1000):
            _ship(index, output, exporters, counters, collector, connection)
    finally:
        collector.stop()
        _ship(index, output, exporters, counters, collector, connection)
        connection.send(("stopped", None))
        connection.close()


def _ship(index: int, output: _PartialOutput, exporters: ExporterTable, counters: Counters,
          collector: Collector, connection: multiprocessing.connection.Connection) -> None:
    with output.lock:
        windows = output.engine.take_finest()
        arrival, output.oldest_arrival_ms = output.oldest_arrival_ms, None
    drops = {f"worker-{index}/{listener.listener}": listener.kernel_drops() for listener in collector.udp_listeners}
    shipment = Shipment(index, exporters.entries(), windows, arrival, counters.snapshot(), drops)
    connection.send_bytes(pickle.dumps(shipment, protocol=pickle.HIGHEST_PROTOCOL))


class WorkerPool:
    """Starts the worker processes and merges what they ship into the aggregating engine."""

    def __init__(self, count: int, collect: CollectConfig, engine: Engine, engine_lock: threading.Lock,
                 counters: Counters, ship_interval_ms: int = 200) -> None:
        self.count = count
        self.collect = collect
        self.engine = engine
        self.engine_lock = engine_lock
        self.counters = counters
        self.ship_interval_ms = ship_interval_ms
        self.kernel_drops: dict[str, int | None] = {}
        self.bound_addresses: list[tuple[str, int]] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._connections: list[multiprocessing.connection.Connection] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited threads or sockets
        collect = replace(self.collect, udp=tuple(replace(u, reuse_port=True) for u in self.collect.udp))
        if any(u.port == 0 for u in collect.udp):
            raise ValueError("collect.workers needs fixed UDP ports: workers must bind the same port")
        for index in range(self.count):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main, name=f"flowscope-worker-{index}",
                args=(index, collect, self.engine.config, self.ship_interval_ms, child), daemon=True,
            )
            process.start()
            child.close()
            state, addresses = parent.recv()
            if state != "ready":
                raise RuntimeError(f"worker {index} failed to start")
            self.bound_addresses = addresses
            self._processes.append(process)
            self._connections.append(parent)
            thread = threading.Thread(target=self._receive, args=(parent,), name=f"flowscope-merge-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for connection in self._connections:
            try:
                connection.send("stop")
            except OSError:
                continue
        for thread in self._threads:
            thread.join(timeout=30)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self._processes, self._connections, self._threads = [], [], []

    def _receive(self, connection: multiprocessing.connection.Connection) -> None:
        while True:
            try:
                message = pickle.loads(connection.recv_bytes())  # from our own child process
            except (EOFError, OSError):
                return
            if isinstance(message, Shipment):
                self._merge(message)
            elif isinstance(message, tuple) and message[:1] == ("stopped",):
                return

    def _merge(self, shipment: Shipment) -> None:
        with self.engine_lock:
            global_index = np.array(
                [self.engine.exporters.index_of(address, domain) for address, domain in shipment.exporters],
                np.uint32,
            )
            for start, views in sorted(shipment.windows.items()):
                for state in views.values():
                    state.exporters.compact()
                    if len(state.exporters.keys):
                        keys = global_index[state.exporters.keys.astype(np.intp)]
                        sums = state.exporters.sums
                        state.exporters.keys = state.exporters.keys[:0]
                        state.exporters.sums = state.exporters.sums[:0]
                        state.exporters.add(keys, sums)
                self.engine.merge_partial(start, views, shipment.arrival_ms)
        self.counters.set_external(f"worker-{shipment.worker}", shipment.counters)
        self.kernel_drops.update(shipment.kernel_drops)
        self.counters.add("workers_shipments_total", worker=str(shipment.worker))
