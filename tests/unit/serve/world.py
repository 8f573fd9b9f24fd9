"""A small flowscope for the web tests: a real store (in a temporary directory) filled by a real
engine fed with FlowBatches, the live sinks next to the store, a controllable clock, and the app
over all of it behind Starlette's TestClient."""

from __future__ import annotations

import threading
from pathlib import Path

from starlette.testclient import TestClient

from flowscope.aggregate.engine import Engine, EngineConfig
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.serve.app import build_app
from flowscope.serve.dashboard import Dashboard
from flowscope.serve.exporters import ExporterActivity
from flowscope.serve.hosts import EngineHostLookup
from flowscope.serve.sinks import ExporterTraffic, FanOut, LiveBroadcaster
from flowscope.store import ResultStore, StoreConfig
from support.flows import make_batch

T0 = 1_795_784_400_000  # 2026-11-27T13:00:00Z, the start of an hour
EXPORTER = ("192.0.2.1", 5)
SSH_VIEW = ViewSpec("ssh", "proto tcp and dst port 22")


class World:
    """Store + engine + sinks + dashboard + app, with the engine's clock in the test's hands."""

    def __init__(self, tmp_path: Path, *, token: str = "", watched: tuple[str, ...] = ("10.0.0.1",),
                 local: tuple[str, ...] = ("10.0.0.0/8",), heartbeat_ms: int = 200) -> None:
        self.now_ms = T0
        self.counters = Counters()
        self.store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")), self.counters)
        self.store.start()
        self.broadcaster = LiveBroadcaster(self.counters, max_queued=64)
        self.traffic = ExporterTraffic(1000, clock_ms=self.clock)
        self.exporters = ExporterTable()
        self.exporters.index_of(*EXPORTER)
        spec = StatsSpec(views=(SSH_VIEW,), watched_hosts=watched, local_networks=local)
        config = EngineConfig(windows_ms=(1_000, 60_000, 3_600_000), grace_ms=1_000, provisional_interval_ms=0,
                              report_provisional_interval_ms=0, stats=spec)
        self.engine = Engine(config, FanOut([self.store, self.broadcaster, self.traffic], self.counters),
                             self.exporters, self.counters, clock_ms=self.clock)
        self.engine.start()
        self.lock = threading.Lock()
        self.session: DecoderSession | None = None
        self.hosts = EngineHostLookup(self.store, self.engine, self.lock)
        self.activity = ExporterActivity(self.counters, clock_ms=self.clock)
        self.dashboard = Dashboard(
            store=self.store, engine=self.engine, engine_lock=self.lock, counters=self.counters,
            broadcaster=self.broadcaster, traffic=self.traffic, hosts=self.hosts, activity=self.activity,
            decoder=lambda: self.session, token=token, heartbeat_ms=heartbeat_ms, clock_ms=self.clock,
            static_dir=tmp_path / "static", started_ms=T0,
        )
        self.app = build_app(self.dashboard)
        self.client = TestClient(self.app)

    def clock(self) -> int:
        return self.now_ms

    def feed(self, batch: FlowBatch) -> None:
        with self.lock:
            self.engine.process(batch)

    def at(self, time_ms: int) -> None:
        """Move the clock and let the engine close and publish what is due."""
        self.now_ms = time_ms
        with self.lock:
            self.engine.tick()

    def close(self) -> None:
        self.client.close()
        self.broadcaster.close()
        self.store.stop()


def second_0(received_ms: int = T0 + 200) -> FlowBatch:
    """14 flows: web (6 × TCP 443), ssh (3 × TCP 22), dns (4 × UDP 53), one ICMP echo."""
    return make_batch(
        14,
        time_received=received_ms, time_start=received_ms - 50, time_end=received_ms,
        src_addr=["10.0.0.1"] * 6 + ["10.0.0.2"] * 3 + ["10.0.0.1"] * 4 + ["10.0.0.3"],
        dst_addr=["203.0.113.5"] * 6 + ["198.51.100.7"] * 3 + ["192.0.2.53"] * 4 + ["192.0.2.1"],
        src_port=[40_000 + i for i in range(13)] + [0],
        dst_port=[443] * 6 + [22] * 3 + [53] * 4 + [8 * 256],
        protocol=[6] * 9 + [17] * 4 + [1],
        packets=[10] * 6 + [20] * 3 + [1] * 4 + [1],
        bytes=[1500] * 6 + [4000] * 3 + [80] * 4 + [84],
        tcp_flags=[0x1B] * 9 + [0] * 5,
    )


def second_1(received_ms: int = T0 + 1_200) -> FlowBatch:
    """3 flows: 2 × TCP 80 from 10.0.0.2, one more DNS query."""
    return make_batch(
        3,
        time_received=received_ms, time_start=received_ms - 10, time_end=received_ms,
        src_addr=["10.0.0.2", "10.0.0.2", "10.0.0.1"], dst_addr=["203.0.113.5", "203.0.113.5", "192.0.2.53"],
        src_port=[41_000, 41_001, 41_002], dst_port=[80, 80, 53], protocol=[6, 6, 17],
        packets=[5, 5, 1], bytes=[700, 700, 80],
    )
