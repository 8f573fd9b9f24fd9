"""Spark's scalable path, Spark's socket path and the embedded engine on the same input, in one run.

One sender generates flows (``flowscope.tools.generate``, a fixed pool restamped to the wall
clock) and exports them as IPFIX over UDP on loopback at a target rate, in 10 chunks per second:
the chunk covering [t, t + 100 ms) holds flows that ended in that interval and is sent at
t + 100 ms. Three receivers, one after the other, each with its own rate ladder (``--rates``):

* ``parquet``: ``flowscope collect --parquet-dir DIR`` (a file every second) →
  ``flowscope spark --parquet-source DIR --master local[2] --coarse-refresh 10`` (``spark/stream.py``);
* ``socket``: ``flowscope collect --json-server`` → ``flowscope spark --json-source``
  (Spark's socket source, ``spark/job.py``'s ``StreamingReport``);
* ``embedded``: ``flowscope run`` (collector and embedded engine in one process).

All three use ``engine.time_base = "end"``, windows 1 s / 1 min / 1 h and write into their own
SQLite store. The benchmark polls the store (read only) every 0.2 s: a 1 s window's *delay* is
the time from sending its last chunk to the store first holding its complete flow count (the
``1s``/``all`` row, provisional or final). A rate is *held* when every window of the step is
complete within the step plus a drain of ``DRAIN_S`` and the delay does not grow over the step
(the median of the last third of its windows at most max(5 s, step / 2) above the first
third's: a Spark micro-batch can take tens of seconds on a loaded machine, so the delay saws):
the path keeps up. It is *within target* when, besides, the p99 delay is at most
``TARGET_DELAY_S``. The ladder of a path stops at its first rate not held.

    python bench/spark_bench.py              # full ladders, writes bench/results/spark-<date>.json
    python bench/spark_bench.py --quick      # smoke run (a few minutes)

Everything started here is stopped at the end (also on errors and Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil
from flowscope.model import FlowBatch
from flowscope.tools.encode import EncoderConfig, make_encoder
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

FLOWSCOPE = [sys.executable, "-m", "flowscope.cli"]
RATES = {  # about 12 minutes in all with --seconds 45
    "parquet": [25_000, 50_000, 100_000, 200_000, 400_000],
    "socket": [1_000, 2_500, 5_000, 10_000],
    "embedded": [100_000, 400_000],
}
QUICK_RATES = {"parquet": [20_000, 100_000], "socket": [2_000, 5_000], "embedded": [20_000, 100_000]}
TARGET_DELAY_S = 10.0
DRAIN_S = 60.0
CHUNKS_PER_SECOND = 10
POOL_FLOWS = 100_000


# ----------------------------------------------------------------------------------------- sender
class Sender:
    """IPFIX over UDP at a set rate; remembers per 1 s window how many flows it sent and when the last left."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pool = TrafficGenerator(GeneratorConfig(seed=7, local_hosts=2_000, remote_hosts=50_000)).flows(
            POOL_FLOWS, now_ms=0)
        self.durations = np.clip(self.pool["time_end"] - self.pool["time_start"], 0, 60_000)
        self.encoder = make_encoder("ipfix", EncoderConfig(domain=1, template_refresh_packets=50))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sent: dict[int, int] = {}  # window start ms → flows
        self.last_sent_s: dict[int, float] = {}  # window start ms → wall time its last chunk left
        self.rate = 0
        self.offset = 0
        self.late_chunks = 0
        self.rng = np.random.default_rng(5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _chunk(self, count: int, start_ms: int) -> FlowBatch:
        rows = (np.arange(count) + self.offset) % POOL_FLOWS
        self.offset = (self.offset + count) % POOL_FLOWS
        columns = {name: column[rows].copy() for name, column in self.pool.columns.items()}
        end = start_ms + self.rng.integers(0, 1000 // CHUNKS_PER_SECOND, count)
        columns["time_end"] = end.astype(np.int64)
        columns["time_start"] = (end - self.durations[rows]).astype(np.int64)
        columns["time_received"] = columns["time_end"].copy()
        return FlowBatch(columns)

    def _loop(self) -> None:
        step_ms = 1000 // CHUNKS_PER_SECOND
        tick_ms = (int(time.time() * 1000) // step_ms + 1) * step_ms
        while not self._stop.is_set():
            delay = tick_ms / 1000 + step_ms / 1000 - time.time()  # chunk [tick, tick+step) leaves at its end
            if delay > 0:
                time.sleep(delay)
            elif delay < -step_ms / 1000:
                self.late_chunks += 1
            count = self.rate // CHUNKS_PER_SECOND
            if count:
                encoded = self.encoder.encode(self._chunk(count, tick_ms), tick_ms + step_ms)
                for datagram in encoded.datagrams:
                    with contextlib.suppress(BlockingIOError, OSError):
                        self.sock.sendto(datagram, ("127.0.0.1", self.port))
                window = tick_ms - tick_ms % 1000
                self.sent[window] = self.sent.get(window, 0) + count
                self.last_sent_s[window] = time.time()
            tick_ms += step_ms

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sock.close()


# -------------------------------------------------------------------------------------- processes
class Process:
    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen([*FLOWSCOPE, *args], stdout=subprocess.DEVNULL, stderr=self.log,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)

    def wait_for(self, pattern: str, timeout_s: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_path.read_text(errors="replace"))
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"never saw {pattern!r} in {self.log_path}:\n{self.log_path.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children still running (Spark's JVM is one)."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        pids: list[int] = []
        queue = [self.process.pid]
        while queue:  # the process and its descendants, through every thread's children
            pid = queue.pop()
            pids.append(pid)
            with contextlib.suppress(OSError, ValueError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    queue += [int(child) for child in (task / "children").read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # flowscope stops its own children (Spark's JVM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# ``--host-statistics``: the generator's local networks, and one local host watched.
HOST_STATISTICS = """
[stats]
local_networks = ["10.0.0.0/16", "fd00:10::/64"]
watched_hosts = ["10.0.0.1"]
"""


def write_config(path: Path, work: Path, udp_port: int, host_statistics: bool = False) -> None:
    path.write_text(
        f"""
[collect]
host = "127.0.0.1"
udp_ports = [{udp_port}]
tcp_ports = []
[engine]
windows = ["1s", "1m", "1h"]
time_base = "end"
grace = "2s"
state_dir = "{work}"
[store]
path = "{work / 'results.db'}"
[web]
host = ""
"""
        + (HOST_STATISTICS if host_statistics else "")
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Receiver:
    name: str
    processes: list[Process] = field(default_factory=list)
    udp_port: int = 0
    store: Path = Path()
    consumer: Process | None = None


@dataclass
class SparkTuning:
    trigger_s: float = 1.0
    shuffle_partitions: int = 2
    coarse_refresh_s: float = 10.0
    max_files_per_trigger: int = 1000
    host_statistics: bool = False


def start_path(name: str, work: Path, tuning: SparkTuning) -> Receiver:
    work.mkdir(parents=True)
    udp_port = free_udp_port()
    config = work / "flowscope.toml"
    write_config(config, work, udp_port, tuning.host_statistics)
    path = Receiver(name, udp_port=udp_port, store=work / "results.db")
    if name == "embedded":
        run = Process(["run", "--config", str(config), "--log-level", "WARNING"], work / "run.log")
        path.processes.append(run)
        path.consumer = run
        run.wait_for(r"collecting on udp")
        return path
    collect_args = ["collect", "--host", "127.0.0.1", "--udp-port", str(udp_port), "--tcp-port", "0", "--stats"]
    spark_args = ["spark", "--config", str(config), "--work-dir", str(work / "spark"), "--master", "local[2]",
                  "--trigger", str(tuning.trigger_s), "--shuffle-partitions", str(tuning.shuffle_partitions)]
    if name == "parquet":
        collector = Process([*collect_args, "--parquet-dir", str(work / "flows"), "--parquet-roll", "1"],
                            work / "collect.log")
        path.processes.append(collector)
        collector.wait_for(r"collecting on udp")
        spark = Process([*spark_args, "--parquet-source", str(work / "flows"), "--coarse-refresh",
                         str(tuning.coarse_refresh_s), "--max-files-per-trigger", str(tuning.max_files_per_trigger)],
                        work / "spark.log")
    else:
        collector = Process([*collect_args, "--json-server", "127.0.0.1:0"], work / "collect.log")
        path.processes.append(collector)
        json_port = int(collector.wait_for(r"JSON flow stream on [\d.]+:(\d+)").group(1))
        spark = Process([*spark_args, "--json-source", f"127.0.0.1:{json_port}"], work / "spark.log")
    path.processes.append(spark)
    path.consumer = spark
    spark.wait_for(r"Spark streaming from", timeout_s=180)
    if name == "socket":
        collector.wait_for(r"JSON stream consumer connected", timeout_s=120)
    return path


# ------------------------------------------------------------------------------------ measurement
class StoreWatch:
    """Polls the 1 s results of the unfiltered view; remembers when each window first had ``want`` flows."""

    def __init__(self, store: Path, sender: Sender) -> None:
        self.store = store
        self.sender = sender
        self.complete_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        connection = None
        while not self._stop.wait(0.2):
            if connection is None:
                if not self.store.exists():
                    continue
                connection = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
            since = min((w for w in self.sender.sent if w not in self.complete_s), default=None)
            if since is None:
                continue
            try:
                rows = connection.execute(
                    "SELECT start_ms, flows FROM results WHERE interval = '1s' AND view = 'all' AND start_ms >= ?",
                    (since,)).fetchall()
            except sqlite3.OperationalError:
                continue
            now = time.time()
            for start_ms, flows in rows:
                want = self.sender.sent.get(start_ms)
                if want and start_ms in self.sender.last_sent_s and start_ms not in self.complete_s and \
                        flows >= want and start_ms + 1000 <= max(self.sender.sent):
                    self.complete_s[start_ms] = now
        if connection is not None:
            connection.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_step(sender: Sender, watch: StoreWatch, consumer: Process, rate: int, seconds: float) -> dict[str, Any]:
    sender.rate = rate
    time.sleep(1.5)  # the rate change lands on the next whole second
    cpu_before, started = consumer.cpu_seconds(), time.monotonic()
    first = (int(time.time() * 1000) // 1000 + 1) * 1000
    time.sleep(seconds)
    last = (int(time.time() * 1000) // 1000 - 1) * 1000
    cpu_used = consumer.cpu_seconds() - cpu_before
    elapsed = time.monotonic() - started
    windows = [w for w in range(first, last + 1, 1000) if sender.sent.get(w)]
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and any(w not in watch.complete_s for w in windows):
        time.sleep(0.5)
    delays = [watch.complete_s[w] - sender.last_sent_s[w] for w in windows if w in watch.complete_s]
    missing = [w for w in windows if w not in watch.complete_s]
    p50 = float(np.percentile(delays, 50)) if delays else None
    p99 = float(np.percentile(delays, 99)) if delays else None
    # Keeping up: every window complete, and the delay not growing over the step (a backlog would).
    third = max(1, len(delays) // 3)
    growth = float(np.median(delays[-third:]) - np.median(delays[:third])) if delays else None
    held = bool(windows) and not missing and growth is not None and growth <= max(5.0, seconds / 2)
    return {
        "rate_flows_per_s": rate, "windows": len(windows), "windows_incomplete": len(missing),
        "flows_sent": sum(sender.sent[w] for w in windows),
        "delay_p50_s": None if p50 is None else round(p50, 2), "delay_p99_s": None if p99 is None else round(p99, 2),
        "delay_max_s": round(max(delays), 2) if delays else None,
        "delay_growth_s": None if growth is None else round(growth, 2), "held": held,
        "within_target": held and p99 is not None and p99 <= TARGET_DELAY_S,
        "consumer_cpu_s_per_s": round(cpu_used / elapsed, 2), "load_average": benchutil.load_average(),
        "sender_late_chunks": sender.late_chunks,
    }


def run_path(name: str, rates: list[int], seconds: float, root: Path, tuning: SparkTuning) -> dict[str, Any]:
    print(f"== {name}", flush=True)
    path = start_path(name, root / name, tuning)
    sender = Sender(path.udp_port)
    watch = StoreWatch(path.store, sender)
    steps: list[dict[str, Any]] = []
    try:
        sender.start()
        watch.start()
        sender.rate = rates[0]
        time.sleep(min(seconds, 15))  # warm-up (Spark's first micro-batches compile their plans)
        assert path.consumer is not None
        for rate in rates:
            step = run_step(sender, watch, path.consumer, rate, seconds)
            steps.append(step)
            print(f"{name:9s} {rate:>8,d} flows/s  held={step['held']!s:5s} delay p50 {step['delay_p50_s']} s "
                  f"p99 {step['delay_p99_s']} s  incomplete {step['windows_incomplete']}/{step['windows']}  "
                  f"cpu {step['consumer_cpu_s_per_s']}", flush=True)
            if not step["held"]:
                break
    finally:
        sender.stop()
        watch.stop()
        for process in reversed(path.processes):
            process.stop()
    logs = {p.log_path.name: p.log_path.read_text(errors="replace")[-2000:] for p in path.processes}
    held = [s["rate_flows_per_s"] for s in steps if s["held"]]
    within = [s["rate_flows_per_s"] for s in steps if s["within_target"]]
    return {"steps": steps, "sustained_flows_per_s": max(held) if held else 0,
            "sustained_within_target_flows_per_s": max(within) if within else 0,
            "log_tails": logs if not held else {}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two short steps per path (smoke run)")
    parser.add_argument("--seconds", type=float, help="length of one rate step (default 60, quick 10)")
    parser.add_argument("--paths", default="parquet,socket,embedded", help="which paths, comma separated")
    parser.add_argument("--rates", action="append", default=[], metavar="PATH=R1,R2,...",
                        help="the rate ladder of one path (flows/s), e.g. parquet=50000,100000; repeatable")
    parser.add_argument("--trigger", type=float, default=1.0, help="Spark micro-batch trigger in seconds")
    parser.add_argument("--shuffle-partitions", type=int, default=2, help="spark.sql.shuffle.partitions")
    parser.add_argument("--coarse-refresh", type=float, default=10.0,
                        help="parquet: provisional minute/hour results at most every S seconds")
    parser.add_argument("--max-files-per-trigger", type=int, default=1000, help="parquet: files per micro-batch")
    parser.add_argument("--host-statistics", action="store_true",
                        help="every path also computes host statistics (the generator's local networks)")
    parser.add_argument("--work-dir", help="keep the stores, files and logs here (default: a temporary directory)")
    parser.add_argument("--output", help="result file (default bench/results/spark-<date>.json)")
    args = parser.parse_args()
    rates = dict(QUICK_RATES if args.quick else RATES)
    for ladder in args.rates:
        name, _, values = ladder.partition("=")
        rates[name] = [int(value) for value in values.split(",")]
    tuning = SparkTuning(args.trigger, args.shuffle_partitions, args.coarse_refresh, args.max_files_per_trigger,
                         args.host_statistics)
    seconds = args.seconds or (10 if args.quick else 60)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    result: dict[str, Any] = {
        "benchmark": "spark", "machine": benchutil.machine_info(), "command": benchutil.command_line(),
        "step_seconds": seconds, "target_delay_s": TARGET_DELAY_S, "drain_s": DRAIN_S, "trigger_s": args.trigger,
        "spark_tuning": vars(tuning), "rates": {name: rates[name] for name in args.paths.split(",")},
        "paths": {},
    }
    with tempfile.TemporaryDirectory(prefix="flowscope-spark-bench-") as scratch:
        root = Path(args.work_dir) if args.work_dir else Path(scratch)
        for name in args.paths.split(","):
            result["paths"][name] = run_path(name, rates[name], seconds, root, tuning)
    paths = result["paths"]
    if "parquet" in paths and "socket" in paths and paths["socket"]["sustained_flows_per_s"]:
        result["parquet_over_socket"] = round(
            paths["parquet"]["sustained_flows_per_s"] / paths["socket"]["sustained_flows_per_s"], 1)
    result["load_average_at_end"] = benchutil.load_average()
    target = benchutil.write_result("spark", result, args.output)
    benchutil.print_table(
        ["path", "sustained flows/s", "within 10 s", "delay p50 s", "delay p99 s"],
        [[name, f"{p['sustained_flows_per_s']:,}", f"{p['sustained_within_target_flows_per_s']:,}",
          *(str(next((s[k] for s in reversed(p["steps"]) if s["held"]), "-")) for k in ("delay_p50_s", "delay_p99_s"))]
         for name, p in paths.items()],
    )
    print(f"written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
