"""The Spark engine: flowscope's statistics as Apache Spark jobs (optional: ``pip install flowscope[spark]``).

- ``columns``: view filters (the parsed filter tree) as Spark column expressions;
- ``sources``: normalized flows as Arrow tables / Parquet files, with the embedded engine's
  window attribution and late rule;
- ``stats``: the ``StatsSpec`` statistics as Spark aggregations, assembled into window results
  of the embedded engine's exact shape;
- ``sink``: window results into the ``ResultStore``;
- ``job``: the Spark session and ``run_spark_report`` (``flowscope report --engine spark``), the
  streaming job on the collector's JSON stream;
- ``stream``: the streaming job on the collectors' Parquet files, with incremental window state.

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
        help="compute the statistics on Apache Spark from collectors' Parquet files or JSON stream into the store",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--json-source", metavar="HOST:PORT",
                        help="the collector's JSON stream (flowscope collect --json-server HOST:PORT)")
    source.add_argument("--parquet-source", metavar="DIR",
                        help="the collectors' Parquet files (flowscope collect --parquet-dir DIR): the scalable path")
    parser.add_argument("--max-files-per-trigger", type=int, default=1000, metavar="N",
                        help="with --parquet-source: at most N new files per micro-batch")
    parser.add_argument("--coarse-refresh", type=float, default=10.0, metavar="S",
                        help="with --parquet-source: provisional results of the windows longer than the finest at "
                             "most every S seconds (0: every micro-batch; final results always when due)")
    parser.add_argument("--clean-source", choices=["off", "delete", "archive"], default="off",
                        help="with --parquet-source: delete or archive files once a micro-batch read them")
    parser.add_argument("--input-format", choices=["flowscope", "ipfixcol", "ipfixcol2", "auto"], default="flowscope",
                        help="with --json-source: flowscope's JSON, IPFIXcol's (ipfix.* keys), IPFIXcol2's "
                             "(iana:* keys) or auto (each line by its keys)")
    parser.add_argument("--input-timezone", default="UTC", metavar="ZONE",
                        help="with --input-format ipfixcol: the time zone of IPFIXcol's formatted timestamps "
                             "(its host's local time), e.g. Europe/Prague")
    parser.add_argument("--master", default=DEFAULT_MASTER, help="Spark master: local[N] or spark://HOST:PORT")
    parser.add_argument("--work-dir", default="var/spark",
                        help="flow files, bookkeeping and the Spark checkpoint (shared storage on a cluster)")
    parser.add_argument("--shuffle-partitions", type=int, default=4, metavar="N",
                        help="spark.sql.shuffle.partitions: 2-3 x the executor cores in all")
    parser.add_argument("--trigger", type=float, default=1.0, metavar="S", help="micro-batch interval in seconds")
    parser.set_defaults(handler=_cmd_spark)
    return parser


def _cmd_spark(args: argparse.Namespace) -> int:
    from flowscope.spark.job import cmd_spark  # noqa: PLC0415  (pyspark only when the command runs)

    return cmd_spark(args)
