"""End to end: IPFIX over UDP → ``flowscope collect --json-server`` → a consumer counting JSON lines.

Three processes besides this one, all on the same machine:

* the collector: ``flowscope collect --host 127.0.0.1 --udp-port P --tcp-port Q --json-server
  127.0.0.1:J --log-level WARNING [--padded]``, a real subprocess;
* a consumer connected to the JSON server, counting newline-terminated lines;
* a sender replaying real-template IPFIX datagrams (``exportgen.py``: ~1400 bytes, ~30 flows each,
  consistent sequence numbers, template refresh every 20 datagrams) over UDP on loopback at a
  target rate, paced in small bursts with ``time.perf_counter``.

For each step of the rate ladder: flows sent, JSON lines received, lost (sent - received), the
kernel's drop counter of the collector's UDP socket (/proc/net/udp, before/after) and the CPU
time each process used. The ladder runs twice: compact JSON lines and ``--padded`` lines.
Everything started here is stopped at the end, also on Ctrl-C, SIGTERM or errors.

    python bench/json_stream_bench.py            # full ladder, writes bench/results/json-stream-<date>.json
    python bench/json_stream_bench.py --quick    # smoke run, < 60 s
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil
import exportgen

DEFAULT_RATES = [100_000, 200_000, 300_000, 450_000, 600_000, 800_000, 1_000_000]
QUICK_RATES = [100_000, 300_000]
TARGET_LOSS_FREE = 450_000
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the benchmark process dies, so nothing outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def udp_socket_stats(port: int) -> dict[str, int] | None:
    """drops and rx_queue of the IPv4/IPv6 UDP socket bound to ``port`` (summed if several)."""
    found = None
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path, encoding="ascii") as table:
                lines = table.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 13 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            found = found or {"drops": 0, "rx_queue": 0}
            found["drops"] += int(fields[12])
            found["rx_queue"] += int(fields[4].split(":")[1], 16)
    return found


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------------------- consumer
def consumer_main(port: int, lines: Synchronized, received_bytes: Synchronized, stop: Any,
                  ready: Any, sample: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    _die_with_parent()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.settimeout(0.2)
    ready.set()
    buffer = bytearray(1 << 20)
    head = b""
    sampled = False
    total_lines = 0
    total_bytes = 0
    try:
        while not stop.is_set():
            try:
                size = sock.recv_into(buffer)
            except TimeoutError:
                continue
            if size == 0:
                break
            total_lines += buffer.count(b"\n", 0, size)
            total_bytes += size
            lines.value = total_lines
            received_bytes.value = total_bytes
            if not sampled:
                head += bytes(buffer[: min(size, 4096)])
                if head.count(b"\n") >= 2:
                    sample.send(head.split(b"\n")[:2])
                    sampled = True
    finally:
        sock.close()


# --------------------------------------------------------------------------------- sender
def sender_main(port: int, case: str, pool_size: int, commands: Connection) -> None:
    """Waits for (rate, seconds) commands; answers with what it sent. ``None`` ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    template = exportgen.CASES[case].load()
    stream = exportgen.build_stream(template, pool_size, exporters=1, template_every=20,
                                    start_ms=int(time.time() * 1000), seed=7)
    payloads = [bytearray(p) for _, _, p in stream.datagrams]
    flows = stream.flows
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    header = struct.Struct("!II")  # export time, sequence (offsets 4 and 8 of the IPFIX header)
    sequence = 0
    index = 0
    commands.send({"pool_datagrams": len(payloads), "flows_per_datagram": sum(flows) / len(flows),
                   "datagram_bytes": sum(map(len, payloads)) / len(payloads), "template": template.source})
    try:
        while True:
            command = commands.recv()
            if command is None:
                return
            rate, seconds = command
            clock = time.perf_counter
            sent_flows = sent_datagrams = 0
            errors = 0
            start = clock()
            end = start + seconds
            now = start
            while now < end:
                export_s = int(time.time())
                due = rate * (now - start)
                while sent_flows < due:
                    payload = payloads[index]
                    header.pack_into(payload, 4, export_s, sequence)
                    try:
                        send(payload)
                    except OSError:
                        errors += 1
                    sequence = (sequence + flows[index]) & 0xFFFFFFFF
                    sent_flows += flows[index]
                    sent_datagrams += 1
                    index = (index + 1) % len(payloads)
                time.sleep(0.0005)
                now = clock()
            elapsed = clock() - start
            commands.send({"sent_flows": sent_flows, "sent_datagrams": sent_datagrams, "seconds": elapsed,
                           "send_errors": errors})
    finally:
        sock.close()


