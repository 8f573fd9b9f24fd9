"""Takes the screenshots of docs/screenshots/: every page of a real ``flowscope run`` fed with
generated traffic (``flowscope replay``: three exporters, bursts) and a small router that also
announces interface names and a sampling rate.

    .venv/bin/python tests/browser/screenshots.py [--minutes 4] [--out docs/screenshots]

Not a test (nothing is asserted); it uses the browser-test helpers and Debian's chromium.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, Flowscope  # noqa: E402
from tests.browser.test_dashboard import encode_flows, ipfix_interface_names  # noqa: E402

TOML = """
[stats]
local_networks = ["10.0.0.0/16", "fd00:10::/64"]

[[views]]
name = "ssh"
filter = "proto tcp and dst port 22"
"""


def sampling_options(rate: int, now_ms: int, domain: int, sequence: int) -> bytes:
    """IPFIX options: scope observationDomainId, samplingInterval = ``rate``."""
    template = struct.pack("!HHHHHHH", 301, 2, 1, 149, 4, 34, 4)
    template_set = struct.pack("!HH", 3, 4 + len(template)) + template
    data_set = struct.pack("!HHII", 301, 12, domain, rate)
    body = template_set + data_set
    return struct.pack("!HHIII", 10, 16 + len(body), now_ms // 1000, sequence, domain) + body


def router(run: Flowscope, rounds: int) -> None:
    """A small exporter on 127.0.0.5 (domain 7): interface names, 1:100 sampling, a few flows."""
    names = {1: "ge-0/0/0 uplink", 2: "ge-0/0/1 dmz", 3: "xe-1/0/0 core"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.5", 0))
        now_ms = int(time.time() * 1000)
        sender.sendto(ipfix_interface_names(names, now_ms, domain=7), ("127.0.0.1", run.udp_port))
        sender.sendto(sampling_options(100, now_ms, 7, 0), ("127.0.0.1", run.udp_port))
        rng = np.random.default_rng(5)
        for _ in range(rounds):
            rows = [(f"10.0.9.{rng.integers(1, 50)}", f"203.0.113.{rng.integers(1, 200)}",
                     int(rng.choice([443, 22, 53, 80])), int(rng.integers(1, 20)), int(rng.integers(60, 20_000)))
                    for _ in range(5)]
            for datagram in encode_flows(rows, int(time.time() * 1000), domain=7):
                sender.sendto(datagram, ("127.0.0.1", run.udp_port))
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=4.0, help="traffic before the screenshots")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flowscope-shots-") as tmp:
        run = Flowscope(Path(tmp), TOML)
        replay = subprocess.Popen(
            [sys.executable, "-m", "flowscope.cli", "replay", "--to", f"127.0.0.1:{run.udp_port}", "--generate",
             "--rate", "3000", "--burst", "4x:4s:every45s", "--sources", "3", "--bind", "127.0.0.2",
             "--bind", "127.0.0.3", "--bind", "127.0.0.4", "--local-network", "10.0.0.0/16",
             "--local-hosts", "400", "--seed", "11"], stdout=subprocess.DEVNULL)
        try:
            seconds = int(args.minutes * 60)
            router(run, seconds // 2)
            top = run.api("hosts", interval="1m")["local"]["top"]["flows"][0]["address"]
            print(run.post("hosts/watched", {"address": top}))
            router(run, seconds - seconds // 2)
            threading.Thread(target=router, args=(run, 60), daemon=True).start()  # on during the screenshots
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                for name, path in (("live", ""), ("reports", "reports.html"),
                                   ("hosts", f"hosts.html?address={top}"), ("exporters", "exporters.html")):
                    page.goto(run.url + path)
                    page.wait_for_selector('#status[data-state="live"]')
                    page.wait_for_timeout(4000)
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                    print(f"{args.out / f'{name}.png'}")
                browser.close()
        finally:
            replay.terminate()
            replay.wait(timeout=10)
            run.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
