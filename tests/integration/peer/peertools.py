"""Helpers for tests that use softflowd and nfcapd/nfdump as peers (external oracles).

- ``require_tool``: the path of a program, or a test FAILURE naming the Debian package (CI
  installs them; a missing tool must never turn into a silently skipped comparison).
- ``UdpReceiver``: our own UDP socket on loopback, recording every datagram with its arrival time;
  ``udp_packets`` turns what it received into pcap records (``support.pcapwrite``).
- ``softflowd_export``: runs softflowd 1.1.0 on a pcap (``-r``) and returns the export datagrams
  it sent. softflowd with ``-r`` reads the whole file and then blocks on its control socket until
  a client talks to it, so we poll ``softflowctl -c SOCKET statistics`` until the process exits;
  ``-a`` makes it use the capture's timestamps (not the wall clock) for flow times.
- ``run_nfcapd``: a real nfcapd on loopback writing into a directory (``Nfcapd.send`` sends to it
  from any 127.x.y.z address); stopping it with SIGTERM flushes ``nfcapd.current.PID`` into its
  final file, and its last log line gives its totals.
- ``nfdump``: runs nfdump in UTC (its ``-t`` times are local time) and returns stdout.

Every process started here is stopped here, also when a test fails halfway.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.pcapwrite import UdpPacket

PACKAGES = {"softflowd": "softflowd", "softflowctl": "softflowd", "nfcapd": "nfdump", "nfdump": "nfdump"}
LOOPBACK = "127.0.0.1"


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/usr/bin", "/sbin") if (Path(d) / name).is_file()), None
    )
    if path is None:
        pytest.fail(f"{name} is required for this peer test: install the Debian package "
                    f"{PACKAGES.get(name, name)} (.ci/run does it in CI)")
    return path


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> str:
    """SIGTERM, then SIGKILL if it does not exit in time; returns what it printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return (output or b"").decode(errors="replace")


# -- our own receiver ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    payload: bytes
    sender: tuple[str, int]
    time_us: int  # arrival, wall clock


class UdpReceiver:
    """A UDP socket on 127.0.0.1 (ephemeral port) read by a thread until ``close``."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._socket.bind((LOOPBACK, 0))
        self._socket.settimeout(0.05)
        self.port: int = self._socket.getsockname()[1]
        self._datagrams: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-udp-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                payload, sender = self._socket.recvfrom(65_535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._datagrams.append(Received(payload, sender, time.time_ns() // 1000))

    @property
    def datagrams(self) -> list[Received]:
        with self._lock:
            return list(self._datagrams)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.datagrams) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.datagrams

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


def udp_packets(datagrams: Iterable[Received], exporter: str | None = None) -> list[UdpPacket]:
    """The datagrams as pcap records (exporter → 127.0.0.1:2055) stamped with their arrival times;
    ``exporter`` replaces the sender's address (the port is kept)."""
    return [UdpPacket(d.payload, exporter or d.sender[0], LOOPBACK, d.sender[1], 2055, d.time_us) for d in datagrams]


# -- softflowd ----------------------------------------------------------------------------------

_EXPORTED = re.compile(r"Flows exported: (\d+) \((\d+) records\) in (\d+) packets \((\d+) failures\)")


@dataclass(frozen=True, slots=True)
class SoftflowdRun:
    datagrams: list[Received]
    records: int  # flow records softflowd says it exported
    log: str


