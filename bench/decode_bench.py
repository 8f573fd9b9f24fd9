"""Decode + normalize throughput on one core, next to the ``netflow`` package (PyPI) on the same datagrams.

Datagrams are built up front from real templates of tests/data (see ``exportgen.py``): full-size
(~1400 bytes) export datagrams of several exporters with plausible random flows, template refresh
every 20 datagrams per exporter. Then, per case:

* flowscope: ``DecoderSession.decode`` on batches of datagrams (the collector's sizes: its UDP
  listener hands over 256, its decoder merges up to 4096) followed by ``Normalizer.normalize``
  with the collector's settings; a fresh session per run, median and best of ``--repeats`` runs;
* the ``netflow`` package: ``netflow.parse_packet(payload, templates)`` per datagram on the first
  ``--peer-datagrams`` datagrams of the very same list (it builds Python objects per record, so
  it gets fewer datagrams).

Throughput is flows per CPU second of the benchmark thread (``time.thread_time``), so that other
work on a shared machine does not count against either decoder; wall-clock figures are kept in the
JSON file too. The process is pinned to one CPU. Both decoders' flow counts and octet totals are
checked against what the generator put in.

    python bench/decode_bench.py            # full run, writes bench/results/decode-<date>.json
    python bench/decode_bench.py --quick    # smoke run, < 60 s
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil
import exportgen
import v5_floor
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.model import Datagram
from flowscope.normalize import NormalizeConfig, Normalizer, decode_and_normalize

try:
    import netflow
except ImportError:  # reported in the results; flowscope is measured anyway
    netflow = None

TARGET_FLOWS_PER_S = 5_000_000
TARGET_RATIO = 100.0
# What the collector uses (flowscope.cli._listen_configs): sampling applied, rows not re-ordered.
COLLECTOR_NORMALIZE = NormalizeConfig(apply_sampling=True, preserve_order=False)


class _Clock:
    """CPU time of this thread and wall time, read together."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.cpu = time.thread_time()
        self.wall = time.perf_counter()


def run_flowscope(datagrams: list[Datagram], batch: int, *, kernel: bool = True) -> dict[str, Any]:
    """Batches through what the collector runs (``decode_and_normalize``: plain NetFlow v5 batches
    straight to flows through the compiled kernel), timed as a whole; ``kernel=False``: the general
    path, decode and normalize timed apart."""
    session = DecoderSession(DecoderConfig(compiled_kernel=kernel))
    normalizer = Normalizer(COLLECTOR_NORMALIZE, session.options, session.counters)
    decode_cpu = normalize_cpu = wall = 0.0
    flows = octets = kernel_batches = 0
    for start in range(0, len(datagrams), batch):
        chunk = datagrams[start : start + batch]
        t0 = _Clock()
        if kernel:
            flow_batch, records = decode_and_normalize(session, normalizer, chunk)
            t1 = t2 = _Clock()
            kernel_batches += not records and len(flow_batch) > 0
        else:
            records = session.decode(chunk)
            t1 = _Clock()
            flow_batch = normalizer.normalize(records)
            t2 = _Clock()
        decode_cpu += t1.cpu - t0.cpu
        normalize_cpu += t2.cpu - t1.cpu
        wall += t2.wall - t0.wall
        flows += len(flow_batch)
        octets += int(flow_batch["bytes"].sum())
    counters = session.counters
    return {
        "flows": flows,
        "octets": octets,
        "cpu_s": decode_cpu + normalize_cpu,
        "decode_cpu_s": None if kernel else decode_cpu,
        "normalize_cpu_s": None if kernel else normalize_cpu,
        "kernel_batches": kernel_batches,
        "wall_s": wall,
        "errors": counters.total("decode_errors_total"),
        "sequence_lost": counters.total("decode_sequence_lost_total"),
        "pending": counters.total("decode_pending_sets_total"),
    }


