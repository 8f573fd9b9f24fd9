"""TcpIpfixListener on real sockets: concurrent exporters, split messages, bad headers."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.integration.collect.helpers import Collected, Started, needs_ipv6, wait_until

from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.files import read_ipfix_file, read_raw_datagrams
from flowscope.collect.tcp import TcpIpfixListener, TcpListenerConfig
from flowscope.errors import ConfigError
from flowscope.metrics import Counters

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data"
EXAMPLE_FLOWS = [d.payload for d in read_ipfix_file(DATA / "ipfixcol2" / "example_flows.ipfix")]
IPFIX_DAT = [d.payload for d in read_raw_datagrams(DATA / "logstash-codec-netflow" / "ipfix.dat")]


@pytest.fixture
def listen(start: Started, sink: Collected, counters: Counters) -> Callable[..., TcpIpfixListener]:
    def make(
        host: str = "127.0.0.1", allowlist: ExporterAllowlist | None = None, **values: int
    ) -> TcpIpfixListener:
        config = TcpListenerConfig(host=host, port=0, **{"flush_interval_ms": 20, **values})
        return start(TcpIpfixListener(config, sink, counters, allowlist=allowlist))

    return make


def connect(listener: TcpIpfixListener) -> socket.socket:
    host, port = listener.bound_address
    client = socket.create_connection(("127.0.0.1" if host == "0.0.0.0" else host, port), timeout=5)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def send_in_pieces(client: socket.socket, stream: bytes, sizes: Iterator[int]) -> None:
    position = 0
    while position < len(stream):
        size = next(sizes)
        client.sendall(stream[position : position + size])
        position += size
        time.sleep(0.0005)  # separate segments, so the server sees separate recv() calls


def closed_by_peer(client: socket.socket) -> bool:
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def test_three_concurrent_exporters_with_messages_split_across_sends(
    listen: Callable[..., TcpIpfixListener], sink: Collected, counters: Counters
) -> None:
    listener = listen()
    streams = [EXAMPLE_FLOWS[i::3] + IPFIX_DAT for i in range(3)]
    clients = [connect(listener) for _ in streams]
    ports = [client.getsockname()[1] for client in clients]
    splits = [(1, 7, 15, 16, 17, 100, 3000), (3, 13, 2, 5000, 16), (16, 16, 1, 1, 1, 999)]
    threads = [
        threading.Thread(target=send_in_pieces, args=(client, b"".join(stream), itertools.cycle(split)))
        for client, stream, split in zip(clients, streams, splits, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(map(len, streams))
    received = sink.wait_for(total)
    assert len(received) == total
    for port, stream in zip(ports, streams, strict=True):
        assert [d.payload for d in received if d.port == port] == stream  # whole, in order
    assert {d.exporter for d in received} == {"127.0.0.1"}
    assert listener.connection_count == 3
    for client in clients:
        client.close()
    assert wait_until(lambda: listener.connection_count == 0)
    label = listener.listener
    assert counters.get("collector_connections_total", listener=label, exporter="127.0.0.1") == 3
    assert (
        counters.get("collector_connections_closed_total", listener=label, reason="eof", exporter="127.0.0.1")
        == 3
    )
    assert wait_until(
        lambda: counters.get("collector_datagrams_total", listener=label, exporter="127.0.0.1") == total
    )
    assert counters.get("collector_bytes_total", listener=label, exporter="127.0.0.1") == sum(
        len(m) for stream in streams for m in stream
    )


@pytest.mark.parametrize(
    ("bad_header", "reason"),
    [(b"\x00\x09\x00\x40" + b"\x00" * 12, "bad_version"), (b"\x00\x0a\x00\x08" + b"\x00" * 12, "bad_length")],
)
def test_a_bad_header_closes_only_its_own_connection(
    listen: Callable[..., TcpIpfixListener],
    sink: Collected,
    counters: Counters,
    bad_header: bytes,
    reason: str,
) -> None:
    listener = listen()
    good, bad = connect(listener), connect(listener)
    good.sendall(IPFIX_DAT[0])
    sink.wait_for(1)
    bad.sendall(IPFIX_DAT[1] + bad_header + IPFIX_DAT[2])
    assert closed_by_peer(bad)
    good.sendall(IPFIX_DAT[1][:10])
    time.sleep(0.02)
    good.sendall(IPFIX_DAT[1][10:] + IPFIX_DAT[2])
    received = sink.wait_for(4)
    good_port, bad_port = good.getsockname()[1], bad.getsockname()[1]
    assert [d.payload for d in received if d.port == good_port] == IPFIX_DAT
    assert [d.payload for d in received if d.port == bad_port] == [IPFIX_DAT[1]]  # before the bad header
    label = listener.listener
    assert wait_until(
        lambda: (
            counters.get("collector_dropped_total", listener=label, reason=reason, exporter="127.0.0.1") == 1
        )
    )
    assert (
        counters.get(
            "collector_connections_closed_total", listener=label, reason=reason, exporter="127.0.0.1"
        )
        == 1
    )
    assert listener.connection_count == 1
    good.close()
    bad.close()


def test_a_message_cut_by_the_end_of_the_stream_is_counted(
    listen: Callable[..., TcpIpfixListener], sink: Collected, counters: Counters
) -> None:
    listener = listen()
    client = connect(listener)
    client.sendall(IPFIX_DAT[0] + IPFIX_DAT[1][:30])
    client.close()
    assert [d.payload for d in sink.wait_for(1)] == [IPFIX_DAT[0]]
    label = listener.listener
    assert wait_until(
        lambda: (
            counters.get("collector_dropped_total", listener=label, reason="truncated", exporter="127.0.0.1")
            == 1
        )
    )
    assert (
        counters.get(
            "collector_dropped_bytes_total", listener=label, reason="truncated", exporter="127.0.0.1"
        )
        == 30
    )


@needs_ipv6
@pytest.mark.parametrize(
    ("host", "target", "exporter"), [("::1", "::1", "::1"), ("::", "127.0.0.1", "127.0.0.1")]
)
def test_ipv6_and_dual_stack(
    listen: Callable[..., TcpIpfixListener], sink: Collected, host: str, target: str, exporter: str
) -> None:
    listener = listen(host)
    with socket.create_connection((target, listener.bound_address[1]), timeout=5) as client:
        client.sendall(b"".join(IPFIX_DAT))
        received = sink.wait_for(3)
    assert [(d.exporter, d.payload) for d in received] == [(exporter, m) for m in IPFIX_DAT]


def test_exporters_outside_the_allowlist_are_refused(
    listen: Callable[..., TcpIpfixListener], sink: Collected, counters: Counters
) -> None:
    listener = listen(allowlist=ExporterAllowlist(["192.0.2.0/24"]))
    client = connect(listener)
    client.sendall(IPFIX_DAT[0])
    assert closed_by_peer(client)
    client.close()
    label = listener.listener
    assert (
        counters.get(
            "collector_connections_rejected_total", listener=label, reason="not_allowed", exporter="127.0.0.1"
        )
        == 1
    )
    assert wait_until(
        lambda: (
            counters.get(
                "collector_dropped_total", listener=label, reason="not_allowed", exporter="127.0.0.1"
            )
            == 1
        )
    )
    assert sink.datagrams == []


def test_connections_beyond_max_connections_are_refused(
    listen: Callable[..., TcpIpfixListener], sink: Collected, counters: Counters
) -> None:
    listener = listen(max_connections=2)
    first, second = connect(listener), connect(listener)
    assert wait_until(lambda: listener.connection_count == 2)
    third = connect(listener)
    assert closed_by_peer(third)
    first.sendall(IPFIX_DAT[0])
    second.sendall(IPFIX_DAT[1])
    assert len(sink.wait_for(2)) == 2
    assert (
        counters.get(
            "collector_connections_rejected_total",
            listener=listener.listener,
            reason="max_connections",
            exporter="127.0.0.1",
        )
        == 1
    )
    for client in (first, second, third):
        client.close()


def test_batches_by_size_and_by_time(listen: Callable[..., TcpIpfixListener], sink: Collected) -> None:
    listener = listen(batch_max=10, flush_interval_ms=200)
    with connect(listener) as client:
        sent_at = time.monotonic()
        client.sendall(b"".join(EXAMPLE_FLOWS[:25]))
        sink.wait_for(25)
    sizes = [len(batch) for _, batch in sink.batches]
    assert sizes == [10, 10, 5]
    assert sink.batches[-1][0] - sent_at >= 0.15  # the remainder waited for the interval


def test_stop_is_prompt_with_open_connections_and_flushes(
    sink: Collected, counters: Counters, listen: Callable[..., TcpIpfixListener]
) -> None:
    listener = listen(batch_max=1000, flush_interval_ms=60_000)
    clients = [connect(listener) for _ in range(3)]
    for client in clients:
        client.sendall(IPFIX_DAT[0])
    assert wait_until(lambda: listener.connection_count == 3)
    time.sleep(0.2)  # let the listener read them (nothing is flushed before stop)
    assert sink.datagrams == []
    began = time.monotonic()
    listener.stop()
    assert time.monotonic() - began < 0.5
    assert len(sink.datagrams) == 3
    assert all(closed_by_peer(client) for client in clients)
    assert (
        counters.total("collector_connections_closed_total", listener=listener.listener, reason="stopped")
        == 3
    )
    for client in clients:
        client.close()


def test_lifecycle_and_config(sink: Collected, counters: Counters) -> None:
    listener = TcpIpfixListener(TcpListenerConfig(host="127.0.0.1", port=0), sink, counters)
    with pytest.raises(RuntimeError):
        _ = listener.bound_address
    listener.stop()
    with listener, pytest.raises(RuntimeError):
        listener.start()
    for field, value in [("port", -1), ("batch_max", 0), ("flush_interval_ms", -1), ("max_connections", 0)]:
        with pytest.raises(ConfigError, match=field):
            TcpListenerConfig(**{field: value})  # type: ignore[arg-type]
