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
import selectors
import socket
import struct
from dataclasses import dataclass, field

from flowscope.collect import Batcher, ClockMs, DatagramSink, bind_socket, exporter_text, wall_clock_ms
from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.listener import ThreadedListener, check_listener_config
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
        check_listener_config("TCP", self.port, self.batch_max, self.flush_interval_ms)
        if self.max_connections < 1:
            raise ConfigError(f"max_connections: {self.max_connections} must be >= 1")


@dataclass(slots=True, eq=False)
class _Connection:
    sock: socket.socket
    exporter: str
    port: int
    buffer: bytearray = field(default_factory=bytearray)


class TcpIpfixListener(ThreadedListener[TcpListenerConfig]):
    """Accepts IPFIX exporters over TCP and hands each complete message to ``sink`` in batches.

    A message is cut from the stream by its header (version 10, length >= 16), however the bytes
    were split across ``recv()`` calls. A bad header means the stream cannot be re-synchronised:
    that connection alone is closed and counted (``collector_dropped_total{reason="bad_version"}``
    or ``"bad_length"``). Exporters outside ``allowlist`` and connections beyond
    ``max_connections`` are closed at once (``collector_connections_rejected_total{reason}``).
    """

    kind = "tcp"
    _log = log

    def __init__(
        self,
        config: TcpListenerConfig,
        sink: DatagramSink,
        counters: Counters,
        allowlist: ExporterAllowlist | None = None,
        clock_ms: ClockMs = wall_clock_ms,
    ) -> None:
        super().__init__(config, sink, counters, allowlist, clock_ms)
        self._connections: dict[socket.socket, _Connection] = {}

    # -- introspection -----------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Exporters connected right now."""
        return len(self._connections)

    # -- ThreadedListener hooks ---------------------------------------------------------------

    def _bind(self) -> socket.socket:
        return bind_socket(self._config.host, self._config.port, socket.SOCK_STREAM)

    def _configure(self, sock: socket.socket) -> None:
        sock.listen(min(self._config.max_connections, socket.SOMAXCONN))

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
        finally:  # also after a failure: every connection is closed and counted
            for connection in list(self._connections.values()):
                self._close(connection, selector, batcher, "stopped")
            selector.close()

    # -- internals ---------------------------------------------------------------------------

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
