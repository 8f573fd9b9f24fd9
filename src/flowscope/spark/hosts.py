"""Host statistics on Spark: the ``hosts`` section of the embedded engine's results
(``aggregate.hosts.HostState.result``) from Spark aggregations, every number exact.

Which hosts and what they get are the embedded engine's rules (see ``aggregate.hosts``): a flow
counts for each of its endpoints that is a *local host* (inside ``StatsSpec.local_networks``) or
a *watched host* (``StatsSpec.watched_hosts``): for its source as *sent*, for its destination as
*received*. The flow rows (one per flow, or per piece with ``spread``; interval and window start
already attached by ``stats.SparkStats.rows``) become *side rows*, one per (flow, tracked
endpoint), and then:

1. one aggregation per (interval, window start, host): sent/received sums, duration and TCP
   flag sums, ``countDistinct`` of partners and of destination ports of the flows it sent;
2. ``row_number`` over the local hosts of each window by flows, bytes and partners (descending,
   then the lower address: Spark orders binary values as unsigned bytes, so 16-byte addresses
   compare numerically, as the embedded engine's (hi, lo) order does), and a count of the local
   hosts of the window;
3. the ranked and the watched hosts (a left-semi join with the side rows) get their most used
   ports: flows, packets and bytes per (host, destination port), the first ``HOST_TOP_PORTS`` by
   flows, then the lower port.

Only the selected hosts (at most 3 × top N local ones and the watched ones per window) and their
top ports reach the driver.

Exactness and the embedded engine
    Spark counts every local host exactly; the embedded engine keeps sketches for them. The two
    agree exactly on: the number of local hosts, every sum, the flags, the mean duration,
    ``dst_ports`` (an exact set or bitmap there), and ``partners`` up to 8 192 partners (an
    exact set there, short only by 36-bit hash collisions: < 5·10⁻⁴ expected in a full set);
    beyond, the embedded HyperLogLog estimate has a relative standard error of 0.41 %, so it
    lies within 2 % (about 5 standard errors) of Spark's exact count. A local host's
    ``top_ports`` there is a Misra–Gries summary of 8 ports: identical to Spark's exact counts
    while the host used at most 8 ports in the window, else each count may be short by at most
    (the host's flows) / 9. Watched hosts are exact in both. The JSON keeps the embedded
    engine's shape, ``"exact": false`` for local hosts included (it says which rules applied).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)

from flowscope.aggregate.filtertree import Network
from flowscope.aggregate.hostaddr import configured_hosts
from flowscope.aggregate.hosts import (
    COLUMNS,
    FLAG_NAMES,
    HOST_TOP_PORTS,
    METRICS,
    RESULT_METRICS,
    compile_networks,
    host_json,  # the embedded engine's JSON of one host: the same shape by construction
)
from flowscope.aggregate.stats import TCP, StatsSpec
from flowscope.model import IPV4_MAPPED_PREFIX, address_text
from flowscope.spark.columns import SparkColumn

__all__ = ["SparkHosts", "local_network_prefixes", "watched_addresses"]

Span = tuple[int, int]  # (interval ms, window start ms)
_SPAN = ("interval_ms", "start_ms")
_SIDES = {"src": ("dst", True, "src_hi", "src_lo"), "dst": ("src", False, "dst_hi", "dst_lo")}


def local_network_prefixes(texts: Sequence[str]) -> list[Network]:
    """``stats.local_networks`` as 128-bit prefixes (IPv4 as ``::ffff:a.b.c.d/96+n``)."""
    compile_networks(tuple(texts))  # the embedded engine's validation and messages
    prefixes = []
    for text in texts:
        network = ipaddress.ip_network(text.strip(), strict=False)
        if network.version == 4:
            prefixes.append(Network(IPV4_MAPPED_PREFIX + network.network_address.packed, network.prefixlen + 96))
        else:
            prefixes.append(Network(network.network_address.packed, network.prefixlen))
    return prefixes


def watched_addresses(texts: Sequence[str]) -> list[bytes]:
    """``stats.watched_hosts`` as distinct 16-byte addresses in address order (the result's order)."""
    return sorted(configured_hosts(tuple(texts)))  # the embedded engine's parsing and messages


def _signed(word: bytes) -> int:
    return int.from_bytes(word, "big", signed=True)


def _metric_column(name: str) -> Column:
    """A host metric of ``aggregate.hosts.METRICS`` from the host table's columns."""
    columns = METRICS[name]
    if not columns:  # a distinct count
        return F.col(name)
    total = F.col(COLUMNS[columns[0]])
    for index in columns[1:]:
        total = total + F.col(COLUMNS[index])
    return total


@dataclass(slots=True)
class _Found:
    """What the driver collects for one window."""

    local_hosts: int = 0
    hosts: dict[bytes, Any] = field(default_factory=dict)  # selected host rows by address
    ports: dict[bytes, list[Any]] = field(default_factory=lambda: defaultdict(list))  # ranked port rows


class SparkHosts:
    """The ``hosts`` section of every window's result, from the "all" view's flow rows."""

    def __init__(self, spec: StatsSpec) -> None:
        self.spec = spec
        self.networks = local_network_prefixes(spec.local_networks)
        self.watched = watched_addresses(spec.watched_hosts)

    @property
    def configured(self) -> bool:
        return bool(self.networks or self.watched)

    # ---------------------------------------------------------------- columns
    def _local(self, high: Column, low: Column) -> Column:
        test: Column = F.lit(False)
        for network in self.networks:
            test = test | SparkColumn.prefix_match(high, low, network)
        return test

    def _is_watched(self, high: Column, low: Column) -> Column:
        test: Column = F.lit(False)
        for address in self.watched:
            test = test | ((high == F.lit(_signed(address[:8]))) & (low == F.lit(_signed(address[8:]))))
        return test

    def tracked(self, high: Column, low: Column) -> Column:
        """Whether the address in the word columns ``high``/``low`` is a local or a watched host."""
        return self._local(high, low) | self._is_watched(high, low)

    def sides(self, rows: DataFrame) -> DataFrame:
        """One row per (flow row, tracked endpoint): the host, its partner, whether it sent."""
        parts = []
        for host, (partner, sent, high, low) in _SIDES.items():
            local = self._local(F.col(high), F.col(low))
            watched = self._is_watched(F.col(high), F.col(low))
            parts.append(rows.filter(local | watched).select(
                *_SPAN, F.col(f"{host}_addr").alias("host"), F.col(f"{partner}_addr").alias("partner"),
                F.lit(sent).alias("sent"), local.alias("local"), watched.alias("watched"),
                F.col("dst_port").alias("port"), "protocol", "tcp_flags", "flows", "packets", "bytes",
                F.greatest(F.col("time_end") - F.col("time_start"), F.lit(0)).alias("duration_ms"),
            ))
        return parts[0].unionByName(parts[1])

    def host_table(self, sides: DataFrame) -> DataFrame:
        """Per (interval, window, host): the sums of ``aggregate.hosts.COLUMNS`` and distinct counts."""
        sent, flows = F.col("sent"), F.col("flows")

        def when(test: Column, value: Column) -> Column:
            return F.when(test, value).otherwise(F.lit(0))

        sums = []  # in ``COLUMNS`` order
        for name in ("flows", "packets", "bytes"):
            sums.append(F.sum(when(sent, F.col(name))).alias(f"{name}_sent"))
        for name in ("flows", "packets", "bytes"):
            sums.append(F.sum(when(~sent, F.col(name))).alias(f"{name}_received"))
        sums.append(F.sum(F.col("duration_ms") * flows).alias("duration_ms"))
        tcp = F.col("protocol") == F.lit(TCP)
        for bit, name in enumerate(FLAG_NAMES):
            sums.append(F.sum(when(tcp & (F.col("tcp_flags").bitwiseAND(F.lit(1 << bit)) != 0), flows)).alias(name))
        return sides.groupBy(*_SPAN, "host", "local", "watched").agg(
            *sums,
            F.countDistinct("partner").alias("partners"),
            F.countDistinct(F.when(sent, F.col("port"))).alias("dst_ports"),  # nulls are not counted
        )

    def selected(self, table: DataFrame) -> DataFrame:
        """The watched hosts and the top N local hosts by each result metric, with their ranks.

        Every window function partitions by (interval, window) alone, so one shuffle serves them
        all; local hosts sort first, so their row numbers are their ranks among local hosts.
        """
        ranked = table.withColumn(
            "local_hosts", F.sum(F.col("local").cast("long")).over(Window.partitionBy(*_SPAN))
        )
        chosen: Column = F.col("watched")
        for metric in RESULT_METRICS:
            value = _metric_column(metric)
            order = Window.partitionBy(*_SPAN).orderBy(F.col("local").desc(), value.desc(), F.col("host").asc())
            ranked = ranked.withColumn(f"rank_{metric}", F.row_number().over(order))
            chosen = chosen | (F.col("local") & (F.col(f"rank_{metric}") <= self.spec.top_n) & (value > 0))
        return ranked.filter(chosen)

    def top_ports(self, sides: DataFrame, selected: DataFrame) -> DataFrame:
        """The first ``HOST_TOP_PORTS`` destination ports of each selected host by flows."""
        hosts = F.broadcast(selected.select(*_SPAN, "host"))
        ports = sides.join(hosts, on=[*_SPAN, "host"], how="left_semi").groupBy(*_SPAN, "host", "port").agg(
            F.sum("flows").alias("flows"), F.sum("packets").alias("packets"), F.sum("bytes").alias("bytes"),
        )
        order = Window.partitionBy(*_SPAN, "host").orderBy(F.col("flows").desc(), F.col("port").asc())
        return ports.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= HOST_TOP_PORTS)

    # ---------------------------------------------------------------- results
    def compute(self, rows: DataFrame) -> dict[Span, dict[str, Any]]:
        """The ``hosts`` section per (interval, window start) that has tracked hosts.

        ``rows``: the unfiltered view's flow rows with ``interval_ms`` and ``start_ms``. Windows
        missing from the answer have no tracked host: ``empty()`` is their section.
        """
        if not self.configured:
            return {}
        # Both are read twice (the ranking, then the top ports of the hosts it selected).
        sides = self.sides(rows).persist()
        selected = self.selected(self.host_table(sides)).persist()
        try:
            found: dict[Span, _Found] = defaultdict(_Found)
            for row in selected.collect():
                window = found[(int(row["interval_ms"]), int(row["start_ms"]))]
                window.hosts[bytes(row["host"])] = row
                if row["local"]:
                    window.local_hosts = int(row["local_hosts"])
            for row in self.top_ports(sides, selected).collect():
                found[(int(row["interval_ms"]), int(row["start_ms"]))].ports[bytes(row["host"])].append(row)
        finally:
            selected.unpersist()
            sides.unpersist()
        return {span: self._section(window) for span, window in found.items()}

    def empty(self) -> dict[str, Any]:
        """The section of a window without tracked hosts (watched hosts with zero counts)."""
        return self._section(_Found())

    def _section(self, found: _Found) -> dict[str, Any]:
        top: dict[str, list[dict[str, Any]]] = {}
        for metric in RESULT_METRICS:
            ranked = [
                row for row in found.hosts.values()
                if row["local"] and row[f"rank_{metric}"] <= self.spec.top_n and self._value(row, metric) > 0
            ]
            ranked.sort(key=lambda row: int(row[f"rank_{metric}"]))
            top[metric] = [self._describe(row, found.ports.get(bytes(row["host"]), []), exact=False)
                           for row in ranked]
        watched = [
            self._describe(found.hosts[address], found.ports.get(address, []), exact=True)
            if address in found.hosts else host_json(address_text(address), True, [0] * len(COLUMNS), 0, 0, [])
            for address in self.watched
        ]
        return {"watched": watched, "local": {"hosts": found.local_hosts, "top": top}}

    @staticmethod
    def _value(row: Any, metric: str) -> int:
        columns = METRICS[metric]
        if not columns:
            return int(row[metric])
        return sum(int(row[COLUMNS[index]]) for index in columns)

    @staticmethod
    def _describe(row: Any, ports: list[Any], *, exact: bool) -> dict[str, Any]:
        ordered = sorted(ports, key=lambda port: int(port["rank"]))
        if exact:  # watched: flows, packets, bytes of every port it used
            top = [{"port": int(p["port"]), "flows": int(p["flows"]), "packets": int(p["packets"]),
                    "bytes": int(p["bytes"])} for p in ordered]
        else:  # local: flows only, ports that counted a flow (the embedded summary's rule)
            top = [{"port": int(p["port"]), "flows": int(p["flows"])} for p in ordered if int(p["flows"]) > 0]
        sums = [int(row[name]) for name in COLUMNS]
        return host_json(address_text(bytes(row["host"])), exact, sums, int(row["partners"]),
                         int(row["dst_ports"]), top)
