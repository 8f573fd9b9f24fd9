"""Test helpers shared by the listener tests: a recording sink, listener start/stop, waiting."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from flowscope.collect.listener import ThreadedListener
from flowscope.model import Datagram

ListenerT = TypeVar("ListenerT", bound=ThreadedListener[Any])


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")


class Collected:
    """A sink recording every batch with its arrival time."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[Datagram]]] = []
        self.condition = threading.Condition()

    def __call__(self, batch: list[Datagram]) -> None:
        with self.condition:
            self.batches.append((time.monotonic(), list(batch)))
            self.condition.notify_all()

    @property
    def datagrams(self) -> list[Datagram]:
        with self.condition:
            return [d for _, batch in self.batches for d in batch]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Datagram]:
        """Every datagram received, once there are at least ``count`` (or the timeout passed)."""
        with self.condition:
            self.condition.wait_for(lambda: sum(len(b) for _, b in self.batches) >= count, timeout_s)
        return self.datagrams


class Started:
    """Starts listeners; the ``start`` fixture stops them all at teardown."""

    def __init__(self) -> None:
        self.listeners: list[ThreadedListener[Any]] = []

    def __call__(self, listener: ListenerT) -> ListenerT:
        listener.start()
        self.listeners.append(listener)
        return listener

    def stop_all(self) -> None:
        for listener in self.listeners:
            listener.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Polls ``condition`` every 10 ms; False if it is still false after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
