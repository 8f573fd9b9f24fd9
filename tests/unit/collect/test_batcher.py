"""Batcher.add_all (a listener's drained burst) against add() of the same datagrams one by one."""

from __future__ import annotations

from flowscope.collect import Batcher
from flowscope.metrics import Counters
from flowscope.model import Datagram


def _datagrams(count: int) -> list[Datagram]:
    return [Datagram(f"192.0.2.{i % 3}", 1_000 + i, bytes(10 + i), 2055) for i in range(count)]


EXPORTERS = ("192.0.2.0", "192.0.2.1", "192.0.2.2")


def _run(batch_max: int, bursts: list[list[Datagram]], one_by_one: bool) -> dict[str, object]:
    """What the sink got and what was counted before the final flush, then after it."""
    delivered: list[list[Datagram]] = []
    counters = Counters()
    batcher = Batcher(delivered.append, counters, "udp/test", batch_max, flush_interval_ms=60_000)
    for burst in bursts:
        if one_by_one:
            for datagram in burst:
                batcher.add(datagram)
        else:
            batcher.add_all(burst)
    before = {
        "batches": [list(batch) for batch in delivered],
        "counted": [counters.get("collector_datagrams_total", listener="udp/test", exporter=e) for e in EXPORTERS],
    }
    batcher.flush()
    return {"before_flush": before, "batches": delivered, "counters": counters.snapshot()}


def test_add_all_delivers_and_counts_exactly_like_add_one_by_one() -> None:
    datagrams = _datagrams(50)
    bursts = [datagrams[:3], datagrams[3:20], [], datagrams[20:21], datagrams[21:50]]
    for batch_max in (1, 4, 7, 64):
        expected = _run(batch_max, bursts, one_by_one=True)
        got = _run(batch_max, bursts, one_by_one=False)
        assert got == expected
        batches = got["batches"]
        assert isinstance(batches, list)
        assert all(len(batch) <= batch_max for batch in batches)
        assert [d for batch in batches for d in batch] == datagrams


def test_add_all_starts_the_flush_clock() -> None:
    batcher = Batcher(lambda batch: None, Counters(), "udp/test", batch_max=100, flush_interval_ms=50)
    assert batcher.timeout_s() is None
    batcher.add_all([])
    assert batcher.timeout_s() is None
    batcher.add_all(_datagrams(2))
    timeout_s = batcher.timeout_s()
    assert timeout_s is not None and 0.0 <= timeout_s <= 0.05
