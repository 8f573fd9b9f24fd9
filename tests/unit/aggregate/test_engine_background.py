"""The engine with ``offload``: minute/hour results and checkpoints on the background thread.

Same clock rules and same results as without it; only where the work runs changes.
"""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from tests.support.flows import make_batch
from tests.unit.aggregate.test_engine import HOUR0, T0, Collected, FakeClock
from tests.unit.aggregate.test_hosts import RANDOM_SPEC, random_rows

from flowscope.aggregate.engine import Engine, EngineConfig
from flowscope.aggregate.hosts import HostState
from flowscope.aggregate.offload import BackgroundWork, snapshot_state
from flowscope.aggregate.state import TrafficState
from flowscope.aggregate.stats import StatsSpec, ViewSpec
from flowscope.metrics import Counters
from flowscope.model import ExporterTable

SPEC = StatsSpec(local_networks=("10.0.0.0/16",), watched_hosts=("10.0.0.3",),
                 views=(ViewSpec("web", "dst port 443"),))


def _engine(clock: FakeClock, **config: Any) -> tuple[Engine, Collected, Counters]:
    sink, counters = Collected(), Counters()
    settings: dict[str, Any] = {"grace_ms": 0, "stats": SPEC, "report_provisional_interval_ms": 0, **config}
    engine = Engine(EngineConfig(**settings), sink, ExporterTable(), counters, clock_ms=clock)
    engine.start()
    return engine, sink, counters


def _traffic(rng: np.random.Generator, time_ms: int, count: int = 400) -> Any:
    hosts = [f"10.0.{h // 250}.{h % 250 + 1}" for h in rng.integers(0, 2_000, count).tolist()]
    partners = [f"198.51.100.{p}" for p in rng.integers(1, 200, count).tolist()]
    outgoing = rng.random(count) < 0.6
    times = [time_ms] * count
    return make_batch(
        count, time_received=times, time_start=times, time_end=times, protocol=6,
        src_addr=[h if o else p for h, p, o in zip(hosts, partners, outgoing, strict=True)],
        dst_addr=[p if o else h for h, p, o in zip(hosts, partners, outgoing, strict=True)],
        dst_port=rng.choice(np.array([443, 80, 22, 53], np.uint16), count),
        packets=rng.integers(1, 50, count), bytes=rng.integers(40, 100_000, count),
    )


def _hold(background: BackgroundWork) -> threading.Event:
    """Keep the background thread busy until the returned event is set (careful: a close that
    must wait for the background thread, e.g. for lent host parts, then waits for the gate)."""
    gate = threading.Event()
    background.submit("test:gate", gate.wait)
    return gate


