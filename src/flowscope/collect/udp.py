"""UDP listener: NetFlow v5/v9 and IPFIX datagrams from a socket, in batches, from its own thread."""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import sys
import threading
from dataclasses import dataclass
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

MAX_DATAGRAM_BYTES = 65_535
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux only; not exported by Python 3.11
_IS_LINUX = sys.platform.startswith("linux")
_NAME_CACHE_MAX = 65_536


@dataclass(frozen=True, slots=True)
class UdpListenerConfig:
    host: str = "0.0.0.0"
    port: int = 2055
    receive_buffer_bytes: int = 32 * 1024 * 1024  # 0 keeps the OS default
    batch_max: int = 256
    flush_interval_ms: int = 100
    reuse_port: bool = False  # SO_REUSEPORT: several processes share the port, per-source hashing

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"port: {self.port} is not a UDP port (0-65535)")
        if self.receive_buffer_bytes < 0:
            raise ConfigError(f"receive_buffer_bytes: {self.receive_buffer_bytes} must be >= 0")
        if self.batch_max < 1:
            raise ConfigError(f"batch_max: {self.batch_max} must be >= 1")
        if self.flush_interval_ms < 0:
            raise ConfigError(f"flush_interval_ms: {self.flush_interval_ms} must be >= 0")


def proc_udp_drops(inode: int) -> int | None:
    """The ``drops`` column of /proc/net/udp{,6} for the socket with ``inode``; None if absent."""
    target = str(inode)
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path, encoding="ascii") as table:
                lines = table.readlines()
        except OSError:
            continue
        for line in lines[1:]:
            fields = line.split()
            # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if len(fields) >= 13 and fields[9] == target:
                return int(fields[12])
    return None


