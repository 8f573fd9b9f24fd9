"""End to end: ``flowscope replay`` (IPFIX over UDP on loopback) → ``flowscope run``, beside nfcapd.

What is measured (issue "stream engine", "What it must show"):

* a rate ladder: at each rate, a fresh ``flowscope run`` (its own state directory, UDP port on
  127.0.0.1, TCP off, default settings otherwise) receives ``flowscope replay --generate --format
  ipfix`` for ``--step`` seconds; then, on the very same replay (same seed, rate and duration) and
  with flowscope stopped, a fresh ``nfcapd`` on its own port (``-B`` as large as flowscope's
  buffer; the kernel caps it at net.core.rmem_max). One tool at a time, so they never compete for
  the CPU with each other (they still compete with the sender and with whatever else runs).
  Per step: flows sent (``replay --json``; a sender that reached < 97 % of the rate marks the step
  ``sender_limited``), decoded records and engine flows (the counters of ``STATE_DIR/stats.json``),
  sequence loss (``decode_sequence_lost_total``), kernel drops of the receiving socket(s)
  (``drops`` of /proc/net/udp, summed over the sockets bound to the port), drops inside flowscope
  (``collector_dropped_total``), the live delay (``live_delay`` of stats.json: arrival of a batch
  → its appearance in a published live result), the receiver's peak memory (``VmHWM``, summed
  over its process tree), CPU time and socket buffers. For nfcapd: the flows and ``Sequence
  failures`` of ``nfdump -I`` over the files it wrote, and its socket's kernel drops.
  Zero loss: sequence loss 0, kernel drops 0 (and no drops inside flowscope), flows == sent.
  Kept up: flowscope's live delay p99 ≤ 3 s (beyond, a backlog grows in memory); nfcapd's socket
  queue empty within 1 s of the last datagram;
* confirmation (``--confirm`` s, 60 in the full run): the best ladder rate of each tool (the
  highest loss-free one not limited by the sender, before two failures in a row); if that fails,
  the highest rate at which it also kept up, then lower ones (``--confirm-tries`` runs at most);
* flowscope's confirmed rate once more with nfcapd's socket buffer (is the larger one the reason?);
* host statistics memory: ``flowscope run --set stats.local_networks=10.0.0.0/8`` fed with
  ``--local-network 10.0.0.0/8 --local-hosts 1000000`` long enough that (in expectation, from
  the generator's Zipf law) about 95 % of the hosts have been seen: peak memory (``VmHWM``),
  sampled every 5 s with the engine's progress; optionally the same without local networks;
* ``collect.workers=2`` (SO_REUSEPORT worker processes) and a shorter
  ``engine.provisional_interval``, at the reference rate (the confirmed one);
* profiles of ``flowscope run`` (``py-spy record --nonblocking``, raw collapsed stacks next to the
  result file) during the memory run and, when a target is missed, on the ladder rate above the
  reference: once only the samples of the thread holding the GIL, once every busy thread (waiting
  frames, recognized by their source line, are counted apart); shares per thread, function and line.

The machine's other load is recorded per step (load average, and the CPU used by processes other
than the sender and the receiver, from /proc/stat): on a small machine it moves every figure.
So does a change of src/flowscope during a run (the digest at start and end is recorded).

    .venv/bin/python bench/engine_bench.py            # full run (~25 min), bench/results/engine-<date>.json
    .venv/bin/python bench/engine_bench.py --quick    # smoke run (< 2 min)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import linecache
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

import benchutil
import flowscope
from flowscope.tools.generate import GeneratorConfig, zipf_probabilities

BIN = Path(sys.executable).parent
FLOWSCOPE = str(BIN / "flowscope")
PY_SPY = BIN / "py-spy"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_LIVE_P99_MS = 1000
TARGET_MEMORY_BYTES = 1_000_000_000  # "under 1 GB"
RECEIVE_BUFFER = 33_554_432  # what flowscope asks for by default; nfcapd gets the same (-B)
KEPT_UP_MS = 3000  # live delay p99 beyond this: flowscope is building a backlog (1 s publication + batching)
SENDER_SHORTFALL = 0.97  # a step whose sender reached less than this share of the rate is marked


# ------------------------------------------------------------------ processes we started
class Processes:
    """Every process this benchmark starts, so that all of them are stopped, whatever happens."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path | None = None, capture: bool = False) -> subprocess.Popen[bytes]:
        """Starts ``argv`` in its own session; stderr (and stdout unless ``capture``) go to ``log``."""
        with open(log or os.devnull, "wb") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(argv, stdout=subprocess.PIPE if capture else out,
                                       stderr=subprocess.STDOUT if capture else out, start_new_session=True)
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
        """SIGTERM (the graceful path of flowscope and nfcapd), then SIGKILL for the whole group."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # children of the process (worker processes) left behind share its process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process in self.running:
            self.running.remove(process)
        return process.returncode

    def stop_all(self) -> None:
        for process in list(reversed(self.running)):
            self.stop(process, timeout=10.0)


PROCESSES = Processes()


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# ------------------------------------------------------------------------- /proc readers
def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def udp_sockets(port: int) -> list[dict[str, int]]:
    """The sockets bound to local ``port`` in /proc/net/udp{,6}: rx queue bytes and drops of each."""
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.append({"rx_queue": int(fields[4].split(":")[1], 16), "drops": int(fields[12]),
                              "inode": int(fields[9])})
    return found


def receive_buffers(port: int) -> list[int]:
    """SO_RCVBUF of the sockets bound to ``port`` (``rb`` of ``ss -uam``; Linux doubles what was asked)."""
    done = subprocess.run(["ss", "-uamnH", "sport", "=", f":{port}"], capture_output=True, check=False, timeout=30)
    return [int(v) for v in re.findall(r"rb(\d+)", done.stdout.decode(errors="replace"))]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the state (3rd) on


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_s(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def tree_vmhwm_kib(pid: int) -> dict[str, int]:
    """Peak resident set size of the process and the sum over its tree (KiB)."""
    own = total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text(encoding="ascii")
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            value = int(match.group(1))
            total += value
            own = value if member == pid else own
    return {"main_kib": own, "tree_kib": total, "processes": len(process_tree(pid))}


def system_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK  # minus idle and iowait


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ sender
def replay(port: int, rate: float, seconds: float, args: argparse.Namespace, seed: int,
           extra: list[str] | None = None) -> dict[str, Any]:
    """Runs ``flowscope replay`` to the end; its JSON report plus the CPU it used."""
    argv = [FLOWSCOPE, "replay", "--to", f"{HOST}:{port}", "--generate", "--format", "ipfix",
            "--rate", str(int(rate)), "--duration", str(seconds), "--seed", str(seed),
            "--max-datagram", str(args.max_datagram), "--workers", str(args.sender_workers), "--json",
            *(extra or [])]
    cpu0 = children_cpu_s()
    t0 = time.monotonic()
    report = finish_replay(PROCESSES.start(argv, capture=True), timeout=seconds + 300)
    wall = time.monotonic() - t0
    report["cpu_s"] = round(children_cpu_s() - cpu0, 2)
    report["wall_s"] = round(wall, 2)
    report["argv"] = " ".join(argv[1:])
    return report


def finish_replay(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Waits for a ``flowscope replay --json`` started by PROCESSES; its report (the last JSON line)."""
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        PROCESSES.stop(process)
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"flowscope replay failed ({process.returncode}): {text[-2000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _sender_summary(sent: dict[str, Any], rate: float) -> dict[str, Any]:
    return {
        "sent": sent["flows"],
        "datagrams": sent["datagrams"],
        "achieved_rate": round(sent["rate"]),
        "sender_max_behind_s": round(sent["max_behind_s"], 3),
        "sender_limited": sent["rate"] < SENDER_SHORTFALL * rate,
        "sender_cpu_s": sent["cpu_s"],
        "send_errors": sent["send_errors"],
    }


