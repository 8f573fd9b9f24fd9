"""collect: sockets and files in, ``Datagram`` batches out (DESIGN.md section 1).

Every source turns what it receives into ``Datagram(exporter, time_received_ms, payload, port)``
and hands lists of them to a ``DatagramSink``; nothing here parses flows. Sources:

- ``udp.UdpListener``: NetFlow v5/v9/IPFIX over UDP, IPv4 and IPv6 (dual-stack on ``::``);
- ``tcp.TcpIpfixListener``: IPFIX over TCP, messages framed by their header (RFC 7011 §10.4);
- ``files``: offline readers for pcap/pcapng captures, RFC 5655 IPFIX files and raw payload
  dumps, with ``read_capture`` choosing by content.

Listeners deliver from their own thread, in batches of at most ``batch_max`` datagrams, at the
latest ``flush_interval_ms`` after the first datagram of a batch arrived. Both derive from
``listener.ThreadedListener`` (start/stop, receiving thread, wake pipe). The small pieces shared
by both listeners (the batcher, socket binding, address text) and by the file readers (their
counts) live in this module.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import Datagram

DatagramSink = Callable[[list[Datagram]], None]
"""Receives each batch of datagrams; called from the listener's own thread."""

ClockMs = Callable[[], int]
"""Returns the current time in UTC milliseconds."""

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

_MAPPED_PREFIX = "::ffff:"
_ERROR_LOG_INTERVAL_S = 10.0


def wall_clock_ms() -> int:
    """The system clock as UTC milliseconds (the default ``clock_ms`` of the listeners)."""
    return time.time_ns() // 1_000_000


def exporter_text(host: str) -> str:
    """A socket peer address as exporter text: IPv4-mapped IPv6 (``::ffff:a.b.c.d``) → ``a.b.c.d``."""
    if host[:7].lower() == _MAPPED_PREFIX and "." in host:
        return host[7:]
    return host


