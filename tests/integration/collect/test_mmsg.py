"""MultiReceiver (recvmmsg) on real sockets, and the UDP listener on both of its receive paths."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from tests.integration.collect.helpers import Collected, Started, needs_ipv6, wait_until

from flowscope.collect import mmsg
from flowscope.collect.mmsg import MultiReceiver
from flowscope.collect.udp import UdpListener, UdpListenerConfig
from flowscope.metrics import Counters

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mmsg.available(), reason="recvmmsg needs Linux"),
]


@pytest.fixture
def receiving() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("::", 0))
        sock.setblocking(False)
        yield sock


def _wait_readable(sock: socket.socket, receiver: MultiReceiver, count: int) -> list[tuple[bytes, tuple[str, int]]]:
    received: list[tuple[bytes, tuple[str, int]]] = []

    def more() -> bool:
        received.extend(receiver.receive())
        return len(received) >= count

    assert wait_until(more), f"received {len(received)} of {count}"
    return received


def test_many_datagrams_per_call_whole_in_order_with_their_senders(receiving: socket.socket) -> None:
    receiver = MultiReceiver(receiving, slots=8)
    assert receiver.receive() == []  # nothing waiting: an empty list, no exception
    port = receiving.getsockname()[1]
    payloads = [bytes([i]) * (100 + i) for i in range(20)] + [b"", b"\xab" * 65_507]  # empty and largest IPv4
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        for payload in payloads:
            sender.sendto(payload, ("127.0.0.1", port))
        sender_port = sender.getsockname()[1]
    received = _wait_readable(receiving, receiver, len(payloads))
    assert [payload for payload, _ in received] == payloads
    # The same text as recvfrom on this dual-stack socket gives: IPv4-mapped.
    assert {sender for _, sender in received} == {("::ffff:127.0.0.1", sender_port)}


@needs_ipv6
def test_ipv6_sender(receiving: socket.socket) -> None:
    receiver = MultiReceiver(receiving)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
        sender.bind(("::1", 0))
        sender.sendto(b"six", ("::1", receiving.getsockname()[1]))
        sender_port = sender.getsockname()[1]
    assert _wait_readable(receiving, receiver, 1) == [(b"six", ("::1", sender_port))]


def test_a_queued_socket_error_is_raised_and_the_receiver_keeps_working() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()  # nobody listens there: the kernel answers with ICMP port unreachable
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", closed_port))
        sock.setblocking(False)
        receiver = MultiReceiver(sock)
        sock.send(b"x")
        errors: list[OSError] = []

        def refused() -> bool:
            try:
                receiver.receive()
            except OSError as error:
                errors.append(error)
            return bool(errors)

        assert wait_until(refused)
        assert isinstance(errors[0], ConnectionRefusedError)
        assert receiver.receive() == []


@pytest.mark.parametrize("multi", [True, False], ids=["recvmmsg", "recvfrom"])
def test_listener_delivers_the_same_on_both_receive_paths(
    multi: bool, start: Started, sink: Collected, counters: Counters, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not multi:  # the portable path, as on a platform without recvmmsg
        monkeypatch.setattr(mmsg, "available", lambda: False)
    config = UdpListenerConfig(host="127.0.0.1", port=0, receive_buffer_bytes=4 << 20, batch_max=16,
                               flush_interval_ms=20)
    listener = start(UdpListener(config, sink, counters, clock_ms=lambda: 42))
    payloads = [i.to_bytes(2, "big") * 200 for i in range(300)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, listener.bound_address)
        sender_port = sender.getsockname()[1]
    received = sink.wait_for(len(payloads))
    assert [d.payload for d in received] == payloads
    assert {(d.exporter, d.port, d.time_received_ms) for d in received} == {("127.0.0.1", sender_port, 42)}
    assert max(len(batch) for _, batch in sink.batches) <= 16
    listener.stop()
    assert counters.get("collector_datagrams_total", listener=listener.listener, exporter="127.0.0.1") == 300
