"""Flows for Spark: normalized FlowBatches as Arrow tables and Parquet files Spark reads.

The batch report decodes captures with flowscope (as ``pipeline.offline_results`` does) and hands
the flows to Spark as Parquet files, one per decoded batch, written from the numpy columns with
pyarrow (no Python work per flow). Each row carries, besides the FlowBatch columns Spark needs:

- ``window``: the start of the flow's finest window (UTC ms) after the late rule, and ``late``:
  whether the flow reached that window late. The late rule depends on the order flows arrive in,
  which only the reader of the captures knows; ``ArrivalOrder`` applies it batch by batch
  exactly as the embedded engine does with its data clock (windows close once the newest data
  is ``grace`` past their end; a flow for a closed window is folded into the window open now).
- ``src_hi``/``src_lo``/``dst_hi``/``dst_lo``: the two big-endian halves of each address as
  signed 64-bit integers, for the filter's prefix tests (``columns.SparkColumn``).
- ``flows``: 1, or with the ``spread`` time base 1 for the one piece of a flow that counts the
  flow itself and 0 for its other pieces. ``spread`` shares a flow's packets and bytes over the
  finest windows its lifetime covers: ``ArrivalOrder.pieces`` cuts each flow into one row per
  such window with the embedded engine's own functions (``windows.attribute`` and
  ``split_counts``: the same integer shares, the remainder in the last piece), so Spark only
  sums rows and never needs to know the time base.

Unsigned FlowBatch columns become the next wider signed type (uint8/uint16 → int32, uint32 →
int64); packets and bytes are unsigned 64-bit in Parquet, which Spark reads as DECIMAL(20,0), so
every value and every sum is exact (the embedded engine's uint64 sums wrap beyond 2**64).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flowscope.aggregate.windows import Resolution, attribute, split_counts
from flowscope.errors import ConfigError
from flowscope.export.parquet import COUNTER_COLUMNS, INT32_COLUMNS, INT64_COLUMNS, flow_columns
from flowscope.model import FLOW_COLUMNS, IPV4_MAPPED_PREFIX, ExporterTable, FlowBatch

__all__ = [
    "FLOW_SCHEMA", "JSON_SCHEMA", "ArrivalOrder", "FlowPieces", "cut_flows", "flow_table", "json_flows", "piece_table",
    "write_parquet",
]


# The Spark schema of the flow rows (DDL), in the order ``flow_table`` writes them.
FLOW_SCHEMA = ", ".join((
    "window BIGINT", "late BOOLEAN", "flows BIGINT",
    "exporter BIGINT", "time_received BIGINT", "time_start BIGINT", "time_end BIGINT",
    *(f"{name} INT" for name in INT32_COLUMNS),
    *(f"{name} BIGINT" for name in INT64_COLUMNS),
    *(f"{name} DECIMAL(20,0)" for name in COUNTER_COLUMNS),
    "src_addr BINARY", "dst_addr BINARY",
    "src_hi BIGINT", "src_lo BIGINT", "dst_hi BIGINT", "dst_lo BIGINT",
))


@dataclass(frozen=True, slots=True)
class FlowPieces:
    """The rows one batch becomes: one per flow, or with ``spread`` one per finest window a
    flow's lifetime covers (``ArrivalOrder.pieces``).

    ``rows`` indexes the batch (None: one row per flow, in batch order); ``flows`` is 1 for the
    row that counts its flow, else 0, and ``packets``/``bytes`` the row's integer shares (None:
    every row counts its flow with its whole counters).
    """

    rows: npt.NDArray[np.intp] | None
    window: npt.NDArray[np.int64]
    late: npt.NDArray[np.bool_]
    flows: npt.NDArray[np.uint64] | None = None
    packets: npt.NDArray[np.uint64] | None = None
    bytes: npt.NDArray[np.uint64] | None = None

    def __len__(self) -> int:
        return len(self.window)


class ArrivalOrder:
    """The embedded engine's finest-window bookkeeping with the data as its clock.

    ``pieces`` gives the rows of a batch (``assign``: the flows, for any time base but
    ``spread``) their finest window start and late flag, ``tick`` closes what the data's own
    time has made due; call them in the order the engine would see ``process`` and ``tick``
    (``offline_results``: one ``pieces`` per non-empty decoded batch, one ``tick`` after every
    decoded batch).
    """

    def __init__(self, resolutions: list[Resolution], time_base: str, grace_ms: int) -> None:
        self.resolutions = resolutions
        self.finest = resolutions[0]
        self.time_base = time_base
        self.grace_ms = grace_ms
        self.watermark_ms: int | None = None
        # Per resolution, as the embedded engine: windows starting before the horizon have closed;
        # a longer window exists once one of its shorter windows closed into it.
        self.horizons_ms = [-(1 << 62)] * len(resolutions)
        self.open: list[set[int]] = [set() for _ in resolutions]
        self.late_total = 0

    @property
    def horizon_ms(self) -> int:
        """A flow is late once any window containing it has closed (a closed hour covers its seconds)."""
        return max(self.horizons_ms)

    def assign(self, batch: FlowBatch) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Window start and late flag of each flow (``pieces`` for ``spread``, which cuts flows)."""
        if self.time_base == "spread":
            raise ConfigError("engine.time_base 'spread' cuts flows into pieces: use ArrivalOrder.pieces")
        return self.place(attribute(batch, self.time_base, self.finest).window_start_ms)

    def pieces(self, batch: FlowBatch) -> FlowPieces:
        """The rows of ``batch`` for Spark, as ``Engine.process`` attributes them.

        With ``spread``, windows that have already closed get no share (it goes to the earliest
        window still open, as in the embedded engine), and a flow entirely inside closed
        windows becomes one late row.
        """
        cut = cut_flows(batch, self.time_base, self.finest, self.horizon_ms)
        window, late = self.place(cut.window)
        return FlowPieces(cut.rows, window, late, cut.flows, cut.packets, cut.bytes)

    def place(self, starts: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """``assign`` for finest window starts already computed (one per flow, or the distinct ones)."""
        if len(starts) == 0:
            return starts, np.zeros(0, np.bool_)
        newest = int(starts.max()) + self.finest.duration_ms - 1
        self.watermark_ms = newest if self.watermark_ms is None else max(self.watermark_ms, newest)
        horizon = self.horizon_ms
        late = starts < horizon
        if late.any():
            open_now = max(self.finest.start_of(self.watermark_ms), horizon)
            starts = np.where(late, open_now, starts)
            self.late_total += int(late.sum())
        self.open[0].update(np.unique(starts).tolist())
        return starts, late

    def tick(self) -> None:
        now = self.watermark_ms if self.watermark_ms is not None else 0
        for level, resolution in enumerate(self.resolutions):
            duration = resolution.duration_ms
            due = [start for start in self.open[level] if start + duration + self.grace_ms <= now]
            for start in due:
                self.open[level].discard(start)
                self.horizons_ms[level] = max(self.horizons_ms[level], start + duration)
                if level + 1 < len(self.resolutions):
                    self.open[level + 1].add(self.resolutions[level + 1].start_of(start))

    def state(self) -> dict[str, object]:
        return {"watermark_ms": self.watermark_ms, "horizons_ms": list(self.horizons_ms),
                "open": [sorted(level) for level in self.open]}

    def restore(self, saved: dict[str, object]) -> None:
        self.watermark_ms = saved["watermark_ms"]  # type: ignore[assignment]
        self.horizons_ms = list(saved["horizons_ms"])  # type: ignore[call-overload]
        self.open = [set(level) for level in saved["open"]]  # type: ignore[attr-defined]


def cut_flows(batch: FlowBatch, time_base: str, finest: Resolution, horizon_ms: int) -> FlowPieces:
    """``ArrivalOrder.pieces`` before the late rule: each piece's own finest window (``late`` all
    false), windows before ``horizon_ms`` (closed) giving their ``spread`` shares to the earliest
    open one. Needs nothing but the horizon: the Parquet stream's Spark expressions for ``spread``
    (``spark.spreadpieces``) do the same, and are tested against this."""
    attribution = attribute(batch, time_base, finest, earliest_start_ms=horizon_ms)
    late = np.zeros(len(attribution.window_start_ms), np.bool_)
    if attribution.share is None:
        return FlowPieces(None, attribution.window_start_ms, late)
    assert attribution.counts_flow is not None
    return FlowPieces(
        attribution.rows, attribution.window_start_ms, late, attribution.counts_flow.astype(np.uint64),
        split_counts(batch["packets"], attribution), split_counts(batch["bytes"], attribution),
    )


def flow_table(batch: FlowBatch, window: npt.NDArray[np.int64], late: npt.NDArray[np.bool_]) -> pa.Table:
    """One batch, one row per flow, as an Arrow table in ``FLOW_SCHEMA``'s column order."""
    return piece_table(batch, FlowPieces(None, window, late))


def piece_table(batch: FlowBatch, pieces: FlowPieces) -> pa.Table:
    """The rows ``pieces`` cuts ``batch`` into as an Arrow table in ``FLOW_SCHEMA``'s column order."""
    if pieces.rows is not None:  # spread: each piece carries its flow's columns and its own shares
        assert pieces.packets is not None and pieces.bytes is not None
        cut = {name: column[pieces.rows] for name, column in batch.columns.items()}
        batch = FlowBatch({**cut, "packets": pieces.packets, "bytes": pieces.bytes})
    flows = pieces.flows if pieces.flows is not None else np.ones(len(pieces), np.int64)
    columns: dict[str, pa.Array] = {
        "window": pa.array(pieces.window.astype(np.int64)),
        "late": pa.array(pieces.late.astype(np.bool_)),
        "flows": pa.array(flows.astype(np.int64)),
    }
    columns["exporter"] = pa.array(batch["exporter"].astype(np.int64))  # the job's exporter table index
    columns.update(flow_columns(batch))
    return pa.table(columns)


def write_parquet(tables: Iterable[pa.Table], directory: str | Path) -> int:
    """Writes each table as one Parquet file ``part-NNNNNN.parquet``; returns the rows written."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    rows = 0
    for number, table in enumerate(tables):
        pq.write_table(table, target / f"part-{number:06d}.parquet")
        rows += table.num_rows
    return rows


# -- the collector's JSON lines (``flowscope collect --json-server``, export/flowjson.py) --------

_JSON_NUMBERS = (
    ("time_received", "BIGINT"), ("time_start", "BIGINT"), ("time_end", "BIGINT"), ("domain", "BIGINT"),
    ("src_port", "INT"), ("dst_port", "INT"), ("protocol", "INT"), ("tcp_flags", "INT"), ("tos", "INT"),
    ("packets", "DECIMAL(20,0)"), ("bytes", "DECIMAL(20,0)"), ("in_if", "BIGINT"), ("out_if", "BIGINT"),
    ("src_as", "BIGINT"), ("dst_as", "BIGINT"), ("sampling_rate", "BIGINT"),
)
# The schema of one JSON line, for ``from_json``.
JSON_SCHEMA = ", ".join(
    ["exporter STRING", "src_addr STRING", "dst_addr STRING", *(f"{name} {kind}" for name, kind in _JSON_NUMBERS)]
)


def _packed(text: str) -> bytes:
    address = ipaddress.ip_address(text)
    return (IPV4_MAPPED_PREFIX + address.packed) if address.version == 4 else address.packed


def _address_column(values: pa.ChunkedArray | pa.Array) -> npt.NDArray:
    """Address texts → 16-byte ``S16`` (IPv4 mapped); each distinct address is parsed once."""
    texts = np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
    if len(texts) == 0:
        return np.zeros(0, "S16")
    unique, inverse = np.unique(texts.astype(str), return_inverse=True)
    packed = np.array([_packed(text) for text in unique.tolist()], "S16")
    result: npt.NDArray = packed[inverse]
    return result


def json_flows(table: pa.Table, exporters: ExporterTable) -> FlowBatch:
    """Rows parsed from the collector's JSON lines (``JSON_SCHEMA``) as a FlowBatch.

    Exporters are mapped to indices of ``exporters`` (new ones are added in the order pyarrow's
    dictionary encoding meets them: their first row); unparsable rows (a line cut short) are dropped.
    """
    complete = table.filter(pc.invert(pc.or_(pc.is_null(table["src_addr"]), pc.is_null(table["packets"]))))
    columns: dict[str, npt.NDArray] = {}
    for name, _ in _JSON_NUMBERS:
        if name == "domain":
            continue
        column = complete[name]
        if name in COUNTER_COLUMNS:
            column = pc.cast(column, pa.uint64())
        columns[name] = column.to_numpy().astype(FLOW_COLUMNS[name])
    columns["src_addr"] = _address_column(complete["src_addr"])
    columns["dst_addr"] = _address_column(complete["dst_addr"])
    # One "address|domain" key per row, dictionary-encoded: only the distinct exporters are looked up.
    keys = pc.binary_join_element_wise(complete["exporter"], pc.cast(complete["domain"], pa.string()), "|")
    encoded = pa.chunked_array(keys).combine_chunks().dictionary_encode()
    lookup = np.zeros(len(encoded.dictionary), np.uint32)
    for position, key in enumerate(encoded.dictionary.to_pylist()):
        address, _, domain = key.rpartition("|")
        lookup[position] = exporters.index_of(address, int(domain))
    columns["exporter"] = lookup[encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp)]
    return FlowBatch(columns)
