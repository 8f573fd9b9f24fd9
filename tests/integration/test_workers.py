"""`flowscope run` with collector worker processes sharing the UDP port (SO_REUSEPORT)."""

from __future__ import annotations

import json
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


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_workers_preaggregate_and_the_aggregator_merges_everything(tmp_path: Path) -> None:
    port = _free_udp_port()
    command = [sys.executable, "-m", "flowscope.cli", "run", "--set", "collect.host=127.0.0.1",
               "--set", f"collect.udp_ports={port}", "--set", "collect.tcp_ports=0", "--set", "collect.workers=2",
               "--set", "web.port=0",
               "--set", f"engine.state_dir={tmp_path}", "--set", "engine.grace=200ms"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            lines.append(raw.decode(errors="replace"))
            if re.search(r"collecting on udp \d+.*with 2 worker processes", lines[-1]):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "".join(lines)
        sent = subprocess.run(
            [sys.executable, "-m", "flowscope.cli", "replay", "--to", f"127.0.0.1:{port}", "--generate",
             "--rate", "20000", "--count", "40000", "--sources", "4", "--seed", "7", "--json"],
            capture_output=True, check=True, timeout=120,
        )
        report = json.loads(sent.stdout.decode().strip().splitlines()[-1])
        assert report["flows"] == 40000
        time.sleep(2.0)  # workers ship every 200 ms; the engine publishes every 250 ms
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0, "".join(lines)
    stats = json.loads((tmp_path / "stats.json").read_text())
    counters = {name: sum(value for _, value in series) for name, series in stats["counters"].items()}
    assert counters["decode_records_total"] == 40000  # reported by the workers, summed here
    assert counters["engine_flows_total"] == 40000
    assert counters.get("decode_sequence_lost_total", 0) == 0
    shipments = {labels["worker"] for labels, _ in stats["counters"]["workers_shipments_total"]}
    assert shipments == {"0", "1"}
    with sqlite3.connect(tmp_path / "flowscope.db") as connection:
        rows = connection.execute(
            "SELECT flows, payload FROM results WHERE interval = '1s' AND view = 'all'"
        ).fetchall()
    assert sum(flows for flows, _ in rows) == 40000
    exporters: dict[tuple[str, int], int] = {}
    for _, payload in rows:
        for entry in json.loads(payload)["totals"]["by_exporter"]:
            key = (entry["exporter"], entry["domain"])
            exporters[key] = exporters.get(key, 0) + entry["flows"]
    # Four replay sources = four observation domains; each kept its identity across processes.
    assert len(exporters) == 4
    assert sorted(exporters.values()) == [10000, 10000, 10000, 10000]