def measure(key: str, datagrams: list[Datagram], batch: int, stream: Any, repeats: int, *,
            kernel: bool = True) -> dict[str, Any]:
    """``run_flowscope`` ``repeats`` times, checked against what the generator put in."""
    runs = []
    for _ in range(repeats):
        run = run_flowscope(datagrams, batch, kernel=kernel)
        if run["flows"] != stream.total_flows or run["octets"] != stream.octets_total or run["errors"]:
            raise SystemExit(f"{key}: flowscope decoded {run['flows']} flows / {run['octets']} octets "
                             f"with {run['errors']} errors; generated {stream.total_flows} / "
                             f"{stream.octets_total}")
        runs.append(run)
    rates = [r["flows"] / r["cpu_s"] for r in runs]
    best = runs[rates.index(max(rates))]
    entry: dict[str, Any] = {
        "batch_datagrams": batch,
        "path": "collector (compiled kernel where it applies)" if kernel else "general (no compiled kernel)",
        "kernel_batches": best["kernel_batches"],
        "batches": -(-len(datagrams) // batch),
        "flows_per_s_median": statistics.median(rates),
        "flows_per_s_best": max(rates),
        "wall_flows_per_s_median": statistics.median(r["flows"] / r["wall_s"] for r in runs),
        "runs_flows_per_s": rates,
        "sequence_lost": best["sequence_lost"],
    }
    split = ""
    if not kernel:
        entry["decode_flows_per_s_best"] = best["flows"] / best["decode_cpu_s"]
        entry["normalize_flows_per_s_best"] = best["flows"] / best["normalize_cpu_s"]
        entry["decode_share_best"] = best["decode_cpu_s"] / best["cpu_s"]
        split = (f"; decode {entry['decode_flows_per_s_best'] / 1e6:.2f}, normalize "
                 f"{entry['normalize_flows_per_s_best'] / 1e6:.2f}")
    label = "flowscope" if kernel else "general  "
    print(f"  {label} batch {batch:5d}: {entry['flows_per_s_median'] / 1e6:6.2f} M flows/s median "
          f"(best {entry['flows_per_s_best'] / 1e6:.2f}{split}; wall-clock "
          f"{entry['wall_flows_per_s_median'] / 1e6:.2f}; kernel took {entry['kernel_batches']} of "
          f"{entry['batches']} batches)", flush=True)
    return entry


def numpy_floor(datagrams: list[Datagram], batch: int, repeats: int, stream: Any) -> dict[str, Any]:
    """``v5_floor`` on the same datagrams and batches: what numpy column work alone costs (checked
    against flowscope's flows on the first batch, and against the generator's totals)."""
    session = DecoderSession()
    normalizer = Normalizer(COLLECTOR_NORMALIZE, session.options, session.counters)
    columns = v5_floor.columns_of(datagrams[:batch])
    if columns is None:
        return {"unsupported": "datagrams of different record counts"}
    same = v5_floor.same_flows(columns, normalizer.normalize(session.decode(datagrams[:batch])).columns)
    runs = [v5_floor.run(datagrams, batch) for _ in range(repeats)]
    if any(r is None for r in runs):
        return {"unsupported": "datagrams of different record counts"}
    rates = [r["flows_per_s"] for r in runs if r is not None]
    complete = all(r is not None and r["flows"] == stream.total_flows and r["octets"] == stream.octets_total
                   for r in runs)
    print(f"    numpy floor batch {batch:5d}: {statistics.median(rates) / 1e6:6.2f} M flows/s median "
          f"(same flows as flowscope: {same}, totals as generated: {complete})", flush=True)
    return {"flows_per_s_median": statistics.median(rates), "flows_per_s_best": max(rates),
            "runs_flows_per_s": rates, "same_flows_as_flowscope": same, "totals_as_generated": complete}


def _octets_of(flow: Any) -> int:
    data = flow.data
    for key in ("octetDeltaCount", "IN_BYTES", "IN_OCTETS"):
        if key in data:
            return int(data[key])
    return 0


def run_netflow(payloads: list[bytes]) -> dict[str, Any]:
    if netflow is None:
        return {"unsupported": "the netflow package is not installed (pip install netflow==0.12.2)"}
    sink = io.StringIO()  # it prints a line per unparsable address; keep the table readable
    parse = netflow.parse_packet
    # Timed pass: parse every datagram and count its flows, keeping nothing (as a collector would).
    templates: dict[str, dict[int, Any]] = {"netflow": {}, "ipfix": {}}  # as its own collector does
    flows = done = 0
    t0 = _Clock()
    try:
        with contextlib.redirect_stdout(sink):
            for payload in payloads:
                flows += len(parse(payload, templates).flows)
                done += 1
    except Exception as error:  # the peer's failure is a result, reported as such
        return {"unsupported": f"{type(error).__name__} {error}".strip(), "after_datagrams": done}
    t1 = _Clock()
    # Untimed pass: the octets it decoded, to compare with flowscope.
    templates = {"netflow": {}, "ipfix": {}}
    octets = 0
    with contextlib.redirect_stdout(sink):
        for payload in payloads:
            octets += sum(_octets_of(f) for f in parse(payload, templates).flows)
    return {"flows": flows, "octets": octets, "cpu_s": t1.cpu - t0.cpu, "wall_s": t1.wall - t0.wall,
            "flows_per_s": flows / (t1.cpu - t0.cpu), "wall_flows_per_s": flows / (t1.wall - t0.wall),
            "datagrams": len(payloads), "printed_lines": sink.getvalue().count("\n")}


def bench_case(key: str, args: argparse.Namespace) -> dict[str, Any]:
    case = exportgen.CASES[key]
    template = case.load()
    variable = template.variable
    count = args.variable_datagrams if variable else args.datagrams
    t0 = time.perf_counter()
    stream = exportgen.build_stream(template, count, exporters=args.exporters, mtu_payload=args.mtu_payload,
                                    template_every=args.template_every, seed=args.seed)
    datagrams = [Datagram(e, t, p) for e, t, p in stream.datagrams]
    mean_bytes = stream.mean_payload_bytes
    stream.datagrams.clear()
    generated_s = time.perf_counter() - t0
    # The inputs are long-lived here but not in a collector (a datagram lives for one batch):
    # keep them out of the garbage collector's sight, or every full collection walks them all.
    gc.collect()
    gc.freeze()
    result: dict[str, Any] = {
        "case": key,
        "label": case.label,
        "template": template.source,
        "template_fields": len(template.fields),
        "record_bytes": None if variable else template.fixed_length,
        "variable_length": variable,
        "datagrams": len(datagrams),
        "flows": stream.total_flows,
        "flows_per_datagram": round(stream.total_flows / len(datagrams), 1),
        "mean_datagram_bytes": round(mean_bytes, 1),
        "exporters": args.exporters,
        "template_every": args.template_every,
        "generation_s": round(generated_s, 2),
        "flowscope": [],
    }
    print(f"\n{case.label}: {len(datagrams)} datagrams, {stream.total_flows} flows "
          f"({result['flows_per_datagram']}/datagram, {result['mean_datagram_bytes']:.0f} B), "
          f"template from {template.source}", flush=True)
    run_flowscope(datagrams[: min(len(datagrams), 2000)], 256)  # warm-up: imports, caches, first plans
    for batch in args.batch_sizes:
        entry = measure(key, datagrams, batch, stream, args.repeats)
        result["flowscope"].append(entry)
        if key == "v5":
            entry["general_path"] = measure(key, datagrams, batch, stream, args.repeats, kernel=False)
        if key == "v5":
            entry["numpy_floor"] = numpy_floor(datagrams, batch, args.repeats, stream)
    if key == "v5":
        result["numpy_floor_note"] = v5_floor.__doc__
    peer_n = min(args.peer_datagrams, len(datagrams))
    peer = run_netflow([d.payload for d in datagrams[:peer_n]])
    if "unsupported" not in peer:
        # The same subset through flowscope once more, to compare counts and octets one to one.
        check = run_flowscope(datagrams[:peer_n], 1024)
        peer["agrees_with_flowscope"] = check["flows"] == peer["flows"] and check["octets"] == peer["octets"]
        for entry in result["flowscope"]:
            entry["ratio_vs_netflow"] = entry["flows_per_s_median"] / peer["flows_per_s"]
            for extra in ("general_path", "numpy_floor"):
                other = entry.get(extra, {})
                if "flows_per_s_median" in other:
                    other["ratio_vs_netflow"] = other["flows_per_s_median"] / peer["flows_per_s"]
        print(f"  netflow {netflow_version()}: {peer['flows_per_s'] / 1e3:8.1f} k flows/s on {peer_n} datagrams "
              f"(flows and octets agree with flowscope: {peer['agrees_with_flowscope']})", flush=True)
    else:
        print(f"  netflow {netflow_version()}: cannot decode this template ({peer['unsupported']})", flush=True)
    result["netflow"] = peer
    del datagrams
    gc.unfreeze()
    gc.collect()
    return result


def netflow_version() -> str:
    try:
        return version("netflow")
    except PackageNotFoundError:
        return "not installed"


def summary_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []

    def row(label: str, r: dict[str, Any], entry: dict[str, Any], peer_text: str) -> list[str]:
        ratio = entry.get("ratio_vs_netflow")
        return [
            label, str(r["flows_per_datagram"]), str(entry.get("batch_datagrams", "")),
            f"{entry['flows_per_s_median'] / 1e6:.2f}M",
            f"{entry['decode_flows_per_s_best'] / 1e6:.2f}M" if "decode_flows_per_s_best" in entry else "",
            f"{entry['normalize_flows_per_s_best'] / 1e6:.2f}M" if "normalize_flows_per_s_best" in entry else "",
            f"{entry['wall_flows_per_s_median'] / 1e6:.2f}M" if "wall_flows_per_s_median" in entry else "",
            peer_text, "n/a" if ratio is None else f"{ratio:.0f}x",
        ]

    for r in results:
        peer = r["netflow"]
        peer_text = "n/a" if "unsupported" in peer else f"{peer['flows_per_s'] / 1e3:.0f}k"
        for entry in r["flowscope"]:
            rows.append(row(r["case"] + (" (variable)" if r["variable_length"] else ""), r, entry, peer_text))
            for extra, label in (("general_path", " general path"), ("numpy_floor", " numpy floor")):
                other = entry.get(extra, {})
                if "flows_per_s_median" in other:
                    rows.append(row(r["case"] + label, r, {"batch_datagrams": entry["batch_datagrams"], **other},
                                    peer_text))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (< 60 s)")
    parser.add_argument("--datagrams", type=int, default=200_000, help="datagrams per fixed-length case")
    parser.add_argument("--variable-datagrams", type=int, default=20_000, help="datagrams for the variable case")
    parser.add_argument("--peer-datagrams", type=int, default=20_000, help="datagrams given to the netflow package")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exporters", type=int, default=4)
    parser.add_argument("--template-every", type=int, default=20, help="template refresh every N datagrams")
    parser.add_argument("--mtu-payload", type=int, default=1400, help="datagram payload size to fill")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=lambda s: s.split(","),
                        default=[*exportgen.FIXED_CASES, *exportgen.VARIABLE_CASES])
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument("--output", help="result file (default bench/results/decode-<date>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.datagrams = min(args.datagrams, 6_000)
        args.variable_datagrams = min(args.variable_datagrams, 600)
        args.peer_datagrams = min(args.peer_datagrams, 300)
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        pinned = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {pinned})
    machine = benchutil.machine_info()
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
          f"Python {machine['python']}, numpy {machine['numpy']}; pinned to CPU {pinned}; "
          f"load average {machine['load_average_at_start']}")
    results = [bench_case(key, args) for key in args.cases]

    print("\nflows per CPU second of one core (median of runs; decode/normalize: best run)")
    benchutil.print_table(
        ["case", "flows/dgram", "batch", "flowscope", "decode", "normalize", "wall", "netflow", "ratio"],
        summary_rows(results),
    )
    fixed = [r for r in results if not r["variable_length"]]
    worst = min((e["flows_per_s_median"] for r in fixed for e in r["flowscope"]), default=0.0)
    ratios = [e["ratio_vs_netflow"] for r in fixed for e in r["flowscope"] if "ratio_vs_netflow" in e]
    checks: dict[str, Any] = {
        "fixed_min_flows_per_s": worst,
        "fixed_min_flows_per_s_ok": worst >= TARGET_FLOWS_PER_S,
        "fixed_min_ratio_vs_netflow": min(ratios, default=None),
        "fixed_min_ratio_ok": bool(ratios) and min(ratios) >= TARGET_RATIO,
        "below_flows_target": sorted({f"{r['case']}/{e['batch_datagrams']}" for r in fixed for e in r["flowscope"]
                                      if e["flows_per_s_median"] < TARGET_FLOWS_PER_S}),
        "below_ratio_target": sorted({r["case"] for r in fixed for e in r["flowscope"]
                                      if e.get("ratio_vs_netflow", TARGET_RATIO) < TARGET_RATIO}),
    }
    met = "met" if checks["fixed_min_flows_per_s_ok"] else "NOT met"
    print(f"\ntarget >= {TARGET_FLOWS_PER_S / 1e6:.0f}M flows/s (fixed-length, every batch size): {met} "
          f"(lowest {worst / 1e6:.2f}M; below: {', '.join(checks['below_flows_target']) or 'none'})")
    if ratios:
        met = "met" if checks["fixed_min_ratio_ok"] else "NOT met"
        print(f"target >= {TARGET_RATIO:.0f}x the netflow package: {met} (lowest {min(ratios):.0f}x; "
              f"below: {', '.join(checks['below_ratio_target']) or 'none'})")
    payload = {
        "benchmark": "decode",
        "date_utc": benchutil.today(),
        "command": benchutil.command_line(),
        "machine": machine,
        "load_average_at_end": benchutil.load_average(),
        "pinned_cpu": pinned,
        "metric": "flows per CPU second of the benchmark thread (time.thread_time); wall_* are wall-clock",
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "normalize_config": {"apply_sampling": COLLECTOR_NORMALIZE.apply_sampling,
                             "preserve_order": COLLECTOR_NORMALIZE.preserve_order},
        "netflow_package": netflow_version(),
        "targets": {"flows_per_s": TARGET_FLOWS_PER_S, "ratio_vs_netflow": TARGET_RATIO},
        "checks": checks,
        "results": results,
    }
    if args.quick and not args.output:
        args.output = str(benchutil.RESULTS / f"decode-quick-{benchutil.today()}.json")
    path = benchutil.write_result("decode", payload, args.output)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
