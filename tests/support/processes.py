"""A process started by a test: its own process group, stderr read on a thread, waited on by pattern.

The Spark tests start collectors, Spark jobs, masters and workers; every one must stop (with the
JVMs it forked) also when the test fails, and its stderr is what a failure message needs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


class WatchedProcess:
    """``args`` run in a new session; stdout goes to ``log`` (or nowhere), stderr lines are kept."""

    def __init__(self, name: str, args: list[str], *, env: Mapping[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.name = name
        self.handle: IO[bytes] | None = log.open("wb") if log is not None else None
        self.process = subprocess.Popen(args, stdout=self.handle or subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env=dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1"),
                                        start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float = 60) -> re.Match[str]:
        """The first stderr line from now on matching ``pattern``; fails with the stderr tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                match = re.search(pattern, self.lines.get(timeout=0.2))
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if match:
                return match
        raise AssertionError(f"{self.name}: never saw {pattern!r}; stderr:\n{''.join(self.stderr[-60:])}")

    def stop(self, *, gently: bool = True) -> None:
        """SIGTERM to the process (its own shutdown), then to its whole group; SIGKILL if needed."""
        try:
            if gently and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=30)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    continue
                time.sleep(0.5)  # children of the group (JVMs) exit after their parent
        finally:
            self.reader.join(timeout=5)  # the last stderr lines (the pipe closes when it exits)
            if self.handle is not None:
                self.handle.close()
