"""What the browser tests (and the screenshot and load scripts beside them) drive: a real
``flowscope run`` in a subprocess, and Debian's chromium launched by Playwright.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen


class Flowscope:
    """``flowscope run`` in a subprocess: UDP collector on a free port, dashboard on a free port."""

    def __init__(self, state_dir: Path, toml: str = "", settings: tuple[str, ...] = (), token: str = "") -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        config = state_dir / "flowscope.toml"
        config.write_text(toml)
        self.state_dir = state_dir
        self.token = token
        command = [sys.executable, "-m", "flowscope.cli", "run", "--config", str(config)]
        base = ["collect.host=127.0.0.1", "collect.udp_ports=0", "collect.tcp_ports=", "web.port=0",
                f"engine.state_dir={state_dir}"]
        if token:
            base.append(f"web.token={token}")
        for setting in (*base, *settings):
            command += ["--set", setting]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.log: list[str] = []
        self.udp_port = 0
        self.url = ""
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(30):
            self.stop()
            pytest.fail("flowscope run did not start:\n" + "".join(self.log))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.log.append(line)
            udp = re.search(r"collecting on udp (\d+)", line)
            if udp:
                self.udp_port = int(udp.group(1))
            web = re.search(r"flowscope: dashboard on (http://\S+)", line)
            if web:
                self.url = web.group(1)
            if self.udp_port and self.url:
                self._ready.set()
        self._ready.set()

    # ------------------------------------------------------------------------------- API
    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}api/v1/{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(f"{self.url}api/v1/{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, what: str, check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
        """Poll the API until ``check`` returns something truthy."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what} (last: {last!r})\n" + "".join(self.log[-20:]))

    def recent_flows(self, interval: str = "1m") -> int:
        body = self.api("results", interval=interval, **{"from": "-10m"})
        return sum(int(r["totals"]["flows"]) for r in body["results"] if r["view"] == "all")

    # --------------------------------------------------------------------------- traffic
    def send(self, datagrams: list[bytes]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in datagrams:
                sender.sendto(datagram, ("127.0.0.1", self.udp_port))

    def replay(self, *args: str, timeout_s: float = 120) -> dict[str, Any]:
        """``flowscope replay --to <collector> ARGS --json``; returns its summary."""
        command = [sys.executable, "-m", "flowscope.cli", "replay", "--to", f"127.0.0.1:{self.udp_port}", *args,
                   "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        assert done.returncode == 0, done.stderr
        summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return summary

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Tab:
    """A browser page and every console error and uncaught exception it produced."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="load")

    def wait_live(self, timeout_ms: int = 10_000) -> None:
        """Until the page's live stream(s) are open (the green dot in the header)."""
        self.page.wait_for_selector('#status[data-state="live"]', timeout=timeout_ms)

    def attribute(self, selector: str, name: str) -> str | None:
        value: str | None = self.page.get_attribute(selector, name)
        return value
