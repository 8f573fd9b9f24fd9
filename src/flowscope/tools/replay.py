"""``flowscope replay``: send real export packets over UDP at a chosen rate.

Where the flows come from:

* ``--generate``: the built-in traffic generator (``tools.generate``), encoded as NetFlow v5,
  v9 or IPFIX (``tools.encode``), stamped with the time of sending;
* ``--input CAPTURE...``: capture files (pcap/pcapng, RFC 5655 IPFIX files, raw datagrams). By
  default their flows are decoded and re-encoded in ``--format`` with times shifted so that each
  flow keeps its age relative to the moment it was exported but looks current (sampling already
  applied, biflows split; the flows of all original exporters go out through this run's sources,
  with fresh sequence numbers). With ``--no-restamp`` the original payload bytes are sent as they
  are, the datagrams of each original exporter through one source socket; with ``--loop`` their
  sequence numbers repeat, which a collector sees as exporter restarts.

Pacing: flows are due at ``rate`` per second (times ``multiplier`` during bursts). The sender
keeps a queue of ready datagrams (made in chunks of about ``chunk_s`` worth of flows, at least 30
flows, and stamped with the wall clock when the chunk is made), sends every datagram whose last
flow is due (a small burst), then sleeps until the next one is due. Time comes from
``time.perf_counter``; as the target is cumulative, a late wake-up is caught up by the next burst
and the average rate does not drift. A sender that cannot keep up sends as fast as it can and
reports how far behind the schedule it fell (``max_behind_s``); ``--workers N`` spreads the rate
over N processes.

``--sources K`` sends from K sockets, each with its own encoder and observation domain
(``exporter_id + k``; for v5 the engine type/id), so a collector sees K exporters (K distinct
exporter addresses too when ``--bind`` lists several local addresses).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import multiprocessing.queues
import queue as queue_module
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from flowscope.collect import wall_clock_ms
from flowscope.collect.files import read_capture
from flowscope.decode.session import DecoderSession
from flowscope.errors import ConfigError, FlowscopeError
from flowscope.metrics import Counters
from flowscope.model import FlowBatch
from flowscope.normalize import Normalizer
from flowscope.pipeline import decode_files
from flowscope.tools.encode import FORMATS, Encoder, EncoderConfig, ipv4_mask, make_encoder
from flowscope.tools.generate import (
    BurstSpec,
    GeneratorConfig,
    RateSchedule,
    TrafficGenerator,
    parse_burst,
    parse_duration_s,
)

log = logging.getLogger(__name__)

__all__ = [
    "ReplayConfig",
    "ReplayReport",
    "Replayer",
    "add_replay_parser",
    "cmd_replay",
    "main",
]

MAX_RESTAMP_AGE_MS = 86_400_000  # a replayed flow is at most a day old, whatever the capture says
_CHUNK_MIN_FLOWS = 30  # about one datagram: at low rates a chunk is stamped up to 30 / rate seconds early
_CHUNK_MAX_FLOWS = 32_768
_SPIN_S = 0.0002  # waits shorter than this are not worth a sleep() call
_MAX_SLEEP_S = 0.1
_LATE_GRACE_S = 0.1  # a run with a duration stops this long after it, even if flows are still due
_WORKER_READY_S = 300.0  # workers wait this long for each other to be ready


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    host: str
    port: int
    rate: float = 10_000.0  # flows per second outside bursts
    duration_s: float | None = None
    count: int | None = None  # flows
    format: str = "ipfix"
    inputs: tuple[str, ...] = ()  # capture files; empty = generator
    loop: bool = False
    restamp: bool = True
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    burst: BurstSpec | None = None
    exporter_id: int = 0  # first observation domain / source id / v5 engine
    sources: int = 1
    bind: tuple[str, ...] = ()  # local addresses for the source sockets (cycled)
    max_datagram_bytes: int = 1400
    template_refresh_packets: int = 100
    template_refresh_ms: int = 10_000
    chunk_s: float = 0.01  # flows prepared at once, in seconds of sending
    send_buffer_bytes: int = 4 * 1024 * 1024
    capture_exporter: str = "0.0.0.0"  # exporter label for capture files without addresses
    workers: int = 1  # sender processes sharing the rate and the sources
    share: tuple[int, int] = (0, 1)  # (this worker, workers): which part of the capture flows to send

    def __post_init__(self) -> None:
        if not 0 < self.port < 65_536:
            raise ConfigError(f"to: port {self.port} is not a UDP port (1-65535)")
        if not self.rate > 0:
            raise ConfigError(f"rate: {self.rate} must be > 0 flows/s")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"duration: {self.duration_s} must be > 0 seconds")
        if self.count is not None and self.count <= 0:
            raise ConfigError(f"count: {self.count} must be > 0 flows")
        if self.format not in FORMATS:
            raise ConfigError(f"format: {self.format!r} is not one of {', '.join(FORMATS)}")
        if not 1 <= self.sources <= 4096:
            raise ConfigError(f"sources: {self.sources} must be within 1-4096")
        limit = 0xFFFF if self.format == "v5" else 0xFFFFFFFF
        if self.exporter_id < 0 or self.exporter_id + self.sources - 1 > limit:
            raise ConfigError(f"exporter_id: {self.exporter_id} + {self.sources} sources exceed {limit} "
                              f"({self.format} domain / engine)")
        if not 0 < self.chunk_s <= 1:
            raise ConfigError(f"chunk_s: {self.chunk_s} must be within (0, 1]")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers: {self.workers} must be within 1-256")
        if self.workers > 1 and self.inputs and not self.restamp:
            raise ConfigError("workers: captures sent as they are (--no-restamp) go from one process only")


@dataclass(slots=True)
class ReplayReport:
    """What was sent."""

    to: str
    format: str
    source: str  # "generate", "input" or "input-raw"
    sources: int
    datagrams: int = 0
    flows: int = 0
    bytes: int = 0
    duration_s: float = 0.0  # from the start to the last datagram sent
    rate: float = 0.0  # achieved flows per second
    requested_rate: float = 0.0  # what the schedule asked for over the same time
    datagram_rate: float = 0.0
    skipped_flows: int = 0  # flows the format cannot carry (IPv6 in v5)
    send_errors: int = 0
    max_behind_s: float = 0.0  # the furthest the sender fell behind its schedule
    flows_per_source: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        error = (self.rate / self.requested_rate - 1.0) * 100 if self.requested_rate else 0.0
        lines = [
            f"sent {self.flows} flows in {self.datagrams} datagrams ({self.bytes} bytes) to {self.to} "
            f"as {self.format} from {self.sources} source(s)",
            f"duration {self.duration_s:.3f} s, rate {self.rate:,.0f} flows/s "
            f"(requested {self.requested_rate:,.0f}, {error:+.2f}%), {self.datagram_rate:,.0f} datagrams/s",
        ]
        if self.skipped_flows or self.send_errors:
            lines.append(f"skipped {self.skipped_flows} flows the format cannot carry, "
                         f"{self.send_errors} send errors")
        if self.max_behind_s > 0.05:
            lines.append(f"fell behind the schedule by up to {self.max_behind_s:.3f} s")
        return "\n".join(lines)


# (source index, payload, flows in it)
Packet = tuple[int, bytes, int]


class _Event(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class _Feed(Protocol):
    def next_chunk(self, flows: int, now_ms: int) -> list[Packet] | None:
        """About ``flows`` flows as ready datagrams (maybe none); None once the input is exhausted."""
        ...

    @property
    def skipped(self) -> int: ...


def _interleave(per_source: list[list[Packet]]) -> list[Packet]:
    """Datagrams of several sources, alternating, so every exporter sends at the same pace."""
    if len(per_source) == 1:
        return per_source[0]
    out: list[Packet] = []
    longest = max(map(len, per_source), default=0)
    for i in range(longest):
        out.extend(packets[i] for packets in per_source if i < len(packets))
    return out


class _EncodingFeed:
    """Flows from a source function, split over the sources' encoders."""

    def __init__(self, encoders: list[Encoder], take: Callable[[int, int], FlowBatch], skipped: int = 0) -> None:
        self.encoders = encoders
        self._take = take
        self._skipped = skipped  # flows left out before encoding

    @property
    def skipped(self) -> int:
        return self._skipped + sum(encoder.skipped_total for encoder in self.encoders)

    def next_chunk(self, flows: int, now_ms: int) -> list[Packet] | None:
        batch = self._take(flows, now_ms)
        count = len(batch)
        if count == 0:
            return None
        bounds = np.linspace(0, count, len(self.encoders) + 1).astype(np.int64)
        per_source: list[list[Packet]] = []
        for index, encoder in enumerate(self.encoders):
            low, high = int(bounds[index]), int(bounds[index + 1])
            if high <= low:
                continue
            part = {name: column[low:high] for name, column in batch.columns.items()}
            encoded = encoder.encode(part, now_ms)
            per_source.append([(index, d, n) for d, n in zip(encoded.datagrams, encoded.flows, strict=True)])
        return _interleave(per_source)


