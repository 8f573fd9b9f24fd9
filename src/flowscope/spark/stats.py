"""The statistics of ``aggregate.stats.StatsSpec`` as Spark aggregations, and their window results.

The same declarations the embedded engine reads (top-N size, port side, web ports, views) drive
four grouped aggregations over the flow rows (``sources.FLOW_SCHEMA``), each keyed by
(interval, window start, view):

- totals per protocol class, with the web traffic and the late flows of each class;
- totals per exporter;
- per (protocol, port) sums for TCP and UDP, ranked per metric with ``row_number`` (metric
  descending, then the lower port: the documented tie rule), keeping the top N;
- per web server and per web client address sums, ranked the same way (ties: the lower address
  in byte order; Spark orders binary values as unsigned bytes, as numpy does).

The host statistics of the unfiltered view are ``hosts.SparkHosts``'s aggregations.

Only the ranked top N rows and the per-class/per-exporter sums reach the driver, which assembles
them into payloads of exactly the embedded engine's shape (``aggregate.state.TrafficState.result``,
docs/report-schema.md). A coarser window is the sum of its finest windows (start floored to the
interval), as the embedded engine rolls minutes up from seconds.

Flows are counted as the sum of the ``flows`` column (1 per flow; with ``spread`` 1 for the one
piece of a flow that counts it: see ``sources``); rows without the column count 1 each.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)

from flowscope.aggregate.stats import ICMP, ICMP6, METRICS, PROTOCOL_CLASSES, TCP, UDP, StatsSpec
from flowscope.model import address_text
from flowscope.spark.columns import filter_column
from flowscope.spark.hosts import SparkHosts

__all__ = ["SparkStats", "WindowKey", "WindowTotals"]

WindowKey = tuple[int, int, str]  # (interval ms, window start ms, view)
ExporterKey = Callable[[int], tuple[str, int]]  # exporter index → (address, domain)

_GROUP = ("interval_ms", "start_ms", "view")


def _sums(prefix: str = "") -> list[Column]:
    """Sums of flows, packets, bytes (``web_``: of the web rows only)."""
    return [
        (F.sum(F.col(name)) if not prefix else F.sum(F.when(F.col("web"), F.col(name)).otherwise(F.lit(0))))
        .alias(f"{prefix}{name}")
        for name in METRICS
    ]


def _metrics(row: Any, prefix: str = "") -> dict[str, int]:
    return {name: int(row[f"{prefix}{name}"] or 0) for name in METRICS}


def _zero() -> dict[str, int]:
    return dict.fromkeys(METRICS, 0)


def _add(total: dict[str, int], values: dict[str, int]) -> None:
    for name in METRICS:
        total[name] += values[name]


@dataclass(slots=True)
class WindowTotals:
    """One window's totals per protocol class, its web traffic and its late flows (one view)."""

    by_class: dict[str, dict[str, int]]
    web: dict[str, int]
    late_flows: int = 0


