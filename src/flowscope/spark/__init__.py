"""The Spark engine: flowscope's statistics as Apache Spark jobs (optional: ``pip install flowscope[spark]``).

- ``columns``: view filters (the parsed filter tree) as Spark column expressions;
- ``sources``: normalized flows as Arrow tables / Parquet files, with the embedded engine's
  window attribution and late rule;
- ``stats``: the ``StatsSpec`` statistics as Spark aggregations, assembled into window results
  of the embedded engine's exact shape;
- ``sink``: window results into the ``ResultStore``;
- ``job``: the Spark session and ``run_spark_report`` (``flowscope report --engine spark``).

Importing this package does not import pyspark; its modules do.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["add_spark_parser"]

DEFAULT_MASTER = "local[2]"


def add_spark_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Adds ``spark`` to a ``flowscope`` sub-command set; its handler is ``cmd_spark``.

    ``parents`` should include the parser holding ``--config``/``--set`` (the engine, the
    statistics and the store come from the configuration).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "spark", parents=list(parents),
        help="compute the statistics on Apache Spark from a collector's JSON stream into the store",
    )
    parser.add_argument("--json-source", required=True, metavar="HOST:PORT",
                        help="the collector's JSON stream (flowscope collect --json-server HOST:PORT)")
    parser.add_argument("--master", default=DEFAULT_MASTER, help="Spark master: local[N] or spark://HOST:PORT")
    parser.add_argument("--work-dir", default="var/spark",
                        help="flow files, bookkeeping and the Spark checkpoint (shared storage on a cluster)")
    parser.add_argument("--trigger", type=float, default=1.0, metavar="S", help="micro-batch interval in seconds")
    parser.set_defaults(handler=_cmd_spark)
    return parser


def _cmd_spark(args: argparse.Namespace) -> int:
    from flowscope.spark.job import cmd_spark  # noqa: PLC0415  (pyspark only when the command runs)

    return cmd_spark(args)