class _RestampedFlows:
    """Flows of capture files, handed out in order (cycling with ``loop``), times made current."""

    def __init__(self, flows: FlowBatch, loop: bool) -> None:
        self.flows = flows
        self.loop = loop
        self._cursor = 0
        columns = flows.columns
        received = columns["time_received"].astype(np.int64)
        start = columns["time_start"].astype(np.int64)
        end = columns["time_end"].astype(np.int64)
        # How long before its export a flow ended, and how long it lasted: both kept.
        self._age = np.clip(received - end, 0, MAX_RESTAMP_AGE_MS)
        self._duration = np.clip(end - start, 0, MAX_RESTAMP_AGE_MS)

    def __call__(self, count: int, now_ms: int) -> FlowBatch:
        total = len(self.flows)
        if total == 0 or (self._cursor >= total and not self.loop):
            return FlowBatch.empty()
        if self.loop:
            index = (self._cursor + np.arange(count)) % total
        else:
            index = np.arange(self._cursor, min(self._cursor + count, total))
        self._cursor += len(index)
        if self.loop:
            self._cursor %= total
        batch = self.flows.take(index)
        end = np.int64(now_ms) - self._age[index]
        batch.columns["time_end"] = end
        batch.columns["time_start"] = end - self._duration[index]
        batch.columns["time_received"] = np.full(len(index), now_ms, np.int64)
        return batch


