"""The batch walk's compiled loops (``_walkkernel.c``), from the Python side: ``walk`` makes the
tables of the numpy header pass of ``headerwalk.walk_numpy``, ``gather`` the records and
per-record columns of ``batchwalk._gather``, each in one loop over the batch.

The kernel is optional, built at install time where a C compiler is present; without it
``KERNEL`` is None, ``walk`` returns None and the batch walk does both with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from flowscope.decode.context import RecordColumns, SetColumns
from flowscope.model import Datagram

if TYPE_CHECKING:
    from flowscope.decode.templates import Template

try:
    from flowscope.decode import _walkkernel as _kernel  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install time): the numpy walk does the work
    _kernel = None

KERNEL: ModuleType | None = _kernel
MAX_SETS = 16  # sets per message either header pass walks (MAX_SETS in _walkkernel.c)
# The columns of ``Headers.heads`` and ``Headers.sets``.
CODE, VCODE, ELIGIBLE, DOMAIN, SEQUENCE, EXPORT, UPTIME, RECEIVED, SAMPLING, H2, VERSION = range(11)
SET_DATAGRAM, SET_ID, SET_START, SET_LENGTH, SET_TEMPLATE = range(5)


@dataclass(frozen=True, slots=True)
class Headers:
    """What the kernel read: exporters by code, a row per datagram, a row per set, the joined buffer."""

    exporters: list[str]
    heads: npt.NDArray[np.int64]  # (datagrams, 11): see the column names above
    sets: npt.NDArray[np.int64]  # (sets, 5): the sets of eligible datagrams, in wire order
    buffer: bytes  # the payloads end to end, then 64 zero bytes


def walk(datagrams: Sequence[Datagram], max_exporters: int) -> Headers | None:
    """The headers of a batch; None when the kernel is not built, the batch has ``max_exporters``
    exporters or more, or a payload is not ``bytes``."""
    kernel = KERNEL
    if kernel is None:
        return None
    batch = datagrams if isinstance(datagrams, list) else list(datagrams)
    heads = np.empty((len(batch), 11), np.int64)
    sets = np.empty((len(batch) * MAX_SETS, 5), np.int64)
    exporters: list[str] = []
    walked = kernel.walk(batch, {}, exporters, max_exporters, heads, sets)
    if walked is None:
        return None
    buffer, count = walked
    return Headers(exporters, heads, sets[:count], buffer)


def gather(buffer: bytes, starts: npt.NDArray[np.int64], sets: SetColumns, template: Template,
           with_sampling: bool) -> tuple[np.ndarray, RecordColumns]:
    """The records of data sets of one layout (body offsets ``starts`` in ``buffer``, the sets'
    header values ``sets``) end to end, as the template's dtype, with their per-record columns
    (the v5 header sampling interval only if ``with_sampling``, else an empty column)."""
    kernel = KERNEL
    assert kernel is not None
    total = int(sets.counts.sum())
    records = np.empty(total, template.fixed_dtype)
    per_record = RecordColumns(
        export_time_ms=np.empty(total, np.int64), sys_uptime_ms=np.empty(total, np.int64),
        time_received_ms=np.empty(total, np.int64), order=np.empty(total, np.int64),
        header_sampling_interval=np.empty(total if with_sampling else 0, np.uint32),
    )
    kernel.gather(buffer, np.ascontiguousarray(starts), np.ascontiguousarray(sets.counts), template.fixed_length,
                  np.ascontiguousarray(sets.export_time_ms), np.ascontiguousarray(sets.sys_uptime_ms),
                  np.ascontiguousarray(sets.time_received_ms), np.ascontiguousarray(sets.order_start),
                  np.ascontiguousarray(sets.header_sampling_interval), records, per_record.export_time_ms,
                  per_record.sys_uptime_ms, per_record.time_received_ms, per_record.order,
                  per_record.header_sampling_interval)
    return records, per_record
