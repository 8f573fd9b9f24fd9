"""The batch walk's compiled loops (``decode/walkkernel.py``, ``_walkkernel.c``) on their own: what
they refuse. That their tables equal the numpy walk's is checked in test_batch_walk.py
(``assert_same_walks``, on captures, generated streams and mutated datagrams)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from flowscope.decode import walkkernel
from flowscope.decode.context import SetColumns
from flowscope.decode.v5 import V5_TEMPLATE
from flowscope.model import Datagram
from support.exports import v5_message, v5_record

T0 = 1_700_000_000_000


def _kernel() -> ModuleType:
    kernel = walkkernel.KERNEL
    assert kernel is not None, "flowscope.decode._walkkernel was not built: pip install -e . with gcc"
    return kernel


def _datagrams(n: int, exporters: int = 1) -> list[Datagram]:
    records = [v5_record(src="10.0.0.1", dst="10.0.0.2", packets=1, octets=60)] * 2
    return [Datagram(f"192.0.2.{i % exporters}", T0 + i, v5_message(records, sequence=2 * i)) for i in range(n)]


def test_walk_reads_headers_and_sets() -> None:
    headers = walkkernel.walk(_datagrams(3, exporters=2), 8192)
    assert headers is not None
    assert headers.exporters == ["192.0.2.0", "192.0.2.1"]
    assert headers.heads[:, walkkernel.CODE].tolist() == [0, 1, 0]
    assert headers.heads[:, walkkernel.ELIGIBLE].tolist() == [1, 1, 1]
    assert headers.heads[:, walkkernel.SEQUENCE].tolist() == [0, 2, 4]
    assert headers.sets[:, walkkernel.SET_START].tolist() == [24, 24 + 120, 24 + 240]
    assert len(headers.buffer) == 3 * 120 + 64


def test_walk_declines_too_many_exporters_and_other_buffers() -> None:
    assert walkkernel.walk(_datagrams(5, exporters=5), 5) is None
    assert walkkernel.walk(_datagrams(5, exporters=5), 6) is not None
    odd = [Datagram("192.0.2.1", T0, memoryview(_datagrams(1)[0].payload))]  # type: ignore[arg-type]
    assert walkkernel.walk(odd, 8192) is None


def test_walk_refuses_short_tables() -> None:
    kernel = _kernel()
    datagrams = _datagrams(4)
    with pytest.raises(ValueError, match="heads"):
        kernel.walk(datagrams, {}, [], 8192, np.empty((3, 11), np.int64), np.empty((64, 5), np.int64))
    with pytest.raises(ValueError, match="sets"):
        kernel.walk(datagrams, {}, [], 8192, np.empty((4, 11), np.int64), np.empty((63, 5), np.int64))
    with pytest.raises(TypeError):
        kernel.walk(tuple(datagrams), {}, [], 8192, np.empty((4, 11), np.int64), np.empty((64, 5), np.int64))


def _sets(counts: list[int], starts: list[int]) -> tuple[np.ndarray, SetColumns]:
    n = len(counts)
    column = np.arange(n, dtype=np.int64)
    return np.array(starts, np.int64), SetColumns(np.array(counts, np.int64), column * 100, column, column, column,
                                                  np.arange(n, dtype=np.uint32))


def test_gather_copies_sets_and_repeats_their_values() -> None:
    buffer = bytes(range(256)) * 2
    starts, sets = _sets([2, 1], [0, 96])
    records, per_record = walkkernel.gather(buffer, starts, sets, V5_TEMPLATE, with_sampling=True)
    assert records.tobytes() == buffer[0:96] + buffer[96:144]
    assert per_record.order.tolist() == [0, 1, 100]
    assert per_record.export_time_ms.tolist() == [0, 0, 1]
    assert per_record.header_sampling_interval.tolist() == [0, 0, 1]
    _, without = walkkernel.gather(buffer, starts, sets, V5_TEMPLATE, with_sampling=False)
    assert len(without.header_sampling_interval) == 0


def test_gather_refuses_what_does_not_fit() -> None:
    kernel = _kernel()
    buffer = bytes(200)
    one = np.zeros(1, np.int64)
    columns = [np.empty(4, np.int64) for _ in range(4)]
    arguments = (one, one, one, one, np.zeros(1, np.uint32), np.empty(4 * 48, np.uint8), *columns,
                 np.empty(0, np.uint32))
    with pytest.raises(ValueError, match="do not fit"):  # 5 records of 48 bytes from offset 0 of 200
        kernel.gather(buffer, np.zeros(1, np.int64), np.array([5], np.int64), 48, *arguments)
    with pytest.raises(ValueError, match="do not fit"):  # beyond the buffer
        kernel.gather(buffer, np.array([190], np.int64), np.array([1], np.int64), 48, *arguments)
    with pytest.raises(ValueError, match="do not fit"):  # negative offset
        kernel.gather(buffer, np.array([-8], np.int64), np.array([1], np.int64), 48, *arguments)
    with pytest.raises(ValueError, match="record length"):
        kernel.gather(buffer, np.zeros(1, np.int64), np.array([1], np.int64), 0, *arguments)
    with pytest.raises(ValueError, match="counts"):
        kernel.gather(buffer, np.zeros(2, np.int64), np.array([1], np.int64), 48, *arguments)
    assert kernel.gather(buffer, np.zeros(1, np.int64), np.array([4], np.int64), 48, *arguments) == 4