class _RawFeed:
    """Capture payloads sent as they are (``--no-restamp``), each exporter from one source socket."""

    def __init__(self, packets: list[Packet], loop: bool) -> None:
        self.packets = packets
        self.loop = loop
        self._cursor = 0

    @property
    def skipped(self) -> int:
        return 0

    def next_chunk(self, flows: int, now_ms: int) -> list[Packet] | None:
        out: list[Packet] = []
        taken = 0
        total = len(self.packets)
        while taken < flows and total:
            if self._cursor >= total:
                if not self.loop or not any(p[2] for p in self.packets):
                    break
                self._cursor = 0
            packet = self.packets[self._cursor]
            self._cursor += 1
            out.append(packet)
            taken += max(packet[2], 1)
        return out or None


def load_raw_packets(paths: Sequence[str], sources: int, exporter: str = "0.0.0.0") -> list[Packet]:
    """Every datagram of the captures with its number of data records (decoded once to count them).

    Datagrams of one original exporter all leave from the same source socket (exporters are
    spread over the sources in order of appearance), so their sequence numbers stay in order.
    """
    session = DecoderSession(counters=Counters())
    slots: dict[tuple[str, int], int] = {}
    packets: list[Packet] = []
    for path in paths:
        for datagram in read_capture(path, exporter=exporter):
            records = sum(len(r) for r in session.decode([datagram]) if not r.is_options)
            key = (datagram.exporter, datagram.port)
            slot = slots.setdefault(key, len(slots) % sources)
            packets.append((slot, datagram.payload, records))
    return packets


