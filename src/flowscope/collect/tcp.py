"""IPFIX over TCP (RFC 7011 §10.4): messages framed by their header, one stream per exporter.

Design: one thread and a ``selectors`` loop serve the listening socket and every connection.
A thread per connection would also work, but the GIL gives it no parallelism, each exporter would
need its own batcher (or a lock around a shared one) and the sink would be called from many
threads at once. With one loop the sink sees exactly the same single-threaded batches as from the
UDP listener, a few hundred connections cost a dict entry each, and ``stop()`` is one wake-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType

from flowscope.collect import (
    Batcher,
    ClockMs,
    DatagramSink,
    bind_socket,
    exporter_text,
    listener_label,
    wall_clock_ms,
)
from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import Datagram

log = logging.getLogger(__name__)

IPFIX_VERSION = 10
IPFIX_HEADER_BYTES = 16
_HEADER = struct.Struct("!HH")
_RECEIVE_BYTES = 256 * 1024
_WAKE = object()


@dataclass(frozen=True, slots=True)
class TcpListenerConfig:
    host: str = "0.0.0.0"
    port: int = 4739
    batch_max: int = 256
    flush_interval_ms: int = 100
    max_connections: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"port: {self.port} is not a TCP port (0-65535)")
        if self.batch_max < 1:
            raise ConfigError(f"batch_max: {self.batch_max} must be >= 1")
        if self.flush_interval_ms < 0:
            raise ConfigError(f"flush_interval_ms: {self.flush_interval_ms} must be >= 0")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections: {self.max_connections} must be >= 1")


@dataclass(slots=True, eq=False)
class _Connection:
    sock: socket.socket
    exporter: str
    port: int
    buffer: bytearray = field(default_factory=bytearray)


class TcpIpfixListener:
    """Accepts IPFIX exporters over TCP and hands each complete message to ``sink`` in batches.

    A message is cut from the stream by its header (version 10, length >= 16), however the bytes
    were split across ``recv()`` calls. A bad header means the stream cannot be re-synchronised:
    that connection alone is closed and counted (``collector_dropped_total{reason="bad_version"}``
    or ``"bad_length"``). Exporters outside ``allowlist`` and connections beyond
    ``max_connections`` are closed at once (``collector_connections_rejected_total{reason}``).
    """

    def __init__(
        self,
        config: TcpListenerConfig,
        sink: DatagramSink,
        counters: Counters,
        allowlist: ExporterAllowlist | None = None,
        clock_ms: ClockMs = wall_clock_ms,
    ) -> None:
        self._config = config
        self._sink = sink
        self._counters = counters
        self._allowlist = allowlist
        self._clock_ms = clock_ms
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._stop_requested = threading.Event()
        self._label = ""
        self._connections: dict[socket.socket, _Connection] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("TcpIpfixListener already started")
        config = self._config
        sock = bind_socket(config.host, config.port, socket.SOCK_STREAM)
        try:
            sock.listen(min(config.max_connections, socket.SOMAXCONN))
            sock.setblocking(False)
            self._wake_r, self._wake_w = os.pipe()
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._label = listener_label("tcp", sock)
        self._stop_requested.clear()
        batcher = Batcher(self._sink, self._counters, self._label, config.batch_max, config.flush_interval_ms)
        self._thread = threading.Thread(
            target=self._run, args=(sock, batcher), name=f"flowscope-{self._label}", daemon=True
        )
        self._thread.start()
        log.info("%s: listening", self._label)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the listening socket and every connection, flush buffered messages. Idempotent."""
        thread, sock = self._thread, self._sock
        if thread is None or sock is None:
            return
        self._stop_requested.set()
        os.write(self._wake_w, b"\0")
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("%s: thread did not stop within %.1f s", self._label, timeout_s)
        sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._thread = None
        self._sock = None
        log.info("%s: stopped", self._label)

    def __enter__(self) -> TcpIpfixListener:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # -- introspection -----------------------------------------------------------------------

    @property
    def bound_address(self) -> tuple[str, int]:
        if self._sock is None:
            raise RuntimeError("TcpIpfixListener not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def listener(self) -> str:
        return self._label

    @property
    def connection_count(self) -> int:
        """Exporters connected right now."""
        return len(self._connections)

    # -- internals ---------------------------------------------------------------------------

    def _run(self, sock: socket.socket, batcher: Batcher) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(sock, selectors.EVENT_READ, None)
            selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            while not self._stop_requested.is_set():
                timeout_s = batcher.timeout_s()
                for key, _ in selector.select(timeout_s):
                    if key.data is None:
                        self._accept(sock, selector, batcher)
                    elif isinstance(key.data, _Connection):
                        self._receive(key.data, selector, batcher)
                batcher.flush_if_due()
        except Exception:
            self._counters.add("collector_listener_failures_total", 1, listener=self._label)
            log.exception("%s: thread failed", self._label)
        finally:
            for connection in list(self._connections.values()):
                self._close(connection, selector, batcher, "stopped")
            selector.close()
            batcher.flush()

    def _accept(self, sock: socket.socket, selector: selectors.BaseSelector, batcher: Batcher) -> None:
        while True:
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. EMFILE: leave the rest in the backlog for now
                self._counters.add(
                    "collector_accept_errors_total", 1, listener=self._label, error=type(error).__name__
                )
                return
            exporter = exporter_text(address[0])
            reason = ""
            if self._allowlist is not None and not self._allowlist.allows(exporter):
                reason = "not_allowed"
            elif len(self._connections) >= self._config.max_connections:
                reason = "max_connections"
            if reason:
                self._counters.add(
                    "collector_connections_rejected_total",
                    1,
                    listener=self._label,
                    reason=reason,
                    exporter=exporter,
                )
                batcher.drop(reason, exporter)
                conn.close()
                continue
            conn.setblocking(False)
            connection = _Connection(conn, exporter, int(address[1]))
            self._connections[conn] = connection
            selector.register(conn, selectors.EVENT_READ, connection)
            self._counters.add("collector_connections_total", 1, listener=self._label, exporter=exporter)
            log.info("%s: exporter %s:%d connected", self._label, exporter, address[1])

    def _receive(self, connection: _Connection, selector: selectors.BaseSelector, batcher: Batcher) -> None:
        try:
            data = connection.sock.recv(_RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._close(connection, selector, batcher, "error", detail=str(error))
            return
        if not data:
            self._close(connection, selector, batcher, "eof")
            return
        buffer = connection.buffer
        buffer += data
        available = len(buffer)
        position = 0
        now_ms = self._clock_ms()
        while available - position >= IPFIX_HEADER_BYTES:
            version, length = _HEADER.unpack_from(buffer, position)
            if version != IPFIX_VERSION or length < IPFIX_HEADER_BYTES:
                reason = "bad_version" if version != IPFIX_VERSION else "bad_length"
                batcher.drop(reason, connection.exporter, available - position)
                detail = f"version={version} length={length}"
                self._close(connection, selector, batcher, reason, detail=detail)
                return
            if available - position < length:
                break
            end = position + length
            batcher.add(Datagram(connection.exporter, now_ms, bytes(buffer[position:end]), connection.port))
            position = end
        if position:
            del buffer[:position]

    def _close(
        self,
        connection: _Connection,
        selector: selectors.BaseSelector,
        batcher: Batcher,
        reason: str,
        detail: str = "",
    ) -> None:
        # counted before the socket closes, so whoever sees the close also sees the count
        self._connections.pop(connection.sock, None)
        if reason in ("eof", "error", "stopped") and connection.buffer:
            batcher.drop("truncated", connection.exporter, len(connection.buffer))
        connection.buffer.clear()
        self._counters.add(
            "collector_connections_closed_total",
            1,
            listener=self._label,
            reason=reason,
            exporter=connection.exporter,
        )
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection.sock)
        connection.sock.close()
        level = logging.INFO if reason in ("eof", "stopped") else logging.WARNING
        log.log(
            level,
            "%s: exporter %s:%d closed (%s) %s",
            self._label,
            connection.exporter,
            connection.port,
            reason,
            detail,
        )
