"""UdpListener on real sockets (127.0.0.1, ::1, dual-stack ::) with real export payloads."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from tests.integration.collect.helpers import Collected, Started, needs_ipv6, wait_until

from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.files import read_raw_datagrams
from flowscope.collect.udp import UdpListener, UdpListenerConfig
from flowscope.errors import ConfigError
from flowscope.metrics import Counters
from flowscope.model import Datagram

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data"
V5_DATAGRAMS = [d.payload for d in read_raw_datagrams(DATA / "logstash-codec-netflow" / "netflow5.dat")]
IPFIX_MESSAGES = [d.payload for d in read_raw_datagrams(DATA / "logstash-codec-netflow" / "ipfix.dat")]


def config(host: str = "127.0.0.1", **overrides: object) -> UdpListenerConfig:
    values: dict[str, object] = {"host": host, "port": 0, "receive_buffer_bytes": 1 << 20}
    values.update(overrides)
    return UdpListenerConfig(**values)  # type: ignore[arg-type]


def send(payloads: list[bytes], target: tuple[str, int], family: int = socket.AF_INET) -> int:
    """Sends from one socket; returns its source port."""
    with socket.socket(family, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        for payload in payloads:
            sender.sendto(payload, target)
        return int(sender.getsockname()[1])


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)],
)
def test_real_payloads_arrive_whole_with_exporter_and_port(
    start: Started, sink: Collected, counters: Counters, host: str
) -> None:
    family, exporter = (socket.AF_INET6, "::1") if ":" in host else (socket.AF_INET, "127.0.0.1")
    listener = start(UdpListener(config(host), sink, counters, clock_ms=lambda: 1_234))
    port = send(V5_DATAGRAMS + IPFIX_MESSAGES, listener.bound_address, family)
    received = sink.wait_for(15)
    assert [d.payload for d in received] == V5_DATAGRAMS + IPFIX_MESSAGES
    assert {(d.exporter, d.port, d.time_received_ms) for d in received} == {(exporter, port, 1_234)}
    listener.stop()
    label = listener.listener
    assert label.startswith("udp/")
    assert counters.get("collector_datagrams_total", listener=label, exporter=exporter) == 15
    expected_bytes = sum(map(len, V5_DATAGRAMS + IPFIX_MESSAGES))
    assert counters.get("collector_bytes_total", listener=label, exporter=exporter) == expected_bytes


@needs_ipv6
def test_dual_stack_bind_reports_ipv4_peers_as_plain_ipv4(
    start: Started, sink: Collected, counters: Counters
) -> None:
    listener = start(UdpListener(config("::"), sink, counters))
    port = listener.bound_address[1]
    port4 = send(V5_DATAGRAMS[:2], ("127.0.0.1", port), socket.AF_INET)
    port6 = send(V5_DATAGRAMS[2:3], ("::1", port), socket.AF_INET6)
    received = sink.wait_for(3)
    assert sorted((d.exporter, d.port) for d in received) == sorted(
        [("127.0.0.1", port4), ("127.0.0.1", port4), ("::1", port6)]
    )
    assert not any(d.exporter.startswith("::ffff:") for d in received)


def test_datagrams_from_exporters_outside_the_allowlist_are_dropped_and_counted(
    start: Started, sink: Collected, counters: Counters
) -> None:
    refused = start(
        UdpListener(config(flush_interval_ms=20), sink, counters, allowlist=ExporterAllowlist(["10.0.0.0/8"]))
    )
    allowed_sink = Collected()
    allowed = start(
        UdpListener(config(flush_interval_ms=20), allowed_sink, counters, ExporterAllowlist(["127.0.0.0/8"]))
    )
    send(V5_DATAGRAMS[:5], refused.bound_address)
    send(V5_DATAGRAMS[:5], allowed.bound_address)
    assert len(allowed_sink.wait_for(5)) == 5
    wait_until(lambda: counters.total("collector_dropped_total", listener=refused.listener) >= 5)
    assert sink.datagrams == []
    assert (
        counters.get(
            "collector_dropped_total", listener=refused.listener, reason="not_allowed", exporter="127.0.0.1"
        )
        == 5
    )
    assert counters.total("collector_datagrams_total", listener=refused.listener) == 0


def test_batches_flush_by_size(start: Started, sink: Collected, counters: Counters) -> None:
    listener = start(UdpListener(config(batch_max=4, flush_interval_ms=60_000), sink, counters))
    send(V5_DATAGRAMS, listener.bound_address)
    sink.wait_for(12)
    assert [len(batch) for _, batch in sink.batches] == [4, 4, 4]
    assert counters.get("collector_batches_total", listener=listener.listener) == 3


def test_batches_flush_by_time(start: Started, sink: Collected, counters: Counters) -> None:
    listener = start(UdpListener(config(batch_max=1000, flush_interval_ms=150), sink, counters))
    sent_at = time.monotonic()
    send(V5_DATAGRAMS[:3], listener.bound_address)
    sink.wait_for(3)
    assert len(sink.batches) == 1
    flushed_at, batch = sink.batches[0]
    assert len(batch) == 3
    assert 0.1 <= flushed_at - sent_at < 1.5


def test_stop_is_prompt_and_flushes_what_is_buffered(
    start: Started, sink: Collected, counters: Counters
) -> None:
    listener = start(UdpListener(config(batch_max=1000, flush_interval_ms=60_000), sink, counters))
    send(V5_DATAGRAMS[:2], listener.bound_address)
    wait_until(lambda: _queued(listener) <= 0)  # read by the thread, not flushed
    assert sink.datagrams == []
    began = time.monotonic()
    listener.stop()
    assert time.monotonic() - began < 0.5
    assert len(sink.datagrams) == 2
    listener.stop()  # idempotent


def _queued(listener: UdpListener) -> int:
    """Bytes waiting in the socket's receive queue (rx_queue of /proc/net/udp), -1 if unknown."""
    port = listener.bound_address[1]
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            return -1
        for line in lines:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    return -1