def load_capture_flows(paths: Sequence[str], exporter: str = "0.0.0.0") -> FlowBatch:
    """All flows of the captures, decoded and normalized (sampling applied, biflows split)."""
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(None, session.options, counters)
    batches = [batch for batch, _ in decode_files(list(paths), session, normalizer, exporter=exporter)]
    return FlowBatch.concat(batches)


# ----------------------------------------------------------------------------- the sender
class Replayer:
    """Sends one replay run; ``run`` blocks until the count, duration or input is done, or ``stop``."""

    def __init__(
        self, config: ReplayConfig, clock_ms: Callable[[], int] = wall_clock_ms, stop_event: _Event | None = None
    ) -> None:
        self.config = config
        self._clock_ms = clock_ms
        self._stop: _Event = stop_event if stop_event is not None else threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ setup
    def _encoders(self) -> list[Encoder]:
        config = self.config
        return [
            make_encoder(
                config.format,
                EncoderConfig(
                    max_datagram_bytes=config.max_datagram_bytes,
                    domain=config.exporter_id + k,
                    template_refresh_packets=config.template_refresh_packets,
                    template_refresh_ms=config.template_refresh_ms,
                ),
            )
            for k in range(config.sources)
        ]

    def _feed(self) -> tuple[_Feed, str]:
        config = self.config
        if not config.inputs:
            generator_config = config.generator
            if config.format == "v5":  # v5 cannot carry IPv6: generate none rather than skip them
                generator_config = replace(generator_config, ipv6_share=0.0)
            generator = TrafficGenerator(generator_config)
            return _EncodingFeed(self._encoders(), generator.flows), "generate"
        if not config.restamp:
            return _RawFeed(load_raw_packets(config.inputs, config.sources, config.capture_exporter),
                            config.loop), "input-raw"
        flows = load_capture_flows(config.inputs, config.capture_exporter)
        part, parts = config.share
        if parts > 1:
            flows = flows.take(np.arange(part, len(flows), parts))
        skipped = 0
        if config.format == "v5":  # IPv6 flows are left out once, not at every loop
            v4 = ipv4_mask(flows["src_addr"], flows["dst_addr"])
            skipped = int((~v4).sum())
            flows = flows.take(v4)
        return _EncodingFeed(self._encoders(), _RestampedFlows(flows, config.loop), skipped), "input"

    def _sockets(self) -> list[socket.socket]:
        config = self.config
        try:
            infos = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as error:
            raise ConfigError(f"to: cannot resolve {config.host!r}: {error}") from None
        family, kind, proto, _, address = infos[0]
        sockets: list[socket.socket] = []
        try:
            for k in range(config.sources):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.send_buffer_bytes)
                except OSError as error:  # pragma: no cover - platform limits
                    log.warning("SO_SNDBUF %d refused: %s", config.send_buffer_bytes, error)
                if config.bind:
                    sock.bind((config.bind[k % len(config.bind)], 0))
                sock.connect(address)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    # -------------------------------------------------------------------- run
    def run(self, ready: Callable[[], object] | None = None) -> ReplayReport:
        """Sends until done; ``ready`` is called once everything is prepared, just before the clock starts."""
        config = self.config
        if config.workers > 1:
            return self._run_workers()
        feed, source = self._feed()
        schedule = RateSchedule(config.rate, config.burst)
        limit = config.count
        if config.duration_s is not None:
            by_time = math.floor(schedule.flows_due(config.duration_s) + 1e-9)
            limit = by_time if limit is None else min(limit, by_time)
        report = ReplayReport(to=f"{config.host}:{config.port}", format=config.format if source != "input-raw"
                              else "as captured", source=source, sources=config.sources)
        sockets = self._sockets()
        try:
            self._send(feed, sockets, schedule, limit, report, ready)
        finally:
            for sock in sockets:
                sock.close()
        report.skipped_flows = feed.skipped
        if report.duration_s > 0:
            report.rate = report.flows / report.duration_s
            report.datagram_rate = report.datagrams / report.duration_s
            report.requested_rate = schedule.flows_due(report.duration_s) / report.duration_s
        return report

    def _send(self, feed: _Feed, sockets: list[socket.socket], schedule: RateSchedule, limit: int | None,
              report: ReplayReport, ready: Callable[[], object] | None = None) -> None:
        config = self.config
        perf = time.perf_counter
        sleep = time.sleep
        sends = [sock.send for sock in sockets]
        per_source = [0] * len(sockets)
        queue: deque[Packet] = deque()
        sent_flows = datagrams = octets = errors = 0
        deadline = None if config.duration_s is None else config.duration_s + _LATE_GRACE_S
        max_behind = 0.0
        # The first chunk is made before the clock starts (it also builds the generator's tables).
        first = min(max(int(schedule.rate * config.chunk_s), _CHUNK_MIN_FLOWS), _CHUNK_MAX_FLOWS)
        queue.extend(feed.next_chunk(first if limit is None else min(first, limit), self._clock_ms()) or ())
        if ready is not None:
            ready()
        start = perf()
        last = start
        while not self._stop.is_set():
            elapsed = perf() - start
            if not queue:
                want = int(schedule.rate_at(elapsed) * config.chunk_s)
                want = min(max(want, _CHUNK_MIN_FLOWS), _CHUNK_MAX_FLOWS)
                if limit is not None:
                    want = min(want, limit - sent_flows)
                if want <= 0:
                    break
                packets = feed.next_chunk(want, self._clock_ms())
                if packets is None:
                    break  # the input is exhausted
                if not packets:
                    continue  # nothing this format can carry in this chunk
                queue.extend(packets)
                elapsed = perf() - start
            if deadline is not None and elapsed > deadline:
                break
            due = schedule.flows_due(elapsed)
            behind = (due - sent_flows) / schedule.rate_at(elapsed)
            max_behind = max(max_behind, behind)
            sent_any = False
            while queue:
                index, payload, flows = queue[0]
                if sent_flows + flows > due:
                    break
                queue.popleft()
                try:
                    sends[index](payload)
                except OSError:  # e.g. ECONNREFUSED from an earlier ICMP error, ENOBUFS
                    errors += 1
                    continue
                sent_flows += flows
                per_source[index] += flows
                datagrams += 1
                octets += len(payload)
                sent_any = True
            if sent_any:
                last = perf()
            if queue:
                wait = schedule.time_for(sent_flows + queue[0][2]) - (perf() - start)
                if wait > _SPIN_S:
                    sleep(min(wait, _MAX_SLEEP_S))  # short enough to notice a stop request
        report.flows = sent_flows
        report.datagrams = datagrams
        report.bytes = octets
        report.send_errors = errors
        report.duration_s = last - start
        report.max_behind_s = max_behind
        report.flows_per_source = per_source


    # ---------------------------------------------------------------- workers
    def _run_workers(self) -> ReplayReport:
        """Several sender processes, each with its share of the rate, the count and the sources."""
        configs = worker_configs(self.config)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        barrier = context.Barrier(len(configs))
        results: multiprocessing.queues.Queue[tuple[int, dict[str, Any] | None, str | None]] = context.Queue()
        processes = [
            context.Process(target=_worker_main, args=(c, i, stop, barrier, results), name=f"replay-{i}", daemon=True)
            for i, c in enumerate(configs)
        ]
        for process in processes:
            process.start()
        reports: dict[int, dict[str, Any]] = {}
        failures: list[str] = []
        try:
            while len(reports) + len(failures) < len(processes):
                if self._stop.is_set():
                    stop.set()
                try:
                    index, report, error = results.get(timeout=0.1)
                except queue_module.Empty:
                    if not any(p.is_alive() for p in processes) and results.empty():
                        failures.append("a worker process ended without a report")
                        break
                    continue
                if error is not None:
                    failures.append(f"worker {index}: {error}")
                    stop.set()
                elif report is not None:
                    reports[index] = report
        finally:
            stop.set()
            for process in processes:
                process.join(timeout=10)
        if failures:
            raise FlowscopeError("replay failed: " + "; ".join(failures))
        return merge_reports(self.config, [reports[i] for i in sorted(reports)])