class SparkStats:
    """Computes window results for the given interval lengths from a DataFrame of flow rows."""

    def __init__(self, spec: StatsSpec, intervals_ms: Sequence[int]) -> None:
        self.spec = spec
        self.intervals_ms = tuple(intervals_ms)
        self.hosts = SparkHosts(spec)
        self.filters: dict[str, Column | None] = {"all": None}
        for view in spec.views:
            self.filters[view.name] = filter_column(view.filter)

    # ---------------------------------------------------------------- columns
    def rows(self, flows: DataFrame) -> DataFrame:
        """Flow rows → one row per (flow, interval, view it matches), with the derived columns."""
        counted = F.coalesce(F.col("flows"), F.lit(1)) if "flows" in flows.columns else F.lit(1)
        flows = flows.withColumn("flows", counted.cast("long"))
        parts = [
            (flows if column is None else flows.filter(column)).withColumn("view", F.lit(name))
            for name, column in self.filters.items()
        ]
        by_view = functools.reduce(DataFrame.unionByName, parts)
        interval = F.explode(F.array(*(F.lit(d).cast("long") for d in self.intervals_ms))).alias("interval_ms")
        protocol, src_port, dst_port = F.col("protocol"), F.col("src_port"), F.col("dst_port")
        web = self.spec.web
        tcp_ports, udp_ports = list(web.tcp_ports), list(web.udp_ports)

        def server_port(port: Column) -> Column:
            return ((protocol == TCP) & port.isin(tcp_ports)) | ((protocol == UDP) & port.isin(udp_ports))

        to_server = server_port(dst_port)
        from_server = ~to_server & server_port(src_port)
        return (
            by_view.select("*", interval)
            .withColumn("start_ms", F.col("window") - F.pmod(F.col("window"), F.col("interval_ms")))
            .withColumn(
                "cls",
                F.when(protocol == TCP, 0).when(protocol == UDP, 1)
                .when(protocol.isin(ICMP, ICMP6), 2).otherwise(3),
            )
            .withColumn("web", to_server | from_server)
            .withColumn("server", F.when(to_server, F.col("dst_addr")).otherwise(F.col("src_addr")))
            .withColumn("client", F.when(to_server, F.col("src_addr")).otherwise(F.col("dst_addr")))
        )

    # ----------------------------------------------------------- aggregations
    def _ranked(self, grouped: DataFrame, partition: Sequence[str], key: str) -> DataFrame:
        ranked = grouped
        for metric in METRICS:
            order = Window.partitionBy(*partition).orderBy(F.col(metric).desc(), F.col(key).asc())
            ranked = ranked.withColumn(f"rank_{metric}", F.row_number().over(order))
        best = F.least(*(F.col(f"rank_{metric}") for metric in METRICS))
        return ranked.filter(best <= F.lit(self.spec.top_n))

    def compute(self, flows: DataFrame, exporter_key: ExporterKey) -> dict[WindowKey, dict[str, Any]]:
        """Payloads of every (interval, window, view) that holds at least one flow."""
        # The union of views multiplies the input's partitions (one or more per flow file): many
        # tiny tasks in every aggregation below. As many partitions as a shuffle has is enough.
        partitions = int(flows.sparkSession.conf.get("spark.sql.shuffle.partitions") or 4)
        rows = self.rows(flows).coalesce(partitions).persist()
        try:
            return self._compute(rows, exporter_key)
        finally:
            rows.unpersist()

    def _compute(self, rows: DataFrame, exporter_key: ExporterKey) -> dict[WindowKey, dict[str, Any]]:
        spec = self.spec
        classes = rows.groupBy(*_GROUP, "cls").agg(
            *_sums(), *_sums("web_"), F.sum(F.when(F.col("late"), F.col("flows")).otherwise(F.lit(0))).alias("late"),
        ).collect()
        exporters = rows.groupBy(*_GROUP, "exporter").agg(*_sums()).collect()
        in_ports = rows.filter(F.col("protocol").isin(TCP, UDP))
        ports = in_ports.withColumn("port", F.col("dst_port"))
        if spec.port_side == "either":  # a flow counts for its source port too (nfdump -s port)
            ports = ports.unionByName(in_ports.withColumn("port", F.col("src_port")))
        port_sums = ports.groupBy(*_GROUP, "protocol", "port").agg(*_sums())
        top_ports = self._ranked(port_sums, (*_GROUP, "protocol"), "port").collect()
        web_rows = rows.filter(F.col("web"))
        tops: dict[str, list[Any]] = {}
        for role in ("server", "client"):
            sums = web_rows.groupBy(*_GROUP, F.col(role).alias("address")).agg(*_sums())
            tops[role] = self._ranked(sums, _GROUP, "address").collect()

        windows: dict[WindowKey, WindowTotals] = {}
        for row in classes:
            key = (int(row["interval_ms"]), int(row["start_ms"]), str(row["view"]))
            window = windows.setdefault(key, WindowTotals({name: _zero() for name in PROTOCOL_CLASSES}, _zero()))
            window.by_class[PROTOCOL_CLASSES[int(row["cls"])]] = _metrics(row)
            _add(window.web, _metrics(row, "web_"))
            window.late_flows += int(row["late"] or 0)
        by_exporter: dict[WindowKey, list[tuple[int, dict[str, int]]]] = defaultdict(list)
        for row in exporters:
            key = (int(row["interval_ms"]), int(row["start_ms"]), str(row["view"]))
            by_exporter[key].append((int(row["exporter"]), _metrics(row)))
        port_lists: dict[tuple[WindowKey, int, str], list[tuple[int, int, dict[str, int]]]] = defaultdict(list)
        for row in top_ports:
            key = (int(row["interval_ms"]), int(row["start_ms"]), str(row["view"]))
            values = _metrics(row)
            for metric in METRICS:
                if row[f"rank_{metric}"] <= spec.top_n and values[metric] > 0:
                    port_lists[(key, int(row["protocol"]), metric)].append(
                        (int(row[f"rank_{metric}"]), int(row["port"]), values))
        address_lists: dict[tuple[WindowKey, str, str], list[tuple[int, bytes, dict[str, int]]]] = defaultdict(list)
        for role, found in tops.items():
            for row in found:
                key = (int(row["interval_ms"]), int(row["start_ms"]), str(row["view"]))
                values = _metrics(row)
                for metric in METRICS:
                    if row[f"rank_{metric}"] <= spec.top_n:
                        address_lists[(key, role, metric)].append(
                            (int(row[f"rank_{metric}"]), bytes(row["address"]), values))
        hosts = self.hosts.compute(rows.filter(F.col("view") == F.lit("all")))

        # Every window that holds a flow has a result for every view, as in the embedded engine.
        occupied = {(interval, start) for interval, start, view in windows if view == "all"}
        payloads: dict[WindowKey, dict[str, Any]] = {}
        for interval, start in sorted(occupied):
            for view in self.filters:
                key = (interval, start, view)
                window = windows.get(key) or WindowTotals({name: _zero() for name in PROTOCOL_CLASSES}, _zero())
                payloads[key] = self.payload(key, window, by_exporter, port_lists, address_lists, exporter_key)
                if view == "all":  # host statistics: the unfiltered view only, as in the embedded engine
                    payloads[key]["hosts"] = hosts.get((interval, start)) or self.hosts.empty()
        return payloads

    def payload(
        self, key: WindowKey, window: WindowTotals, by_exporter: dict[WindowKey, list[tuple[int, dict[str, int]]]],
        port_lists: dict[tuple[WindowKey, int, str], list[tuple[int, int, dict[str, int]]]],
        address_lists: dict[tuple[WindowKey, str, str], list[tuple[int, bytes, dict[str, int]]]],
        exporter_key: ExporterKey,
    ) -> dict[str, Any]:
        """The result payload of one (interval, window, view) from its sums and ranked lists (the
        embedded engine's shape); shared by the batch report and the Parquet stream."""
        totals = _zero()
        for values in window.by_class.values():
            _add(totals, values)
        exporters = []
        for index, values in sorted(by_exporter.get(key, []), key=lambda item: item[0]):
            address, domain = exporter_key(index)
            exporters.append({"exporter": address, "domain": domain, **values})

        def ports(protocol: int) -> dict[str, list[dict[str, int]]]:
            return {
                metric: [
                    {"port": port, **values} for _, port, values in sorted(port_lists.get((key, protocol, metric), []))
                ]
                for metric in METRICS
            }

        def addresses(role: str) -> dict[str, list[dict[str, Any]]]:
            return {
                metric: [
                    {"address": address_text(address), **values}
                    for _, address, values in sorted(address_lists.get((key, role, metric), []), key=lambda e: e[0])
                ]
                for metric in METRICS
            }

        view = key[2]
        payload: dict[str, Any] = {
            "totals": {**totals, "by_protocol": window.by_class, "by_exporter": exporters},
            "top_ports": {"tcp": ports(TCP), "udp": ports(UDP)},
            "web": {**window.web, "top_servers": addresses("server"), "top_clients": addresses("client")},
            # The embedded engine counts late flows in the unfiltered view only.
            "late_flows": window.late_flows if view == "all" else 0,
        }
        return payload