class LoadProbe:
    """CPU used by everything but our sender and receiver over an interval (other engineers' work)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = system_busy_s()
        self.load = benchutil.load_average()

    def other_cores(self, ours_cpu_s: float) -> float:
        wall = time.monotonic() - self.t0
        return round(max(0.0, (system_busy_s() - self.busy0 - ours_cpu_s) / wall), 2) if wall > 0 else 0.0


# --------------------------------------------------------------------------- flowscope
def _total(counters: dict[str, list[list[Any]]], name: str, **labels: str) -> int:
    return sum(int(value) for found, value in counters.get(name, [])
               if all(found.get(k) == v for k, v in labels.items()))


def _read_stats(path: Path) -> dict[str, Any] | None:
    try:
        stats: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return stats
    except (OSError, ValueError):
        return None


class Flowscope:
    """One ``flowscope run`` on its own port and state directory."""

    def __init__(self, work: Path, name: str, settings: list[str]) -> None:
        self.dir = work / name
        self.dir.mkdir(parents=True)
        self.port = free_udp_port()
        self.stats_path = self.dir / "stats.json"
        self.log = self.dir / "run.log"
        self.argv = [FLOWSCOPE, "run", "--log-level", "WARNING", "--set", f"collect.host={HOST}",
                     "--set", f"collect.udp_ports={self.port}", "--set", "collect.tcp_ports=",
                     # its own web port too, so that two benchmarks (or a `make run`) never collide
                     "--set", f"web.port={free_port(socket.SOCK_STREAM)}",
                     "--set", f"engine.state_dir={self.dir}", *[a for s in settings for a in ("--set", s)]]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.process = PROCESSES.start(self.argv, log=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flowscope run exited ({self.process.returncode}): {self.log_tail()}")
            if "collecting on" in self.log.read_text(errors="replace") and udp_sockets(self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"flowscope run did not start within {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def drain(self, sent: int, since: float, timeout: float) -> tuple[dict[str, Any], float]:
        """Waits for stats.json written after ``since`` (a wall time) with every sent flow counted,
        or with the engine's count unchanged over two writes; (stats, seconds from ``since``)."""
        deadline = time.monotonic() + timeout
        last_mtime, last_flows, stable = 0.0, -1, 0
        stats: dict[str, Any] | None = None
        done_at = time.time()
        while time.monotonic() < deadline:
            try:
                mtime = self.stats_path.stat().st_mtime
            except OSError:
                mtime = 0.0
            if mtime > since and mtime != last_mtime:
                fresh = _read_stats(self.stats_path)
                if fresh is not None:
                    last_mtime, stats = mtime, fresh
                    flows = _total(fresh["counters"], "engine_flows_total")
                    if flows != last_flows:
                        done_at = mtime
                    if flows >= sent:
                        break
                    stable = stable + 1 if flows == last_flows else 0
                    last_flows = flows
                    if stable >= 2:
                        break
            time.sleep(0.2)
        if stats is None:
            raise RuntimeError(f"no stats.json from flowscope run after the replay: {self.log_tail()}")
        return stats, max(0.0, done_at - since)

    def stop(self) -> int | None:
        return PROCESSES.stop(self.process) if self.process is not None else None