def worker_configs(config: ReplayConfig) -> list[ReplayConfig]:
    """The config of each worker: rate and count divided, sources and domains shared out."""
    workers = config.workers
    sources = max(config.sources, workers)
    configs: list[ReplayConfig] = []
    domain = config.exporter_id
    for index in range(workers):
        own_sources = sources // workers + (1 if index < sources % workers else 0)
        count = None
        if config.count is not None:
            count = config.count // workers + (1 if index < config.count % workers else 0)
        seed = config.generator.seed
        configs.append(
            replace(
                config,
                rate=config.rate / workers,
                count=count,
                sources=own_sources,
                exporter_id=domain,
                generator=replace(config.generator, seed=None if seed is None else seed + index),
                workers=1,
                share=(index, workers),
            )
        )
        domain += own_sources
    return configs


def merge_reports(config: ReplayConfig, parts: Sequence[dict[str, Any]]) -> ReplayReport:
    """One report for the whole run from the workers' reports."""
    first = parts[0]
    report = ReplayReport(to=first["to"], format=first["format"], source=first["source"],
                          sources=sum(p["sources"] for p in parts))
    for name in ("datagrams", "flows", "bytes", "skipped_flows", "send_errors"):
        setattr(report, name, sum(p[name] for p in parts))
    report.duration_s = max(p["duration_s"] for p in parts)
    report.max_behind_s = max(p["max_behind_s"] for p in parts)
    report.flows_per_source = [n for p in parts for n in p["flows_per_source"]]
    if report.duration_s > 0:
        report.rate = report.flows / report.duration_s
        report.datagram_rate = report.datagrams / report.duration_s
        schedule = RateSchedule(config.rate, config.burst)
        report.requested_rate = schedule.flows_due(report.duration_s) / report.duration_s
    return report