def bind_socket(host: str, port: int, kind: socket.SocketKind, *, reuse_port: bool = False) -> socket.socket:
    """A socket of ``kind`` bound to (host, port); ``::`` (or any IPv6 wildcard) binds dual-stack."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(f"host: cannot use {host!r} as a listening address: {error}") from None
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and address[0] == "::":
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:  # pragma: no cover - platforms without dual-stack sockets
                log.warning("dual-stack not available; %s listens on IPv6 only", host)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"cannot bind {host!r} port {port}: {error.strerror}") from error
    except BaseException:
        sock.close()
        raise
    return sock


def listener_label(kind: str, sock: socket.socket) -> str:
    """The ``listener`` counter label: ``udp/127.0.0.1:2055``, ``tcp/[::]:4739``."""
    host, port = sock.getsockname()[:2]
    return f"{kind}/[{host}]:{port}" if ":" in host else f"{kind}/{host}:{port}"


class Batcher:
    """Buffers datagrams and per-exporter counts of one listener thread, flushes them to the sink.

    Used by a single thread only. A flush happens when ``batch_max`` datagrams are buffered or
    when ``flush_interval_ms`` has passed since the first pending datagram or count; counters are
    published at the same moment (so the per-packet cost is a dict update, not a locked
    ``Counters.add``). A sink that raises never stops the listener: the batch is counted as
    dropped (``reason="sink_error"``) and the error logged at a limited rate.
    """

    def __init__(
        self, sink: DatagramSink, counters: Counters, listener: str, batch_max: int, flush_interval_ms: int
    ) -> None:
        self._sink = sink
        self._counters = counters
        self._listener = listener
        self._batch_max = batch_max
        self._flush_interval_s = flush_interval_ms / 1000.0
        self._batch: list[Datagram] = []
        self._received: dict[str, list[int]] = {}  # exporter -> [datagrams, bytes]
        self._dropped: dict[tuple[str, str], list[int]] = {}  # (reason, exporter) -> [datagrams, bytes]
        self._deadline_s: float | None = None
        self._last_error_log_s = -_ERROR_LOG_INTERVAL_S

    def add(self, datagram: Datagram) -> None:
        if self._deadline_s is None:
            self._deadline_s = time.monotonic() + self._flush_interval_s
        self._batch.append(datagram)
        counts = self._received.get(datagram.exporter)
        if counts is None:
            counts = self._received[datagram.exporter] = [0, 0]
        counts[0] += 1
        counts[1] += len(datagram.payload)
        if len(self._batch) >= self._batch_max:
            self.flush()

    def add_all(self, datagrams: list[Datagram]) -> None:
        """``add`` of each datagram in turn (a listener's drained burst), with less work per datagram."""
        start = 0
        while start < len(datagrams):
            if self._deadline_s is None:
                self._deadline_s = time.monotonic() + self._flush_interval_s
            chunk = datagrams[start:start + self._batch_max - len(self._batch)]
            start += len(chunk)
            received = self._received
            for datagram in chunk:
                counts = received.get(datagram.exporter)
                if counts is None:
                    counts = received[datagram.exporter] = [0, 0]
                counts[0] += 1
                counts[1] += len(datagram.payload)
            self._batch.extend(chunk)
            if len(self._batch) >= self._batch_max:
                self.flush()

    def drop(self, reason: str, exporter: str, size: int = 0) -> None:
        """Count one dropped datagram (or connection); published with the next flush."""
        if self._deadline_s is None:
            self._deadline_s = time.monotonic() + self._flush_interval_s
        counts = self._dropped.get((reason, exporter))
        if counts is None:
            counts = self._dropped[(reason, exporter)] = [0, 0]
        counts[0] += 1
        counts[1] += size

    def timeout_s(self) -> float | None:
        """Seconds until the next flush is due, ``None`` when nothing is pending."""
        if self._deadline_s is None:
            return None
        return max(0.0, self._deadline_s - time.monotonic())

    def flush_if_due(self) -> None:
        if self._deadline_s is not None and time.monotonic() >= self._deadline_s:
            self.flush()

    def flush(self) -> None:
        """Publish pending counts, then hand the buffered datagrams to the sink."""
        self._deadline_s = None
        batch, self._batch = self._batch, []
        received, self._received = self._received, {}
        dropped, self._dropped = self._dropped, {}
        add = self._counters.add
        for exporter, (datagrams, size) in received.items():
            add("collector_datagrams_total", datagrams, listener=self._listener, exporter=exporter)
            add("collector_bytes_total", size, listener=self._listener, exporter=exporter)
        for (reason, exporter), (datagrams, size) in dropped.items():
            labels = {"listener": self._listener, "reason": reason, "exporter": exporter}
            add("collector_dropped_total", datagrams, **labels)
            if size:
                add("collector_dropped_bytes_total", size, **labels)
        if not batch:
            return
        add("collector_batches_total", 1, listener=self._listener)
        try:
            self._sink(batch)
        except Exception:
            self._sink_failed(batch)

    def _sink_failed(self, batch: list[Datagram]) -> None:
        self._counters.add("collector_sink_errors_total", 1, listener=self._listener)
        lost: dict[str, int] = {}
        for datagram in batch:
            lost[datagram.exporter] = lost.get(datagram.exporter, 0) + 1
        for exporter, count in lost.items():
            labels = {"listener": self._listener, "reason": "sink_error", "exporter": exporter}
            self._counters.add("collector_dropped_total", count, **labels)
        now_s = time.monotonic()
        if now_s - self._last_error_log_s >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log_s = now_s
            log.exception("%s: sink failed, %d datagrams dropped", self._listener, len(batch))


class ReaderTally:
    """Counts of one file reader run, published into ``Counters`` when its iterator ends or closes."""

    def __init__(self, counters: Counters | None, reader: str) -> None:
        self.counters = counters
        self.reader = reader
        self.datagrams = 0
        self.bytes = 0
        self.skipped: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def counted(self, datagram: Datagram) -> Datagram:
        self.datagrams += 1
        self.bytes += len(datagram.payload)
        return datagram

    def publish(self) -> None:
        if self.counters is None:
            return
        add, reader = self.counters.add, self.reader
        if self.datagrams:
            add("collector_file_datagrams_total", self.datagrams, reader=reader)
            add("collector_file_bytes_total", self.bytes, reader=reader)
        for reason, count in self.skipped.items():
            add("collector_file_skipped_total", count, reader=reader, reason=reason)
        for reason, count in self.errors.items():
            add("collector_file_errors_total", count, reader=reader, reason=reason)


def require_file(path: PathLike) -> os.stat_result:
    """Checks up front that ``path`` exists: ``FileNotFoundError`` naming it, not on first ``next()``."""
    return os.stat(path)
