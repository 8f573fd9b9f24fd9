"""The result sinks beside the store: fan-out, live subscriptions, per-exporter traffic."""

from __future__ import annotations

from typing import Any

import pytest

from flowscope.aggregate.engine import WindowResult
from flowscope.metrics import Counters
from flowscope.serve.sinks import ExporterTraffic, FanOut, LiveBroadcaster, Subscription

T0 = 1_795_784_400_000


def result(start_ms: int, *, interval: str = "1s", view: str = "all", final: bool = False, flows: int = 1,
           exporters: list[dict[str, Any]] | None = None) -> WindowResult:
    duration = {"1s": 1_000, "1m": 60_000}[interval]
    by_exporter = exporters if exporters is not None else [
        {"exporter": "192.0.2.1", "domain": 0, "flows": flows, "packets": 2 * flows, "bytes": 100 * flows}]
    return WindowResult(interval, duration, start_ms, view, final, {"totals": {"by_exporter": by_exporter}})


class Recording:
    def __init__(self) -> None:
        self.seen: list[list[WindowResult]] = []

    def emit(self, results: list[WindowResult]) -> None:
        self.seen.append(results)


class Failing:
    def emit(self, results: list[WindowResult]) -> None:
        raise OSError("disk full")


def test_fan_out_gives_every_sink_the_results_even_when_one_fails() -> None:
    counters = Counters()
    first, last = Recording(), Recording()
    batch = [result(T0)]
    FanOut([first, Failing(), last], counters).emit(batch)
    assert first.seen == [batch] and last.seen == [batch]
    assert counters.get("sink_failures_total", sink="Failing") == 1


def test_subscription_wants_its_intervals_view_and_finality() -> None:
    subscription = Subscription(frozenset({"1s"}), "all", final_only=True)
    assert subscription.wants(result(T0, final=True))
    assert not subscription.wants(result(T0, final=False))
    assert not subscription.wants(result(T0, final=True, view="ssh"))
    assert not subscription.wants(result(T0, final=True, interval="1m"))
    with pytest.raises(ValueError, match="max_queued"):
        Subscription(frozenset({"1s"}), "all", max_queued=0)


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    wakes: list[int] = []
    subscription = Subscription(frozenset({"1s"}), "all", max_queued=3, notify=lambda: wakes.append(1))
    assert subscription.push([result(T0 + i * 1_000) for i in range(5)]) == 2
    items, dropped = subscription.take()
    assert [r.start_ms - T0 for r in items] == [2_000, 3_000, 4_000] and dropped == 2
    assert subscription.take() == ([], 0)
    assert subscription.dropped_total == 2 and wakes == [1]


def test_a_subscriber_whose_loop_is_gone_is_closed() -> None:
    def gone() -> None:
        raise RuntimeError("Event loop is closed")

    subscription = Subscription(frozenset({"1s"}), "all", notify=gone)
    subscription.push([result(T0)])
    assert subscription.closed
    assert subscription.push([result(T0 + 1_000)]) == 0


def test_broadcaster_pushes_to_matching_subscribers_and_replays_the_newest() -> None:
    counters = Counters()
    broadcaster = LiveBroadcaster(counters, max_queued=2)
    broadcaster.emit([result(T0, final=True), result(T0 + 1_000), result(T0, interval="1m")])
    live = broadcaster.subscribe(["1s"], "all")
    minutes = broadcaster.subscribe(["1m"], "all", final_only=True)
    assert [(r.start_ms - T0, r.final) for r in live.take()[0]] == [(1_000, False)]  # the newest second
    assert minutes.take() == ([], 0)  # no final minute yet
    broadcaster.emit([result(T0 + 1_000, final=True), result(T0 + 2_000), result(T0 + 3_000), result(T0, view="x")])
    items, dropped = live.take()
    assert [r.start_ms - T0 for r in items] == [2_000, 3_000] and dropped == 1
    assert counters.get("web_stream_events_total") == 3  # pushed by emissions (the replay is not counted)
    assert counters.get("web_stream_dropped_events_total") == 1
    assert counters.get("web_stream_subscriptions_total") == 2
    assert broadcaster.subscribers == 2
    broadcaster.unsubscribe(live)
    assert broadcaster.subscribers == 1 and live.closed
    broadcaster.close()
    assert minutes.closed and broadcaster.subscribers == 0
    assert broadcaster.subscribe(["1s"], "all").closed  # after close: refused


def test_exporter_traffic_counts_closed_finest_windows_once() -> None:
    now = [T0 + 500]
    traffic = ExporterTraffic(1_000, clock_ms=lambda: now[0])
    two = [{"exporter": "192.0.2.1", "domain": 0, "flows": 3, "packets": 6, "bytes": 300},
           {"exporter": "2001:db8::1", "domain": 7, "flows": 1, "packets": 1, "bytes": 50}]
    traffic.emit([result(T0, exporters=two)])  # provisional: seen, not counted
    snapshot = traffic.snapshot()
    assert (snapshot[("192.0.2.1", 0)].flows, snapshot[("192.0.2.1", 0)].last_seen_ms) == (0, T0 + 500)
    now[0] = T0 + 2_500
    traffic.emit([result(T0, exporters=two, final=True), result(T0, interval="1m", exporters=two, final=True),
                  result(T0, view="ssh", exporters=two, final=True)])
    snapshot = traffic.snapshot()
    first, second = snapshot[("192.0.2.1", 0)], snapshot[("2001:db8::1", 7)]
    assert (first.flows, first.packets, first.bytes, first.last_seen_ms) == (3, 6, 300, T0 + 1_000)
    assert (second.flows, second.packets, second.bytes) == (1, 1, 50)
    traffic.emit([result(T0 + 1_000, final=True, flows=2)])
    assert snapshot[("192.0.2.1", 0)].flows == 3  # a snapshot is a copy
    assert traffic.snapshot()[("192.0.2.1", 0)].flows == 5
