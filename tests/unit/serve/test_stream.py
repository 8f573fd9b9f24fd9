"""The live stream (Server-Sent Events) over a real engine: what arrives, in which order, and what
happens with a slow or vanished client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from tests.unit.serve.world import T0, World

from flowscope.serve.stream import dumps, event
from support.flows import make_batch

STREAM = "/api/v1/stream"


class Events:
    """Reads ``(event, data)`` pairs (and counts keepalive comments) from SSE lines, with a deadline."""

    def __init__(self, lines: Iterator[str], timeout_s: float = 10.0) -> None:
        self.lines = lines
        self.deadline = time.monotonic() + timeout_s
        self.keepalives = 0
        self.retry: str | None = None

    def next(self) -> tuple[str, Any]:
        name, data = "message", []
        for line in self.lines:
            assert time.monotonic() < self.deadline, "no event in time"
            if line.startswith(":"):
                self.keepalives += 1
            elif line.startswith("retry: "):
                self.retry = line.removeprefix("retry: ")
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
            elif line == "" and data:
                return name, json.loads("\n".join(data))
        raise AssertionError("the stream ended")

    def until(self, predicate: Any) -> list[tuple[str, Any]]:
        seen = []
        while True:
            item = self.next()
            seen.append(item)
            if predicate(item):
                return seen


def test_hello_then_the_newest_results_then_live_updates(world: World) -> None:
    with world.client.stream("GET", f"{STREAM}?interval=1s,1m") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        events = Events(response.iter_lines())
        assert events.next() == ("hello", {"intervals": ["1s", "1m"], "view": "all", "final_only": False,
                                           "compact": False, "heartbeat_ms": 200})
        assert events.retry == "2000"
        assert world.broadcaster.subscribers == 1
        # the current picture first: the newest second (final) and the open minute (provisional)
        replay = [events.next(), events.next()]
        assert [(e, d["interval"], d["start_ms"] - T0, d["final"], d["totals"]["flows"]) for e, d in replay] == [
            ("result", "1m", 0, False, 17), ("result", "1s", 1_000, True, 3)]
        assert replay[1][1]["start"] == "2026-11-27T13:00:01.000Z"
        # then every update the engine publishes: provisional while open, final when closed
        world.feed(make_batch(5, time_received=T0 + 3_100, protocol=17, dst_port=53, packets=2, bytes=100))
        world.at(T0 + 3_200)
        name, live = events.next()
        assert (name, live["interval"], live["start_ms"], live["final"], live["totals"]["flows"]) == (
            "result", "1s", T0 + 3_000, False, 5)
        # the second closes: its final result, then the minute it rolls up into (minutes and hours are
        # made of closed seconds, so they move once per second)
        world.at(T0 + 5_000)
        updates = [events.next(), events.next()]
        assert [(d["interval"], d["start_ms"] - T0, d["final"], d["totals"]["flows"]) for _, d in updates] == [
            ("1s", 3_000, True, 5), ("1m", 0, False, 22)]
        assert updates[0][1]["top_ports"]["udp"]["flows"] == [{"port": 53, "flows": 5, "packets": 10, "bytes": 500}]
    assert world.broadcaster.subscribers == 0  # the client went away: unsubscribed at once


def test_compact_final_only_and_views(world: World) -> None:
    with world.client.stream("GET", f"{STREAM}?interval=1s&view=ssh&final=true&compact=true") as response:
        events = Events(response.iter_lines())
        assert events.next()[0] == "hello"
        assert events.next() == ("result", {
            "interval": "1s", "view": "ssh", "start_ms": T0 + 1_000, "start": "2026-11-27T13:00:01.000Z",
            "end_ms": T0 + 2_000, "final": True, "flows": 0, "packets": 0, "bytes": 0,
            "by_protocol": {p: {"flows": 0, "packets": 0, "bytes": 0} for p in ("tcp", "udp", "icmp", "other")},
            "web": {"flows": 0, "packets": 0, "bytes": 0}, "late_flows": 0})
        world.feed(make_batch(2, time_received=T0 + 3_100, protocol=6, dst_port=22, packets=3, bytes=300))
        world.at(T0 + 3_200)  # provisional: not for this subscriber
        world.at(T0 + 5_000)  # final
        name, point = events.next()
        assert (name, point["start_ms"], point["final"], point["flows"], point["bytes"]) == (
            "result", T0 + 3_000, True, 2, 600)
        assert point["by_protocol"]["tcp"] == {"flows": 2, "packets": 6, "bytes": 600}


def test_keepalive_comments_while_quiet(world: World) -> None:
    with world.client.stream("GET", f"{STREAM}?interval=1m") as response:
        lines = response.iter_lines()
        events = Events(lines)
        events.next()  # hello
        events.next()  # the open minute
        started = time.monotonic()
        comments = []
        for line in lines:
            if line.startswith(": keepalive "):
                comments.append(line)
                if len(comments) == 2:
                    break
        assert time.monotonic() - started < 2.0  # heartbeat every 200 ms
        assert comments[0] == ": keepalive 2026-11-27T13:00:03.000Z"


def test_a_slow_client_loses_the_oldest_events_counted_and_never_stalls_the_engine(world: World) -> None:
    with world.client.stream("GET", f"{STREAM}?interval=1s") as response:
        events = Events(response.iter_lines())
        events.next()  # hello; from now on this client reads nothing for a while
        started = time.monotonic()
        for second in range(3, 83):  # 80 seconds of traffic: 160 results for this subscriber (queue: 64)
            world.feed(make_batch(1, time_received=T0 + second * 1_000 + 10, protocol=6, dst_port=443))
            world.at(T0 + second * 1_000 + 20)
        world.at(T0 + 90_000)
        assert time.monotonic() - started < 5.0  # the engine never waited for the browser
        seen = events.until(lambda item: item[0] == "result" and item[1]["start_ms"] == T0 + 82_000
                            and item[1]["final"])
    dropped = sum(data["dropped"] for name, data in seen if name == "dropped")
    results = [data for name, data in seen if name == "result"]
    assert dropped > 0
    assert dropped == world.counters.total("web_stream_dropped_events_total")
    assert len(results) + dropped == 1 + 160  # the replayed newest second, then 2 results per second
    for final in (True, False):  # what arrives is in the engine's order, the newest last
        starts = [r["start_ms"] for r in results if r["final"] is final]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert results[-1]["start_ms"] == T0 + 82_000


def test_stream_ends_when_the_server_stops(world: World) -> None:
    with world.client.stream("GET", f"{STREAM}?interval=1s") as response:
        lines = response.iter_lines()
        events = Events(lines)
        assert events.next()[0] == "hello"
        events.next()
        world.dashboard.stop()
        rest = list(lines)  # the response ends
        assert all(line == "" or line.startswith(":") for line in rest)
    assert world.broadcaster.subscribers == 0
    refused = world.client.get(STREAM)
    assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"


def test_strings_from_flows_are_escaped_for_html_too() -> None:
    assert dumps({"name": "<script>alert('&')</script>"}) == \
        '{"name":"\\u003cscript\\u003ealert(\'\\u0026\')\\u003c/script\\u003e"}'
    assert json.loads(dumps({"name": "<b>\u2028"})) == {"name": "<b>\u2028"}
    assert event("result", {"a": "x\ny"}) == 'event: result\ndata: {"a":"x\\ny"}\n\n'  # one data line
