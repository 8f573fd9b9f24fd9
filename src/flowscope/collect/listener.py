"""The lifecycle shared by the socket listeners: one receiving thread, a wake pipe, a batcher.

``ThreadedListener`` owns everything that does not depend on the protocol: binding happens in
``start()``, which then creates the wake pipe and the ``Batcher`` and starts the thread;
``stop()`` sets the stop event, wakes the thread through the pipe, joins it (warning when it
does not end in time) and closes the socket and the pipe. A subclass supplies the protocol:

- ``_bind()``: a bound socket of its kind (``bind_socket`` with its options);
- ``_configure(sock)``: whatever must happen before the thread starts (may raise: the socket is
  then closed for it);
- ``_run(sock, batcher)``: the receiving loop, in the thread. It sleeps on ``sock`` and on
  ``self._wake_r`` and returns once ``self._stop_requested`` is set. An exception is counted
  (``collector_listener_failures_total``) and logged; the batcher is flushed either way;
- ``_on_stop()``: optional, after the thread ended and before the socket closes.

A subclass sets ``_log`` to its module's logger, so ``flowscope.collect.udp`` still carries
everything its listener logs, start and stop included.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import ClassVar, Generic, Protocol, Self, TypeVar

from flowscope.collect import Batcher, ClockMs, DatagramSink, listener_label, wall_clock_ms
from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.errors import ConfigError
from flowscope.metrics import Counters


class BatchingConfig(Protocol):
    """What the shared lifecycle reads from a listener's configuration."""

    @property
    def batch_max(self) -> int: ...

    @property
    def flush_interval_ms(self) -> int: ...


ConfigT = TypeVar("ConfigT", bound=BatchingConfig)


def check_listener_config(protocol: str, port: int, batch_max: int, flush_interval_ms: int) -> None:
    """The checks every listener configuration makes; ``ConfigError`` names the key."""
    if not 0 <= port <= 65_535:
        raise ConfigError(f"port: {port} is not a {protocol} port (0-65535)")
    if batch_max < 1:
        raise ConfigError(f"batch_max: {batch_max} must be >= 1")
    if flush_interval_ms < 0:
        raise ConfigError(f"flush_interval_ms: {flush_interval_ms} must be >= 0")


class ThreadedListener(ABC, Generic[ConfigT]):
    """Base of the socket listeners: start/stop, context manager, ``bound_address``, ``listener``."""

    kind: ClassVar[str]
    """First part of the ``listener`` label (``udp``, ``tcp``)."""
    _log: ClassVar[logging.Logger] = logging.getLogger(__name__)
    """Where the lifecycle logs; a subclass sets its own module's logger."""

    def __init__(
        self,
        config: ConfigT,
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

    # -- hooks -------------------------------------------------------------------------------

    @abstractmethod
    def _bind(self) -> socket.socket:
        """A new socket bound to the configured address."""

    def _configure(self, sock: socket.socket) -> None:
        """Prepare the bound socket (before it is made non-blocking); nothing by default."""

    @abstractmethod
    def _run(self, sock: socket.socket, batcher: Batcher) -> None:
        """The receiving loop (in the thread), until ``self._stop_requested`` is set."""

    def _on_stop(self) -> None:
        """Called by ``stop()`` once the thread ended, while the socket is still open."""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        sock = self._bind()
        try:
            self._configure(sock)
            sock.setblocking(False)
            self._wake_r, self._wake_w = os.pipe()
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._label = listener_label(self.kind, sock)
        self._stop_requested.clear()
        config = self._config
        batcher = Batcher(self._sink, self._counters, self._label, config.batch_max, config.flush_interval_ms)
        self._thread = threading.Thread(
            target=self._thread_main, args=(sock, batcher), name=f"flowscope-{self._label}", daemon=True
        )
        self._thread.start()
        self._log.info("%s: listening", self._label)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop receiving, flush what is buffered to the sink, close the socket. Idempotent."""
        thread, sock = self._thread, self._sock
        if thread is None or sock is None:
            return
        self._stop_requested.set()
        os.write(self._wake_w, b"\0")
        thread.join(timeout_s)
        if thread.is_alive():
            self._log.warning("%s: receiving thread did not stop within %.1f s", self._label, timeout_s)
        self._on_stop()
        sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1
        self._thread = None
        self._sock = None
        self._log.info("%s: stopped", self._label)

    def __enter__(self) -> Self:
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
            raise RuntimeError(f"{type(self).__name__} not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def listener(self) -> str:
        """The ``listener`` label of this listener's counters (empty before ``start()``)."""
        return self._label

    # -- internals ---------------------------------------------------------------------------

    def _thread_main(self, sock: socket.socket, batcher: Batcher) -> None:
        try:
            self._run(sock, batcher)
        except Exception:
            self._counters.add("collector_listener_failures_total", 1, listener=self._label)
            self._log.exception("%s: receiving thread failed", self._label)
        finally:
            batcher.flush()
