"""CPU per flow of the embedded engine alone: ``Engine.process`` and its clock ticks, in-process.

No sockets, no decoder: generated ``FlowBatch``es (``flowscope.tools.generate``, the replay's
web-heavy mix) go straight into ``Engine.process``, and ``Engine.tick`` runs on a simulated
clock at the collector's cadence (every ``--tick-ms``), so provisional results of the open
windows are built as often as in ``flowscope run``. The simulated clock advances with the data:
at ``--rate`` flows/s a batch of ``--batch-flows`` flows takes batch/rate seconds. The run
starts 10 s before a minute boundary, so the 1-minute close (merge into the hour, final minute
result) is included.

Per case, CPU time of this thread (``time.thread_time``) is split into

* ``process``: ``Engine.process`` (per-batch work),
* ``final``: closing due windows (``Engine._close``: final results, roll-up merges),
* ``provisional``: provisional results of the open windows (``Engine._emit_provisional``),

each divided by the flows fed, in µs per flow. Checkpoints are off and host statistics are off
(no ``stats.local_networks``; host statistics are measured by ``hosts_memory.py``). Cases: no
views, and three views (``flowscope run`` with a views table). A digest (SHA-256) of every
final result's JSON is kept so that runs before and after an optimization can be compared for
identical output.

    python bench/engine_cpu_bench.py                  # writes bench/results/engine-cpu-<date>.json
    python bench/engine_cpu_bench.py --quick          # smoke run, a few seconds
    python bench/engine_cpu_bench.py --label before   # a name for the run inside the JSON
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil
from flowscope.aggregate.engine import Engine, EngineConfig, WindowResult
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.tools.generate import GeneratorConfig, TrafficGenerator

VIEWS = (
    ViewSpec("ssh", "proto tcp and dst port 22"),
    ViewSpec("lan-dns", "net 10.0.0.0/8 and port 53"),
    ViewSpec("quic", "proto udp and port 443"),
)
MINUTE_MS = 60_000


class _DigestSink:
    """Counts results; hashes the JSON of final ones (provisional ones depend on the tick phase)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.final = 0
        self.provisional = 0

    def emit(self, results: list[WindowResult]) -> None:
        for result in results:
            if result.final:
                self.final += 1
                self.digest.update(json.dumps(result.to_json(), sort_keys=True).encode())
            else:
                self.provisional += 1


class _SimulatedClock:
    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms


def _timed(method: Callable[..., None], spent: dict[str, float], key: str) -> Callable[..., None]:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        begin = time.thread_time()
        try:
            method(*args, **kwargs)
        finally:
            spent[key] += time.thread_time() - begin

    return wrapper


def _batches(count: int, size: int, seed: int) -> list[FlowBatch]:
    generator = TrafficGenerator(GeneratorConfig(seed=seed, local_network="10.0.0.0/16"))
    return [generator.flows(size, 0) for _ in range(count)]


def run_case(args: argparse.Namespace, views: bool, pool: list[FlowBatch]) -> dict[str, Any]:
    start_ms = 1_790_000_000_000 // MINUTE_MS * MINUTE_MS + MINUTE_MS - 10_000
    clock = _SimulatedClock(start_ms)
    sink = _DigestSink()
    config = EngineConfig(
        provisional_interval_ms=args.provisional_ms,
        report_provisional_interval_ms=args.report_provisional_ms,
        checkpoint_dir=None,
        stats=StatsSpec(views=VIEWS if views else ()),
    )
    engine = Engine(config, sink, ExporterTable(), Counters(), clock_ms=clock)
    engine.start()
    spent = {"process": 0.0, "final": 0.0, "provisional": 0.0}
    engine._close = _timed(engine._close, spent, "final")  # type: ignore[method-assign]
    engine._emit_provisional = _timed(engine._emit_provisional, spent, "provisional")  # type: ignore[method-assign]
    batch_ms = args.batch_flows * 1000 / args.rate
    batches = int(args.seconds * args.rate / args.batch_flows)
    next_tick_ms = start_ms + args.tick_ms
    simulated_ms = float(start_ms)
    flows = 0
    gc.collect()
    wall_begin = time.perf_counter()
    for index in range(batches):
        template = pool[index % len(pool)]
        columns = dict(template.columns)  # generated at time 0: shift the three times to "now"
        for name in ("time_received", "time_start", "time_end"):
            columns[name] = template[name] + clock.now_ms
        batch = FlowBatch(columns)
        begin = time.thread_time()
        engine.process(batch)
        spent["process"] += time.thread_time() - begin
        flows += len(batch)
        simulated_ms += batch_ms
        clock.now_ms = int(simulated_ms)
        while next_tick_ms <= clock.now_ms:
            engine.tick()
            next_tick_ms += args.tick_ms
    wall_s = time.perf_counter() - wall_begin
    per_flow = {key: round(value * 1e6 / flows, 4) for key, value in spent.items()}
    per_flow["total"] = round(sum(spent.values()) * 1e6 / flows, 4)
    return {
        "views": len(VIEWS) if views else 0,
        "flows": flows,
        "batches": batches,
        "cpu_s": {key: round(value, 3) for key, value in spent.items()},
        "cpu_us_per_flow": per_flow,
        "wall_s": round(wall_s, 3),
        "final_results": sink.final,
        "provisional_results": sink.provisional,
        "final_digest": sink.digest.hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=600_000, help="simulated flows per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per case")
    parser.add_argument("--batch-flows", type=int, default=5_000, help="flows per batch (~256 datagrams)")
    parser.add_argument("--tick-ms", type=int, default=100, help="engine clock tick (EngineOutput)")
    parser.add_argument("--provisional-ms", type=int, default=1_000, help="engine.provisional_interval")
    parser.add_argument("--report-provisional-ms", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=int, default=64, help="distinct generated batches, cycled")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats, args.pool = 12.0, 1, 16
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    machine = benchutil.machine_info()  # the load average before the runs
    pool = _batches(args.pool, args.batch_flows, args.seed)
    cases: list[dict[str, Any]] = []
    for views in (False, True):
        runs = [run_case(args, views, pool) for _ in range(args.repeats)]
        digests = {run["final_digest"] for run in runs}
        assert len(digests) == 1, "final results differ between repeats"
        median = {
            key: round(statistics.median(run["cpu_us_per_flow"][key] for run in runs), 4)
            for key in runs[0]["cpu_us_per_flow"]
        }
        best = {key: min(run["cpu_us_per_flow"][key] for run in runs) for key in runs[0]["cpu_us_per_flow"]}
        cases.append({"views": runs[0]["views"], "median_us_per_flow": median, "best_us_per_flow": best,
                      "runs": runs})
        print(f"views={runs[0]['views']}: median µs/flow {median}  (digest {runs[0]['final_digest'][:12]})")
    payload = {
        "benchmark": "engine-cpu",
        "label": args.label,
        "command": benchutil.command_line(),
        "machine": machine,
        "settings": {key: value for key, value in vars(args).items() if key not in ("output",)},
        "views": [{"name": v.name, "filter": v.filter} for v in VIEWS],
        "cases": cases,
        "load_average_at_end": benchutil.load_average(),
    }
    target = benchutil.write_result("engine-cpu", payload, args.output)
    print(f"written {target}")


if __name__ == "__main__":
    main()
