"""CPU per datagram of the UDP listener thread, at paced rates on loopback.

A sender process paces 1400-byte datagrams (the replay's ``--max-datagram 1400``) to
``UdpListener`` on 127.0.0.1 at each rate for ``--seconds``; the sink only counts. The figure is
the CPU time of the listener's own thread (``pthread_getcpuclockid``) divided by the datagrams it
delivered, so the sender and other load on the machine are not counted. 41k datagrams/s is what
800k flows/s of the replay's IPFIX (19.4 flows per datagram) amounts to.

    python bench/udp_listener_cpu_bench.py                 # writes bench/results/udp-listener-cpu-<date>.json
    python bench/udp_listener_cpu_bench.py --quick
    PYTHONPATH=/path/to/other/src python bench/udp_listener_cpu_bench.py --label before   # another tree
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil
import flowscope
from flowscope.collect.udp import UdpListener, UdpListenerConfig
from flowscope.metrics import Counters
from flowscope.model import Datagram

SENDER = """
import socket, sys, time
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 1400
total = int(rate * seconds)
begin = time.perf_counter()
for sent in range(total):
    due = begin + sent / rate
    while time.perf_counter() < due:
        time.sleep(0.0002)
    sock.sendto(payload, ("127.0.0.1", port))
print(total)
"""


class _Counting:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, batch: list[Datagram]) -> None:
        with self.lock:
            self.count += len(batch)


def run_rate(rate: float, seconds: float) -> dict[str, Any]:
    sink = _Counting()
    listener = UdpListener(UdpListenerConfig(host="127.0.0.1", port=0, receive_buffer_bytes=32 << 20), sink, Counters())
    listener.start()
    try:
        thread = listener._thread  # the receiving thread: its own CPU clock
        assert thread is not None and thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)
        cpu_begin = time.clock_gettime(clock)
        sent = int(subprocess.run(
            [sys.executable, "-c", SENDER, str(listener.bound_address[1]), str(rate), str(seconds)],
            check=True, capture_output=True, text=True,
        ).stdout)
        deadline = time.monotonic() + 5
        while sink.count < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu_s = time.clock_gettime(clock) - cpu_begin
        drops = listener.kernel_drops()
    finally:
        listener.stop()
    return {
        "rate_datagrams_per_s": rate,
        "sent": sent,
        "delivered": sink.count,
        "kernel_drops": drops,
        "listener_cpu_s": round(cpu_s, 4),
        "cpu_us_per_datagram": round(cpu_s * 1e6 / max(sink.count, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", default="10000,41000", help="datagrams per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats = 2.0, 1
    machine = benchutil.machine_info()  # the load average before the runs
    cases = []
    for rate in (float(r) for r in args.rates.split(",")):
        runs = [run_rate(rate, args.seconds) for _ in range(args.repeats)]
        median = statistics.median(run["cpu_us_per_datagram"] for run in runs)
        cases.append({"rate_datagrams_per_s": rate, "median_cpu_us_per_datagram": median, "runs": runs})
        print(f"{rate:.0f} datagrams/s: {median:.2f} µs CPU per datagram "
              f"(delivered {[r['delivered'] for r in runs]} of {[r['sent'] for r in runs]})")
    payload = {
        "benchmark": "udp-listener-cpu",
        "label": args.label,
        "source": str(Path(flowscope.__file__).resolve().parent),
        "command": benchutil.command_line(),
        "machine": machine,
        "settings": {key: value for key, value in vars(args).items() if key != "output"},
        "cases": cases,
        "load_average_at_end": benchutil.load_average(),
    }
    print(f"written {benchutil.write_result('udp-listener-cpu', payload, args.output)}")


if __name__ == "__main__":
    main()