def _run(offload: bool, checkpoint_dir: Path | None = None) -> tuple[dict[Any, Any], Counters, Engine]:
    """Two minutes and a bit of traffic, one batch every 900 ms, ticking as the clock moves."""
    rng = np.random.default_rng(71)
    clock = FakeClock(T0)
    engine, sink, counters = _engine(clock, offload=offload, checkpoint_interval_ms=3_000,
                                     report_provisional_interval_ms=4_000,
                                     checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
    for time_ms in range(T0, T0 + 130_000, 900):
        clock.now_ms = time_ms
        engine.process(_traffic(rng, time_ms))
        engine.tick()
    clock.now_ms = HOUR0 + 3_600_000
    engine.tick()
    # A window whose provisional fold was still running at that tick (a busy machine) closes at
    # the next one, as it would 100 ms later in a live run.
    engine.wait_background()
    engine.tick()
    engine.stop()
    finals = {(r.resolution, r.view, r.start_ms): r.payload for r in sink.results if r.final}
    return finals, counters, engine


def test_background_results_equal_the_inline_ones() -> None:
    inline, _, _ = _run(offload=False)
    offloaded, counters, _ = _run(offload=True)
    assert offloaded.keys() == inline.keys()
    assert {key[0] for key in inline} == {"1s", "1m", "1h"}
    for key, payload in inline.items():
        assert offloaded[key] == payload, key
    hour = offloaded[("1h", "all", HOUR0)]["hosts"]
    assert hour["local"]["hosts"] > 1_900 and hour["watched"][0]["address"] == "10.0.0.3"
    # The minutes' and the hour's host parts were folded in place by the background thread.
    assert counters.total("engine_host_folds_total", resolution="1m") > 0
    assert counters.total("engine_host_folds_total", resolution="1h") > 0
    assert counters.total("engine_background_failures_total") == 0


def test_live_results_stay_on_the_clock_thread_and_long_windows_fold_in_the_background() -> None:
    rng = np.random.default_rng(72)
    clock = FakeClock(T0)
    engine, sink, counters = _engine(clock, offload=True, provisional_interval_ms=0)
    for time_ms in range(T0, T0 + 20_000, 500):
        clock.now_ms = time_ms
        engine.process(_traffic(rng, time_ms))
        engine.tick()
        # The live second is published by tick() itself, before any background work.
        assert any(r.resolution == "1s" and r.start_ms == time_ms - time_ms % 1000 for r in sink.results)
    [minute] = engine.open_windows(1).values()
    hosts = minute["all"].hosts
    assert hosts is not None and hosts.deferred
    engine.wait_background()
    # If batches came in while the last fold ran (a busy machine), the minute is dirty: one more
    # tick folds them too.
    engine.tick()
    engine.wait_background()  # the last provisional fold: lent, folded in place, given back
    assert not hosts.lent
    assert len(hosts.parts()) == 1  # nothing came in since: one folded part
    assert counters.total("engine_host_folds_total", resolution="1m") > 0
    provisional = [r for r in sink.results if r.resolution == "1m" and r.view == "all" and not r.final]
    assert provisional and provisional[-1].payload["hosts"]["local"]["hosts"] > 1_000
    engine.stop()


def test_background_checkpoints_restore_like_inline_ones(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoint"
    rng = np.random.default_rng(73)
    clock = FakeClock(T0 + 1_000)
    engine, _, counters = _engine(clock, offload=True, checkpoint_dir=str(directory))
    for time_ms in range(T0 + 1_000, T0 + 5_000, 250):
        clock.now_ms = time_ms
        engine.process(_traffic(rng, time_ms))
        engine.tick()
    engine.checkpoint()
    engine.wait_background()
    assert counters.total("engine_checkpoints_total") >= 1
    # The reference: the same open windows, checkpointed inline.
    inline_dir = tmp_path / "inline"
    reference = _restored_minute(engine, inline_dir, clock)
    restored = _restored_minute(None, directory, clock)
    assert restored == reference
    assert restored["totals"]["flows"] == 16 * 400
    engine.stop()


def _restored_minute(source: Engine | None, directory: Path, clock: FakeClock) -> dict[str, Any]:
    """The final minute a fresh engine reports after restoring ``directory`` (written from
    ``source``'s open windows inline first, when given)."""
    if source is not None:
        inline = Engine(EngineConfig(grace_ms=0, stats=SPEC, checkpoint_dir=str(directory)), Collected(),
                        ExporterTable(), Counters(), clock_ms=clock)
        inline.start()
        inline._open = source._open  # the same windows, written by the inline path
        inline.checkpoint()
    sink = Collected()
    restored = Engine(EngineConfig(grace_ms=0, stats=SPEC, checkpoint_dir=str(directory)), sink,
                      ExporterTable(), Counters(), clock_ms=clock)
    restored.start()
    restored.flush()
    [minute] = sink.finals("1m")
    return minute.payload


def test_a_failed_background_checkpoint_is_counted_and_every_level_rewritten(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoint"
    clock = FakeClock(T0 + 1_000)
    engine, _, counters = _engine(clock, offload=True, checkpoint_dir=str(directory))
    rng = np.random.default_rng(74)
    engine.process(_traffic(rng, T0 + 1_000))
    engine.checkpoint()
    engine.wait_background()
    assert counters.total("engine_checkpoint_level_files_total") == 3
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    directory.write_text("not a directory")  # the next write fails
    engine.process(_traffic(rng, T0 + 1_100))
    engine.checkpoint()
    engine.wait_background()
    assert counters.total("engine_background_failures_total", job="checkpoint") == 1
    directory.unlink()
    engine.checkpoint()  # only the seconds changed, but the failed write lost every level
    engine.wait_background()
    assert counters.total("engine_checkpoint_level_files_total") == 6
    engine.stop()


def test_a_window_snapshot_is_unaffected_by_later_updates_and_merges() -> None:
    rng = np.random.default_rng(75)
    first = [random_rows(rng, 5_000) for _ in range(3)]
    later = [random_rows(rng, 5_000) for _ in range(6)]
    live, reference = TrafficState(hosts=HostState()), TrafficState(hosts=HostState())
    for rows in first:
        live.update(rows, RANDOM_SPEC)
        reference.update(rows, RANDOM_SPEC)
    snapshot = snapshot_state(live)
    exporters = ExporterTable()
    expected = reference.result(RANDOM_SPEC, exporters)
    assert expected["web"]["flows"] > 0 and expected["hosts"]["local"]["hosts"] > 1_000
    for rows in later:  # updates, merges of other windows, and folds of the live state
        other = TrafficState(hosts=HostState())
        other.update(rows, RANDOM_SPEC)
        live.merge(other)
        live.update(rows, RANDOM_SPEC)
        live.result(RANDOM_SPEC, exporters)
    assert snapshot.result(RANDOM_SPEC, exporters) == expected
    assert live.result(RANDOM_SPEC, exporters)["totals"]["flows"] > expected["totals"]["flows"]


def test_an_hour_closing_while_its_hosts_are_being_folded_keeps_them() -> None:
    rng = np.random.default_rng(76)
    end = HOUR0 + 3_600_000
    clock = FakeClock(end - 70_000)
    engine, sink, counters = _engine(clock, offload=True)
    for time_ms in range(end - 70_000, end, 2_000):  # a minute closes into the hour, one stays open
        clock.now_ms = time_ms
        engine.process(_traffic(rng, time_ms))
        engine.tick()
    [hour] = engine.open_windows(2).values()
    hosts = hour["all"].hosts
    assert hosts is not None
    engine.wait_background()
    engine._offload_fold(2, HOUR0, engine._open[2][HOUR0])  # the hour's hosts are lent now ...
    clock.now_ms = end + 60_000
    engine.tick()  # ... when the hour (and its last minute) are due
    engine.wait_background()
    # If the fold was still running at that tick (it may have given the hosts back but not yet
    # finished), the hour waited: it closes at the next tick, as 100 ms later in a live run.
    engine.tick()
    engine.wait_background()
    assert HOUR0 not in engine.open_windows(2)
    [final] = sink.finals("1h")
    assert final.payload["totals"]["flows"] == 35 * 400
    assert final.payload["hosts"]["local"]["hosts"] > 1_000
    assert counters.total("engine_tick_failures_total") == 0
    engine.stop()


def test_a_finished_job_and_what_it_holds_are_released() -> None:
    """A job's closure (a snapshot) must not outlive the job: the thread waiting for the next job
    kept it, and a later fold in place then copied the arrays it still held."""
    work = BackgroundWork(Counters(), "test")
    work.start()
    try:
        ran: list[int] = []

        def submit_job() -> weakref.ref[HostState]:
            held = HostState()  # only the job's closure refers to it once this returns
            work.submit("result:1", lambda: ran.append(held.local_hosts))
            return weakref.ref(held)

        alive = submit_job()
        work.drain()
        gc.collect()
        assert ran == [0] and alive() is None  # the thread is idle, waiting for the next job
    finally:
        work.stop()


def test_a_minute_closes_only_once_its_provisional_fold_gives_its_hosts_back() -> None:
    """A minute's provisional fold has its host parts lent: a minute due meanwhile stays open
    (the clock thread does not wait) and closes at a later tick, folded once, not twice."""
    rng = np.random.default_rng(77)
    minute = HOUR0 + 60_000
    clock = FakeClock(minute)
    engine, sink, counters = _engine(clock, offload=True)
    for time_ms in range(minute, minute + 60_000, 3_000):
        clock.now_ms = time_ms
        engine.process(_traffic(rng, time_ms))
    background = engine._background
    assert background is not None
    engine.wait_background()
    gate = _hold(background)
    engine.tick()  # the minute's provisional fold is queued behind the gate, its parts lent
    hosts = engine.open_windows(1)[minute]["all"].hosts
    assert hosts is not None and hosts.lent and background.busy(f"result:1:{minute}")
    clock.now_ms = minute + 60_000
    engine.tick()
    assert minute in engine.open_windows(1)  # due, but its hosts are lent: not closed yet
    gate.set()
    engine.wait_background()
    # Given back: the folded part, then what was merged in meanwhile (the last second).
    assert not hosts.lent and hosts.parts()[0].count > 1_000
    engine.tick()  # closes the minute
    assert minute not in engine.open_windows(1)
    engine.wait_background()
    [final] = sink.finals("1m")
    assert final.payload["totals"]["flows"] == 20 * 400
    assert final.payload["hosts"]["local"]["hosts"] > 1_000
    assert counters.total("engine_host_folds_total", resolution="1m") >= 1
    engine.stop()
