"""Measures the live page under load: does the browser tab (and the server pushing to it) keep up
when the engine handles a million flows per second? Not a test; the numbers go to
docs/benchmarks.md ("Dashboard").

    .venv/bin/python tests/browser/dashboard_load.py [--rates 1000,1000000] [--seconds 60]

For each rate, a server process runs flowscope's ``Service`` (what ``flowscope run`` runs: store,
engine, web server with its live stream) and feeds its engine directly with generated flows
(``TrafficGenerator`` batches of 50 000, re-stamped to the current time) at that rate, which
leaves out the UDP receive and decode cost (measured elsewhere) and puts the whole load on the
engine and on the results it pushes. Headless chromium shows the live page meanwhile. Measured:

* server: flows fed vs the rate asked (the feeder's lag behind its schedule), the engine's
  flows, CPU of the server process, the live delay (arrival → live result published), stream
  events and bytes sent, events dropped for slow clients;
* browser (from an EventSource wrapper and the Chrome DevTools Performance metrics): result
  events and bytes per second, delay from a 1-second window's end to its final result in the page,
  how far the page's newest final window lags behind the clock, main-thread busy time
  (TaskDuration) and script time per second, long tasks (> 50 ms), JS heap, and the sum of the
  chart's flows against what the engine counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BATCH = 50_000
TICK_S = 0.05

# Records every SSE message the page receives (time, interval, window, final, size) and long tasks.
INSTRUMENT = r"""
(() => {
  const Original = window.EventSource;
  const bench = {events: [], dropped: 0, longtasks: [], bytes: 0};
  window.__bench = bench;
  const pattern = /"interval":"([^"]+)".*?"start_ms":(\d+).*?"end_ms":(\d+),(?:"end":"[^"]*",)?"final":(true|false)/;
  function Wrapped(url, options) {
    const source = new Original(url, options);
    source.addEventListener("result", event => {
      const now = performance.timeOrigin + performance.now();
      const m = pattern.exec(event.data.slice(0, 400));
      bench.bytes += event.data.length;
      bench.events.push([now, m ? m[1] : null, m ? Number(m[2]) : 0, m ? Number(m[3]) : 0, m ? m[4] === "true" : null,
        event.data.length]);
    });
    source.addEventListener("dropped", event => { bench.dropped += JSON.parse(event.data).dropped; });
    return source;
  }
  Wrapped.prototype = Original.prototype;
  Wrapped.CONNECTING = 0; Wrapped.OPEN = 1; Wrapped.CLOSED = 2;
  window.EventSource = Wrapped;
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) bench.longtasks.push([entry.startTime, entry.duration]);
  }).observe({type: "longtask", buffered: true});
})();
"""


# ------------------------------------------------------------------------------ server side


def serve(rate: float, seconds: float, state_dir: str) -> int:
    """The server process: Service + a feeder thread; talks JSON lines on stdout, waits on stdin."""
    import numpy as np  # noqa: PLC0415

    from flowscope.config import build, load_settings  # noqa: PLC0415
    from flowscope.metrics import Counters  # noqa: PLC0415
    from flowscope.model import FlowBatch  # noqa: PLC0415
    from flowscope.pipeline import Service  # noqa: PLC0415
    from flowscope.tools.generate import GeneratorConfig, TrafficGenerator  # noqa: PLC0415

    settings = load_settings(None, overrides=["collect.host=127.0.0.1", "collect.udp_ports=0", "collect.tcp_ports=",
                                              "web.port=0", f"engine.state_dir={state_dir}"])
    counters = Counters()
    service = Service(build(settings), counters)
    service.start()
    assert service.web is not None
    exporter = service.exporters.index_of("192.0.2.1", 1)
    generator = TrafficGenerator(GeneratorConfig(seed=1))
    base_ms = int(time.time() * 1000)
    pool = []
    for _ in range(8):
        batch = generator.flows(BATCH, base_ms)
        batch.columns["exporter"] = np.full(BATCH, exporter, batch.columns["exporter"].dtype)
        pool.append(batch)
    print(json.dumps({"url": service.web.url, "pid": os.getpid()}), flush=True)
    sys.stdin.readline()  # "go"

    fed = 0
    lag_max_s = 0.0
    cpu_start = time.process_time()
    start = time.perf_counter()
    if rate > 0:
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
            due = int(rate * elapsed)
            while fed + BATCH <= due or (fed < due and rate < BATCH / TICK_S):
                count = min(BATCH, due - fed)
                template = pool[(fed // BATCH) % len(pool)]
                now_ms = int(time.time() * 1000)
                shift = now_ms - base_ms
                columns = dict(template.columns)
                for name in ("time_received", "time_start", "time_end"):
                    columns[name] = template.columns[name] + shift
                batch = FlowBatch(columns) if count == BATCH else FlowBatch(columns).take(np.arange(count))
                service.engine_output.write(batch, [], service.exporters)
                fed += count
            lag_max_s = max(lag_max_s, (rate * (time.perf_counter() - start) - fed) / rate)
            time.sleep(TICK_S)
    wall = time.perf_counter() - start
    time.sleep(3)  # the last windows close (grace 1 s) and are published
    report = {"fed": fed, "seconds": wall, "achieved_rate": fed / wall if wall else 0, "feeder_lag_max_s": lag_max_s,
              "cpu_s_process": time.process_time() - cpu_start, "live_delay": service.engine.live_delay_quantiles(),
              "counters": {k: v for k, v in counters.snapshot().items()
                           if k.startswith(("engine_", "web_", "store_"))}}
    print(json.dumps(report), flush=True)
    sys.stdin.readline()  # "stop"
    service.stop()
    return 0


# ------------------------------------------------------------------------------ browser side


def measure(rate: float, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, VIEWPORT  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="flowscope-dashload-") as state_dir:
        server = subprocess.Popen([sys.executable, __file__, "serve", "--rate", str(rate), "--seconds", str(seconds),
                                   "--state-dir", state_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdin is not None and server.stdout is not None
        hello = json.loads(server.stdout.readline())
        url, pid = hello["url"], hello["pid"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.add_init_script(INSTRUMENT)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(url)
            page.wait_for_selector('#status[data-state="live"]')
            page.wait_for_timeout(2000)

            def metrics() -> dict[str, float]:
                return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

            samples: list[dict[str, Any]] = []
            first = metrics()
            cpu0 = _tree_cpu_s(pid)
            t0 = time.time()
            server.stdin.write("go\n")
            server.stdin.flush()
            result_line: list[str] = []
            reader = threading.Thread(target=lambda: result_line.append(server.stdout.readline()), daemon=True)
            reader.start()
            while reader.is_alive():
                page.wait_for_timeout(1000)
                state = page.evaluate("""() => {
                    const chart = document.querySelector('#chart-flows');
                    return {lastStart: Number(chart.dataset.lastStart || 0), total: Number(chart.dataset.total || 0),
                            provisional: Number(chart.dataset.provisional || 0)};
                }""")
                sample = {"t": time.time(), **metrics(), **state}
                samples.append(sample)
            cpu1 = _tree_cpu_s(pid)
            t1 = time.time()
            server_report = json.loads(result_line[0])
            page.wait_for_timeout(1500)
            bench = page.evaluate("() => window.__bench")
            chart_total = int(page.evaluate("() => Number(document.querySelector('#chart-flows').dataset.total)"))
            server_metrics = _scrape(url)
            last = metrics()
            browser.close()
        server.stdin.write("stop\n")
        server.stdin.flush()
        server.wait(timeout=60)

    active = [s for s in samples if s["t"] <= t0 + seconds]
    window = max(1e-9, (active[-1]["t"] - t0) if active else seconds)
    events = [e for e in bench["events"] if t0 * 1000 <= e[0] <= (t0 + seconds) * 1000]
    live_final = [e for e in events if e[1] == "1s" and e[4]]
    delays = sorted(e[0] - e[3] for e in live_final)  # receipt − window end (ms)
    lags = [s["t"] * 1000 - (s["lastStart"] + 1000) for s in active if s["lastStart"]]
    long_tasks = [d for start, d in bench["longtasks"] if start > 0]
    task_busy = (active[-1]["TaskDuration"] - first["TaskDuration"]) / window if active else 0
    script_busy = (active[-1]["ScriptDuration"] - first["ScriptDuration"]) / window if active else 0
    return {
        "rate_asked": rate,
        "seconds": seconds,
        "server": {
            **server_report,
            "cpu_cores": (cpu1 - cpu0) / (t1 - t0),
            "stream_events_total": server_metrics.get("flowscope_web_stream_events_total"),
            "stream_dropped_events_total": server_metrics.get("flowscope_web_stream_dropped_events_total", 0.0),
        },
        "browser": {
            "result_events_per_s": len(events) / seconds,
            "result_bytes_per_s": sum(e[5] for e in events) / seconds,
            "events_by_interval": {k: sum(1 for e in events if e[1] == k) for k in sorted({str(e[1]) for e in events})},
            "final_1s_delay_ms": _quantiles(delays),
            "newest_point_lag_ms": _quantiles(sorted(lags)),
            "main_thread_busy": task_busy,
            "script_busy": script_busy,
            "long_tasks": {"count": len(long_tasks), "max_ms": max(long_tasks, default=0.0)},
            "js_heap_mib": {"start": first["JSHeapUsedSize"] / 2**20, "end": last["JSHeapUsedSize"] / 2**20},
            "dropped_events": bench["dropped"],
            "chart_flows": chart_total,
        },
        "load_average": os.getloadavg(),
    }


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(values), "p50": round(statistics.median(values), 1),
            "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))], 1), "max": round(values[-1], 1)}


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _scrape(url: str) -> dict[str, float]:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"{url}metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line.split(" ")[0]:
            name, _, value = line.partition(" ")
            found[name] = float(value)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--rate", type=float, required=True)
    serve_parser.add_argument("--seconds", type=float, required=True)
    serve_parser.add_argument("--state-dir", required=True)
    parser.add_argument("--rates", default="1000,1000000", help="flows per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args.rate, args.seconds, args.state_dir)
    results = []
    for rate in (float(r) for r in args.rates.split(",")):
        result = measure(rate, args.seconds)
        print(json.dumps(result, indent=1), flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps({"machine": {"nproc": os.cpu_count()}, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