# ------------------------------------------------------------------------------ collector
def collector_command(udp_port: int, tcp_port: int, json_port: int, padded: bool) -> list[str]:
    command = [sys.executable, "-m", "flowscope.cli", "collect", "--log-level", "WARNING", "--host", "127.0.0.1",
               "--udp-port", str(udp_port), "--tcp-port", str(tcp_port), "--json-server", f"127.0.0.1:{json_port}",
               "--stats"]  # its counters, printed to stderr on exit, go into the results
    return command + (["--padded"] if padded else [])


def start_collector(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    # preexec_fn is safe here: this process runs no threads.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                               preexec_fn=_die_with_parent)  # noqa: PLW1509
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"collector exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        if b"collecting on" in log_path.read_bytes():
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"collector did not start within 30 s: {log_path.read_text()[-2000:]}")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def stop_child(child: mp.Process | None) -> None:
    if child is None or child.pid is None:
        return
    child.join(timeout=5)
    if child.is_alive():
        child.terminate()
        child.join(timeout=5)
    if child.is_alive():
        child.kill()
        child.join()


# ---------------------------------------------------------------------------------- ladder
def wait_drained(lines: Synchronized, expected: int, quiet_s: float, limit_s: float) -> tuple[float, bool]:
    """Wait until ``expected`` lines arrived, or nothing arrived for ``quiet_s``.

    Returns (seconds waited until the last line arrived, whether all expected lines arrived).
    """
    start = last_change = time.monotonic()
    seen = lines.value
    while True:
        value = lines.value
        now = time.monotonic()
        if value >= expected:
            time.sleep(0.2)  # linger: a duplicate would show up as a negative loss
            return now - start, True
        if value != seen:
            seen, last_change = value, now
        if now - last_change >= quiet_s or now - start >= limit_s:
            return last_change - start, False
        time.sleep(0.01)


