"""Peak memory and speed of host statistics over one hour with a million distinct local hosts.

The hour is built the way the engine (with ``engine.background``, the default of ``flowscope
run``) builds it: each minute's ``HostState`` is updated batch by batch; at the end of each minute
it is folded in place and its final result computed, then its parts are handed to the hour (the
rollup, no copy), and the hour's provisional result is computed after the hour's parts are folded
in place (lent to the folding thread: ``HostState.lend`` / ``fold_lent``). Every ten minutes a
snapshot of the hour is pickled, streamed to a file (a checkpoint). The glibc mmap threshold is
pinned as the engine pins it. The work runs in a child process whose peak resident set size
(``VmHWM`` in /proc/self/status) is the figure reported; the baseline before the first batch
(interpreter, numpy, generator tables) is reported beside it.

Traffic (deterministic for a seed): ``--flows`` flows, as request/reply pairs of connections, in
batches of ``--batch`` flows spread evenly over 60 minutes. Each connection involves one local
host (90 % IPv4 in 10.0.0.0/8, 10 % IPv6 in 2001:db8:1::/48) chosen by Zipf popularity (a = 1.1),
and every one of the ``--hosts`` local hosts appears at least once. The partner is an external
address drawn by Zipf popularity (a = 1.2) over 50 million addresses (10 % IPv6), or, for 5 % of
connections, another local host. The local host is the client in 70 % of connections (service
port on the far side, ephemeral port on its own), the server otherwise. Service ports follow a
Zipf mix of 20 common ports (53/123 UDP, 443 partly QUIC); packets, bytes, durations and TCP
flags are drawn per flow. Ten hosts are watched (exact statistics): the five most popular local
hosts and five external ones.

    python bench/hosts_memory.py                 # 1M hosts, 20M flows, batches of 50k
    python bench/hosts_memory.py --quick         # 100k hosts, 2M flows: a smoke run
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil
from flowscope.aggregate.allocator import fix_mmap_threshold
from flowscope.aggregate.hosts import HostState
from flowscope.aggregate.state import Rows
from flowscope.aggregate.stats import StatsSpec
from flowscope.model import address_text

TARGET_PEAK_MIB = 1024
LOCAL_NETWORKS = ("10.0.0.0/8", "2001:db8:1::/48")
SERVICES = np.array([443, 80, 53, 123, 22, 25, 993, 8080, 3389, 445, 5222, 1194, 8443, 587, 143, 110, 3306, 5432,
                     6379, 9200], np.uint16)
SERVICE_WEIGHTS = 1.0 / np.arange(1, len(SERVICES) + 1) ** 1.2
SERVICE_WEIGHTS /= SERVICE_WEIGHTS.sum()
EXTERNAL = 50_000_000
V4_PREFIX = np.uint64(0xFFFF << 32)
V6_LOCAL_HI = np.uint64(0x20010DB800010000)
V6_EXTERNAL_HI = np.uint64(0x2A00145040000000)


def peak_rss_kib() -> tuple[int, int]:
    """(VmHWM, VmRSS) of this process in KiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmHWM:", "VmRSS:")):
                values[line.split(":")[0]] = int(line.split()[1])
    return values["VmHWM"], values["VmRSS"]