def test_stop_without_traffic_is_prompt(
    start: Started, sink: Collected, counters: Counters
) -> None:
    listener = start(UdpListener(config(flush_interval_ms=60_000), sink, counters))
    time.sleep(0.05)
    began = time.monotonic()
    listener.stop()
    assert time.monotonic() - began < 0.5


def test_receive_buffer_is_granted_and_logged(
    sink: Collected, counters: Counters, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowscope.collect.udp")
    listener = UdpListener(UdpListenerConfig(host="127.0.0.1", port=0), sink, counters)  # default 32 MiB
    listener.start()
    try:
        granted = listener.granted_receive_buffer_bytes
    finally:
        listener.stop()
    print(f"granted receive buffer for 32 MiB requested: {granted} bytes")
    assert granted > 0
    assert any(str(granted) in record.getMessage() for record in caplog.records)


def test_kernel_drops_are_read_and_counted(counters: Counters) -> None:
    release = threading.Event()

    def blocking_sink(batch: list[Datagram]) -> None:
        release.wait(10)

    listener = UdpListener(config(receive_buffer_bytes=4096, batch_max=1), blocking_sink, counters)
    listener.start()
    try:
        send(V5_DATAGRAMS * 50, listener.bound_address)  # the thread is stuck in the sink
        drops = listener.kernel_drops()
        if drops is None:
            pytest.skip("no /proc/net/udp on this platform")
        assert drops > 0
        assert counters.get("collector_kernel_drops_total", listener=listener.listener) == drops
        assert listener.kernel_drops() == drops  # reading again does not count twice
        assert counters.get("collector_kernel_drops_total", listener=listener.listener) == drops
    finally:
        release.set()
        listener.stop()


def test_a_failing_sink_does_not_stop_the_listener(start: Started, counters: Counters) -> None:
    good = Collected()
    calls = 0

    def flaky(batch: list[Datagram]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("sink down")
        good(batch)

    listener = start(UdpListener(config(batch_max=1), flaky, counters))
    send(V5_DATAGRAMS[:1], listener.bound_address)
    wait_until(lambda: calls >= 1)
    send(V5_DATAGRAMS[1:3], listener.bound_address)
    assert [d.payload for d in good.wait_for(2)] == V5_DATAGRAMS[1:3]
    assert counters.get("collector_sink_errors_total", listener=listener.listener) == 1
    assert (
        counters.get(
            "collector_dropped_total", listener=listener.listener, reason="sink_error", exporter="127.0.0.1"
        )
        == 1
    )


def test_reuse_port_lets_two_listeners_share_a_port(
    start: Started, sink: Collected, counters: Counters
) -> None:
    first = start(UdpListener(config(reuse_port=True), sink, counters))
    port = first.bound_address[1]
    second = start(UdpListener(config(port=port, reuse_port=True), sink, counters))
    assert second.bound_address == ("127.0.0.1", port)
    send(V5_DATAGRAMS[:4], ("127.0.0.1", port))
    assert len(sink.wait_for(4)) == 4  # one sender: all land on the same socket


def test_lifecycle_errors(sink: Collected, counters: Counters) -> None:
    listener = UdpListener(config(), sink, counters)
    with pytest.raises(RuntimeError):
        _ = listener.bound_address
    assert listener.kernel_drops() is None
    listener.stop()  # never started: no-op
    with listener:
        with pytest.raises(RuntimeError):
            listener.start()
        assert listener.bound_address[0] == "127.0.0.1"
    with pytest.raises(RuntimeError):
        _ = listener.bound_address


def test_bind_problems_name_the_address(
    start: Started, sink: Collected, counters: Counters
) -> None:
    taken = start(UdpListener(config(), sink, counters)).bound_address[1]
    with pytest.raises(OSError, match=f"port {taken}"):
        UdpListener(config(port=taken), sink, counters).start()
    with pytest.raises(ConfigError, match=r"no-such-host\.invalid"):
        UdpListener(config("no-such-host.invalid"), sink, counters).start()


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 70_000), ("batch_max", 0), ("flush_interval_ms", -1), ("receive_buffer_bytes", -5)],
)
def test_invalid_config_names_the_key(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field):
        UdpListenerConfig(**{field: value})  # type: ignore[arg-type]