def run_ladder(padded: bool, rates: list[int], seconds: float, args: argparse.Namespace,
               workdir: Path) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    udp_port, tcp_port, json_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), 0
    while json_port in (0, tcp_port):
        json_port = free_port(socket.SOCK_STREAM)
    command = collector_command(udp_port, tcp_port, json_port, padded)
    collector = consumer = sender = None
    commands: Connection | None = None
    stop = ctx.Event()
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"padded": padded, "collector_command": " ".join(command), "steps": steps}
    log_path = workdir / f"collector-{'padded' if padded else 'compact'}.log"
    try:
        collector = start_collector(command, log_path)
        lines = ctx.Value("q", 0, lock=False)
        received_bytes = ctx.Value("q", 0, lock=False)
        ready = ctx.Event()
        sample_recv, sample_send = ctx.Pipe(duplex=False)
        consumer = ctx.Process(target=consumer_main, name="json-consumer", daemon=True,
                               args=(json_port, lines, received_bytes, stop, ready, sample_send))
        consumer.start()
        if not ready.wait(15):
            raise RuntimeError("consumer could not connect to the JSON server")
        commands, child_end = ctx.Pipe()
        sender = ctx.Process(target=sender_main, name="ipfix-sender", daemon=True,
                             args=(udp_port, args.case, args.pool_datagrams, child_end))
        sender.start()
        if not commands.poll(120):
            raise RuntimeError("sender did not get ready")
        result["sender"] = commands.recv()
        time.sleep(0.3)  # the JSON server registers the consumer in its own thread

        def step(rate: int, duration: float) -> dict[str, Any]:
            assert collector is not None and sender is not None and consumer is not None and commands is not None
            pids = {"collector": collector.pid, "sender": sender.pid, "consumer": consumer.pid}
            before = udp_socket_stats(udp_port)
            lines_before, bytes_before = lines.value, received_bytes.value
            cpu_before = {k: cpu_seconds(p) for k, p in pids.items() if p}
            commands.send((rate, duration))
            sent = commands.recv()
            if collector.poll() is not None:
                raise RuntimeError(f"the collector exited (code {collector.returncode}) during the step; "
                                   f"its log: {log_path.read_text(errors='replace')[-2000:]}")
            lag, complete = wait_drained(lines, lines_before + sent["sent_flows"], args.quiet_seconds, 90.0)
            after = udp_socket_stats(udp_port)
            cpu_after = {k: cpu_seconds(p) for k, p in pids.items() if p}
            received = lines.value - lines_before
            drops = None if before is None or after is None else after["drops"] - before["drops"]
            lost = sent["sent_flows"] - received
            cpu = {}
            cpu_us_per_flow = {}
            for name in pids:
                b, a = cpu_before.get(name), cpu_after.get(name)
                if a is not None and b is not None:
                    cpu[name] = round((a - b) / (sent["seconds"] + lag), 3)  # cores, over send + drain
                    cpu_us_per_flow[name] = round((a - b) / max(1, received) * 1e6, 3)
            loss_free = lost == 0 and (drops or 0) == 0 and sent["send_errors"] == 0
            # Kept up: the last line came within the lag bound, not out of a backlog drained afterwards.
            kept_up = complete and lag <= args.max_lag_seconds
            return {
                "target_flows_per_s": rate,
                "seconds": round(sent["seconds"], 3),
                "sent_datagrams": sent["sent_datagrams"],
                "sent_flows": sent["sent_flows"],
                "achieved_flows_per_s": round(sent["sent_flows"] / sent["seconds"]),
                "received_lines": received,
                "received_bytes": received_bytes.value - bytes_before,
                "lost_flows": lost,
                "kernel_drops_datagrams": drops,
                "send_errors": sent["send_errors"],
                "lag_s": round(lag, 2),  # last datagram sent → last line received
                "delivered_flows_per_s": round(received / (sent["seconds"] + lag)),
                "loss_free": loss_free,
                "kept_up": kept_up,
                "held": loss_free and kept_up,
                "cpu_cores": cpu,
                # CPU time per flow: what a step costs whatever else runs on the machine
                "cpu_us_per_flow": cpu_us_per_flow,
                "load_average": benchutil.load_average(),
            }

        warm = step(args.warmup_rate, args.warmup_seconds)
        result["warmup"] = warm
        if warm["received_lines"] == 0:
            raise RuntimeError(f"no JSON line arrived during the warm-up; see {workdir}")
        if sample_recv.poll(1):
            first = sample_recv.recv()
            result["sample_line"] = first[0].decode(errors="replace")
            json.loads(first[0])  # a real JSON object, or this raises
        label = "padded" if padded else "compact"
        for rate in rates:
            entry = step(rate, seconds)
            steps.append(entry)
            cores = ", ".join(f"{k} {v:.2f}" for k, v in entry["cpu_cores"].items())
            print(f"  {label:7s} {rate / 1e3:6.0f}k/s target: sent {entry['sent_flows']:9d} "
                  f"({entry['achieved_flows_per_s'] / 1e3:5.0f}k/s), received {entry['received_lines']:9d}, "
                  f"lost {entry['lost_flows']:8d}, kernel drops {entry['kernel_drops_datagrams']}, "
                  f"lag {entry['lag_s']:5.2f} s, delivered {entry['delivered_flows_per_s'] / 1e3:5.0f}k/s: "
                  f"{'held' if entry['held'] else 'NOT held'}; CPU cores: {cores}", flush=True)
        held = [s["target_flows_per_s"] for s in steps if s["held"]]
        failed = [s["target_flows_per_s"] for s in steps if not s["held"]]
        result["highest_held_flows_per_s"] = max(held, default=0)
        result["held_every_step_up_to_flows_per_s"] = max(
            (r for r in held if all(f > r for f in failed)), default=0)
        result["highest_loss_free_flows_per_s"] = max(
            (s["target_flows_per_s"] for s in steps if s["loss_free"]), default=0)
        result["max_delivered_flows_per_s"] = max((s["delivered_flows_per_s"] for s in steps), default=0)
        result["bytes_per_line"] = round(sum(s["received_bytes"] for s in steps)
                                         / max(1, sum(s["received_lines"] for s in steps)), 1)
    finally:
        stop.set()
        if commands is not None:
            with contextlib.suppress(OSError, ValueError):
                commands.send(None)
        stop_child(sender)
        stop_process(collector)  # closes the JSON stream: the consumer's recv returns
        stop_child(consumer)
        if collector is not None:
            result["collector_exit_code"] = collector.returncode
            result["collector_counters"] = collector_counters(log_path)
    return result