def flowscope_step(work: Path, name: str, rate: float, seconds: float, args: argparse.Namespace, seed: int,
                   settings: list[str] | None = None, replay_extra: list[str] | None = None,
                   profiler: Profiler | None = None) -> dict[str, Any]:
    run = Flowscope(work, name, settings or [])
    run.start()
    assert run.process is not None
    try:
        sockets = udp_sockets(run.port)
        buffers = receive_buffers(run.port)
        cpu0 = tree_cpu_s(run.process.pid)
        probe = LoadProbe()
        if profiler is not None:
            profiler.start(run.process.pid)
        sent = replay(run.port, rate, seconds, args, seed, replay_extra)
        replay_end = time.time()
        if profiler is not None:
            profiler.join()
        stats, drain_s = run.drain(sent["flows"], replay_end, timeout=args.drain_timeout)
        cpu = tree_cpu_s(run.process.pid) - cpu0
        other = probe.other_cores(cpu + sent["cpu_s"])
        kernel = udp_sockets(run.port)
        memory = tree_vmhwm_kib(run.process.pid)
        processes = memory["processes"]
        alive = run.process.poll() is None
    finally:
        code = run.stop()
    counters = stats["counters"]
    record = {
        "tool": "flowscope",
        "rate": int(rate),
        "seconds": seconds,
        **_sender_summary(sent, rate),
        "decoded_records": _total(counters, "decode_records_total", kind="data"),
        "engine_flows": _total(counters, "engine_flows_total"),
        "sequence_lost": _total(counters, "decode_sequence_lost_total"),
        "kernel_drops": sum(s["drops"] for s in kernel),
        "kernel_drops_stats_json": _total(counters, "collector_kernel_drops_total"),
        "dropped_inside": _total(counters, "collector_dropped_total"),
        "decode_errors": _total(counters, "decode_errors_total"),
        "live_delay": stats.get("live_delay", {}),
        "drain_s": round(drain_s, 1),
        "vmhwm_mib": round(memory["tree_kib"] / 1024, 1),
        "vmhwm_main_mib": round(memory["main_kib"] / 1024, 1),
        "processes": processes,
        "sockets": len(sockets),
        "receive_buffers": buffers,
        "cpu_s": round(cpu, 2),
        "cpu_us_per_flow": round(cpu / max(sent["flows"], 1) * 1e6, 3),
        "load_average": probe.load,
        "other_cpu_cores": other,
        "exit_code": code,
        "alive_until_stop": alive,
        "settings": settings or [],
    }
    record["zero_loss"] = (alive and record["sequence_lost"] == 0 and record["kernel_drops"] == 0
                           and record["dropped_inside"] == 0 and record["engine_flows"] == record["sent"])
    # Kept up: the live results were at most KEPT_UP_MS behind at p99 (no backlog growing in memory).
    record["kept_up"] = record["live_delay"].get("p99_ms", 10**9) <= KEPT_UP_MS
    shutil.rmtree(run.dir, ignore_errors=True)
    return record


# ------------------------------------------------------------------------------ nfcapd
def _nfdump_info(path: Path) -> dict[str, int]:
    done = subprocess.run(["nfdump", "-r", str(path), "-I"], capture_output=True, check=True, timeout=300)
    info = {}
    for line in done.stdout.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            info[key.strip()] = int(value.strip())
    return info


def nfcapd_step(work: Path, name: str, rate: float, seconds: float, args: argparse.Namespace,
                seed: int) -> dict[str, Any]:
    folder = work / name
    folder.mkdir(parents=True)
    port = free_udp_port()
    log = work / f"{name}.log"
    # -t 3600: one file per hour (a step may still cross an hour: every file is read)
    process = PROCESSES.start(["nfcapd", "-b", HOST, "-p", str(port), "-w", str(folder), "-B", str(RECEIVE_BUFFER),
                               "-t", "3600"], log=log)
    try:
        deadline = time.monotonic() + 30
        while not udp_sockets(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nfcapd did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        buffers = receive_buffers(port)
        cpu0 = tree_cpu_s(process.pid)
        probe = LoadProbe()
        sent = replay(port, rate, seconds, args, seed)
        replay_end = time.monotonic()
        idle = 0
        while idle < 5 and time.monotonic() - replay_end < args.drain_timeout:  # its socket queue drained
            idle = idle + 1 if all(s["rx_queue"] == 0 for s in udp_sockets(port)) else 0
            time.sleep(0.1)
        drain_s = time.monotonic() - replay_end - 0.5
        cpu = tree_cpu_s(process.pid) - cpu0
        other = probe.other_cores(cpu + sent["cpu_s"])
        kernel = udp_sockets(port)
        memory = tree_vmhwm_kib(process.pid)
        alive = process.poll() is None
    finally:
        code = PROCESSES.stop(process)
    text = log.read_text(errors="replace")
    logged = re.search(r"Flows: (\d+).*?Sequence Errors: (\d+)", text)
    flows = failures = 0
    files = sorted(p for p in folder.iterdir() if p.name.startswith("nfcapd.") and "current" not in p.name)
    for path in files:
        info = _nfdump_info(path)
        flows += info.get("Flows", 0)
        failures += info.get("Sequence failures", 0)
    record = {
        "tool": "nfcapd",
        "rate": int(rate),
        "seconds": seconds,
        **_sender_summary(sent, rate),
        "stored_flows": flows,
        "sequence_failures": failures,
        "log_flows": int(logged.group(1)) if logged else None,
        "log_sequence_errors": int(logged.group(2)) if logged else None,
        "kernel_drops": sum(s["drops"] for s in kernel),
        "files": len(files),
        "receive_buffers": buffers,
        "drain_s": round(max(drain_s, 0.0), 1),
        "vmhwm_mib": round(memory["tree_kib"] / 1024, 1),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_flow": round(cpu / max(sent["flows"], 1) * 1e6, 3),
        "load_average": probe.load,
        "other_cpu_cores": other,
        "exit_code": code,
    }
    record["zero_loss"] = (alive and failures == 0 and record["kernel_drops"] == 0 and flows == record["sent"])
    record["kept_up"] = record["drain_s"] <= 1.0  # its socket queue emptied within a second of the last send
    shutil.rmtree(folder, ignore_errors=True)
    return record


# ----------------------------------------------------------------------------- profile
class Profiler:
    """``py-spy record`` runs one after the other on a background thread while the replay sends.

    Each run is ``(output, flags)``: ``--gil`` keeps only samples of the thread holding the GIL
    (where the interpreter's one core goes); without it, every thread that is not idle.
    ``--nonblocking`` samples without pausing flowscope.
    """

    def __init__(self, runs: list[tuple[Path, list[str]]], seconds: float, log: Path) -> None:
        self.runs = runs
        self.seconds = max(1, int(seconds))
        self.log = log
        self.delay_s = 0.0  # wait this long after start() before the first recording
        self._thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._record, args=(pid,), daemon=True)
        self._thread.start()

    def _record(self, pid: int) -> None:
        time.sleep(self.delay_s)
        for output, flags in self.runs:
            spy = PROCESSES.start([str(PY_SPY), "record", "--threads", "--format", "raw", "--rate", "100",
                                   *flags, "-d", str(self.seconds), "-p", str(pid), "-o", str(output)], log=self.log)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=self.seconds + 60)
            PROCESSES.stop(spy)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=self.delay_s + 2 * self.seconds * len(self.runs) + 120)


