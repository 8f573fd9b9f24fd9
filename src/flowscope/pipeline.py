"""Wiring: the one module that knows every stage (collect → decode → normalize → outputs).

``Collector`` runs the listeners, hands their datagram batches over a bounded queue to one
decoding thread, and gives each resulting ``FlowBatch`` to its outputs. ``decode_files`` does the
same for capture files, as fast as they can be read.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from flowscope.collect import PathLike
from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.files import read_capture
from flowscope.collect.tcp import TcpIpfixListener, TcpListenerConfig
from flowscope.collect.udp import UdpListener, UdpListenerConfig
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.metrics import Counters
from flowscope.model import Datagram, ExporterTable, FlowBatch
from flowscope.normalize import NormalizeConfig, Normalizer

log = logging.getLogger(__name__)


class FlowOutput(Protocol):
    """Receives every normalized batch, on the decoding thread (must not block for long)."""

    def write(self, batch: FlowBatch, records: list[RecordSet], exporters: ExporterTable) -> None: ...


@dataclass(frozen=True, slots=True)
class CollectConfig:
    udp: tuple[UdpListenerConfig, ...] = (UdpListenerConfig(port=2055), UdpListenerConfig(port=4739))
    tcp: tuple[TcpListenerConfig, ...] = (TcpListenerConfig(port=4739),)
    allowed_exporters: tuple[str, ...] = ()  # networks; empty = everyone
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    queue_batches: int = 4096  # datagram batches waiting for the decoder before drops
    decode_batch_datagrams: int = 4096  # the decoder merges waiting batches up to this size


class Collector:
    """Listeners → bounded queue → decoder thread → outputs."""

    def __init__(self, config: CollectConfig, outputs: list[FlowOutput], counters: Counters) -> None:
        self.config = config
        self.outputs = outputs
        self.counters = counters
        self.session: DecoderSession | None = None
        self.normalizer: Normalizer | None = None
        self.udp_listeners: list[UdpListener] = []
        self.tcp_listeners: list[TcpIpfixListener] = []
        self._queue: queue.Queue[list[Datagram] | None] = queue.Queue(config.queue_batches)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.session = DecoderSession(self.config.decoder, self.counters, ExporterTable())
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
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            for datagram in batch:
                self.counters.add("collector_dropped_total", exporter=datagram.exporter, reason="decoder_busy")

    def _decode_loop(self) -> None:
        assert self.session is not None and self.normalizer is not None
        limit = self.config.decode_batch_datagrams
        while True:
            first = self._queue.get()
            if first is None:
                return
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
                datagrams.extend(more)
            self._process(datagrams)
            if stop:
                return

    def _process(self, datagrams: list[Datagram]) -> None:
        assert self.session is not None and self.normalizer is not None
        try:
            records = self.session.decode(datagrams)
            batch = self.normalizer.normalize(records)
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
) -> Iterator[tuple[FlowBatch, list[RecordSet]]]:
    """Decode capture files in order through one session, a batch of datagrams at a time."""
    for path in paths:
        pending: list[Datagram] = []
        for datagram in read_capture(path, exporter=exporter, counters=session.counters):
            pending.append(datagram)
            if len(pending) >= batch_datagrams:
                records = session.decode(pending)
                yield normalizer.normalize(records), records
                pending = []
        if pending:
            records = session.decode(pending)
            yield normalizer.normalize(records), records
