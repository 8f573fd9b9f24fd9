"""The streaming job on a real Spark standalone cluster: a master and two workers on 127.0.0.1,
started from the pyspark installation, fed by a real ``flowscope collect`` receiving ``flowscope
replay`` traffic; the store must hold the embedded engine's results for the same capture.

Every process the test starts gets its own process group and is stopped by a fixture finalizer,
also when the test fails.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyspark
import pytest
from tests.spark.conftest import generated_capture, without_exporter_address

from flowscope.aggregate.engine import EngineConfig
from flowscope.pipeline import offline_results
from flowscope.store import ResultStore, StoreConfig
from support.processes import WatchedProcess

pytestmark = [pytest.mark.spark, pytest.mark.integration]

SPARK_HOME = Path(pyspark.__file__).resolve().parent
FLOWSCOPE = [sys.executable, "-m", "flowscope.cli"]
ENVIRONMENT = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
                   PYSPARK_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
# A day of grace: no window closes and no flow is late, whatever the micro-batch boundaries.
CONFIG = EngineConfig(windows_ms=(1_000, 60_000), time_base="end", grace_ms=86_400_000)
SETTINGS = ["--set", "engine.windows=1s,1m", "--set", "engine.time_base=end", "--set", "engine.grace=1d"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """A standalone master and two one-core workers on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.web_port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[WatchedProcess] = []

    def start(self) -> None:
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        self.processes.append(WatchedProcess("master", [
            spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
            "--webui-port", str(self.web_port)], env=ENVIRONMENT, log=self.directory / "master.log"))
        self.wait(lambda state: True, "the master's web UI")
        for number in (1, 2):
            work = self.directory / f"worker-{number}"
            work.mkdir()
            self.processes.append(WatchedProcess(f"worker-{number}", [
                spark_class, "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(work)],
                env=ENVIRONMENT, log=self.directory / f"worker-{number}.log"))
        self.wait(lambda state: state.get("aliveworkers") == 2, "two registered workers")

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/json/", timeout=5) as response:
            state: dict[str, Any] = json.load(response)
            return state

    def wait(self, condition: Any, what: str, timeout_s: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in self.processes:
                assert process.process.poll() is None, f"{process.name} exited:\n{''.join(process.stderr[-40:])}"
            try:
                state = self.state()
                if condition(state):
                    return state
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the cluster never showed {what}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(gently=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    standalone = Cluster(tmp_path / "cluster")
    standalone.directory.mkdir()
    try:
        standalone.start()
        yield standalone
    finally:
        standalone.stop()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[WatchedProcess]]:
    """The flowscope processes of a test, stopped (collector last) whatever happens."""
    processes: list[WatchedProcess] = []
    yield processes
    for process in reversed(processes):
        process.stop()


def stored_flows(store: ResultStore) -> int:
    try:
        return sum(r["totals"]["flows"] for r in store.query("1m", view="all"))
    except sqlite3.Error:  # the job has not created the database yet
        return 0


def test_streaming_job_on_a_standalone_cluster_gives_the_embedded_results(
    cluster: Cluster, started: list[WatchedProcess], tmp_path: Path
) -> None:
    capture = generated_capture(tmp_path / "generated.ipfix", seconds=60, flows_per_export=200)
    expected = [r.to_json() for r in offline_results([capture], CONFIG)]
    total = sum(r["totals"]["flows"] for r in expected if r["interval"] == "1m" and r["view"] == "all")
    database = tmp_path / "results.db"

    collector = WatchedProcess("collect", [*FLOWSCOPE, "collect", "--log-level", "INFO", "--host", "127.0.0.1",
                                           "--udp-port", "0", "--tcp-port", "0", "--json-server", "127.0.0.1:0"],
                               env=ENVIRONMENT, log=tmp_path / "collect.log")
    started.append(collector)
    json_port = int(collector.wait_for(r"JSON flow stream on [\d.]+:(\d+)").group(1))
    udp_port = int(collector.wait_for(r"collecting on udp (\d+)").group(1))
    job = WatchedProcess("spark", [*FLOWSCOPE, "spark", "--json-source", f"127.0.0.1:{json_port}",
                                   "--master", cluster.url, "--work-dir", str(tmp_path / "work"), "--trigger", "1",
                                   *SETTINGS, "--set", f"store.path={database}"],
                         env=ENVIRONMENT, log=tmp_path / "spark.log")
    started.append(job)
    job.wait_for("Spark streaming from", timeout_s=120)
    collector.wait_for("JSON stream consumer connected", timeout_s=60)
    application = cluster.wait(lambda state: len(state.get("activeapps", [])) == 1, "the job's application")
    assert application["activeapps"][0]["cores"] == 2  # one executor on each worker
    time.sleep(0.5)  # let the server register the consumer before flows arrive

    replay = subprocess.run([*FLOWSCOPE, "replay", "--to", f"127.0.0.1:{udp_port}", "--input", str(capture),
                             "--no-restamp", "--rate", "4000"], check=False, capture_output=True, text=True,
                            timeout=60, env=ENVIRONMENT)
    assert replay.returncode == 0, replay.stderr
    store = ResultStore(StoreConfig(path=str(database)))  # a reader: the job's process writes
    seen = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and seen < total:
        assert job.process.poll() is None, f"flowscope spark exited:\n{''.join(job.stderr[-60:])}"
        seen = stored_flows(store)
        time.sleep(0.5)
    assert seen == total, f"{seen} of {total} flows reached the store"
    job.stop()
    assert job.process.returncode == 0, "".join(job.stderr[-60:])

    for interval in ("1s", "1m"):
        count = sum(1 for r in expected if r["interval"] == interval)
        assert len(store.query(interval, view="all", limit=100_000)) == count, interval
    for want in expected:
        got = store.at(want["interval"], want["start_ms"], view=want["view"])
        assert got is not None, (want["interval"], want["start_ms"])
        assert without_exporter_address(got) == without_exporter_address(want)
    # The executors ran on both workers (each keeps an application directory with their logs).
    for number in (1, 2):
        assert list((cluster.directory / f"worker-{number}").glob("app-*/*/stderr")), f"worker-{number} ran nothing"