def _function(frame: str) -> str:
    """``name (file.py:LINE)`` → ``name (file.py)``: lines of one function are summed."""
    return re.sub(r":\d+\)$", ")", frame.strip())


_WAITING = re.compile(r"\.poll\(|\.wait\(|sleep\(|select\(|\.get\(")
_SOURCE_ROOTS = (Path(flowscope.__file__).resolve().parent.parent, Path(threading.__file__).resolve().parent)


def waiting_frame(frame: str) -> bool:
    """Is this leaf frame a thread waiting (poll, Condition/Event wait, sleep, queue get)?

    py-spy's idle detection does not work everywhere (here it reports threads blocked in poll()
    and Condition.wait as busy), so the source line of the leaf frame decides.
    """
    if re.match(r"(Condition|Event|Semaphore|Barrier|Thread)\.(wait|join) ", frame.strip()):
        return True
    match = re.search(r"\((.+):(\d+)\)$", frame.strip())
    if not match:
        return False
    for root in _SOURCE_ROOTS:
        source = linecache.getline(str(root / match.group(1)), int(match.group(2)))
        if source:
            return bool(_WAITING.search(source))
    return False


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Shares of the busy samples (leaf frames that wait are counted apart, per thread): per thread, per
    function (self = on top of the stack; inclusive) and per line on top of the stack (time in a C call,
    e.g. ``recvfrom_into``, counts for the calling line)."""
    threads: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    own: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_thread_own: dict[str, Counter[str]] = {}
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0]) if frames[0].startswith("thread (") else "?"
        if len(frames) > 1 and waiting_frame(frames[-1]):
            waiting[thread] += count
            continue
        functions = [_function(f) for f in frames[1:]] or [thread]
        total += count
        threads[thread] += count
        own[functions[-1]] += count
        lines[frames[-1].strip() if len(frames) > 1 else thread] += count
        by_thread_own.setdefault(thread, Counter())[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count

    def shares(counter: Counter[str], limit: int) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(limit)] if total else []

    return {
        "busy_samples": total,
        "waiting_samples_by_thread": dict(waiting.most_common()),
        "threads_percent": shares(threads, 20),
        "self_percent": shares(own, top),
        "inclusive_percent": shares(inclusive, top),
        "self_lines_percent": shares(lines, top),
        "self_percent_by_thread": {t: shares(c, 12) for t, c in by_thread_own.items()},
    }


# ---------------------------------------------------------------------- host statistics
def expected_distinct(hosts: int, flows: float, v4_share: float, skew: float) -> float:
    """Distinct local IPv4 hosts seen in expectation after ``flows`` generator flows."""
    probabilities = zipf_probabilities(hosts, skew)
    return float(np.sum(-np.expm1(-flows * v4_share * probabilities)))


def flows_for_distinct(hosts: int, share: float, v4_share: float, skew: float) -> int:
    low, high = 1.0, 1e12
    while high / low > 1.01:
        middle = math.sqrt(low * high)
        if expected_distinct(hosts, middle, v4_share, skew) >= share * hosts:
            high = middle
        else:
            low = middle
    return int(high)


def host_stats_active(state_dir_settings: list[str]) -> dict[str, Any]:
    """What the latest provisional 1m and 1h results say about host statistics (``hosts.local.hosts``:
    the local hosts the engine tracks)."""
    found: dict[str, Any] = {}
    for interval in ("1m", "1h"):
        argv = [FLOWSCOPE, "report", "--interval", interval, "--provisional", "--json",
                *[a for s in state_dir_settings for a in ("--set", s)]]
        done = subprocess.run(argv, capture_output=True, check=False, timeout=120)
        try:
            result = json.loads(done.stdout.decode() or "null")
        except ValueError:
            result = None
        if not isinstance(result, dict):
            found[interval] = {"report_found": False}
            continue
        hosts = result.get("hosts")
        local = hosts.get("local", {}) if isinstance(hosts, dict) else {}
        found[interval] = {
            "report_found": True,
            "has_hosts_section": isinstance(hosts, dict),
            "local_hosts": local.get("hosts") if isinstance(local, dict) else None,
            "watched": len(hosts.get("watched", [])) if isinstance(hosts, dict) else None,
            "flows": result.get("totals", {}).get("flows"),
        }
    return found


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text(encoding="ascii")
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) if match else 0
    return total


def hosts_memory(work: Path, rate: float, args: argparse.Namespace, *, local_networks: bool = True,
                 profiler: Profiler | None = None) -> dict[str, Any]:
    """Peak memory while ~95 % of ``--hosts`` local hosts are seen (in expectation), sampled every 5 s
    with the engine's progress (engine flows against what was sent by then: a growing gap is a backlog)."""
    generator = GeneratorConfig()
    v4_share = 1.0 - generator.ipv6_share
    needed = flows_for_distinct(args.hosts, 0.95, v4_share, generator.host_skew)
    seconds = float(min(max(math.ceil(needed / rate), 10), args.hosts_max_seconds))
    name = "hosts" if local_networks else "hosts-baseline"
    settings = ["stats.local_networks=10.0.0.0/8"] if local_networks else []
    extra = ["--local-network", "10.0.0.0/8", "--local-hosts", str(args.hosts)]
    run = Flowscope(work, name, settings)
    run.start()
    assert run.process is not None
    samples: list[dict[str, Any]] = []
    try:
        cpu0 = tree_cpu_s(run.process.pid)
        probe = LoadProbe()
        argv = [FLOWSCOPE, "replay", "--to", f"{HOST}:{run.port}", "--generate", "--format", "ipfix",
                "--rate", str(int(rate)), "--duration", str(seconds), "--seed", "4242",
                "--max-datagram", str(args.max_datagram), "--workers", str(args.sender_workers), "--json", *extra]
        replay_cpu0 = children_cpu_s()
        if profiler is not None:
            profiler.delay_s = max(0.0, seconds - profiler.seconds * len(profiler.runs) - 5)
            profiler.start(run.process.pid)
        replayer = PROCESSES.start(argv, capture=True)
        t0 = time.monotonic()
        while replayer.poll() is None:
            time.sleep(0.5)
            if len(samples) < (time.monotonic() - t0) // 5:
                stats_now = _read_stats(run.stats_path)
                elapsed = time.monotonic() - t0
                samples.append({
                    "t_s": round(elapsed),
                    "vmhwm_mib": round(tree_vmhwm_kib(run.process.pid)["tree_kib"] / 1024, 1),
                    "vmrss_mib": round(tree_rss_kib(run.process.pid) / 1024, 1),
                    "engine_flows": _total(stats_now["counters"], "engine_flows_total") if stats_now else None,
                    "due_flows": int(min(elapsed, seconds) * rate),
                    "live_p99_ms": (stats_now or {}).get("live_delay", {}).get("p99_ms"),
                })
        sent = finish_replay(replayer, timeout=60)
        sent["cpu_s"] = round(children_cpu_s() - replay_cpu0, 2)
        replay_end = time.time()
        if profiler is not None:
            profiler.join()
        stats, drain_s = run.drain(sent["flows"], replay_end, timeout=args.drain_timeout)
        time.sleep(2.5)  # one more provisional emission and stats write
        stats = _read_stats(run.stats_path) or stats
        memory = tree_vmhwm_kib(run.process.pid)
        cpu = tree_cpu_s(run.process.pid) - cpu0
        kernel = udp_sockets(run.port)
        active = host_stats_active([f"engine.state_dir={run.dir}"])
        other = probe.other_cores(cpu + sent["cpu_s"])
    finally:
        run.stop()
    counters = stats["counters"]
    distinct = expected_distinct(args.hosts, sent["flows"], v4_share, generator.host_skew)
    record = {
        "local_networks": settings,
        "rate": int(rate),
        "seconds": seconds,
        "hosts": args.hosts,
        "sent": sent["flows"],
        "achieved_rate": round(sent["rate"]),
        "expected_distinct_local_ipv4_hosts": round(distinct),
        "engine_flows": _total(counters, "engine_flows_total"),
        "sequence_lost": _total(counters, "decode_sequence_lost_total"),
        "kernel_drops": sum(s["drops"] for s in kernel),
        "dropped_inside": _total(counters, "collector_dropped_total"),
        "live_delay": stats.get("live_delay", {}),
        "drain_s": round(drain_s, 1),
        "vmhwm_mib": round(memory["tree_kib"] / 1024, 1),
        "samples": samples,
        "cpu_s": round(cpu, 2),
        "cpu_us_per_flow": round(cpu / max(sent["flows"], 1) * 1e6, 3),
        "other_cpu_cores": other,
        "host_statistics_in_report": active,
        "replay_options": extra,
        # The engine's own counters (checkpoints, background folds and failures): what the
        # memory and delay figures came with.
        "engine_counters": {name: value for name, value in counters.items() if name.startswith("engine_")},
    }
    record["zero_loss"] = (record["sequence_lost"] == 0 and record["kernel_drops"] == 0
                           and record["dropped_inside"] == 0 and record["engine_flows"] == record["sent"])
    shutil.rmtree(run.dir, ignore_errors=True)
    return record


