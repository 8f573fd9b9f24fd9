"""The engine's window rules, driven by a controllable clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.flows import make_batch

from flowscope.aggregate.engine import Engine, EngineConfig, WindowResult
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.metrics import Counters
from flowscope.model import ExporterTable

T0 = 1_700_000_040_000  # the start of a UTC minute
HOUR0 = T0 - T0 % 3_600_000


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class Collected:
    def __init__(self) -> None:
        self.results: list[WindowResult] = []

    def emit(self, results: list[WindowResult]) -> None:
        self.results.extend(results)

    def finals(self, resolution: str, view: str = "all") -> list[WindowResult]:
        return [r for r in self.results if r.final and r.resolution == resolution and r.view == view]


def _engine(fake_clock: FakeClock, **config: object) -> tuple[Engine, Collected, Counters]:
    sink, counters = Collected(), Counters()
    exporters = ExporterTable()
    exporters.index_of("192.0.2.1", 0)
    engine = Engine(EngineConfig(**config), sink, exporters, counters, clock_ms=fake_clock)  # type: ignore[arg-type]
    engine.start()
    return engine, sink, counters


def _flows(times_ms: list[int], **columns: object) -> object:
    return make_batch(len(times_ms), time_received=times_ms, time_start=times_ms, time_end=times_ms, **columns)


def test_windows_close_on_the_clock_even_when_no_traffic_arrives() -> None:
    clock = FakeClock(T0 + 100)
    engine, sink, _ = _engine(clock, grace_ms=500)
    engine.process(_flows([T0 + 100, T0 + 200], protocol=6, packets=[2, 3], bytes=[100, 200]))
    clock.now_ms = T0 + 1000 + 499
    engine.tick()
    assert sink.finals("1s") == []
    clock.now_ms = T0 + 1500  # end + grace, and not a single flow since
    engine.tick()
    [second] = sink.finals("1s")
    assert second.start_ms == T0 and second.duration_ms == 1000
    assert second.payload["totals"]["flows"] == 2
    assert second.payload["totals"]["packets"] == 5
    assert second.payload["totals"]["bytes"] == 300
    assert second.payload["totals"]["by_protocol"]["tcp"] == {"flows": 2, "packets": 5, "bytes": 300}


def test_provisional_results_while_open_then_final() -> None:
    clock = FakeClock(T0 + 10)
    engine, sink, _ = _engine(clock, grace_ms=0, provisional_interval_ms=0)
    engine.process(_flows([T0 + 10]))
    engine.tick()
    provisional = [r for r in sink.results if r.resolution == "1s"]
    assert [r.final for r in provisional] == [False]
    engine.tick()  # nothing changed: no duplicate provisional result
    assert len([r for r in sink.results if r.resolution == "1s"]) == 1
    clock.now_ms = T0 + 1000
    engine.tick()
    assert [r.final for r in sink.results if r.resolution == "1s"] == [False, True]


def test_late_records_are_counted_and_folded_into_the_open_window() -> None:
    clock = FakeClock(T0 + 5000)
    engine, sink, counters = _engine(clock, grace_ms=0, time_base="end")
    engine.process(_flows([T0 + 4100]))
    clock.now_ms = T0 + 5100
    engine.tick()  # window T0+4s closed
    engine.process(_flows([T0 + 4900, T0 + 5050], packets=[7, 1]))  # the first one is late
    clock.now_ms = T0 + 6000
    engine.tick()
    closed = {r.start_ms: r.payload for r in sink.finals("1s")}
    assert closed[T0 + 4000]["totals"]["flows"] == 1
    assert closed[T0 + 5000]["totals"]["flows"] == 2  # the late flow landed here
    assert closed[T0 + 5000]["totals"]["packets"] == 8
    assert closed[T0 + 5000]["late_flows"] == 1
    assert counters.total("engine_late_flows_total") == 1


def test_minutes_roll_up_from_seconds_and_hours_from_minutes() -> None:
    clock = FakeClock(T0)
    engine, sink, _ = _engine(clock, grace_ms=0)
    times = [T0 + 10, T0 + 1010, T0 + 59_999, T0 + 60_000, T0 + 61_500, T0 + 3 * 60_000 + 7]
    for index, time_ms in enumerate(times):
        clock.now_ms = time_ms
        engine.process(_flows([time_ms], dst_port=80 + index, protocol=6, packets=index + 1, bytes=10 * (index + 1)))
        engine.tick()
    clock.now_ms = HOUR0 + 3_600_000
    engine.tick()
    seconds, minutes, hours = sink.finals("1s"), sink.finals("1m"), sink.finals("1h")
    assert [s.start_ms for s in seconds] == [T0, T0 + 1000, T0 + 59_000, T0 + 60_000, T0 + 61_000, T0 + 180_000]
    assert [(m.start_ms, m.payload["totals"]["flows"]) for m in minutes] == [
        (T0, 3), (T0 + 60_000, 2), (T0 + 180_000, 1),
    ]
    [hour] = hours
    assert hour.start_ms == HOUR0
    for metric in ("flows", "packets", "bytes"):
        assert hour.payload["totals"][metric] == sum(m.payload["totals"][metric] for m in minutes)
        assert hour.payload["totals"][metric] == sum(s.payload["totals"][metric] for s in seconds)
    assert [p["port"] for p in hour.payload["top_ports"]["tcp"]["bytes"]] == [85, 84, 83, 82, 81, 80]


def test_top_ports_break_ties_by_the_lower_port_and_keep_ten() -> None:
    clock = FakeClock(T0)
    engine, sink, _ = _engine(clock, grace_ms=0)
    ports = [5000 + p for p in range(12)] + [53, 53, 53]
    engine.process(_flows([T0] * len(ports), protocol=17, dst_port=ports, packets=1, bytes=100))
    engine.flush()
    [second] = sink.finals("1s")
    udp = second.payload["top_ports"]["udp"]["flows"]
    assert [p["port"] for p in udp] == [53, 5000, 5001, 5002, 5003, 5004, 5005, 5006, 5007, 5008]
    assert udp[0] == {"port": 53, "flows": 3, "packets": 3, "bytes": 300}
    assert second.payload["top_ports"]["tcp"]["flows"] == []


def test_either_side_ports_count_source_ports_too() -> None:
    clock = FakeClock(T0)
    engine, sink, _ = _engine(clock, grace_ms=0, stats=StatsSpec(port_side="either"))
    engine.process(_flows([T0, T0], protocol=6, src_port=[443, 8080], dst_port=[50000, 8080], packets=[2, 5]))
    engine.flush()
    tcp = sink.finals("1s")[0].payload["top_ports"]["tcp"]["packets"]
    # like nfdump -s port, the 8080 → 8080 flow counts once per side
    assert [(p["port"], p["flows"], p["packets"]) for p in tcp] == [(8080, 2, 10), (443, 1, 2), (50000, 1, 2)]


def test_spread_time_base_shares_a_long_flow_across_seconds() -> None:
    clock = FakeClock(T0)
    engine, sink, _ = _engine(clock, grace_ms=0, time_base="spread")
    engine.process(make_batch(1, time_received=T0 + 2500, time_start=T0, time_end=T0 + 2000,
                              packets=40, bytes=4000))
    engine.flush()
    seconds = sink.finals("1s")
    assert [(s.start_ms, s.payload["totals"]["flows"], s.payload["totals"]["bytes"]) for s in seconds] == [
        (T0, 0, 2000), (T0 + 1000, 0, 2000), (T0 + 2000, 1, 0),
    ]
    assert sink.finals("1m")[0].payload["totals"] == {
        **sink.finals("1m")[0].payload["totals"], "flows": 1, "packets": 40, "bytes": 4000,
    }


def test_web_traffic_counts_both_directions_and_names_servers_and_clients() -> None:
    clock = FakeClock(T0)
    engine, sink, _ = _engine(clock, grace_ms=0)
    engine.process(make_batch(
        4, time_received=T0, protocol=[6, 6, 17, 6], src_addr=["10.0.0.1", "203.0.113.5", "10.0.0.2", "10.0.0.1"],
        dst_addr=["203.0.113.5", "10.0.0.1", "198.51.100.7", "203.0.113.9"], src_port=[40000, 443, 50000, 40001],
        dst_port=[443, 40000, 443, 22], packets=[10, 20, 5, 1], bytes=[1000, 20000, 700, 60],
    ))
    engine.flush()
    web = sink.finals("1s")[0].payload["web"]
    assert (web["flows"], web["packets"], web["bytes"]) == (3, 35, 21700)
    assert web["top_servers"]["bytes"][0] == {"address": "203.0.113.5", "flows": 2, "packets": 30, "bytes": 21000}
    assert web["top_servers"]["bytes"][1]["address"] == "198.51.100.7"
    assert web["top_clients"]["flows"][0] == {"address": "10.0.0.1", "flows": 2, "packets": 30, "bytes": 21000}


def test_views_have_their_own_totals() -> None:
    clock = FakeClock(T0)
    engine, sink, _ = _engine(clock, grace_ms=0, stats=StatsSpec(views=(ViewSpec("ssh", "proto tcp and dst port 22"),)))
    engine.process(_flows([T0] * 3, protocol=[6, 6, 17], dst_port=[22, 443, 22], bytes=[5, 7, 11]))
    engine.flush()
    assert sink.finals("1s", "all")[0].payload["totals"]["bytes"] == 23
    assert sink.finals("1s", "ssh")[0].payload["totals"]["bytes"] == 5


def test_checkpoint_restores_open_windows_and_exporter_indices(tmp_path: Path) -> None:
    path = tmp_path / "state" / "checkpoint"
    clock = FakeClock(T0 + 30_000)
    engine, _, _ = _engine(clock, grace_ms=0, checkpoint_dir=str(path))
    engine.exporters.index_of("198.51.100.1", 7)
    engine.process(_flows([T0 + 30_000], exporter=1, packets=3))
    clock.now_ms = T0 + 31_000
    engine.tick()  # the second closes into the open minute
    engine.checkpoint()
    # A new process: fresh exporter table, the engine restores it and the open minute.
    sink, counters, exporters = Collected(), Counters(), ExporterTable()
    restored = Engine(EngineConfig(grace_ms=0, checkpoint_dir=str(path)), sink, exporters, counters,
                      clock_ms=clock)
    restored.start()
    assert exporters.entries() == [("192.0.2.1", 0), ("198.51.100.1", 7)]
    restored.process(_flows([T0 + 40_000], exporter=0, packets=4))
    clock.now_ms = T0 + 60_000
    restored.tick()
    [minute] = sink.finals("1m")
    assert minute.payload["totals"]["flows"] == 2
    assert minute.payload["totals"]["packets"] == 7
    by_exporter = {(e["exporter"], e["domain"]): e["packets"] for e in minute.payload["totals"]["by_exporter"]}
    assert by_exporter == {("192.0.2.1", 0): 4, ("198.51.100.1", 7): 3}


def test_a_damaged_checkpoint_is_counted_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    _, _, counters = _engine(FakeClock(T0), checkpoint_dir=str(tmp_path))
    assert counters.total("engine_checkpoint_errors_total", reason="unreadable") == 1
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 999, "levels": []}))
    _, _, counters = _engine(FakeClock(T0), checkpoint_dir=str(tmp_path))
    assert counters.total("engine_checkpoint_errors_total", reason="incompatible") == 1


def test_only_changed_resolutions_are_rewritten(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 5_000)
    engine, _, counters = _engine(clock, grace_ms=0, checkpoint_dir=str(tmp_path))
    engine.process(_flows([T0 + 5_000]))
    engine.checkpoint()  # first checkpoint: every level
    assert counters.total("engine_checkpoint_level_files_total") == 3
    engine.process(_flows([T0 + 5_100]))
    engine.checkpoint()  # only the seconds changed
    assert counters.total("engine_checkpoint_level_files_total") == 4
    clock.now_ms = T0 + 6_000
    engine.tick()  # the second closes into the minute: seconds and minute change, the hour does not
    engine.checkpoint()
    assert counters.total("engine_checkpoint_level_files_total") == 6
    assert len(list(tmp_path.glob("level*.pkl"))) == 3  # old generations are removed


def test_watching_a_host_at_run_time_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    engine, _, _ = _engine(clock, grace_ms=0, checkpoint_dir=str(tmp_path))
    engine.watch("10.0.0.7")
    engine.process(_flows([T0, T0], src_addr=["10.0.0.7", "10.0.0.8"], dst_addr="192.0.2.9", bytes=[100, 50]))
    [entry] = engine.lookup_host("10.0.0.7", 0)
    assert entry["sent"]["bytes"] == 100
    assert entry["exact"] is True
    engine.checkpoint()
    sink, counters, exporters = Collected(), Counters(), ExporterTable()
    restored = Engine(EngineConfig(grace_ms=0, checkpoint_dir=str(tmp_path)), sink, exporters, counters,
                      clock_ms=clock)
    restored.start()
    assert restored.watched_hosts() == ["10.0.0.7"]
    restored.flush()
    [second] = sink.finals("1s")
    assert [h["address"] for h in second.payload["hosts"]["watched"]] == ["10.0.0.7"]
    assert second.payload["hosts"]["watched"][0]["partners"] == 1


@pytest.mark.parametrize("time_base", ["received", "end", "spread"])
def test_data_clock_gives_the_same_result_for_the_same_input(time_base: str) -> None:
    def run() -> list[dict[str, object]]:
        engine, sink, _ = _engine(FakeClock(0), clock="data", grace_ms=0, time_base=time_base)
        for offset in range(0, 10_000, 1000):
            engine.process(_flows([T0 + offset, T0 + offset + 600], dst_port=[offset % 7, 3], packets=2))
            engine.tick()
        engine.flush()
        return [r.to_json() for r in sink.results if r.final]

    assert run() == run()


def test_a_closed_hour_is_never_reopened_by_a_flow_whose_second_never_existed() -> None:
    clock = FakeClock(HOUR0 + 1000)
    engine, sink, counters = _engine(clock, grace_ms=0, time_base="end")
    engine.process(_flows([HOUR0 + 1000]))
    clock.now_ms = HOUR0 + 3_600_000
    engine.tick()  # second, minute and hour 0 all close
    engine.process(_flows([HOUR0 + 2_000_000]))  # inside hour 0, in a second that never opened
    engine.flush()
    hours = sink.finals("1h")
    assert [h.start_ms for h in hours] == [HOUR0, HOUR0 + 3_600_000]  # hour 0 emitted once
    assert counters.total("engine_late_flows_total") == 1