def softflowd_export(pcap: Path, version: int, workdir: Path, timeout_s: float = 20.0) -> SoftflowdRun:
    """Run softflowd on ``pcap`` exporting NetFlow ``version`` (5, 9, 10) to our receiver."""
    softflowd, softflowctl = require_tool("softflowd"), require_tool("softflowctl")
    workdir.mkdir(parents=True, exist_ok=True)
    control = workdir / f"softflowd-{version}-{pcap.stem}.ctl"
    receiver = UdpReceiver()
    process = subprocess.Popen(
        [softflowd, "-d", "-a", "-r", str(pcap), "-v", str(version), "-n", f"{LOOPBACK}:{receiver.port}",
         "-c", str(control), "-p", str(workdir / f"softflowd-{version}-{pcap.stem}.pid")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"softflowd on {pcap.name} did not finish within {timeout_s} s:\n{stop_process(process)}")
            if control.exists():  # nudges softflowd past its control-socket wait once the file is read
                subprocess.run([softflowctl, "-c", str(control), "statistics"], capture_output=True, check=False,
                               timeout=5)
            time.sleep(0.05)
        log = stop_process(process)
        match = _EXPORTED.search(log)
        assert process.returncode == 0 and match, f"softflowd on {pcap.name} failed:\n{log}"
        _, records, packets, failures = map(int, match.groups())
        assert failures == 0, f"softflowd could not send some exports:\n{log}"
        datagrams = receiver.wait_for(packets)
        assert len(datagrams) == packets, f"softflowd sent {packets} datagrams, we received {len(datagrams)}"
        return SoftflowdRun(datagrams, records, log)
    finally:
        stop_process(process)
        receiver.close()


# -- nfcapd / nfdump ----------------------------------------------------------------------------


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


_NFCAPD_TOTALS = re.compile(r"Ident: '[^']*' Flows: (\d+), Packets: (\d+), Bytes: (\d+), "
                            r"Sequence Errors: (\d+), Bad Packets: (\d+)")


@dataclass
class Nfcapd:
    """nfcapd listening on 127.0.0.1:``port``, writing into ``directory`` (see ``run_nfcapd``)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    log: str = ""

    def send(self, payloads: Iterable[bytes], *, source: str = LOOPBACK, pause_every: int = 20,
             pause_s: float = 0.002) -> int:
        """Send the datagrams in order from ``source`` (any 127.x.y.z address works on Linux), pausing
        now and then so nfcapd's socket buffer never overflows."""
        count = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind((source, 0))
            for count, payload in enumerate(payloads, start=1):
                sender.sendto(payload, (LOOPBACK, self.port))
                if count % pause_every == 0:
                    time.sleep(pause_s)
        return count

    def totals(self) -> tuple[int, int, int, int, int]:
        """(flows, packets, bytes, sequence errors, bad packets) from nfcapd's final log line."""
        match = _NFCAPD_TOTALS.search(self.log)
        assert match, f"no totals in nfcapd's log:\n{self.log}"
        flows, packets, octets, sequence_errors, bad = map(int, match.groups())
        return flows, packets, octets, sequence_errors, bad


@contextmanager
def run_nfcapd(directory: Path, *, settle_s: float = 0.3) -> Iterator[Nfcapd]:
    """Start nfcapd, yield it, then SIGTERM it (which writes the final file) and keep its log."""
    nfcapd = require_tool("nfcapd")
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [nfcapd, "-b", LOOPBACK, "-p", str(port), "-w", str(directory), "-P", str(directory / "nfcapd.pid")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    capture = Nfcapd(process, port, directory)
    try:
        deadline = time.monotonic() + 10
        while not _port_taken(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nfcapd did not start listening on UDP {port}:\n{stop_process(process)}")
            time.sleep(0.02)
        yield capture
        time.sleep(settle_s)  # nfcapd drains its socket in its own time
    finally:
        capture.log = stop_process(process, timeout_s=30)
    leftovers = [p.name for p in directory.glob("nfcapd.current.*")]
    assert not leftovers, f"nfcapd did not finish its file(s) {leftovers}:\n{capture.log}"


def nfdump(directory: Path, *args: str) -> str:
    """nfdump over every file nfcapd wrote in ``directory``; times and ``-t`` in UTC."""
    result = subprocess.run(
        [require_tool("nfdump"), "-R", str(directory), *args],
        capture_output=True, text=True, check=False, env={**os.environ, "TZ": "UTC"}, timeout=60,
    )
    assert result.returncode == 0, f"nfdump {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout
