"""The ``spread`` time base on the Parquet stream: flows cut into pieces by Spark column expressions.

``spread`` shares a flow's packets and bytes over the finest windows its lifetime covers. The
batch report and the JSON stream cut flows on the driver (``sources.ArrivalOrder.pieces``, with
``windows.attribute`` and ``split_counts``); on the Parquet stream the flow rows never reach the
driver, so ``spread_pieces`` cuts them where they are, in the executors' JVMs, with Spark's
array functions (no Python worker, and so nothing to install on the workers: pyspark's
``mapInArrow`` would need pandas there as well).

The expressions are the embedded engine's arithmetic, operation by operation and in the same
order, so every share is the same IEEE-754 double and every integer part the same integer:

- windows: ``first`` … ``last`` finest windows of [min(start, end), end]; windows before the
  *horizon* (closed) are skipped and their time folded into the first open one, as are
  windows beyond ``MAX_WINDOWS_PER_FLOW`` (a flow entirely inside closed windows is one piece
  in its last window, which the driver's late rule then moves);
- shares: overlap / lifetime (1 when the lifetime is 0), divided by their sum taken in piece
  order (numpy's ``bincount`` adds the same way);
- integer parts: floor(share × value), at most the value; what they leave over goes to the
  last piece, which is also the one that counts the flow (``flows`` = 1, the others 0).

``test_spread_pieces`` checks the result against ``sources.cut_flows`` on flows of every kind.
Each piece is its flow's row with ``packets``/``bytes`` replaced by its shares, plus
``piece_start``, its finest window before the late rule.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)

from flowscope.export.parquet import FILE_COLUMNS

__all__ = ["MAX_WINDOWS_PER_FLOW", "spread_pieces"]

MAX_WINDOWS_PER_FLOW = 3600  # ``windows.attribute``'s default, which the embedded engine uses
_COUNTER = "decimal(20,0)"  # packets and bytes: unsigned 64-bit
_EXACT_LONG = float(1 << 62)  # doubles below convert to long exactly (integer-valued sums)


def _floor_start(time: Column, duration_ms: int) -> Column:
    return time - F.pmod(time, F.lit(duration_ms))


def _integer_parts(shares: Column, value: Column, last: Column) -> Column:
    """``split_counts``: floor(share × value) per piece, the remainder added to the last piece."""
    as_double = value.cast("double")
    allotted = F.transform(shares, lambda share: F.least(F.floor(share * as_double).cast(_COUNTER), value))
    given = F.aggregate(allotted, F.lit(0.0), lambda total, part: total + part.cast("double"))
    given_exact = F.when(given < F.lit(_EXACT_LONG), given.cast("long").cast(_COUNTER)).otherwise(given.cast(_COUNTER))
    remainder = value - given_exact
    return F.transform(allotted, lambda part, index: F.when(index == last, part + remainder).otherwise(part)
                       .cast(_COUNTER))


def spread_pieces(flows: DataFrame, finest_ms: int, horizon_ms: int) -> DataFrame:
    """The flow rows of a micro-batch (``stream.FILE_SCHEMA``) as their ``spread`` pieces.

    ``horizon_ms``: windows starting before it have closed (``ArrivalOrder.horizon_ms`` before
    the micro-batch). Adds ``piece_start`` and ``flows``; ``packets``/``bytes`` become shares.
    """
    duration = F.lit(finest_ms)
    end = F.col("time_end")
    start = F.least(F.col("time_start"), end)
    last = _floor_start(end, finest_ms)
    floor = F.least(F.greatest(last - F.lit((MAX_WINDOWS_PER_FLOW - 1) * finest_ms), F.lit(horizon_ms)), last)
    first = F.greatest(_floor_start(start, finest_ms), floor)
    bounds = flows.select(
        "*", start.alias("_start"), first.alias("_first"), F.greatest(start, first).alias("_clipped"),
        ((last - first) / duration).cast("long").alias("_last_index"),
        (end - start).cast("double").alias("_lifetime"),
    )

    def share(index: Column) -> Column:
        window_start = F.col("_first") + index * duration
        piece_start = F.when(index == 0, F.col("_start")).otherwise(F.greatest(F.col("_clipped"), window_start))
        piece_end = F.least(end, window_start + duration)
        overlap = F.greatest(piece_end - piece_start, F.lit(0)).cast("double")
        lifetime = F.col("_lifetime")
        return F.when(lifetime > 0, overlap / lifetime).otherwise(F.lit(1.0))

    raw = F.transform(F.sequence(F.lit(0).cast("long"), F.col("_last_index")), share)
    shared = bounds.withColumn("_raw", raw).withColumn(
        "_total", F.aggregate(F.col("_raw"), F.lit(0.0), lambda total, part: total + part))
    normalized = F.transform(F.col("_raw"), lambda part: part / F.when(F.col("_total") > 0, F.col("_total"))
                             .otherwise(F.lit(1.0)))
    last_index = F.col("_last_index").cast("int")
    parts = shared.withColumn("_shares", normalized).select(
        "*", _integer_parts(F.col("_shares"), F.col("packets"), last_index).alias("_packets"),
        _integer_parts(F.col("_shares"), F.col("bytes"), last_index).alias("_bytes"),
    )
    pieces = F.transform(F.col("_packets"), lambda packets, index: F.struct(
        (F.col("_first") + index.cast("long") * duration).alias("piece_start"),
        packets.alias("packets"), F.col("_bytes")[index].alias("bytes"),
        F.when(index == last_index, F.lit(1)).otherwise(F.lit(0)).cast("long").alias("flows"),
    ))
    kept = [name for name, _ in FILE_COLUMNS if name not in ("packets", "bytes")]
    return parts.select(*kept, F.explode(pieces).alias("_piece")).select(
        *kept, "_piece.packets", "_piece.bytes", "_piece.piece_start", "_piece.flows")