def collector_counters(log_path: Path) -> dict[str, int]:
    """Totals of the collector's own counters (``--stats`` prints them as JSON on exit), by name."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                snapshot = json.loads(line)
            except ValueError:
                continue
            return {name: sum(value for _, value in series) for name, series in snapshot.items()}
    return {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two short steps per mode (< 60 s)")
    parser.add_argument("--rates", type=lambda s: [int(float(x)) for x in s.split(",")], default=None,
                        help="flows/s per step, comma separated (default 100k..1M)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each step")
    parser.add_argument("--modes", default="compact,padded", help="compact, padded or both")
    parser.add_argument("--case", default="ipfix-ipfixcol2", choices=sorted(exportgen.CASES),
                        help="template the sender uses (exportgen case)")
    parser.add_argument("--pool-datagrams", type=int, default=4000, help="distinct datagrams the sender cycles")
    parser.add_argument("--warmup-rate", type=int, default=50_000)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--quiet-seconds", type=float, default=2.0, help="drain: stop waiting after this silence")
    parser.add_argument("--max-lag-seconds", type=float, default=1.0,
                        help="a step is held if loss-free and its last line arrived within this after sending")
    parser.add_argument("--output", help="result file (default bench/results/json-stream-<date>.json)")
    args = parser.parse_args(argv)
    if args.rates is None:
        args.rates = QUICK_RATES if args.quick else DEFAULT_RATES
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.warmup_seconds = 1.0
        args.pool_datagrams = min(args.pool_datagrams, 1000)
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM both unwind through the clean-up (even when started with SIGINT ignored,
    # as a shell does for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    machine = benchutil.machine_info()
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
          f"Python {machine['python']}, numpy {machine['numpy']}; sender, collector and consumer share them")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ladders = []
    with tempfile.TemporaryDirectory(prefix="flowscope-json-bench-") as tmp:
        try:
            for mode in modes:
                print(f"\n{mode} JSON lines, {args.seconds:.0f} s per step:", flush=True)
                ladders.append(run_ladder(mode == "padded", args.rates, args.seconds, args, Path(tmp)))
        except KeyboardInterrupt:
            print("interrupted: everything started was stopped", file=sys.stderr)
            return 130

    print()
    headers = ["mode", "target", "achieved", "sent", "received", "lost", "kernel drops", "lag s", "delivered",
               "held", "CPU collector/sender/consumer"]
    rows = []
    for ladder in ladders:
        for s in ladder["steps"]:
            cpu = s["cpu_cores"]
            rows.append([
                "padded" if ladder["padded"] else "compact", f"{s['target_flows_per_s'] / 1e3:.0f}k",
                f"{s['achieved_flows_per_s'] / 1e3:.0f}k", str(s["sent_flows"]), str(s["received_lines"]),
                str(s["lost_flows"]), str(s["kernel_drops_datagrams"]), f"{s['lag_s']:.2f}",
                f"{s['delivered_flows_per_s'] / 1e3:.0f}k", "yes" if s["held"] else "NO",
                "/".join(f"{cpu.get(k, 0):.2f}" for k in ("collector", "sender", "consumer")),
            ])
    benchutil.print_table(headers, rows)
    checks = {}
    for ladder in ladders:
        mode = "padded" if ladder["padded"] else "compact"
        best = ladder.get("highest_held_flows_per_s", 0)
        checks[mode] = {"highest_held_flows_per_s": best, "target_met": best >= TARGET_LOSS_FREE,
                        "max_delivered_flows_per_s": ladder.get("max_delivered_flows_per_s")}
        verdict = "met" if best >= TARGET_LOSS_FREE else "NOT met"
        if max(args.rates) < TARGET_LOSS_FREE:
            verdict = "not tested by this ladder"
        print(f"{mode}: highest step held loss-free {best / 1e3:.0f}k flows/s (target {TARGET_LOSS_FREE / 1e3:.0f}k: "
              f"{verdict}); best delivered {ladder.get('max_delivered_flows_per_s', 0) / 1e3:.0f}k flows/s; "
              f"{ladder.get('bytes_per_line')} bytes per JSON line")
    payload = {
        "benchmark": "json-stream",
        "date_utc": benchutil.today(),
        "command": benchutil.command_line(),
        "machine": machine,
        "load_average_at_end": benchutil.load_average(),
        "note": "sender, collector and consumer run on the same machine and share its CPUs (not pinned)",
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "target_loss_free_flows_per_s": TARGET_LOSS_FREE,
        "checks": checks,
        "ladders": ladders,
    }
    if args.quick and not args.output:
        args.output = str(benchutil.RESULTS / f"json-stream-quick-{benchutil.today()}.json")
    path = benchutil.write_result("json-stream", payload, args.output)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
