"""Result sinks next to the store: fan-out, live push to subscribers, per-exporter traffic.

The engine emits window results (provisional while a window is open, final when it closes) to one
``ResultSink``. ``FanOut`` hands them to several: the store, the ``LiveBroadcaster`` (which pushes
them to every live subscriber — Server-Sent Events — through a bounded queue each, so a slow
browser loses events, counted, and never stalls the engine) and ``ExporterTraffic`` (cumulative
flows/packets/bytes per exporter and domain, for the exporters page and ``/metrics``).

Everything here runs on the engine's thread and does O(results) work per emission: updates are
per window, never per flow. No web framework is imported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flowscope.aggregate.engine import ResultSink, WindowResult
from flowscope.metrics import Counters

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class FanOut:
    """A ResultSink that hands every emission to several sinks, in order.

    A failing sink is logged and counted (``sink_failures_total{sink}``); the others still get
    the results.
    """

    def __init__(self, sinks: Iterable[ResultSink], counters: Counters | None = None) -> None:
        self.sinks = list(sinks)
        self.counters = counters if counters is not None else Counters()

    def emit(self, results: list[WindowResult]) -> None:
        for sink in self.sinks:
            try:
                sink.emit(results)
            except Exception:
                log.exception("result sink %s failed", type(sink).__name__)
                self.counters.add("sink_failures_total", sink=type(sink).__name__)


# ------------------------------------------------------------------------------ live push


class Subscription:
    """One live subscriber: the results it wants and a bounded queue of those not yet sent.

    ``push`` runs on the engine thread, ``take`` on the subscriber's; ``notify`` (given by the
    consumer, e.g. an asyncio event set through ``call_soon_threadsafe``) wakes the consumer. When
    the queue is full the *oldest* queued result is dropped: the freshest data reaches the page.
    """

    def __init__(
        self, intervals: frozenset[str], view: str, *, final_only: bool = False, max_queued: int = 256,
        notify: Callable[[], object] = lambda: None,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.intervals = intervals
        self.view = view
        self.final_only = final_only
        self.max_queued = max_queued
        self.notify = notify
        self.dropped = 0  # results dropped since the last take()
        self.dropped_total = 0
        self.closed = False
        self._queue: deque[WindowResult] = deque()
        self._lock = threading.Lock()

    def wants(self, result: WindowResult) -> bool:
        return (result.resolution in self.intervals and result.view == self.view
                and (result.final or not self.final_only))

    def push(self, results: list[WindowResult]) -> int:
        """Queue the wanted results; returns how many had to be dropped to make room."""
        dropped = 0
        with self._lock:
            if self.closed:
                return 0
            for result in results:
                if len(self._queue) >= self.max_queued:
                    self._queue.popleft()
                    dropped += 1
                self._queue.append(result)
            self.dropped += dropped
            self.dropped_total += dropped
        self._wake()
        return dropped

    def take(self) -> tuple[list[WindowResult], int]:
        """Everything queued, oldest first, and the number dropped since the previous take."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            dropped, self.dropped = self.dropped, 0
        return items, dropped

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self._wake()

    def _wake(self) -> None:
        try:
            self.notify()
        except RuntimeError:  # the consumer's event loop is gone: nobody will read any more
            with self._lock:
                self.closed = True


class LiveBroadcaster:
    """A ResultSink that pushes every window result to the live subscribers that want it.

    It also remembers the newest result per (interval, view), so a new subscriber starts with
    the current picture instead of an empty chart.
    """

    def __init__(self, counters: Counters | None = None, *, max_queued: int = 256) -> None:
        self.counters = counters if counters is not None else Counters()
        self.max_queued = max_queued
        self._subscribers: list[Subscription] = []
        self._latest: dict[tuple[str, str], WindowResult] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, results: list[WindowResult]) -> None:
        if not results:
            return
        with self._lock:
            for result in results:
                key = (result.resolution, result.view)
                known = self._latest.get(key)
                if known is None or (result.start_ms, result.final) >= (known.start_ms, known.final):
                    self._latest[key] = result
            subscribers = list(self._subscribers)
        pushed = dropped = 0
        for subscriber in subscribers:
            wanted = [r for r in results if subscriber.wants(r)]
            if wanted:
                dropped += subscriber.push(wanted)
                pushed += len(wanted)
        if pushed:
            self.counters.add("web_stream_events_total", pushed)
        if dropped:
            self.counters.add("web_stream_dropped_events_total", dropped)

    def subscribe(
        self, intervals: Iterable[str], view: str, *, final_only: bool = False,
        notify: Callable[[], object] = lambda: None,
    ) -> Subscription:
        """A new subscription, already holding the newest known result of each wanted interval."""
        subscription = Subscription(frozenset(intervals), view, final_only=final_only, max_queued=self.max_queued,
                                    notify=notify)
        with self._lock:
            if self._closed:
                subscription.closed = True
                return subscription
            current = sorted((r for r in self._latest.values() if subscription.wants(r)),
                             key=lambda r: (r.start_ms, r.duration_ms))
            if current:  # before any newer emission can reach it
                subscription.push(current)
            self._subscribers.append(subscription)
        self.counters.add("web_stream_subscriptions_total")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def close(self) -> None:
        """End every subscription (server shutdown) and refuse new ones."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber.close()


# ------------------------------------------------------------------------- exporter traffic


@dataclass(slots=True)
class DomainTraffic:
    flows: int = 0
    packets: int = 0
    bytes: int = 0
    last_seen_ms: int | None = None  # end of the newest finest window with its flows (capped at now)


class ExporterTraffic:
    """A ResultSink keeping, per (exporter, domain), the traffic of every closed finest window.

    Totals come from final results of the finest resolution, view "all" (each flow is in exactly
    one of them, late flows included), so they are exact and only grow: Prometheus counters. The
    last-seen time also follows provisional results, to within one finest window.
    """

    def __init__(self, finest_ms: int, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.finest_ms = finest_ms
        self.clock_ms = clock_ms
        self._domains: dict[tuple[str, int], DomainTraffic] = {}
        self._lock = threading.Lock()

    def emit(self, results: list[WindowResult]) -> None:
        now_ms = self.clock_ms()
        with self._lock:
            for result in results:
                if result.view != "all" or result.duration_ms != self.finest_ms:
                    continue
                seen_ms = min(now_ms, result.start_ms + result.duration_ms)
                for entry in result.payload["totals"]["by_exporter"]:
                    key = (str(entry["exporter"]), int(entry["domain"]))
                    traffic = self._domains.get(key)
                    if traffic is None:
                        traffic = self._domains[key] = DomainTraffic()
                    if entry["flows"] or entry["packets"]:
                        traffic.last_seen_ms = max(traffic.last_seen_ms or seen_ms, seen_ms)
                    if result.final:
                        traffic.flows += int(entry["flows"])
                        traffic.packets += int(entry["packets"])
                        traffic.bytes += int(entry["bytes"])

    def snapshot(self) -> dict[tuple[str, int], DomainTraffic]:
        with self._lock:
            return {key: DomainTraffic(t.flows, t.packets, t.bytes, t.last_seen_ms) for key, t in self._domains.items()}
