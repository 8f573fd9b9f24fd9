"""`flowscope collect` as a real process: UDP exports in, JSON lines out (stdout or TCP stream)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import WatchedProcess

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
FLOWSCOPE = [sys.executable, "-m", "flowscope.cli"]


def _collect(args: list[str], stdout: Path) -> WatchedProcess:
    return WatchedProcess("collect", [*FLOWSCOPE, "collect", *args], log=stdout)


def _stopped(process: WatchedProcess) -> str:
    """Stops ``process`` (SIGTERM: its own shutdown) and returns its stderr; it must exit cleanly."""
    process.stop()
    err = "".join(process.stderr)
    assert process.process.returncode == 0, err
    return err


def _expected_lines(files: list[Path]) -> list[dict[str, object]]:
    result = subprocess.run([*FLOWSCOPE, "decode", *map(str, files)], capture_output=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def _comparable(flow: dict[str, object]) -> tuple[object, ...]:
    # Arrival time and exporter differ between a file and a socket; the flow itself must not.
    return tuple(v for k, v in sorted(flow.items()) if k not in {"time_received", "exporter"})


@pytest.fixture
def ipfix_messages() -> Iterator[list[bytes]]:
    data = (DATA / "ipfixcol2" / "example_flows.ipfix").read_bytes()
    messages, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        messages.append(data[offset : offset + length])
        offset += length
    yield messages


def test_collect_serves_decoded_flows_to_a_json_stream_consumer(ipfix_messages: list[bytes], tmp_path: Path) -> None:
    process = _collect(["--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
                        "--json-server", "127.0.0.1:0", "--stats"], tmp_path / "stdout")
    try:
        json_port = int(process.wait_for(r"JSON flow stream on [\d.]+:(\d+)").group(1))
        udp_port = int(process.wait_for(r"collecting on udp (\d+)").group(1))
        consumer = socket.create_connection(("127.0.0.1", json_port))
        time.sleep(0.3)  # let the server register the consumer before flows arrive
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for message in ipfix_messages:
            sender.sendto(message, ("127.0.0.1", udp_port))
            time.sleep(0.001)
        consumer.settimeout(10)
        data = b""
        while data.count(b"\n") < 3979:
            chunk = consumer.recv(1 << 20)
            assert chunk, "stream closed early"
            data += chunk
        consumer.close()
    finally:
        err = _stopped(process)
    flows = [json.loads(line) for line in data.splitlines()]
    assert len(flows) == 3979
    assert {f["exporter"] for f in flows} == {"127.0.0.1"}
    expected = _expected_lines([DATA / "ipfixcol2" / "example_flows.ipfix"])
    assert sorted(map(_comparable, flows)) == sorted(map(_comparable, expected))
    stats = json.loads(err.strip().splitlines()[-1])
    records = sum(v for labels, v in stats["decode_records_total"] if labels["kind"] == "data")
    assert records == 3979
    assert "decode_errors_total" not in stats


def test_collect_prints_flows_on_stdout_and_counts_bad_datagrams(tmp_path: Path) -> None:
    process = _collect(["--host", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--stats"], tmp_path / "stdout")
    try:
        udp_port = int(process.wait_for(r"collecting on udp (\d+)").group(1))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        v5 = (DATA / "python-netflow-v9-softflowd" / "packet_v5.bin").read_bytes()
        sender.sendto(v5, ("127.0.0.1", udp_port))
        sender.sendto(b"\xff" * 21, ("127.0.0.1", udp_port))  # not a flow export
        sender.sendto(v5[:30], ("127.0.0.1", udp_port))  # truncated v5
        time.sleep(1.0)
    finally:
        err = _stopped(process)
    out = (tmp_path / "stdout").read_bytes()
    flows = [json.loads(line) for line in out.splitlines()]
    expected = _expected_lines([DATA / "python-netflow-v9-softflowd" / "packet_v5.bin"])
    assert [_comparable(f) for f in flows] == [_comparable(f) for f in expected]
    assert len(flows) == 3
    stats = json.loads(err.strip().splitlines()[-1])
    errors = {labels["kind"]: value for labels, value in stats["decode_errors_total"]}
    assert errors == {"unknown_version": 1, "truncated": 1}
    assert all(labels["exporter"] == "127.0.0.1" for labels, _ in stats["decode_errors_total"])