# ------------------------------------------------------------------------------ ladder
def _best(steps: list[dict[str, Any]]) -> int | None:
    """Highest ladder rate held without loss, before the ladder saw two failures in a row.

    A loss-free step whose sender fell short of the rate (``sender_limited``) proves nothing about
    that rate and is passed over; a step with loss is a failure whatever the sender reached.
    """
    best = None
    fails = 0
    for step in sorted((s for s in steps if s["phase"] == "ladder"), key=lambda s: s["rate"]):
        if step["zero_loss"]:
            if not step["sender_limited"]:
                best, fails = step["rate"], 0
        else:
            fails += 1
            if fails >= 2:
                break
    return best


def _line(step: dict[str, Any]) -> str:
    if step["tool"] == "flowscope":
        delay = step["live_delay"]
        loss = (f"engine {step['engine_flows']:>10,}  seq lost {step['sequence_lost']:>8,}  "
                f"kdrops {step['kernel_drops']:>7,}  inside {step['dropped_inside']:>6,}  "
                f"delay p50/p99 {delay.get('p50_ms', '-')}/{delay.get('p99_ms', '-')} ms")
    else:
        loss = (f"stored {step['stored_flows']:>10,}  seq fail {step['sequence_failures']:>8,}  "
                f"kdrops {step['kernel_drops']:>7,}")
    return (f"{step['tool']:<9} {step['rate']:>9,}/s {step['seconds']:>4}s  sent {step['sent']:>10,} "
            f"({step['achieved_rate']:>9,}/s{'!' if step['sender_limited'] else ''})  {loss}  "
            f"mem {step['vmhwm_mib']:>6} MiB  cpu {step['cpu_us_per_flow']:.2f} µs/flow  "
            f"other {step['other_cpu_cores']} cores  {'OK' if step['zero_loss'] else 'LOSS'}")


