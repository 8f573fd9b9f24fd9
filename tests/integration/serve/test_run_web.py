"""`flowscope run` with its web server, over real HTTP: the API, live events after `flowscope replay`
sends flows over UDP, /metrics, the access token, a clean stop with a browser still connected."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FLOWS = 4_000


class Run:
    """A `flowscope run` process on free ports; its stderr is collected, its URLs parsed from it."""

    def __init__(self, state_dir: Path, *settings: str) -> None:
        command = [sys.executable, "-m", "flowscope.cli", "run"]
        for setting in ("collect.host=127.0.0.1", "collect.udp_ports=0", "collect.tcp_ports=0", "web.port=0",
                        f"engine.state_dir={state_dir}", *settings):
            command += ["--set", setting]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.url = ""
        self.udp_port = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if match := re.search(r"collecting on udp (\d+)", line):
                self.udp_port = int(match.group(1))
            if match := re.search(r"flowscope: dashboard on (http://\S+)", line):
                self.url = match.group(1)
                self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(30), "".join(self.lines)
        assert self.udp_port, "".join(self.lines)

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def get_json(url: str, status: int = 200) -> Any:
    code, headers, body = fetch(url)
    assert code == status, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


@dataclass
class Stream:
    """Reads a live stream in a thread: every event with the time it arrived."""

    url: str
    events: list[tuple[float, str, Any]] = field(default_factory=list)
    hello: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    response: Any = None

    def start(self) -> Stream:
        threading.Thread(target=self._read, daemon=True).start()
        assert self.hello.wait(10)
        return self

    def _read(self) -> None:
        try:
            self._lines()
        except (OSError, AttributeError, ValueError):  # closed by close() from the test's thread
            pass
        finally:
            self.ended.set()

    def _lines(self) -> None:
        with urllib.request.urlopen(self.url, timeout=30) as response:
            self.response = response
            name, data = "message", ""
            while True:
                line = response.readline().decode()
                if not line:
                    break
                line = line.rstrip("\n")
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = line.removeprefix("data: ")
                elif line == "" and data:
                    self.events.append((time.monotonic(), name, json.loads(data)))
                    if name == "hello":
                        self.hello.set()
                    name, data = "message", ""

    def results(self) -> list[tuple[float, Any]]:
        return [(at, data) for at, name, data in list(self.events) if name == "result"]

    def close(self) -> None:
        if self.response is not None:
            self.response.close()


class Relay:
    """Forwards UDP datagrams to flowscope and notes when the first one went through."""

    def __init__(self, target_port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.target = ("127.0.0.1", target_port)
        self.first_sent: float | None = None
        self.forwarded = 0
        self._stop = threading.Event()
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65_535)
            except TimeoutError:
                continue
            self._out.sendto(data, self.target)
            if self.first_sent is None:
                self.first_sent = time.monotonic()
            self.forwarded += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()
        self._out.close()


@dataclass
class Scenario:
    run: Run
    stream: Stream
    relay: Relay
    replay: dict[str, Any]


def wait_until(predicate: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """One `flowscope run` (default engine timing); a browser-like stream opened; flows replayed."""
    run = Run(tmp_path_factory.mktemp("web"), "stats.local_networks=10.0.0.0/16", "stats.watched_hosts=10.0.0.1")
    run.wait_ready()
    stream = Stream(f"{run.url}api/v1/stream?interval=1s&compact=true").start()
    relay = Relay(run.udp_port)
    sent = subprocess.run(
        [sys.executable, "-m", "flowscope.cli", "replay", "--to", f"127.0.0.1:{relay.port}", "--generate",
         "--rate", "4000", "--count", str(FLOWS), "--seed", "11", "--json"],
        capture_output=True, check=True, timeout=120,
    )
    report = json.loads(sent.stdout.decode().strip().splitlines()[-1])
    wait_until(lambda: sum(d["flows"] for _, d in stream.results() if d["final"]) >= FLOWS)
    yield Scenario(run, stream, relay, report)
    stream.close()
    relay.close()
    run.stop()


def test_live_events_arrive_within_two_seconds_of_the_flows(scenario: Scenario) -> None:
    assert scenario.replay["flows"] == FLOWS
    assert scenario.relay.first_sent is not None
    first_live = next(at for at, data in scenario.stream.results() if data["flows"] > 0)
    assert first_live - scenario.relay.first_sent < 2.0
    finals = [d for _, d in scenario.stream.results() if d["final"]]
    assert sum(d["flows"] for d in finals) == FLOWS  # every flow, once, in the final windows
    assert all(d["interval"] == "1s" and d["view"] == "all" for d in finals)
    provisional = [d for _, d in scenario.stream.results() if not d["final"] and d["flows"]]
    assert provisional  # the chart moved while the windows were open


def test_the_api_answers_from_the_store(scenario: Scenario) -> None:
    url = scenario.run.url + "api/v1"
    assert get_json(f"{url}/health")["status"] == "ok"
    config = get_json(f"{url}/config")
    assert [i["name"] for i in config["intervals"]] == ["1s", "1m", "1h"]
    assert config["local_networks"] == ["10.0.0.0/16"] and config["watched_hosts"] == ["10.0.0.1"]
    seconds = get_json(f"{url}/results?interval=1s&final=true&limit=10000")["results"]
    assert sum(r["totals"]["flows"] for r in seconds) == FLOWS
    series = get_json(f"{url}/series?interval=1s&final=true")["points"]
    assert [p["flows"] for p in series] == [r["totals"]["flows"] for r in seconds][-len(series):]
    newest = seconds[-1]
    top = get_json(f"{url}/top-ports?interval=1s&time={newest['start_ms']}")
    assert top["tcp"] == newest["top_ports"]["tcp"]["flows"]
    code, headers, body = fetch(f"{url}/report?interval=1s&time={newest['start_ms']}&format=csv")
    assert code == 200 and headers["content-disposition"].startswith('attachment; filename="flowscope-report-all-1s-')
    assert body.decode().splitlines()[0] == "interval,view,start_ms,start,end_ms,end,final,section,group,rank,key," \
                                            "flows,packets,bytes"
    bad = get_json(f"{url}/results?interval=7s", 400)
    assert bad["parameter"] == "interval"
    assert get_json(f"{url}/nothing", 404)["error"] == "not_found"
    document = get_json(f"{url}/openapi.json")
    assert "/api/v1/stream" in document["paths"] and "/metrics" in document["paths"]
    host = get_json(f"{url}/hosts/10.0.0.1?interval=1s&time={newest['start_ms']}")
    assert host["watched"] is True and host["local"] is True and host["source"] == "watched"


def test_exporters_and_metrics(scenario: Scenario) -> None:
    exporters = get_json(scenario.run.url + "api/v1/exporters")
    assert exporters["decoder_state"] == "live"
    (exporter,) = exporters["exporters"]
    assert exporter["address"] == "127.0.0.1"
    assert exporter["datagrams"] == scenario.relay.forwarded == scenario.replay["datagrams"]
    assert exporter["records"]["data"] == FLOWS and exporter["flows"] == FLOWS
    assert exporter["decode_errors_total"] == 0 and exporter["last_seen_ms"] is not None
    assert exporter["domains"][0]["templates"] and exporter["domains"][0]["sequence"]["lost"] == 0

    code, headers, body = fetch(scenario.run.url + "metrics")
    assert code == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = body.decode().splitlines()
    assert 'flowscope_decode_records_total{exporter="127.0.0.1",kind="data"} 4000' in lines
    assert f"flowscope_engine_flows_total {FLOWS}" in lines
    assert any(line.startswith('flowscope_collector_datagrams_total{exporter="127.0.0.1",listener="udp/')
               for line in lines)
    assert any(line.startswith('flowscope_kernel_drops{listener="udp/') for line in lines)
    assert any(line.startswith('flowscope_live_delay_seconds{quantile="0.99"} ') for line in lines)
    assert any(line.startswith('flowscope_window_lag_seconds{interval="1s"} ') for line in lines)
    assert 'flowscope_exporter_flows_total{domain="0",exporter="127.0.0.1"} 4000' in lines
    assert "flowscope_stream_subscribers 1" in lines  # the stream of this scenario
    scenario.stream.close()
    wait_until(lambda: "flowscope_stream_subscribers 0" in fetch(scenario.run.url + "metrics")[2].decode())


def test_token_and_clean_stop_with_a_browser_connected(tmp_path: Path) -> None:
    run = Run(tmp_path, "web.token=t0k3n")
    try:
        run.wait_ready()
        assert fetch(run.url + "api/v1/health")[0] == 401
        assert fetch(run.url + "metrics")[0] == 401
        assert fetch(run.url + "api/v1/health", {"Authorization": "Bearer t0k3n"})[0] == 200
        stream = Stream(run.url + "api/v1/stream?token=t0k3n").start()
        started = time.monotonic()
        assert run.stop() == 0
        assert time.monotonic() - started < 15
        assert stream.ended.wait(5)  # the server ended the stream instead of hanging on it
    finally:
        run.stop()
    assert "Traceback" not in "".join(run.lines), "".join(run.lines)


def test_a_web_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Run(tmp_path, f"web.port={port}")
        code = run.process.wait(timeout=30)
        time.sleep(0.2)
    assert code == 2
    assert any(f"web.port: cannot listen on 127.0.0.1:{port}" in line for line in run.lines), "".join(run.lines)


def test_no_web_server_with_an_empty_host(tmp_path: Path) -> None:
    run = Run(tmp_path, "web.host=")
    try:
        wait_until(lambda: run.udp_port > 0, 30)
        time.sleep(0.5)
        assert not any("dashboard on" in line for line in run.lines)
    finally:
        assert run.stop() == 0
