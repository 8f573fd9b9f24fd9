"""The JSON stream server on real loopback sockets: fan-out, slow consumers, disconnects."""

from __future__ import annotations

import socket
import time

import pytest

from flowscope.export.jsonserver import JsonServer, JsonServerConfig
from flowscope.metrics import Counters

pytestmark = pytest.mark.integration


def _wait_for(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def _read_lines(sock: socket.socket, count: int, timeout_s: float = 10.0) -> list[bytes]:
    sock.settimeout(timeout_s)
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data.splitlines()


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    counters = Counters()
    srv = JsonServer(JsonServerConfig(host="127.0.0.1", port=0, client_buffer_bytes=64 * 1024), counters)
    srv.start()
    yield srv, counters
    srv.stop()


def test_every_consumer_receives_every_batch(server) -> None:  # type: ignore[no-untyped-def]
    srv, counters = server
    consumers = [socket.create_connection(srv.bound_address) for _ in range(3)]
    _wait_for(lambda: srv.client_count == 3)
    lines = [f'{{"n":{i}}}\n'.encode() for i in range(100)]
    for start in range(0, 100, 10):
        srv.publish(b"".join(lines[start : start + 10]), 10)
    for consumer in consumers:
        assert _read_lines(consumer, 100) == [line.rstrip(b"\n") for line in lines]
        consumer.close()
    assert counters.total("json_stream_flows_total") == 100
    assert counters.total("json_stream_dropped_flows_total") == 0


def test_slow_consumer_loses_whole_batches_and_never_stalls_the_publisher() -> None:
    counters = Counters()
    srv = JsonServer(JsonServerConfig(host="127.0.0.1", port=0, client_buffer_bytes=1 << 20), counters)
    srv.start()
    try:
        _slow_consumer_case(srv, counters)
    finally:
        srv.stop()


def _slow_consumer_case(srv: JsonServer, counters: Counters) -> None:
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(srv.bound_address)
    fast = socket.create_connection(srv.bound_address)
    _wait_for(lambda: srv.client_count == 2)
    # 85 kB, 5000 lines per batch; 200 batches = 17 MB, beyond the slow client's 1 MiB queue plus
    # what the kernel's socket buffers (8 MiB send, small receive) can hold for it.
    batch = b"".join(f'{{"flow":{i:06d}}}\n'.encode() for i in range(5000))
    started = time.monotonic()
    received: list[bytes] = []
    fast.settimeout(10)
    for _ in range(200):
        srv.publish(batch, 5000)
        received.append(fast.recv(1 << 22))
    elapsed_s = time.monotonic() - started
    assert elapsed_s < 10, "publishing must not wait for the slow consumer"
    dropped = counters.total("json_stream_dropped_flows_total")
    assert dropped > 0 and dropped % 5000 == 0, "drops are whole batches, counted in flows"
    # The fast consumer keeps up: it receives every line, none cut.
    data = b"".join(received)
    while data.count(b"\n") < 200 * 5000:
        chunk = fast.recv(1 << 22)
        assert chunk, "fast consumer disconnected"
        data += chunk
    assert data.count(b"\n") == 200 * 5000
    # What the slow consumer finally reads are complete lines from whole batches.
    slow.settimeout(2)
    slow_data = b""
    try:
        while True:
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            slow_data += chunk
    except TimeoutError:
        pass
    assert slow_data.endswith(b"\n")
    assert slow_data.count(b"\n") % 5000 == 0
    assert slow_data.count(b"\n") + dropped == 200 * 5000
    slow.close()
    fast.close()


def test_consumer_disconnect_is_noticed(server) -> None:  # type: ignore[no-untyped-def]
    srv, counters = server
    consumer = socket.create_connection(srv.bound_address)
    _wait_for(lambda: srv.client_count == 1)
    consumer.close()
    _wait_for(lambda: srv.client_count == 0)
    assert counters.total("json_stream_disconnections_total") == 1
    srv.publish(b'{"a":1}\n', 1)  # nobody listening: nothing queued, nothing raised
    assert counters.total("json_stream_flows_total") == 0