def ladder(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    failures = {"flowscope": 0, "nfcapd": 0}
    for index, rate in enumerate(args.rates):
        seed = 1000 + index
        for tool in ("flowscope", "nfcapd"):
            if failures[tool] >= 2:
                continue
            step = (flowscope_step(work, f"fs-{rate}", rate, args.step, args, seed) if tool == "flowscope"
                    else nfcapd_step(work, f"nf-{rate}", rate, args.step, args, seed))
            step["phase"] = "ladder"
            steps.append(step)
            print(_line(step), flush=True)
            failures[tool] = 0 if step["zero_loss"] else failures[tool] + 1
        if all(v >= 2 for v in failures.values()):
            break
    return steps


def confirm(work: Path, args: argparse.Namespace, tool: str, steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Holds ladder rates for ``--confirm`` seconds until one passes (``--confirm-tries`` runs at most):
    the best ladder rate (``_best``), then the highest loss-free rate at which the tool also kept up
    (``kept_up``), then lower loss-free rates."""
    ladder_steps = [s for s in steps if s["tool"] == tool and s["phase"] == "ladder"]
    best = _best(ladder_steps)
    if best is None:
        return None
    passed = sorted({s["rate"] for s in ladder_steps
                     if s["zero_loss"] and not s["sender_limited"] and s["rate"] <= best}, reverse=True)
    kept = [r for r in passed if all(s["kept_up"] for s in ladder_steps if s["rate"] == r)]
    floor = kept[0] if kept else best
    candidates = [best, floor, *(r for r in passed if r < floor)]
    candidates = list(dict.fromkeys(candidates))[: args.confirm_tries]
    for attempt, rate in enumerate(candidates):
        if tool == "flowscope":
            step = flowscope_step(work, f"fs-confirm-{rate}", rate, args.confirm, args, 7000 + attempt)
        else:
            step = nfcapd_step(work, f"nf-confirm-{rate}", rate, args.confirm, args, 7000 + attempt)
        step["phase"] = "confirm"
        steps.append(step)
        print(_line(step), flush=True)
        if step["zero_loss"]:
            return step
    return None


def parse_rates(text: str) -> list[float]:
    rates = []
    for raw in text.split(","):
        item = raw.strip().lower()
        scale = 1_000_000 if item.endswith("m") else 1_000 if item.endswith("k") else 1
        rates.append(float(item.rstrip("mk")) * scale)
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 2 min): small ladder, short steps")
    parser.add_argument("--rates", type=parse_rates, help="ladder, flows/s, e.g. 200k,400k,1.5m")
    parser.add_argument("--step", type=float, help="seconds per ladder step (default 15; quick 5)")
    parser.add_argument("--confirm", type=float, help="seconds of the confirmation run (default 60; quick 8)")
    parser.add_argument("--confirm-tries", type=int, default=3, help="confirmation runs per tool at most (default 3)")
    parser.add_argument("--max-datagram", type=int, default=1400, help="replay datagram size (default 1400)")
    parser.add_argument("--sender-workers", type=int, default=1, help="replay sender processes (default 1)")
    parser.add_argument("--hosts", type=int, help="local hosts of the memory run (default 1000000; quick 50000)")
    parser.add_argument("--hosts-rate", type=parse_rates,
                        help="rate of the memory run (default 200k, or the reference rate if lower)")
    parser.add_argument("--hosts-max-seconds", type=float, help="cap of the memory run (default 330; quick 10)")
    parser.add_argument("--only-hosts", action="store_true", help="only the memory run(s)")
    parser.add_argument("--hosts-baseline", action="store_true",
                        help="repeat the memory run without stats.local_networks (what host statistics add)")
    parser.add_argument("--equal-buffer-check", choices=["on", "off"],
                        help="repeat flowscope's confirmation with nfcapd's socket buffer (full: on)")
    parser.add_argument("--workers-check", choices=["on", "off"], help="also run collect.workers=2 (full: on)")
    parser.add_argument("--provisional-variants", type=lambda t: [v for v in t.split(",") if v],
                        help="engine.provisional_interval values to try at the confirmed rate, for the live "
                             "delay (full: 500ms; quick: none)")
    parser.add_argument("--profile", choices=["auto", "on", "off"], default=None,
                        help="py-spy profile under load: auto = when a target is missed (full: auto; quick: off)")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="seconds to wait for a backlog to drain")
    parser.add_argument("--output", help="result file (default bench/results/engine[-quick]-<date>.json)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rates = args.rates or (parse_rates("100k,300k") if quick else
                                parse_rates("200k,400k,600k,800k,1m,1.2m,1.5m"))
    args.step = args.step or (5.0 if quick else 15.0)
    args.confirm = args.confirm or (8.0 if quick else 60.0)
    args.hosts = args.hosts or (50_000 if quick else 1_000_000)
    args.hosts_max_seconds = args.hosts_max_seconds or (10.0 if quick else 330.0)
    args.workers_check = args.workers_check or ("off" if quick else "on")
    args.equal_buffer_check = args.equal_buffer_check or ("off" if quick else "on")
    if args.provisional_variants is None:
        args.provisional_variants = [] if quick else ["500ms"]
    args.profile = args.profile or ("off" if quick else "auto")
    if quick:
        args.profile_seconds = min(args.profile_seconds, 5.0)
    return args


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="flowscope-engine-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def workers_check(work: Path, args: argparse.Namespace, reference: int | None) -> list[dict[str, Any]]:
    """``collect.workers=2`` at flowscope's reference rate (confirmed, else best of the ladder) and the
    next rung above it."""
    above = [r for r in args.rates if reference is None or r > reference][:1]
    rates = sorted({*([reference] if reference else []), *above})
    found: list[dict[str, Any]] = []
    for rate in rates:
        try:
            step = flowscope_step(work, f"fs-workers-{int(rate)}", rate, args.step, args, 3000,
                                  settings=["collect.workers=2"])
        except RuntimeError as error:
            found.append({"rate": int(rate), "error": str(error)[-600:]})
            print(f"collect.workers=2: {str(error)[-300:]}", flush=True)
            break
        step["phase"] = "workers"
        found.append(step)
        print(_line(step) + f"  [workers=2: {step['processes']} processes, {step['sockets']} sockets]", flush=True)
    return found


def make_profiler(work: Path, output: Path, label: str, seconds: float) -> Profiler:
    """GIL holders, then every busy thread; raw collapsed stacks next to the result file."""
    stem = output.stem.replace("engine", f"engine-profile-{label}", 1)
    runs = [(output.with_name(f"{stem}-gil.txt"), ["--gil", "--nonblocking"]),
            (output.with_name(f"{stem}-threads.txt"), ["--nonblocking"])]
    return Profiler(runs, seconds, work / f"py-spy-{label}.log")


def summarize_profiles(profiler: Profiler) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    found: dict[str, Any] = {"seconds_each": profiler.seconds}
    for raw, flags in profiler.runs:
        kind = "gil" if "--gil" in flags else "threads"
        if not raw.exists():
            log = profiler.log.read_text(errors="replace")[-1000:] if profiler.log.exists() else ""
            found[kind] = {"error": "py-spy wrote nothing: " + log}
            continue
        summary = summarize_profile(raw)
        shown = raw.resolve().relative_to(root) if raw.resolve().is_relative_to(root) else raw
        summary["raw_stacks"] = str(shown)
        summary["py_spy_flags"] = flags
        if kind == "gil":  # samples are taken 100 times a second; only those of a GIL holder are kept
            held = summary["busy_samples"] / (100 * profiler.seconds) * 100
            summary["gil_held_percent_of_time"] = round(held, 1)
            print(f"  GIL held {summary['gil_held_percent_of_time']}% of the time", flush=True)
        found[kind] = summary
        print(f"  profile {kind}:", flush=True)
        for name, share in summary.get("threads_percent", []):
            print(f"    thread {name}: {share}% of busy samples", flush=True)
        for name, share in summary.get("self_lines_percent", [])[:12]:
            print(f"    self {share:5.1f}%  {name}", flush=True)
    return found


def profile_run(work: Path, args: argparse.Namespace, reference: int | None, output: Path) -> dict[str, Any]:
    """``py-spy record`` of ``flowscope run`` at the first rung above its reference rate."""
    if not PY_SPY.exists():
        error = f"{PY_SPY} not found: pip install py-spy into the venv"
        print(error, flush=True)
        return {"error": error}
    above = [r for r in args.rates if reference is None or r > reference]
    rate = above[0] if above else args.rates[-1]
    profiler = make_profiler(work, output, "ladder", args.profile_seconds)
    seconds = 2 * args.profile_seconds + 5
    step = flowscope_step(work, f"fs-profile-{int(rate)}", rate, seconds, args, 5000, profiler=profiler)
    step["phase"] = "profile"
    print(_line(step), flush=True)
    return {"rate": int(rate), "step": step, **summarize_profiles(profiler)}


def source_state() -> dict[str, Any]:
    """Which flowscope is measured: git HEAD, modified files under src/, and a digest of src/flowscope."""
    root = Path(flowscope.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                          check=False).stdout.decode().strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "."], capture_output=True,
                           check=False).stdout.decode().split("\n")
    return {"git_head": head or None, "src_modified": [line[3:] for line in dirty if line.strip()],
            "src_digest": digest.hexdigest()[:16]}


def memory_runs(args: argparse.Namespace, work: Path, payload: dict[str, Any], output: Path,
                reference: int | None) -> dict[str, Any]:
    """The memory run (profiled unless --profile off), and the baseline without local networks if asked."""
    hosts_rate = args.hosts_rate[0] if args.hosts_rate else min(reference or args.rates[0], 200_000)
    profiling = args.profile != "off" and PY_SPY.exists()
    hosts_profiler = make_profiler(work, output, "hosts", args.profile_seconds) if profiling else None
    for with_networks in ([True, False] if args.hosts_baseline else [True]):
        label = "with stats.local_networks=10.0.0.0/8" if with_networks else "baseline (no local_networks)"
        print(f"memory run, {label}: {args.hosts:,} local hosts at {int(hosts_rate):,} flows/s", flush=True)
        hosts = hosts_memory(work, hosts_rate, args, local_networks=with_networks,
                             profiler=hosts_profiler if with_networks else None)
        payload["hosts_memory" if with_networks else "hosts_memory_baseline"] = hosts
        print(f"  sent {hosts['sent']:,} flows in {hosts['seconds']:g} s "
              f"(~{hosts['expected_distinct_local_ipv4_hosts']:,} distinct local hosts expected), "
              f"peak {hosts['vmhwm_mib']} MiB, engine {hosts['engine_flows']:,}, seq lost {hosts['sequence_lost']:,}, "
              f"kernel drops {hosts['kernel_drops']:,}, live p50/p99 {hosts['live_delay'].get('p50_ms')}/"
              f"{hosts['live_delay'].get('p99_ms')} ms, local hosts in the 1m/1h reports: "
              f"{hosts['host_statistics_in_report']['1m'].get('local_hosts')}/"
              f"{hosts['host_statistics_in_report']['1h'].get('local_hosts')}", flush=True)
        if with_networks and hosts_profiler is not None:
            payload["hosts_profile"] = {"rate": int(hosts_rate), **summarize_profiles(hosts_profiler)}
    found: dict[str, Any] = payload["hosts_memory"]
    return found


def run(args: argparse.Namespace, work: Path, payload: dict[str, Any], output: Path) -> None:
    if args.only_hosts:
        memory_runs(args, work, payload, output, None)
        return
    print(f"ladder {[int(r) for r in args.rates]} flows/s, {args.step:g} s per step, "
          f"datagrams <= {args.max_datagram} B, {args.sender_workers} sender process(es)", flush=True)
    steps = payload["steps"]
    steps.extend(ladder(work, args))
    tools = ("flowscope", "nfcapd")
    payload["ladder_best"] = {t: _best([s for s in steps if s["tool"] == t]) for t in tools}
    confirmed = {t: confirm(work, args, t, steps) for t in tools}
    payload["confirmed"] = {
        t: None if c is None else {"rate": c["rate"], "achieved_rate": c["achieved_rate"], "seconds": c["seconds"],
                                   "live_delay": c.get("live_delay"), "vmhwm_mib": c["vmhwm_mib"]}
        for t, c in confirmed.items()
    }
    ours, theirs = confirmed["flowscope"], confirmed["nfcapd"]
    kept = [s["rate"] for s in steps if s["tool"] == "flowscope" and s["phase"] == "ladder"
            and s["zero_loss"] and s["kept_up"] and not s["sender_limited"]]
    # what the extra runs use: the confirmed rate, else the best ladder rate at which flowscope kept up
    reference = ours["rate"] if ours else max(kept) if kept else None
    payload["reference_rate"] = reference
    nfcapd_buffers = [b for st in steps if st["tool"] == "nfcapd" for b in st.get("receive_buffers", [])]
    if ours and args.equal_buffer_check == "on" and nfcapd_buffers:
        # nfcapd's buffer is capped by net.core.rmem_max (SO_RCVBUF); flowscope (as root) forces its own
        # 32 MiB. The same rate once more with nfcapd's buffer shows what the larger buffer is worth.
        usable = min(nfcapd_buffers) // 2  # Linux reports twice the usable size
        step = flowscope_step(work, "fs-equal-buffer", ours["rate"], args.confirm, args, 7100,
                              settings=[f"collect.receive_buffer={usable}"])
        step["phase"] = "equal_buffer"
        steps.append(step)
        payload["equal_buffer_check"] = {"receive_buffer": usable, "zero_loss": step["zero_loss"],
                                         "rate": step["rate"], "achieved_rate": step["achieved_rate"]}
        print(_line(step) + f"  [collect.receive_buffer={usable}, as nfcapd's]", flush=True)
    if args.workers_check == "on":
        payload["workers_check"] = workers_check(work, args, reference)
    if reference and args.provisional_variants:
        variants = payload["provisional_interval_variants"] = []
        for interval in args.provisional_variants:
            step = flowscope_step(work, f"fs-provisional-{interval}", reference, args.step, args, 3100,
                                  settings=[f"engine.provisional_interval={interval}"])
            step["phase"] = "provisional_interval"
            variants.append(step)
            print(_line(step) + f"  [engine.provisional_interval={interval}]", flush=True)

    hosts = memory_runs(args, work, payload, output, reference)

    delay = ours["live_delay"] if ours else {}
    targets = payload["targets"] = {
        "flowscope_loss_free_rate": ours["rate"] if ours else None,
        "flowscope_loss_free_rate_achieved": ours["achieved_rate"] if ours else None,
        "nfcapd_loss_free_rate": theirs["rate"] if theirs else None,
        "nfcapd_loss_free_rate_achieved": theirs["achieved_rate"] if theirs else None,
        # None: undecided (nfcapd confirmed no rate within its tries, or flowscope none)
        "loss_free_rate_at_least_nfcapd": None if not (ours and theirs) else ours["rate"] >= theirs["rate"],
        "live_p99_ms_at_that_rate": delay.get("p99_ms"),
        "live_p99_at_most_1s": bool(delay) and delay.get("p99_ms", 10**9) <= TARGET_LIVE_P99_MS,
        "peak_memory_mib_1m_hosts": hosts["vmhwm_mib"],
        "memory_run_zero_loss": hosts["zero_loss"],
        "memory_run_live_p99_ms": hosts["live_delay"].get("p99_ms"),
        "memory_under_1gb": hosts["vmhwm_mib"] * 1024 * 1024 < TARGET_MEMORY_BYTES,
    }
    print("targets: " + json.dumps(targets), flush=True)
    missed = not (targets["loss_free_rate_at_least_nfcapd"] and targets["live_p99_at_most_1s"]
                  and targets["memory_under_1gb"])
    if args.profile == "on" or (args.profile == "auto" and missed):
        payload["profile"] = profile_run(work, args, reference, output)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("nfcapd") is None or shutil.which("nfdump") is None:
        print("engine_bench: nfcapd and nfdump (nfdump package) are required", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_exit)
    started = time.monotonic()
    kind = "engine" + ("-quick" if args.quick else "") + ("-hosts" if args.only_hosts else "")
    output = Path(args.output) if args.output else benchutil.RESULTS / f"{kind}-{benchutil.today()}.json"
    payload: dict[str, Any] = {
        "benchmark": "engine end to end: flowscope replay (IPFIX/UDP, loopback) -> flowscope run, beside nfcapd",
        "command": benchutil.command_line(),
        "machine": benchutil.machine_info(),
        "nfcapd": subprocess.run(["nfcapd", "-V"], capture_output=True, check=False).stdout.decode().strip(),
        "parameters": {k: v for k, v in vars(args).items() if k != "output"},
        "flowscope_source_at_start": source_state(),
        "steps": [],
    }
    try:
        with workspace() as work:
            run(args, work, payload, output)
    except KeyboardInterrupt:
        payload["interrupted"] = True
        print("interrupted: stopping everything", file=sys.stderr)
    finally:
        PROCESSES.stop_all()
        payload["elapsed_s"] = round(time.monotonic() - started, 1)
        payload["machine"]["load_average_at_end"] = benchutil.load_average()
        payload["flowscope_source_at_end"] = source_state()
        if payload["flowscope_source_at_end"]["src_digest"] != payload["flowscope_source_at_start"]["src_digest"]:
            print("WARNING: src/flowscope changed during the run: steps measured different code", flush=True)
        path = benchutil.write_result("engine", payload, str(output))
        print(f"results: {path} ({payload['elapsed_s']} s)")
    return 130 if payload.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
