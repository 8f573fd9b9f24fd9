"""UDP listener: NetFlow v5/v9 and IPFIX datagrams from a socket, in batches, from its own thread."""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass

from flowscope.collect import Batcher, ClockMs, DatagramSink, bind_socket, exporter_text, mmsg, wall_clock_ms
from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.listener import ThreadedListener, check_listener_config
from flowscope.collect.mmsg import MultiReceiver
from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import Datagram

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 65_535
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux only; not exported by Python 3.11
_IS_LINUX = sys.platform.startswith("linux")
_NAME_CACHE_MAX = 65_536
_RECEIVE_SLOTS = 32  # datagrams per recvmmsg call; 64 KiB of buffer each
_GATHER_MAX_S = 0.002  # pause after emptying the socket ...
_GATHER_FILL_BYTES_PER_S = 125_000_000  # ... short enough that 1 Gbit/s fills at most a quarter of the buffer


@dataclass(frozen=True, slots=True)
class UdpListenerConfig:
    host: str = "0.0.0.0"
    port: int = 2055
    receive_buffer_bytes: int = 32 * 1024 * 1024  # 0 keeps the OS default
    batch_max: int = 256
    flush_interval_ms: int = 100
    reuse_port: bool = False  # SO_REUSEPORT: several processes share the port, per-source hashing

    def __post_init__(self) -> None:
        check_listener_config("UDP", self.port, self.batch_max, self.flush_interval_ms)
        if self.receive_buffer_bytes < 0:
            raise ConfigError(f"receive_buffer_bytes: {self.receive_buffer_bytes} must be >= 0")


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


class UdpListener(ThreadedListener[UdpListenerConfig]):
    """Receives UDP export datagrams and hands them to ``sink`` in batches.

    ``start()`` binds and starts the receiving thread; ``stop()`` wakes it through a pipe, so it
    returns at once, and flushes what is buffered. Exporters outside ``allowlist`` are dropped
    and counted (``collector_dropped_total{reason="not_allowed"}``).

    The thread sleeps in ``poll()`` on the socket and the wake pipe (with the time left until the
    next batch flush as timeout), then drains the non-blocking socket until it is empty: on Linux
    up to 32 datagrams per ``recvmmsg`` call (``mmsg.MultiReceiver``), elsewhere one ``recvfrom``
    each. Having emptied it, the thread pauses up to 2 ms (less with a small receive buffer)
    before polling again, so that datagrams arriving one by one are received a few at a time
    rather than with a wake-up each. Stop and time-based flushes never wait for traffic.
    """

    kind = "udp"
    _log = log

    def __init__(
        self,
        config: UdpListenerConfig,
        sink: DatagramSink,
        counters: Counters,
        allowlist: ExporterAllowlist | None = None,
        clock_ms: ClockMs = wall_clock_ms,
    ) -> None:
        super().__init__(config, sink, counters, allowlist, clock_ms)
        self._granted_receive_buffer_bytes = 0
        self._kernel_drops_seen = 0
        self._drops_lock = threading.Lock()

    # -- introspection -----------------------------------------------------------------------

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

    # -- ThreadedListener hooks ---------------------------------------------------------------

    def _bind(self) -> socket.socket:
        config = self._config
        return bind_socket(config.host, config.port, socket.SOCK_DGRAM, reuse_port=config.reuse_port)

    def _configure(self, sock: socket.socket) -> None:
        self._granted_receive_buffer_bytes = self._set_receive_buffer(sock)
        self._kernel_drops_seen = 0

    def _on_stop(self) -> None:
        self.kernel_drops()  # the last increase, while the socket still exists

    def _run(self, sock: socket.socket, batcher: Batcher) -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        receiver = MultiReceiver(sock, _RECEIVE_SLOTS) if mmsg.available() else None
        drain = self._drain_many if receiver is not None else self._drain_each
        names: dict[str, str] = {}
        burst: list[Datagram] = []
        drain_max = max(self._config.batch_max, 64)  # then re-check the flush deadline
        granted = self._granted_receive_buffer_bytes
        usable_buffer_bytes = granted // 2 if _IS_LINUX else granted
        gather_s = min(_GATHER_MAX_S, usable_buffer_bytes / 4 / _GATHER_FILL_BYTES_PER_S)
        while not self._stop_requested.is_set():
            timeout_s = batcher.timeout_s()
            poller.poll(-1 if timeout_s is None else math.ceil(timeout_s * 1000))
            if self._stop_requested.is_set():
                break
            emptied = drain(sock, receiver, batcher, names, burst, drain_max)
            if burst:
                batcher.add_all(burst)
                burst.clear()
            batcher.flush_if_due()
            if emptied:
                # Let datagrams gather before the next wake-up: a wake-up per datagram (poll +
                # receive + the thread switch) cost more than the datagram's own work.
                time.sleep(gather_s)

    def _drain_many(
        self, sock: socket.socket, receiver: MultiReceiver | None, batcher: Batcher, names: dict[str, str],
        burst: list[Datagram], drain_max: int,
    ) -> bool:
        """Up to ``drain_max`` waiting datagrams into ``burst``, many per system call (Linux).

        True when the socket was found empty (rather than ``drain_max`` reached)."""
        assert receiver is not None
        clock_ms, allowlist, keep = self._clock_ms, self._allowlist, burst.append
        while len(burst) < drain_max:
            try:
                received = receiver.receive()
            except OSError as error:  # e.g. a queued ICMP error; the socket stays usable
                self._receive_error(error)
                return False
            if not received:
                return True
            received_ms = clock_ms()  # one reading per system call: they were received together
            for payload, (host, port) in received:
                exporter = names.get(host) or _learn_name(names, host)
                if allowlist is not None and not allowlist.allows(exporter):
                    batcher.drop("not_allowed", exporter, len(payload))
                    continue
                keep(Datagram(exporter, received_ms, payload, port))
            if len(received) < receiver.slots:
                return True  # the socket is empty: no further call needed to learn it
        return False

    def _drain_each(
        self, sock: socket.socket, receiver: MultiReceiver | None, batcher: Batcher, names: dict[str, str],
        burst: list[Datagram], drain_max: int,
    ) -> bool:
        """Up to ``drain_max`` waiting datagrams into ``burst``, one ``recvfrom`` each (portable)."""
        receive, clock_ms, allowlist, keep = sock.recvfrom, self._clock_ms, self._allowlist, burst.append
        for _ in range(drain_max):
            try:
                payload, address = receive(MAX_DATAGRAM_BYTES)
            except BlockingIOError:
                return True
            except OSError as error:  # e.g. a queued ICMP error; the socket stays usable
                self._receive_error(error)
                return False
            host = address[0]
            exporter = names.get(host) or _learn_name(names, host)
            if allowlist is not None and not allowlist.allows(exporter):
                batcher.drop("not_allowed", exporter, len(payload))
                continue
            keep(Datagram(exporter, clock_ms(), payload, address[1]))
        return False

    def _receive_error(self, error: OSError) -> None:
        self._counters.add("collector_receive_errors_total", 1, listener=self._label, error=type(error).__name__)

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


def _learn_name(names: dict[str, str], host: str) -> str:
    """The exporter text of a sender address not in the cache yet; the cache is bounded (a flood of
    spoofed senders must not grow it without end)."""
    if len(names) >= _NAME_CACHE_MAX:
        names.clear()
    exporter = names[host] = exporter_text(host)
    return exporter
