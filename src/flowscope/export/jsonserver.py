"""The flow stream as newline-delimited JSON over TCP, to every consumer that connects.

This is the link of the original architecture (IPFIXcol → JSON over TCP → Spark Streaming): Spark's
socket source, ``nc`` or any script can read it. The collector must never wait for a consumer:
each client has a bounded buffer; a batch that does not fit is dropped for that client (whole
batches only, so lines are never cut) and counted.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections import deque
from dataclasses import dataclass

from flowscope.metrics import Counters

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JsonServerConfig:
    host: str = "127.0.0.1"
    port: int = 4740
    client_buffer_bytes: int = 64 << 20  # per consumer, before batches are dropped for it
    max_clients: int = 64


class _Client:
    __slots__ = ("address", "buffered_bytes", "chunks", "label", "sock")

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.label = address
        self.chunks: deque[memoryview] = deque()
        self.buffered_bytes = 0


class JsonServer:
    """Accepts consumers and fans every published batch out to all of them."""

    def __init__(self, config: JsonServerConfig, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self._clients: dict[int, _Client] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._running = False

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.config.host, self.config.port))
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="json-server", daemon=True)
        self._thread.start()
        log.info("JSON flow stream on %s:%d", *self.bound_address)

    def stop(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for client in self._clients.values():
                client.sock.close()
            self._clients.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self._listener = self._selector = self._wake_r = self._wake_w = None

    @property
    def bound_address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("JsonServer is not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # ---------------------------------------------------------------- publish
    def publish(self, data: bytes, flows: int) -> None:
        """Queue one batch of lines for every client; never blocks on a slow client."""
        if not data:
            return
        view = memoryview(data)
        queued = False
        with self._lock:
            for client in self._clients.values():
                if client.buffered_bytes + len(data) > self.config.client_buffer_bytes:
                    self.counters.add("json_stream_dropped_flows_total", flows, client=client.label)
                    continue
                client.chunks.append(view)
                client.buffered_bytes += len(data)
                queued = True
        if queued:
            self.counters.add("json_stream_flows_total", flows)
            self._wake()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError, OSError):  # a wake-up is already pending
                self._wake_w.send(b"\0")

    # ------------------------------------------------------------------- loop
    def _loop(self) -> None:
        assert self._selector is not None
        while self._running:
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    self._on_client_event(key.data)
            self._update_interest()

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        if self.client_count >= self.config.max_clients:
            self.counters.add("json_stream_refused_total", reason="max_clients")
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        client = _Client(sock, f"{peer[0]}:{peer[1]}")
        with self._lock:
            self._clients[sock.fileno()] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        self.counters.add("json_stream_connections_total")
        log.info("JSON stream consumer connected: %s", client.label)

    def _on_client_event(self, client: _Client) -> None:
        # Readable: the consumer closed (or sent something we ignore). Writable: send more.
        try:
            data = client.sock.recv(4096, socket.MSG_DONTWAIT)
            if data == b"":
                self._drop_client(client)
                return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop_client(client)
            return
        self._send(client)

    def _send(self, client: _Client) -> None:
        while True:
            with self._lock:
                if not client.chunks:
                    return
                chunk = client.chunks[0]
            try:
                sent = client.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop_client(client)
                return
            self.counters.add("json_stream_bytes_total", sent)
            with self._lock:
                client.buffered_bytes -= sent
                if sent == len(chunk):
                    client.chunks.popleft()
                else:
                    client.chunks[0] = chunk[sent:]

    def _update_interest(self) -> None:
        assert self._selector is not None
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.chunks else 0)
            try:
                self._selector.modify(client.sock, events, client)
            except (KeyError, ValueError, OSError):
                continue
            if client.chunks:
                self._send(client)

    def _drop_client(self, client: _Client) -> None:
        assert self._selector is not None
        # Counted before the client leaves the table: whoever sees it gone sees it counted too.
        self.counters.add("json_stream_disconnections_total")
        with self._lock:
            self._clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        log.info("JSON stream consumer left: %s", client.label)
