"""The least numpy work that turns NetFlow v5 datagrams into flowscope's flow columns: a floor.

Not a decoder. It exists to measure what the v5 case of ``decode_bench.py`` could cost at best
with numpy column operations, whatever the decoder's design: per batch one pass over the
``Datagram`` objects (payload, exporter, arrival time), one join of the payloads, the records of
all datagrams as one strided view of the joined bytes (possible here because every datagram of
the benchmark carries the same number of records; a real decoder cannot count on it), header
values broadcast to the records instead of repeated, and each output column made by one or a few
vectorised conversions straight into its final array. Nothing else: no validation of lengths or
versions, no sequence tracking, no per-exporter record sets, no counters, no sampling from the
header. Its columns are checked against flowscope's (as multisets: the row order differs).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from flowscope.decode.v5 import V5_TEMPLATE
from flowscope.model import FLOW_COLUMNS, Datagram

_HEADER = np.dtype({"names": ["uptime_ms", "seconds", "nanoseconds"], "formats": [">u4", ">u4", ">u4"],
                    "offsets": [4, 8, 12], "itemsize": 24})
_RECORD = V5_TEMPLATE.fixed_dtype  # fields f0 … f19 in the v5 record layout's order
_MAPPED_WORD = np.frombuffer(b"\x00\x00\xff\xff", np.uint32)[0]
_INTEGERS = (("in_if", "f3", np.uint32), ("out_if", "f4", np.uint32), ("src_port", "f9", np.uint16),
             ("dst_port", "f10", np.uint16), ("tcp_flags", "f12", np.uint8), ("protocol", "f13", np.uint8),
             ("tos", "f14", np.uint8), ("src_as", "f15", np.uint32), ("dst_as", "f16", np.uint32))


def columns_of(datagrams: list[Datagram]) -> dict[str, npt.NDArray[Any]] | None:
    """Flow columns of a batch of v5 datagrams that all carry the same number of records (else None)."""
    n = len(datagrams)
    payloads = [d.payload for d in datagrams]
    length = len(payloads[0])
    if any(len(p) != length for p in payloads):
        return None
    count = (length - 24) // 48
    exporters = [d.exporter for d in datagrams]
    codes = {e: i for i, e in enumerate(dict.fromkeys(exporters))}
    exporter = np.fromiter(map(codes.__getitem__, exporters), np.uint32, n)
    received = np.fromiter([d.time_received_ms for d in datagrams], np.int64, n)
    buffer = b"".join(payloads)
    header = np.ndarray((n,), _HEADER, buffer, 0, (length,))
    records = np.ndarray((n, count), _RECORD, buffer, 24, (length, 48))
    export_ms = (header["seconds"].astype(np.int64) * 1000 + header["nanoseconds"] // 1_000_000)[:, None]
    uptime_ms = header["uptime_ms"].astype(np.int64)[:, None]
    flows = n * count
    columns: dict[str, npt.NDArray[Any]] = {
        "time_received": np.repeat(received, count),
        "exporter": np.repeat(exporter, count),
        "sampling_rate": np.ones(flows, np.uint32),
        "packets": records["f5"].astype(np.uint64).reshape(-1),
        "bytes": records["f6"].astype(np.uint64).reshape(-1),
    }
    for column, field in (("src_addr", "f0"), ("dst_addr", "f1")):
        words = np.zeros((n, count, 4), np.uint32)
        words[..., 2] = _MAPPED_WORD
        words[..., 3] = records[field].view(np.uint32)  # the wire bytes as they are
        columns[column] = words.view("S16").reshape(-1)
    for column, field, dtype in _INTEGERS:
        columns[column] = records[field].astype(dtype).reshape(-1)
    for column, field in (("time_start", "f7"), ("time_end", "f8")):
        behind = np.subtract(uptime_ms, records[field], dtype=np.int64)
        np.bitwise_and(behind, 0xFFFFFFFF, out=behind)
        columns[column] = np.subtract(export_ms, behind, out=behind).reshape(-1)
    return columns


def run(datagrams: list[Datagram], batch: int) -> dict[str, Any] | None:
    """Flows per CPU second of ``columns_of`` over the whole list, batch by batch."""
    flows = octets = 0
    cpu_s = 0.0
    for start in range(0, len(datagrams), batch):
        chunk = datagrams[start : start + batch]
        t0 = time.thread_time()
        columns = columns_of(chunk)
        cpu_s += time.thread_time() - t0
        if columns is None:
            return None
        flows += len(columns["bytes"])
        octets += int(columns["bytes"].sum())
    return {"flows": flows, "octets": octets, "cpu_s": cpu_s, "flows_per_s": flows / cpu_s}


def same_flows(columns: dict[str, npt.NDArray[Any]], flowscope: dict[str, npt.NDArray[Any]]) -> bool:
    """Every column holds the same values as flowscope's (sorted, since the row order differs)."""
    return all(columns[name].dtype == dtype and np.array_equal(np.sort(columns[name]), np.sort(flowscope[name]))
               for name, dtype in FLOW_COLUMNS.items())