def _worker_main(config: ReplayConfig, index: int, stop: _Event, barrier: Any,
                 results: multiprocessing.queues.Queue[tuple[int, dict[str, Any] | None, str | None]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        report = Replayer(config, stop_event=stop).run(ready=lambda: barrier.wait(timeout=_WORKER_READY_S))
        results.put((index, report.as_dict(), None))
    except BaseException as error:  # reported to the parent, which raises
        barrier.abort()
        results.put((index, None, f"{type(error).__name__}: {error}"))


# ----------------------------------------------------------------------------- command line
def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _duration(value: str) -> float:
    try:
        return parse_duration_s(value)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _burst(value: str) -> BurstSpec:
    try:
        return parse_burst(value)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=_host_port, required=True, metavar="HOST:PORT", help="the collector")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--generate", action="store_true", help="send generated traffic")
    what.add_argument("--input", nargs="+", metavar="CAPTURE",
                      help="send the flows of capture files (pcap/pcapng, IPFIX files, raw datagrams)")
    parser.add_argument("--rate", type=float, default=10_000.0, help="flows per second (default 10000)")
    until = parser.add_mutually_exclusive_group()
    until.add_argument("--duration", type=_duration, metavar="S", help="stop after this long (e.g. 60, 10s, 5m)")
    until.add_argument("--count", type=int, metavar="N", help="stop after N flows")
    parser.add_argument("--format", choices=FORMATS, default="ipfix",
                        help="export format of generated or re-stamped flows (default ipfix)")
    parser.add_argument("--loop", action="store_true", help="repeat the captures until --duration/--count")
    parser.add_argument("--no-restamp", action="store_true",
                        help="send capture payloads byte for byte (original times and sequence numbers)")
    parser.add_argument("--seed", type=int, help="generator seed (default: random)")
    parser.add_argument("--exporter-id", type=int, default=0,
                        help="observation domain / source id (v5: engine type<<8|id) of the first source")
    parser.add_argument("--sources", type=int, default=1, help="emulate K exporters (K sockets and domains)")
    parser.add_argument("--workers", type=int, default=1,
                        help="sender processes sharing the rate and the sources (for rates one core cannot send)")
    parser.add_argument("--bind", action="append", metavar="ADDR",
                        help="local address of the source sockets (repeatable; cycled over the sources)")
    parser.add_argument("--burst", type=_burst, metavar="SPEC",
                        help="rate bursts: MULTIPLIERx:DURATION:everyPERIOD, e.g. 5x:2s:every30s")
    parser.add_argument("--max-datagram", type=int, default=1400, metavar="BYTES",
                        help="largest datagram (default 1400; v5 holds 28 records then, 1464 gives 30)")
    parser.add_argument("--template-refresh-packets", type=int, default=100, metavar="N")
    parser.add_argument("--template-refresh", type=_duration, default=10.0, metavar="S")
    parser.add_argument("--local-network", default="10.0.0.0/16", help="generator: the local IPv4 network")
    parser.add_argument("--local-hosts", type=int, default=2_000, help="generator: hosts in the local network")
    parser.add_argument("--remote-hosts", type=int, default=50_000, help="generator: remote hosts")
    parser.add_argument("--web-share", type=float, default=0.6, help="generator: share of flows with web servers")
    parser.add_argument("--ipv6-share", type=float, default=0.15, help="generator: share of IPv6 flows")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def add_replay_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Adds ``replay`` to a ``flowscope`` sub-command set; its handler is ``cmd_replay``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay", parents=list(parents), help="send generated traffic or captures to a collector at a chosen rate",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_arguments(parser)
    parser.set_defaults(handler=cmd_replay)
    return parser


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    host, port = args.to
    generator = GeneratorConfig(
        seed=args.seed,
        local_network=args.local_network,
        local_hosts=args.local_hosts,
        remote_hosts=args.remote_hosts,
        web_share=args.web_share,
        ipv6_share=args.ipv6_share,
    )
    return ReplayConfig(
        host=host,
        port=port,
        rate=args.rate,
        duration_s=args.duration,
        count=args.count,
        format=args.format,
        inputs=tuple(args.input or ()),
        loop=args.loop,
        restamp=not args.no_restamp,
        generator=generator,
        burst=args.burst,
        exporter_id=args.exporter_id,
        sources=args.sources,
        bind=tuple(args.bind or ()),
        workers=args.workers,
        max_datagram_bytes=args.max_datagram,
        template_refresh_packets=args.template_refresh_packets,
        template_refresh_ms=round(args.template_refresh * 1000),
    )


def cmd_replay(args: argparse.Namespace) -> int:
    replayer = Replayer(config_from_args(args))
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: replayer.stop())
    try:
        report = replayer.run()
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
    if args.json:
        print(json.dumps(report.as_dict()), flush=True)
    else:
        print(report.text(), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowscope.tools.replay ...``: the same command without the ``flowscope`` front end."""
    parser = argparse.ArgumentParser(prog="flowscope replay", description=__doc__.split("\n\n")[0] if __doc__ else None)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return cmd_replay(args)
    except (FlowscopeError, FileNotFoundError, OSError) as error:
        print(f"flowscope replay: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