class UdpListener:
    """Receives UDP export datagrams and hands them to ``sink`` in batches.

    ``start()`` binds and starts the receiving thread; ``stop()`` wakes it through a pipe, so it
    returns at once, and flushes what is buffered. Exporters outside ``allowlist`` are dropped
    and counted (``collector_dropped_total{reason="not_allowed"}``).

    The thread sleeps in ``poll()`` on the socket and the wake pipe (with the time left until the
    next batch flush as timeout), then drains the non-blocking socket with ``recvfrom_into`` into
    one preallocated 64 KiB buffer until it would block. Under load that is one system call per
    datagram, like a blocking receive, while stop and time-based flushes never wait for traffic.
    """

    def __init__(
        self,
        config: UdpListenerConfig,
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
        self._granted_receive_buffer_bytes = 0
        self._kernel_drops_seen = 0
        self._drops_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("UdpListener already started")
        config = self._config
        sock = bind_socket(config.host, config.port, socket.SOCK_DGRAM, reuse_port=config.reuse_port)
        try:
            self._granted_receive_buffer_bytes = self._set_receive_buffer(sock)
            sock.setblocking(False)
            self._wake_r, self._wake_w = os.pipe()
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._label = listener_label("udp", sock)
        self._stop_requested.clear()
        self._kernel_drops_seen = 0
        batcher = Batcher(self._sink, self._counters, self._label, config.batch_max, config.flush_interval_ms)
        self._thread = threading.Thread(
            target=self._run, args=(sock, batcher), name=f"flowscope-{self._label}", daemon=True
        )
        self._thread.start()
        log.info("%s: listening", self._label)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop receiving, flush buffered datagrams to the sink, close the socket. Idempotent."""
        thread, sock = self._thread, self._sock
        if thread is None or sock is None:
            return
        self._stop_requested.set()
        os.write(self._wake_w, b"\0")
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("%s: receiving thread did not stop within %.1f s", self._label, timeout_s)
        self.kernel_drops()
        sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._thread = None
        self._sock = None
        log.info("%s: stopped", self._label)

    def __enter__(self) -> UdpListener:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # -- introspection -----------------------------------------------------------------------

    @property
    def bound_address(self) -> tuple[str, int]:
        """(host, port) actually bound; with ``port=0`` this is where tests send to."""
        if self._sock is None:
            raise RuntimeError("UdpListener not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def listener(self) -> str:
        """The ``listener`` label of this listener's counters (empty before ``start()``)."""
        return self._label

    @property
    def granted_receive_buffer_bytes(self) -> int:
        """SO_RCVBUF as read back after start. Linux reports twice the usable size."""
        return self._granted_receive_buffer_bytes

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on this socket (buffer full), from /proc/net/udp{,6}.

        The increase since the previous read is added to ``collector_kernel_drops_total``.
        None when not started or when the platform has no such table.
        """
        sock = self._sock
        if sock is None:
            return None
        drops = proc_udp_drops(os.fstat(sock.fileno()).st_ino)
        if drops is None:
            return None
        with self._drops_lock:
            delta = drops - self._kernel_drops_seen
            if delta > 0:
                self._kernel_drops_seen = drops
                self._counters.add("collector_kernel_drops_total", delta, listener=self._label)
        return drops

    # -- internals ---------------------------------------------------------------------------

    def _set_receive_buffer(self, sock: socket.socket) -> int:
        requested = self._config.receive_buffer_bytes
        if requested > 0:
            forced = False
            if _IS_LINUX and os.geteuid() == 0:
                try:  # SO_RCVBUFFORCE ignores net.core.rmem_max (needs CAP_NET_ADMIN)
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, requested)
                    forced = True
                except OSError:
                    forced = False
            if not forced:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)
                except OSError as error:
                    log.warning("SO_RCVBUF %d refused: %s", requested, error)
        granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        usable = granted // 2 if _IS_LINUX else granted
        if usable < requested:
            log.warning(
                "UDP receive buffer: requested %d bytes, kernel granted %d (SO_RCVBUF read back %d); "
                "raise net.core.rmem_max or run with CAP_NET_ADMIN to avoid drops under bursts",
                requested,
                usable,
                granted,
            )
        else:
            log.info("UDP receive buffer: requested %d bytes, SO_RCVBUF read back %d", requested, granted)
        return granted

    def _run(self, sock: socket.socket, batcher: Batcher) -> None:
        try:
            self._receive_loop(sock, batcher)
        except Exception:
            self._counters.add("collector_listener_failures_total", 1, listener=self._label)
            log.exception("%s: receiving thread failed", self._label)
        finally:
            batcher.flush()

    def _receive_loop(self, sock: socket.socket, batcher: Batcher) -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        buffer = bytearray(MAX_DATAGRAM_BYTES)
        view = memoryview(buffer)
        receive = sock.recvfrom_into
        clock_ms = self._clock_ms
        allowlist = self._allowlist
        names: dict[str, str] = {}
        drain_max = max(self._config.batch_max, 64)  # then re-check the flush deadline
        while not self._stop_requested.is_set():
            timeout_s = batcher.timeout_s()
            poller.poll(-1 if timeout_s is None else math.ceil(timeout_s * 1000))
            if self._stop_requested.is_set():
                break
            for _ in range(drain_max):
                try:
                    size, address = receive(buffer)
                except BlockingIOError:
                    break
                except OSError as error:  # e.g. a queued ICMP error; the socket stays usable
                    self._counters.add(
                        "collector_receive_errors_total", 1, listener=self._label, error=type(error).__name__
                    )
                    break
                host = address[0]
                exporter = names.get(host)
                if exporter is None:
                    if len(names) >= _NAME_CACHE_MAX:
                        names.clear()
                    exporter = names[host] = exporter_text(host)
                if allowlist is not None and not allowlist.allows(exporter):
                    batcher.drop("not_allowed", exporter, size)
                    continue
                batcher.add(Datagram(exporter, clock_ms(), bytes(view[:size]), address[1]))
            batcher.flush_if_due()