def _addresses(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    halves = np.empty((len(hi), 2), ">u8")
    halves[:, 0] = hi
    halves[:, 1] = lo
    return halves.view("S16").reshape(-1)


class Traffic:
    """Deterministic synthetic traffic, generated batch by batch (never held whole)."""

    def __init__(self, hosts: int, flows: int, batch: int, seed: int) -> None:
        self.hosts = hosts
        self.batch = batch
        self.batches = flows // batch
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.popularity = rng.permutation(hosts)  # Zipf rank → local host index
        self.coverage = rng.permutation(hosts)  # every host appears once through these slots
        self.per_batch_coverage = -(-hosts // self.batches)
        v6 = hosts - hosts * 9 // 10
        self.v6_start = hosts - v6
        self.local_lo_v6 = (np.arange(v6, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)

    def local(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        is_v6 = index >= self.v6_start
        hi = np.where(is_v6, V6_LOCAL_HI, np.uint64(0))
        v4 = V4_PREFIX | np.uint64(0x0A000000) | (index.astype(np.uint64) + np.uint64(1))
        lo = np.where(is_v6, self.local_lo_v6[np.maximum(index - self.v6_start, 0)], v4)
        return hi.astype(np.uint64), lo.astype(np.uint64)

    @staticmethod
    def external(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mixed = (rank.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)) ^ np.uint64(0x94D049BB133111EB)
        is_v6 = (mixed & np.uint64(15)) == 0  # ~6 %
        v4 = V4_PREFIX | (np.uint64(0x0B000000) + (mixed >> np.uint64(40)) % np.uint64(0xD0000000))
        hi = np.where(is_v6, V6_EXTERNAL_HI, np.uint64(0))
        lo = np.where(is_v6, mixed, v4)
        return hi.astype(np.uint64), lo.astype(np.uint64)

    def rows(self, number: int) -> Rows:
        rng = np.random.default_rng([self.seed, number])
        connections = self.batch // 2
        ranks = (rng.zipf(1.1, connections) - 1) % self.hosts
        host = self.popularity[ranks]
        cover = self.coverage[number * self.per_batch_coverage:(number + 1) * self.per_batch_coverage]
        host[: len(cover)] = cover
        host_hi, host_lo = self.local(host)
        partner_rank = (rng.zipf(1.2, connections) - 1) % EXTERNAL
        partner_hi, partner_lo = self.external(partner_rank)
        local_partner = rng.random(connections) < 0.05
        other_hi, other_lo = self.local(self.popularity[(rng.zipf(1.1, connections) - 1) % self.hosts])
        partner_hi = np.where(local_partner, other_hi, partner_hi)
        partner_lo = np.where(local_partner, other_lo, partner_lo)
        service = SERVICES[rng.choice(len(SERVICES), connections, p=SERVICE_WEIGHTS)]
        udp = (service == 53) | (service == 123) | ((service == 443) & (rng.random(connections) < 0.2))
        protocol = np.where(udp, 17, 6).astype(np.uint8)
        ephemeral = rng.integers(32768, 61000, connections).astype(np.uint16)
        client = rng.random(connections) < 0.7  # the local host is the client
        c_hi = np.where(client, host_hi, partner_hi)
        c_lo = np.where(client, host_lo, partner_lo)
        s_hi = np.where(client, partner_hi, host_hi)
        s_lo = np.where(client, partner_lo, host_lo)
        client_addr, server_addr = _addresses(c_hi, c_lo), _addresses(s_hi, s_lo)
        flags = rng.choice(np.array([0x1B, 0x1B, 0x1B, 0x02, 0x12, 0x14, 0x18], np.uint8), connections)
        flags = np.where(udp, 0, flags).astype(np.uint8)
        duration = rng.exponential(2000.0, connections).astype(np.int64)
        req_packets = (1 + rng.geometric(0.2, connections)).astype(np.uint64)
        rep_packets = (1 + rng.geometric(0.1, connections)).astype(np.uint64)
        req_bytes = req_packets * rng.integers(60, 400, connections).astype(np.uint64)
        rep_bytes = rep_packets * rng.integers(200, 1500, connections).astype(np.uint64)
        n = 2 * connections
        return Rows(
            protocol=np.concatenate([protocol, protocol]),
            src_port=np.concatenate([ephemeral, service]),
            dst_port=np.concatenate([service, ephemeral]),
            src_addr=np.concatenate([client_addr, server_addr]),
            dst_addr=np.concatenate([server_addr, client_addr]),
            exporter=np.zeros(n, np.uint32),
            tcp_flags=np.concatenate([flags, flags]),
            duration_ms=np.concatenate([duration, duration]),
            flows=np.ones(n, np.uint64),
            packets=np.concatenate([req_packets, rep_packets]),
            bytes=np.concatenate([req_bytes, rep_bytes]),
        )

    def watched(self) -> tuple[str, ...]:
        hi, lo = self.local(self.popularity[:5])
        ext_hi, ext_lo = self.external(np.arange(5))
        raw = _addresses(np.concatenate([hi, ext_hi]), np.concatenate([lo, ext_lo]))
        return tuple(address_text(bytes(a)) for a in raw)


def child(args: argparse.Namespace) -> dict[str, Any]:
    traffic = Traffic(args.hosts, args.flows, args.batch, args.seed)
    spec = StatsSpec(local_networks=LOCAL_NETWORKS, watched_hosts=traffic.watched())
    fix_mmap_threshold()
    baseline_hwm, baseline_rss = peak_rss_kib()
    hour = HostState()
    hour.deferred = True  # folded by the engine's background thread, not on update
    minute = HostState()
    update_s: list[float] = []
    generate_s = merge_s = result_s = pickle_s = 0.0
    merges = results = pickles = 0
    pickle_bytes = 0
    next_minute = 1
    checkpoint = Path(tempfile.mkdtemp(prefix="hosts-bench-")) / "hour.pickle"
    started = time.perf_counter()
    for number in range(traffic.batches):
        t0 = time.perf_counter()
        rows = traffic.rows(number)
        t1 = time.perf_counter()
        minute.update(rows, spec)
        t2 = time.perf_counter()
        generate_s += t1 - t0
        update_s.append(t2 - t1)
        del rows
        if (number + 1) * 60 >= next_minute * traffic.batches or number + 1 == traffic.batches:
            minute.fold_lent(minute.lend()).result(spec)  # the minute's final result, folded in place
            t0 = time.perf_counter()
            hour.merge(minute)
            t1 = time.perf_counter()
            view = hour.fold_lent(hour.lend())  # the hour's provisional result, after its fold
            view.result(spec)
            del view
            t2 = time.perf_counter()
            merge_s += t1 - t0
            result_s += t2 - t1
            merges += 1
            results += 1
            minute = HostState()
            if next_minute % 10 == 0:
                t0 = time.perf_counter()
                with open(checkpoint, "wb") as handle:  # as the engine checkpoints: streamed to a file
                    pickle.dump(hour.snapshot(), handle, protocol=5)
                pickle_s += time.perf_counter() - t0
                pickle_bytes = checkpoint.stat().st_size
                pickles += 1
            next_minute += 1
    elapsed = time.perf_counter() - started
    final = hour.result(spec)
    state_bytes = hour.nbytes
    # Accuracy on real-sized sets: the watched local hosts (the busiest ones) have both exact
    # partner sets and sketches; compare the two.
    unwatched = StatsSpec(local_networks=LOCAL_NETWORKS)
    errors = {}
    for host in final["watched"]:
        sketched = hour.lookup(host["address"], unwatched)
        if sketched is not None:
            errors[host["address"]] = {"exact": host["partners"], "sketch": sketched["partners"],
                                       "relative_error": round(sketched["partners"] / host["partners"] - 1, 5)}
    _, rss = peak_rss_kib()
    with open(checkpoint, "wb") as handle:
        pickle.dump(hour, handle, protocol=pickle.HIGHEST_PROTOCOL)
    del hour, minute
    with open(checkpoint, "rb") as handle:
        restored = pickle.load(handle)
    checkpoint.unlink()
    checkpoint.parent.rmdir()
    assert restored.result(spec) == final, "checkpoint round trip changed the result"
    hwm, _ = peak_rss_kib()  # the high-water mark of the whole run, restore included
    flows = traffic.batches * traffic.batch
    return {
        "hosts_configured": args.hosts,
        "local_hosts_seen": final["local"]["hosts"],
        "flows": flows,
        "batch": traffic.batch,
        "batches": traffic.batches,
        "minutes_merged": merges,
        "peak_rss_mib": round(hwm / 1024, 1),
        "baseline_rss_mib": round(baseline_hwm / 1024, 1),
        "baseline_current_rss_mib": round(baseline_rss / 1024, 1),
        "end_rss_mib": round(rss / 1024, 1),
        "state_array_mib": round(state_bytes / 2**20, 1),
        "checkpoint_pickle_mib": round(pickle_bytes / 2**20, 1),
        "update_ms_per_batch": {
            "median": round(statistics.median(update_s) * 1e3, 2),
            "p99": round(float(np.percentile(update_s, 99)) * 1e3, 2),
            "max": round(max(update_s) * 1e3, 2),
        },
        "update_flows_per_s": round(flows / sum(update_s)),
        "merge_into_hour_ms_mean": round(merge_s / max(merges, 1) * 1e3, 1),
        "hour_result_ms_mean": round(result_s / max(results, 1) * 1e3, 1),
        "checkpoint_pickle_ms_mean": round(pickle_s / max(pickles, 1) * 1e3, 1),
        "generator_s": round(generate_s, 1),
        "elapsed_s": round(elapsed, 1),
        "top_host_by_partners": final["local"]["top"]["partners"][0]["address"] if final["local"]["top"]["partners"]
        else None,
        "top_partners": final["local"]["top"]["partners"][0]["partners"] if final["local"]["top"]["partners"] else None,
        "watched": len(final["watched"]),
        "partner_count_errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=20_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="100k hosts, 2M flows")
    parser.add_argument("--output", help="result JSON path (default bench/results/hosts-memory-<date>.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.flows = 100_000, 2_000_000
    if args.child:
        print(json.dumps(child(args)))
        return 0
    command = [sys.executable, __file__, "--child", "--hosts", str(args.hosts), "--flows", str(args.flows),
               "--batch", str(args.batch), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr)
        return done.returncode
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    payload = {"benchmark": "hosts_memory", "command": benchutil.command_line(), "machine": benchutil.machine_info(),
               "target_peak_mib": TARGET_PEAK_MIB, **figures}
    target = benchutil.write_result("hosts-memory", payload, args.output)
    update = figures["update_ms_per_batch"]
    benchutil.print_table(["figure", "value"], [
        ["local hosts seen", f"{figures['local_hosts_seen']:,}"],
        ["flows (batches)", f"{figures['flows']:,} ({figures['batches']} × {figures['batch']:,})"],
        ["peak RSS (VmHWM)", f"{figures['peak_rss_mib']:,.1f} MiB (target < {TARGET_PEAK_MIB} MiB)"],
        ["baseline RSS before the first batch", f"{figures['baseline_rss_mib']:,.1f} MiB"],
        ["hour state arrays", f"{figures['state_array_mib']:,.1f} MiB"],
        ["checkpoint pickle", f"{figures['checkpoint_pickle_mib']:,.1f} MiB"],
        ["update per batch (median / p99 / max)", f"{update['median']} / {update['p99']} / {update['max']} ms"],
        ["update throughput", f"{figures['update_flows_per_s']:,} flows/s"],
        ["merge minute → hour (mean)", f"{figures['merge_into_hour_ms_mean']} ms"],
        ["hour result (mean)", f"{figures['hour_result_ms_mean']} ms"],
        ["hour pickle (mean)", f"{figures['checkpoint_pickle_ms_mean']} ms"],
        *([f"partners of {a}: sketch / exact", f"{e['sketch']:,} / {e['exact']:,} ({e['relative_error']:+.3%})"]
          for a, e in figures["partner_count_errors"].items()),
    ])
    print(f"result written to {target}")
    return 0 if figures["peak_rss_mib"] < TARGET_PEAK_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
