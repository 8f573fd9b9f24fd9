"""`flowscope replay` over real UDP on 127.0.0.1, received by ``UdpListener`` and decoded by flowscope.

Each test starts a listener on an ephemeral port, runs a replay into it, waits for every datagram
the replay reports, and decodes them: flows counted, sequence numbers checked by the decoder
(``decode_sequence_lost_total``), kernel drops read from /proc, arrival times from the listener's
clock.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flowscope.collect.files import read_capture
from flowscope.collect.udp import UdpListener, UdpListenerConfig
from flowscope.decode.session import DecoderSession
from flowscope.metrics import Counters
from flowscope.model import Datagram, FlowBatch
from flowscope.normalize import Normalizer
from flowscope.pipeline import decode_files
from flowscope.tools.encode import EncoderConfig, V9Encoder
from flowscope.tools.generate import BurstSpec, GeneratorConfig, RateSchedule, TrafficGenerator
from flowscope.tools.replay import ReplayConfig, Replayer, ReplayReport
from support.pcapwrite import UdpPacket, write_pcap

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data"
IPFIX_FILE = DATA / "ipfixcol2" / "example_flows.ipfix"  # 68 messages, 3,979 flows
V5_FILE = DATA / "logstash-codec-netflow" / "netflow5.dat"
RATE_TOLERANCE = 0.02


class Sink:
    """Collects every datagram the listener delivers."""

    def __init__(self) -> None:
        self.datagrams: list[Datagram] = []
        self._condition = threading.Condition()

    def __call__(self, batch: list[Datagram]) -> None:
        with self._condition:
            self.datagrams.extend(batch)
            self._condition.notify_all()

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[Datagram]:
        with self._condition:
            self._condition.wait_for(lambda: len(self.datagrams) >= count, timeout_s)
            return list(self.datagrams)


@dataclass
class Received:
    report: ReplayReport
    datagrams: list[Datagram]
    flows: FlowBatch
    counters: Counters
    session: DecoderSession
    kernel_drops: int | None


@dataclass
class Receiver:
    listener: UdpListener
    sink: Sink

    @property
    def port(self) -> int:
        return self.listener.bound_address[1]

    def collect(self, report: ReplayReport) -> Received:
        datagrams = self.sink.wait_for(report.datagrams)
        time.sleep(0.05)  # anything beyond what was reported would show up as extra datagrams
        datagrams = self.sink.wait_for(report.datagrams)
        drops = self.listener.kernel_drops()
        counters = Counters()
        session = DecoderSession(counters=counters)
        normalizer = Normalizer(None, session.options, counters)
        batches = [normalizer.normalize(session.decode(datagrams[i : i + 512])) for i in range(0, len(datagrams), 512)]
        return Received(report, datagrams, FlowBatch.concat(batches), counters, session, drops)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    sink = Sink()
    listener = UdpListener(
        UdpListenerConfig(host="127.0.0.1", port=0, receive_buffer_bytes=32 * 1024 * 1024), sink, Counters()
    )
    listener.start()
    yield Receiver(listener, sink)
    listener.stop()


def replay(receiver: Receiver, **settings: object) -> Received:
    config = ReplayConfig(host="127.0.0.1", port=receiver.port, **settings)  # type: ignore[arg-type]
    return receiver.collect(Replayer(config).run())


def assert_complete(received: Received) -> None:
    report = received.report
    assert len(received.datagrams) == report.datagrams
    assert sum(map(len, (d.payload for d in received.datagrams))) == report.bytes
    assert len(received.flows) == report.flows
    assert received.counters.total("decode_sequence_lost_total") == 0
    assert received.counters.total("decode_errors_total") == 0
    assert received.kernel_drops == 0
    assert report.send_errors == 0


def arrival_span_s(received: Received) -> float:
    times = [d.time_received_ms for d in received.datagrams]
    return (max(times) - min(times)) / 1000


@pytest.mark.parametrize("fmt", ["ipfix", "v9", "v5"])
def test_generated_traffic_at_50k_flows_per_second_for_one_second(receiver: Receiver, fmt: str) -> None:
    received = replay(receiver, rate=50_000, duration_s=1.0, format=fmt, generator=GeneratorConfig(seed=1))
    assert_complete(received)
    report = received.report
    assert report.flows == 50_000
    assert report.skipped_flows == 0
    assert abs(report.rate / 50_000 - 1) <= RATE_TOLERANCE, report
    assert abs(report.duration_s - 1.0) <= RATE_TOLERANCE
    # the receiver's own clock agrees: the datagrams arrive spread over the second
    assert 1.0 - RATE_TOLERANCE - 0.01 <= arrival_span_s(received) <= 1.0 + RATE_TOLERANCE
    flows = received.flows
    assert (flows["time_end"] <= flows["time_received"]).all()
    assert (flows["time_received"] - flows["time_end"]).max() <= 2_000 + 1_100  # export delay + chunk + v9 rounding
    web = np.isin(flows["dst_port"], [80, 443, 8080, 8443]) | np.isin(flows["src_port"], [80, 443, 8080, 8443])
    assert 0.55 < web.mean() < 0.65


def test_several_sources_are_several_exporter_scopes_with_their_own_sequences(receiver: Receiver) -> None:
    received = replay(receiver, rate=30_000, count=15_000, sources=3, exporter_id=100, format="ipfix",
                      generator=GeneratorConfig(seed=2))
    assert_complete(received)
    assert received.report.flows_per_source == [5_000, 5_000, 5_000]
    entries = received.session.exporters.entries()
    assert sorted(domain for _, domain in entries) == [100, 101, 102]
    per_exporter = np.bincount(received.flows["exporter"], minlength=len(entries))
    assert per_exporter.tolist() == [5_000, 5_000, 5_000]
    assert len({d.port for d in received.datagrams}) == 3  # three source sockets


def test_sources_bound_to_distinct_loopback_addresses_are_distinct_exporters(receiver: Receiver) -> None:
    received = replay(receiver, rate=20_000, count=4_000, sources=2, bind=("127.0.0.2", "127.0.0.3"),
                      format="v9", generator=GeneratorConfig(seed=3))
    assert_complete(received)
    assert sorted({d.exporter for d in received.datagrams}) == ["127.0.0.2", "127.0.0.3"]


def test_worker_processes_share_the_rate_and_count(receiver: Receiver) -> None:
    received = replay(receiver, rate=40_000, count=40_000, workers=2, format="ipfix",
                      generator=GeneratorConfig(seed=4))
    assert_complete(received)
    assert received.report.flows == 40_000
    assert received.report.flows_per_source == [20_000, 20_000]
    assert sorted(domain for _, domain in received.session.exporters.entries()) == [0, 1]
    # Wider than RATE_TOLERANCE (one process): two worker processes start one after the other,
    # and on a busy 2-core machine their start-up alone took up to 60 ms of the second.
    assert abs(received.report.rate / 40_000 - 1) <= 0.08


def test_bursts_multiply_the_rate_for_their_duration(receiver: Receiver) -> None:
    burst = BurstSpec(multiplier=4.0, duration_s=0.25, period_s=0.5)
    received = replay(receiver, rate=20_000, duration_s=1.0, burst=burst, format="ipfix",
                      generator=GeneratorConfig(seed=5))
    assert_complete(received)
    expected = RateSchedule(20_000, burst).flows_due(1.0)
    assert received.report.flows == expected == 20_000 * (1.0 + 3 * 0.25)
    # flows per arrival window relative to the first datagram: quiet [0.25, 0.5) vs burst [0.5, 0.75)
    arrivals = received.flows["time_received"] - min(d.time_received_ms for d in received.datagrams)
    quiet = ((arrivals >= 260) & (arrivals < 490)).sum()
    loud = ((arrivals >= 510) & (arrivals < 740)).sum()
    # The exact schedule is checked above (flows_due); arrivals only show that the sender follows
    # it, with scheduling jitter on a busy 2-core machine: a clear 4x burst, loosely bounded.
    assert 2.5 < loud / quiet < 5.5


def _capture_flows() -> FlowBatch:
    counters = Counters()
    session = DecoderSession(counters=counters)
    normalizer = Normalizer(None, session.options, counters)
    return FlowBatch.concat([batch for batch, _ in decode_files([IPFIX_FILE], session, normalizer)])


def test_captures_are_restamped_to_look_current(receiver: Receiver) -> None:
    before_ms = time.time_ns() // 1_000_000
    received = replay(receiver, rate=20_000, inputs=(str(IPFIX_FILE),), format="ipfix")
    assert_complete(received)
    original = _capture_flows()
    flows = received.flows
    assert received.report.flows == len(flows) == len(original) == 3_979
    assert int(flows["packets"].sum()) == int(original["packets"].sum()) == 56_695
    assert int(flows["bytes"].sum()) == int(original["bytes"].sum()) == 49_001_404
    for name in ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "tcp_flags", "tos", "in_if", "out_if"):
        np.testing.assert_array_equal(np.sort(flows[name]), np.sort(original[name]), err_msg=name)
    # durations and ages (export time - end) are kept; the times themselves are now
    np.testing.assert_array_equal(np.sort(flows["time_end"] - flows["time_start"]),
                                  np.sort(original["time_end"] - original["time_start"]))
    original_age = np.sort(np.clip(original["time_received"] - original["time_end"], 0, None))
    assert flows["time_end"].max() <= time.time_ns() // 1_000_000
    assert flows["time_end"].max() >= before_ms - int(original_age[0]) - 1
    assert (flows["time_start"] > before_ms - 3_600_000).all()


def test_captures_without_restamp_are_sent_byte_for_byte(receiver: Receiver) -> None:
    original = [d.payload for d in read_capture(IPFIX_FILE)]
    received = replay(receiver, rate=20_000, inputs=(str(IPFIX_FILE),), restamp=False)
    assert [d.payload for d in received.datagrams] == original
    assert received.report.flows == 3_979
    assert len(received.flows) == 3_979
    assert received.report.format == "as captured"


def test_a_looped_capture_is_reencoded_with_continuous_sequence_numbers(receiver: Receiver) -> None:
    received = replay(receiver, rate=20_000, inputs=(str(V5_FILE),), loop=True, count=1_000, format="v5")
    assert_complete(received)
    assert received.report.flows == 1_000
    looped = np.unique(received.flows["src_addr"])
    assert 0 < len(looped) < 100  # the same few capture flows again and again


def test_the_command_line_prints_one_json_report(receiver: Receiver) -> None:
    command = [sys.executable, "-m", "flowscope.tools.replay", "--to", f"127.0.0.1:{receiver.port}",
               "--generate", "--rate", "30000", "--count", "3000", "--format", "v9", "--seed", "9", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["flows"] == 3_000 and summary["format"] == "v9" and summary["send_errors"] == 0
    assert set(summary) >= {"datagrams", "flows", "bytes", "duration_s", "rate"}
    report = ReplayReport(**summary)
    received = receiver.collect(report)
    assert_complete(received)


def test_the_command_line_text_summary_and_bad_arguments(receiver: Receiver) -> None:
    command = [sys.executable, "-m", "flowscope.tools.replay", "--to", f"127.0.0.1:{receiver.port}",
               "--generate", "--rate", "20000", "--duration", "200ms", "--burst", "2x:50ms:every100ms"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent 5000 flows in ")  # 20k/s × 0.2 s + 20k/s × 50 ms of burst
    bad = subprocess.run([*command[:5], "--generate", "--burst", "2x"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "MULTIPLIERx:DURATION:everyPERIOD" in bad.stderr


def test_an_endless_replay_stops_on_sigint_and_still_reports(receiver: Receiver) -> None:
    command = [sys.executable, "-m", "flowscope.tools.replay", "--to", f"127.0.0.1:{receiver.port}",
               "--generate", "--rate", "10000", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # start-up (imports) plus some sending
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert 1_000 <= summary["flows"] <= 15_000
    assert abs(summary["rate"] / 10_000 - 1) <= RATE_TOLERANCE
    assert_complete(receiver.collect(ReplayReport(**summary)))


def _exporter_pcap(path: Path) -> tuple[FlowBatch, list[tuple[str, bytes]]]:
    """A pcap of NetFlow v9 exports from two exporters, made in 2024: (the flows, (exporter, payload) in order)."""
    export_ms = 1_722_000_000_000
    flows = TrafficGenerator(GeneratorConfig(seed=8)).flows(4_000, export_ms)
    sent: list[tuple[str, bytes]] = []
    packets: list[UdpPacket] = []
    for index, exporter in enumerate(("192.0.2.1", "192.0.2.2")):
        half = flows.take(np.arange(index, len(flows), 2))
        for payload in V9Encoder(EncoderConfig(domain=index)).encode(half, export_ms).datagrams:
            sent.append((exporter, payload))
    for number, (exporter, payload) in enumerate(sent):
        packets.append(UdpPacket(payload, exporter, "192.0.2.100", 50_000, 2055, export_ms * 1000 + number))
    write_pcap(path, packets)
    return flows, sent


def test_a_pcap_of_exports_is_replayed_with_ages_and_totals_kept(receiver: Receiver, tmp_path: Path) -> None:
    flows, _ = _exporter_pcap(tmp_path / "exports.pcap")
    received = replay(receiver, rate=40_000, inputs=(str(tmp_path / "exports.pcap"),), format="ipfix", sources=2)
    assert_complete(received)
    got = received.flows
    assert len(got) == 4_000
    assert int(got["bytes"].sum()) == int(flows["bytes"].sum())
    assert int(got["packets"].sum()) == int(flows["packets"].sum())
    np.testing.assert_array_equal(np.sort(got["time_end"] - got["time_start"]),
                                  np.sort(flows["time_end"] - flows["time_start"]))
    # each flow ended as long before its (new) export as it did in the capture, give or take the sending
    original_age = np.sort(flows["time_received"] - flows["time_end"])
    new_age = np.sort(got["time_received"] - got["time_end"])
    assert (new_age >= original_age).all() and (new_age <= original_age + 1_000).all()


def test_a_pcap_sent_as_captured_keeps_each_exporter_on_one_socket(receiver: Receiver, tmp_path: Path) -> None:
    _, sent = _exporter_pcap(tmp_path / "exports.pcap")
    received = replay(receiver, rate=40_000, inputs=(str(tmp_path / "exports.pcap"),), restamp=False, sources=2)
    assert [d.payload for d in received.datagrams] == [payload for _, payload in sent]
    ports = {exporter: {d.port for d, (e, _) in zip(received.datagrams, sent, strict=True) if e == exporter}
             for exporter in ("192.0.2.1", "192.0.2.2")}
    assert all(len(p) == 1 for p in ports.values()) and ports["192.0.2.1"] != ports["192.0.2.2"]
    assert len(received.flows) == received.report.flows == 4_000
    assert received.counters.total("decode_sequence_lost_total") == 0
