"""`flowscope run` killed with SIGKILL in the middle of a window keeps what its checkpoint held."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURE = DATA / "ipfixcol2" / "example_flows.ipfix"  # 3,979 flows in 68 messages


def _messages() -> list[bytes]:
    data, messages, offset = CAPTURE.read_bytes(), [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        messages.append(data[offset : offset + length])
        offset += length
    return messages


class Run:
    def __init__(self, state_dir: Path) -> None:
        settings = ["collect.udp_ports=0", "collect.tcp_ports=0", "web.port=0", f"engine.state_dir={state_dir}",
                    "engine.checkpoint_interval=500ms", "engine.provisional_interval=100ms", "engine.grace=300ms"]
        command = [sys.executable, "-m", "flowscope.cli", "run"]
        for setting in settings:
            command += ["--set", setting]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.stderr: list[str] = []
        self.port = threading.Event()
        self.udp_port = 0
        threading.Thread(target=self._read, daemon=True).start()
        assert self.port.wait(20), "".join(self.stderr)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            match = re.search(r"collecting on udp (\d+)", line)
            if match:
                self.udp_port = int(match.group(1))
                self.port.set()

    def send(self, messages: list[bytes]) -> None:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for message in messages:
            sender.sendto(message, ("127.0.0.1", self.udp_port))
        sender.close()


def _minute_flows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        (total,) = connection.execute("SELECT COALESCE(SUM(flows), 0) FROM results WHERE interval = '1m'").fetchone()
    return int(total)


def test_sigkill_loses_at_most_the_checkpoint_interval(tmp_path: Path) -> None:
    messages = _messages()
    first = Run(tmp_path)
    first.send(messages)
    time.sleep(1.5)  # > checkpoint interval: the flows are in the checkpoint's open windows
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    assert (tmp_path / "checkpoint" / "manifest.json").exists()

    second = Run(tmp_path)
    second.send(messages)
    time.sleep(1.5)
    second.process.send_signal(signal.SIGTERM)
    second.process.wait(timeout=20)
    assert second.process.returncode == 0, "".join(second.stderr)
    assert any("restored" in line and "open windows" in line for line in second.stderr), "".join(second.stderr)
    # Every flow of both runs is in the minute results: the killed run's open minute came back.
    assert _minute_flows(tmp_path / "flowscope.db") == 2 * 3979
