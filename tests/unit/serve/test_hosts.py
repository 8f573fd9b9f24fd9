"""Host statistics: ``ResultHostLookup`` over stored results that carry a ``hosts`` section (made by
the real ``HostState``, as the engine will publish it), and the host endpoints."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.serve.world import T0, World, second_0, second_1

from flowscope.aggregate.engine import Engine, EngineConfig, WindowResult
from flowscope.aggregate.hosts import HostState
from flowscope.aggregate.state import Rows, TrafficState
from flowscope.aggregate.stats import StatsSpec
from flowscope.metrics import Counters
from flowscope.model import ExporterTable, FlowBatch
from flowscope.serve.hosts import EngineHostLookup, ResultHostLookup
from flowscope.store import ResultStore, StoreConfig
from support.flows import make_batch

API = "/api/v1"
SPEC = StatsSpec(watched_hosts=("10.0.0.1",), local_networks=("10.0.0.0/8",))
MINUTE = 60_000
HOST_1_SENT = {"flows": 10, "packets": 64, "bytes": 9_320}  # 6 web flows and 4 DNS queries of second 0


def rows_of(batch: FlowBatch) -> Rows:
    return Rows(protocol=batch["protocol"], src_port=batch["src_port"], dst_port=batch["dst_port"],
                src_addr=batch["src_addr"], dst_addr=batch["dst_addr"], exporter=batch["exporter"],
                tcp_flags=batch["tcp_flags"], duration_ms=batch["time_end"] - batch["time_start"],
                flows=np.ones(len(batch), np.uint64), packets=batch["packets"], bytes=batch["bytes"])


def window_with_hosts(world: World, start_ms: int, batch: FlowBatch, *, final: bool, top: int) -> HostState:
    """Store a 1m result of ``batch`` with its hosts section (top ``top`` local hosts per metric)."""
    rows = rows_of(batch)
    traffic, hosts = TrafficState(), HostState()
    traffic.update(rows, SPEC)
    hosts.update(rows, SPEC)
    payload = {**traffic.result(SPEC, world.exporters), "hosts": hosts.result(SPEC, n=top)}
    world.store.emit([WindowResult("1m", MINUTE, start_ms, "all", final, payload)])
    return hosts


@pytest.fixture
def lookup(world: World) -> ResultHostLookup:
    window_with_hosts(world, T0 + MINUTE, second_0(), final=True, top=1)
    window_with_hosts(world, T0 + 2 * MINUTE, second_1(), final=False, top=10)
    return world.hosts


def test_watching_and_unwatching(world: World) -> None:
    engine_side = HostState()  # what the engine keeps: told about every change
    hosts = ResultHostLookup(world.store, watched_hosts=("2001:db8::1", "10.0.0.1"), local_networks=("10.0.0.0/8",),
                             on_watch=engine_side.watch, on_unwatch=engine_side.unwatch)
    assert hosts.watched() == ["10.0.0.1", "2001:db8::1"]  # IPv4 first, then IPv6
    assert hosts.watch("192.0.2.7") is True
    assert hosts.watch("192.0.2.7") is False
    assert hosts.unwatch("10.0.0.1") is True  # a configured host can be unwatched too
    assert hosts.unwatch("10.0.0.1") is False
    assert hosts.watched() == ["192.0.2.7", "2001:db8::1"]
    assert engine_side.watched(SPEC) == sorted([bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])])
    assert hosts.tracked("10.0.0.1") == {"watched": False, "local": True}
    assert hosts.tracked("2001:db8::1") == {"watched": True, "local": False}
    assert hosts.tracked("198.51.100.1") == {"watched": False, "local": False}


def test_lookup_in_the_newest_and_in_a_given_window(lookup: ResultHostLookup) -> None:
    newest = lookup.lookup("10.0.0.1", "1m", None)  # the open minute: second 1's single DNS query
    assert (newest["window"]["start_ms"], newest["window"]["final"], newest["source"]) == (T0 + 2 * MINUTE, False,
                                                                                           "watched")
    assert newest["stats"]["sent"] == {"flows": 1, "packets": 1, "bytes": 80}
    earlier = lookup.lookup("10.0.0.1", "1m", T0 + MINUTE + 30_000)
    assert earlier["window"] == {"interval": "1m", "start_ms": T0 + MINUTE, "start": "2026-11-27T13:01:00.000Z",
                                 "end_ms": T0 + 2 * MINUTE, "end": "2026-11-27T13:02:00.000Z", "final": True}
    stats = earlier["stats"]
    assert stats["exact"] is True and stats["sent"] == HOST_1_SENT
    assert (stats["partners"], stats["dst_ports"]) == (2, 2)
    assert stats["top_ports"] == [{"port": 443, "flows": 6, "packets": 60, "bytes": 9_000},
                                  {"port": 53, "flows": 4, "packets": 4, "bytes": 320}]
    # a local host among the stored top hosts
    local = lookup.lookup("10.0.0.2", "1m", T0 + MINUTE)
    assert (local["watched"], local["local"], local["source"]) == (False, True, "local_top")
    assert local["stats"]["sent"] == {"flows": 3, "packets": 60, "bytes": 12_000}
    # a local host outside the stored top lists: nothing to say without the engine
    outside = lookup.lookup("10.0.0.3", "1m", T0 + MINUTE)
    assert (outside["stats"], outside["source"], outside["window"]["start_ms"]) == (None, None, T0 + MINUTE)
    assert lookup.lookup("10.0.0.1", "1m", T0 + 10 * MINUTE)["window"] is None


def test_the_engine_answers_for_open_windows(world: World) -> None:
    open_window = window_with_hosts(world, T0 + MINUTE, second_0(), final=False, top=1)

    def live(address: str, interval: str, start_ms: int) -> dict[str, Any] | None:
        assert (interval, start_ms) == ("1m", T0 + MINUTE)
        return open_window.lookup(address, SPEC)

    hosts = ResultHostLookup(world.store, watched_hosts=("10.0.0.1",), local_networks=("10.0.0.0/8",), live=live)
    answer = hosts.lookup("10.0.0.3", "1m", T0 + MINUTE)
    assert answer["source"] == "engine"
    assert answer["stats"]["sent"] == {"flows": 1, "packets": 1, "bytes": 84}


def test_series_of_a_host(lookup: ResultHostLookup) -> None:
    points = lookup.series("10.0.0.1", "1m", T0 + MINUTE, None, 100)
    assert [(p["start_ms"] - T0, p["final"], p["source"], p["stats"]["sent"]["flows"]) for p in points] == [
        (MINUTE, True, "watched", 10), (2 * MINUTE, False, "watched", 1)]
    assert [p["stats"] for p in lookup.series("10.0.0.3", "1m", T0 + MINUTE, None, 100)] == [None, None]


# ------------------------------------------------------------------------------ API


def test_host_endpoints(world: World, lookup: ResultHostLookup) -> None:
    client = world.client
    host = client.get(f"{API}/hosts/10.0.0.1?interval=1m&time={T0 + MINUTE}").json()
    assert host["address"] == "10.0.0.1" and host["watched"] is True and host["local"] is True
    assert host["stats"]["sent"] == HOST_1_SENT
    mapped = client.get(f"{API}/hosts/::ffff:10.0.0.1?time={T0 + MINUTE}").json()  # IPv4-mapped: the same host
    assert mapped["address"] == "10.0.0.1" and mapped["stats"]["sent"] == HOST_1_SENT
    series = client.get(f"{API}/hosts/10.0.0.1/series?from={T0 + MINUTE}").json()
    assert (series["interval"], series["count"]) == ("1m", 2)
    assert [p["stats"]["sent"]["bytes"] for p in series["points"]] == [9_320, 80]
    overview = client.get(f"{API}/hosts?time={T0 + MINUTE}").json()
    assert overview["watched"] == ["10.0.0.1"] and overview["local_networks"] == ["10.0.0.0/8"]
    assert overview["available"] is True and overview["local"]["hosts"] == 3
    assert [h["address"] for h in overview["local"]["top"]["bytes"]] == ["10.0.0.2"]
    assert [h["sent"] for h in overview["watched_stats"]] == [HOST_1_SENT]
    # the engine's own results (the newest second: second 1) carry the section too
    second = client.get(f"{API}/hosts?interval=1s").json()
    assert (second["available"], second["window"]["start_ms"], second["local"]["hosts"]) == (True, T0 + 1_000, 2)
    assert [h["sent"] for h in second["watched_stats"]] == [{"flows": 1, "packets": 1, "bytes": 80}]
    assert client.get(f"{API}/hosts/10.0.0.2?interval=1s").json()["stats"]["sent"] == {
        "flows": 2, "packets": 10, "bytes": 1_400}
    untracked = client.get(f"{API}/hosts/198.51.100.1")
    assert untracked.status_code == 404
    assert untracked.json()["message"] == ("198.51.100.1 is neither watched nor in stats.local_networks: "
                                           "watch it first (POST /api/v1/hosts/watched)")
    assert client.get(f"{API}/hosts/198.51.100.1/series").status_code == 404


def test_watch_and_unwatch_over_the_api(world: World) -> None:
    client = world.client
    added = client.post(f"{API}/hosts/watched", json={"address": "2001:DB8:0::7"})
    assert added.status_code == 201
    assert added.json() == {"address": "2001:db8::7", "changed": True, "watched": ["10.0.0.1", "2001:db8::7"]}
    again = client.post(f"{API}/hosts/watched", json={"address": "2001:db8::7"})
    assert again.status_code == 200 and again.json()["changed"] is False
    assert client.get(f"{API}/hosts/watched").json() == {"watched": ["10.0.0.1", "2001:db8::7"]}
    assert client.get(f"{API}/hosts/2001:db8::7").json()["watched"] is True  # now tracked
    removed = client.delete(f"{API}/hosts/watched/2001:db8::7")
    assert removed.status_code == 200 and removed.json()["watched"] == ["10.0.0.1"]
    missing = client.delete(f"{API}/hosts/watched/2001:db8::7")
    assert missing.status_code == 404 and missing.json()["message"] == "2001:db8::7 is not watched"
    assert client.get(f"{API}/config").json()["watched_hosts"] == ["10.0.0.1"]


@pytest.mark.parametrize(("body", "headers", "status", "parameter"), [
    (b'{"address": "10.0.0.300"}', {"content-type": "application/json"}, 400, "address"),
    (b'{"address": 167772161}', {"content-type": "application/json"}, 400, "address"),
    (b'["10.0.0.7"]', {"content-type": "application/json"}, 400, "address"),
    (b'{"address": "10.0.0.7", "note": "x"}', {"content-type": "application/json"}, 400, "note"),
    (b'{"address": ', {"content-type": "application/json"}, 400, "body"),
    (b"\xff\xfe", {"content-type": "application/json"}, 400, "body"),
    (b"address=10.0.0.7", {"content-type": "application/x-www-form-urlencoded"}, 415, None),
    (b'{"address": "10.0.0.7"}', {}, 415, None),
    (b'{"address": "' + b"1" * 70_000 + b'"}', {"content-type": "application/json"}, 413, None),
])
def test_watch_rejects_bad_bodies(world: World, body: bytes, headers: dict[str, str], status: int,
                                  parameter: str | None) -> None:
    response = world.client.post(f"{API}/hosts/watched", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json().get("parameter") == parameter
    assert world.hosts.watched() == ["10.0.0.1"]


def test_engine_answers_for_any_local_host_of_an_open_window(world: World) -> None:
    # twelve busy local hosts fill every top-10 list; 10.0.9.9 (one flow) is in none of them
    busy = [f"10.0.1.{i}" for i in range(1, 13)]
    world.feed(make_batch(25, time_received=T0 + 3_100, src_addr=[*busy, *busy, "10.0.9.9"],
                          dst_addr="203.0.113.5", protocol=6, dst_port=443, packets=2, bytes=200))
    world.at(T0 + 3_200)
    newest = world.client.get(f"{API}/results/latest?interval=1s").json()
    assert newest["final"] is False
    tops = newest["hosts"]["local"]["top"]
    assert all("10.0.9.9" not in [h["address"] for h in entries] for entries in tops.values())
    answer = world.client.get(f"{API}/hosts/10.0.9.9?interval=1s").json()
    assert (answer["source"], answer["window"]["start_ms"], answer["window"]["final"]) == ("engine", T0 + 3_000, False)
    assert answer["stats"]["sent"] == {"flows": 1, "packets": 2, "bytes": 200}
    world.at(T0 + 5_000)  # closed: only the stored top lists remain
    assert world.client.get(f"{API}/hosts/10.0.9.9?interval=1s&time={T0 + 3_000}").json()["stats"] is None


def test_watching_over_the_api_reaches_the_engine(world: World) -> None:
    assert world.client.post(f"{API}/hosts/watched", json={"address": "192.0.2.53"}).status_code == 201
    assert "192.0.2.53" in world.engine.watched_hosts()
    world.feed(make_batch(3, time_received=T0 + 3_100, src_addr="10.0.0.1", dst_addr="192.0.2.53", protocol=17,
                          dst_port=53, packets=1, bytes=70))
    world.at(T0 + 3_200)
    answer = world.client.get(f"{API}/hosts/192.0.2.53?interval=1s").json()
    assert (answer["watched"], answer["local"], answer["source"]) == (True, False, "watched")
    assert answer["stats"]["exact"] is True
    assert answer["stats"]["received"] == {"flows": 3, "packets": 3, "bytes": 210}
    assert world.client.delete(f"{API}/hosts/watched/192.0.2.53").status_code == 200
    assert "192.0.2.53" not in world.engine.watched_hosts()
    assert world.client.get(f"{API}/hosts/192.0.2.53").status_code == 404


class _Discard:
    def emit(self, results: list[WindowResult]) -> None:
        pass


def test_a_lookup_waits_for_a_fold_without_holding_the_engine_lock(tmp_path: Path) -> None:
    """While the background thread folds a window's host statistics (seconds, for the hour of a
    million hosts), a lookup in that window waits for them, but not under the engine lock: the
    decoder, which needs the lock for every batch, goes on."""
    now = [T0]
    counters = Counters()
    store = ResultStore(StoreConfig(path=str(tmp_path / "results.db")), counters)
    store.start()
    engine = Engine(EngineConfig(offload=True, report_provisional_interval_ms=0, stats=SPEC), _Discard(),
                    ExporterTable(), counters, clock_ms=lambda: now[0])
    engine.start()
    lock = threading.Lock()
    lookup = EngineHostLookup(store, engine, lock)

    def batch(time_ms: int) -> FlowBatch:
        return make_batch(4, src_addr="10.0.0.5", dst_addr="192.0.2.9", protocol=6, dst_port=443, packets=3,
                          bytes=900, time_received=time_ms)

    gate = threading.Event()
    try:
        with lock:
            engine.process(batch(T0 + 100))
            now[0] = T0 + 2_100
            engine.tick()  # the first second closes into the minute, whose hosts are then folded
        engine.wait_background()
        background = engine._background
        assert background is not None
        background.submit("test:gate", gate.wait)  # the background thread is busy until the gate opens
        with lock:
            engine.process(batch(T0 + 2_200))
            now[0] = T0 + 4_000
            engine.tick()  # the next fold of the minute is queued behind the gate, its hosts lent
            assert engine.lent_hosts(1)
        answers: list[dict[str, Any]] = []
        asking = threading.Thread(target=lambda: answers.append(lookup.lookup("10.0.0.5", "1m", T0 + 4_000)))
        asking.start()
        asking.join(0.3)
        assert asking.is_alive()  # waiting for the fold ...
        assert lock.acquire(timeout=2)  # ... without the engine lock
        lock.release()
        gate.set()
        asking.join(10)
        assert not asking.is_alive()
        [answer] = answers
        assert answer["source"] == "engine" and answer["stats"]["sent"]["flows"] == 8
    finally:
        gate.set()
        engine.stop()
        store.stop()
