"""The hand-over between listeners and the decoding thread stays bounded, in batches and bytes."""

from __future__ import annotations

from flowscope.metrics import Counters
from flowscope.model import Datagram
from flowscope.pipeline import CollectConfig, Collector


def _batch(exporter: str, size: int) -> list[Datagram]:
    return [Datagram(exporter, 0, b"\0" * size)]


def test_the_queue_drops_whole_batches_beyond_its_byte_bound_and_counts_them() -> None:
    counters = Counters()
    collector = Collector(CollectConfig(udp=(), tcp=(), queue_max_bytes=1000), [], counters)
    collector._enqueue(_batch("192.0.2.1", 400))
    collector._enqueue(_batch("192.0.2.1", 400))
    collector._enqueue(_batch("192.0.2.2", 400))  # 1200 bytes would exceed the bound
    assert counters.total("collector_dropped_total", reason="decoder_busy") == 1
    assert counters.get("collector_dropped_total", exporter="192.0.2.2", reason="decoder_busy") == 1
    collector._dequeued(collector._queue.get_nowait() or [])  # the decoder takes one batch
    collector._enqueue(_batch("192.0.2.3", 400))  # fits again
    assert counters.total("collector_dropped_total") == 1


def test_the_queue_drops_beyond_its_batch_bound() -> None:
    counters = Counters()
    collector = Collector(CollectConfig(udp=(), tcp=(), queue_batches=2), [], counters)
    for _ in range(3):
        collector._enqueue(_batch("192.0.2.1", 10))
    assert counters.total("collector_dropped_total", reason="decoder_busy") == 1
