"""What the web app reads: the store, the engine, the counters, the live sinks, the decoder state.

``Dashboard.from_service`` takes them from a running ``flowscope run`` service; tests build one
by hand over a real store and engine. Nothing here copies data: every request reads the live
objects (the engine under its lock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowscope.aggregate.engine import Engine
from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.serve.exporters import ExporterActivity
from flowscope.serve.hosts import EngineHostLookup, HostLookup
from flowscope.serve.params import Catalog
from flowscope.serve.sinks import ExporterTraffic, LiveBroadcaster, wall_clock_ms
from flowscope.store import ResultStore

if TYPE_CHECKING:
    from flowscope.pipeline import Service

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _no_decoder() -> DecoderSession | None:
    return None


def _no_drops() -> Mapping[str, int | None]:
    return {}


@dataclass
class Dashboard:
    store: ResultStore
    engine: Engine
    engine_lock: AbstractContextManager[Any]
    counters: Counters
    broadcaster: LiveBroadcaster
    traffic: ExporterTraffic
    hosts: HostLookup
    activity: ExporterActivity | None = None
    decoder: Callable[[], DecoderSession | None] = _no_decoder  # the live decoder state, if in this process
    workers: int = 0  # collector worker processes (their decoder state is not visible here)
    kernel_drops: Callable[[], Mapping[str, int | None]] = _no_drops
    token: str = ""
    heartbeat_ms: int = 15_000
    static_dir: Path = STATIC_DIR
    clock_ms: Callable[[], int] = wall_clock_ms
    started_ms: int = field(default_factory=wall_clock_ms)

    @property
    def catalog(self) -> Catalog:
        config = self.engine.config
        return Catalog.of(config.windows_ms, config.stats.view_names)

    def start(self) -> None:
        if self.activity is not None:
            self.activity.start()

    def stop(self) -> None:
        """Ends the live streams (so the server can shut down) and the activity poller."""
        self.broadcaster.close()
        if self.activity is not None:
            self.activity.stop()

    @classmethod
    def from_service(cls, service: Service, **options: Any) -> Dashboard:
        def decoder() -> DecoderSession | None:
            return service.collector.session if service.collector is not None else None

        def kernel_drops() -> dict[str, int | None]:
            drops: dict[str, int | None] = {}
            if service.collector is not None:
                drops = {listener.listener: listener.kernel_drops() for listener in service.collector.udp_listeners}
            if service.workers is not None:
                drops.update(service.workers.kernel_drops)
            return drops

        lock: AbstractContextManager[Any] = service.engine_output.lock
        hosts = EngineHostLookup(service.store, service.engine, lock)
        return cls(
            store=service.store, engine=service.engine, engine_lock=lock, counters=service.counters,
            broadcaster=service.broadcaster, traffic=service.traffic, hosts=hosts,
            activity=ExporterActivity(service.counters), decoder=decoder, workers=service.config.workers,
            kernel_drops=kernel_drops, token=service.config.web_token, **options,
        )
