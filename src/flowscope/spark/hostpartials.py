"""Host statistics on the Parquet stream: per-window exact host state, merged on the driver with numpy.

Which hosts and what they get are the embedded engine's rules (``aggregate.hosts``, as in the
batch path's ``spark.hosts``): a flow row counts for each endpoint that is a local host
(``stats.local_networks``) or a watched host (``stats.watched_hosts``), for its source as *sent*,
for its destination as *received*; with ``spread`` a piece counts its flow once (``flows``), its
shares of packets and bytes, and its partner and port in every window it covers.

Per micro-batch Spark reduces the side rows (one per flow row and tracked endpoint) to mergeable
rows in one aggregation (``host_partials``): per (finest window, host, partner, destination
port, whether the host sent), the flows, packets, bytes, duration sum and one count per TCP flag.
Only these rows reach the driver (as Arrow): their number is bounded by the batch's distinct
such keys, never by its flows. The driver groups them three ways (``HostSums.of_rows``): per
host the sums of ``aggregate.hosts.COLUMNS`` (sent or received by the flag), the distinct
(host, partner) pairs, and per (host, port) flows, packets, bytes and whether the host sent on
it (the ports it contacted: ``dst_ports``). One grouping in Spark rather than one per part
keeps the shuffle at one row per side row (it took half the time of a three-way ``explode``).
It rolls them up to every window length and merges them into each window's ``HostSums``:
sorted unique keys with exact sums (uint64, wrapping as the engine's counters), one file per
window and version beside the window's ``partials.WindowSums`` (``h-<batch>.npz`` next to
``v-<batch>.npz``), so a replayed micro-batch rewrites the same versions and never double
counts.

Why exact state of our own, and not the embedded engine's ``HostState``
    Its local hosts are sketches fed flow by flow (``HostState.update`` takes flow rows, which
    must not reach the driver), and building them from Spark's rows would mean new constructors
    in ``aggregate``. Exact sets and sums merge by a binary search of the new keys, are what the
    batch path computes (so the Parquet path's results equal ``report --engine spark``'s and
    agree with the embedded engine exactly where ``spark.hosts`` says they agree: sums, flags,
    mean duration, ``dst_ports``, the number of local hosts and watched hosts exactly;
    ``partners`` exactly up to 8 192, within 2 % beyond; ``top_ports`` exactly while a host used
    at most 8 ports), and take no sketch's error bound. The price is memory: a window holds
    one 32-byte row per distinct (host, partner) pair and one per (host, port), where the
    engine's sketches are bounded per host; a merge copies the state once (0.04 s for 20 000
    rows into a window of a million pairs), and each version is written whole (as
    ``WindowSums``'). That is right for the windows of minutes to an hour this path is sized
    for; a day window of a large network wants the embedded engine's sketches.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)

from flowscope.aggregate.hostaddr import compile_networks, host_set
from flowscope.aggregate.hosts import COLUMNS, FLAG_NAMES, HOST_TOP_PORTS, METRICS, RESULT_METRICS, host_json
from flowscope.aggregate.keyed import merge_sorted
from flowscope.aggregate.sketch import hash_halves
from flowscope.aggregate.stats import TCP, StatsSpec
from flowscope.model import address_text
from flowscope.spark.hosts import SparkHosts
from flowscope.spark.partials import grouped_rows, save_arrays

__all__ = ["HOST_KEY", "HOST_SUMS", "HostSums", "host_partials", "host_section", "rolled_up_hosts"]

HOST_KEY = ("start_ms", "host_hi", "host_lo", "partner_hi", "partner_lo", "port", "sent")
# Summed per key: packets and bytes as two long halves each (exact; joined on the driver).
HOST_SUMS = ("flows", "packets_hi", "packets_lo", "bytes_hi", "bytes_lo", "duration_ms", *FLAG_NAMES)
_HALF = 1 << 32
_WIDTH = len(COLUMNS)


# -- Spark: one micro-batch's flow rows → host partial rows ---------------------------------------

def _halves(name: str) -> list[Column]:
    low = F.pmod(F.col(name), F.lit(_HALF))
    return [((F.col(name) - low) / F.lit(_HALF)).cast("long").alias(f"{name}_hi"), low.cast("long").alias(f"{name}_lo")]


def host_partials(flows: DataFrame, hosts: SparkHosts) -> DataFrame:
    """The rows of ``HOST_KEY`` + ``HOST_SUMS`` of flow rows that carry their finest window in ``window``."""
    counted = F.col("flows").cast("long") if "flows" in flows.columns else F.lit(1).cast("long")
    tcp = F.col("protocol") == F.lit(TCP)
    values = [
        counted.alias("flows"), *_halves("packets"), *_halves("bytes"),
        (F.greatest(F.col("time_end") - F.col("time_start"), F.lit(0)) * counted).alias("duration_ms"),
        *(F.when(tcp & (F.col("tcp_flags").bitwiseAND(F.lit(1 << bit)) != 0), counted).otherwise(F.lit(0))
          .alias(name) for bit, name in enumerate(FLAG_NAMES)),
    ]
    sides = []
    for host, partner, sent in (("src", "dst", 1), ("dst", "src", 0)):
        high, low = F.col(f"{host}_hi"), F.col(f"{host}_lo")
        sides.append(flows.filter(hosts.tracked(high, low)).select(
            F.col("window").alias("start_ms"), high.alias("host_hi"), low.alias("host_lo"),
            F.col(f"{partner}_hi").alias("partner_hi"), F.col(f"{partner}_lo").alias("partner_lo"),
            F.col("dst_port").cast("long").alias("port"), F.lit(sent).cast("long").alias("sent"), *values,
        ))
    return sides[0].unionByName(sides[1]).groupBy(*HOST_KEY).agg(*(F.sum(name).alias(name) for name in HOST_SUMS))


# -- the driver: per-window state ----------------------------------------------------------------

def _sortable(keys: npt.NDArray[np.int64]) -> npt.NDArray[np.bytes_]:
    """Each key row as one byte string that compares as the row does (signed, first column first)."""
    flipped = (keys.view(np.uint64) ^ np.uint64(1 << 63)).astype(">u8")
    encoded: npt.NDArray[np.bytes_] = np.ascontiguousarray(flipped).view(f"S{8 * keys.shape[1]}").reshape(-1)
    return encoded


def _unsortable(encoded: npt.NDArray[np.bytes_], width: int) -> npt.NDArray[np.int64]:
    """The key rows of ``_sortable``'s byte strings."""
    flipped = np.ascontiguousarray(encoded).view(">u8").reshape(-1, width).astype(np.uint64)
    keys: npt.NDArray[np.int64] = (flipped ^ np.uint64(1 << 63)).view(np.int64)
    return keys


def _merged(keys: npt.NDArray[np.int64], sums: npt.NDArray[np.uint64], new_keys: npt.NDArray[np.int64],
            new_sums: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    """Two sorted unique tables as one (``keyed.merge_sorted`` on the rows as byte strings):
    O(state + new × log state), not a sort of the whole state."""
    if not len(keys) or not len(new_keys):
        return (new_keys, new_sums) if not len(keys) else (keys, sums)
    encoded, merged_sums = merge_sorted(_sortable(keys), sums, _sortable(new_keys), new_sums)
    return _unsortable(encoded, keys.shape[1]), merged_sums


def _empty(width: int, sums: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    return np.zeros((0, width), np.int64), np.zeros((0, sums), np.uint64)


@dataclass(slots=True)
class HostSums:
    """One window's host statistics, every part sorted by its key columns and unique:

    ``hosts`` (host hi, lo) → ``COLUMNS`` sums; ``partners`` (host hi, lo, partner hi, lo);
    ``ports`` (host hi, lo, port) → flows, packets, bytes, sent rows. Addresses are the signed
    big-endian halves of the flow files.
    """

    hosts: npt.NDArray[np.int64]
    host_sums: npt.NDArray[np.uint64]
    partners: npt.NDArray[np.int64]
    ports: npt.NDArray[np.int64]
    port_sums: npt.NDArray[np.uint64]

    @classmethod
    def empty(cls) -> HostSums:
        hosts, host_sums = _empty(2, _WIDTH)
        ports, port_sums = _empty(3, 4)
        return cls(hosts, host_sums, _empty(4, 0)[0], ports, port_sums)

    @classmethod
    def of_rows(cls, keys: npt.NDArray[np.int64], sums: npt.NDArray[np.uint64]) -> HostSums:
        """From partial rows: ``keys`` (host hi, lo, partner hi, lo, port, sent), ``sums``
        (flows, packets, bytes, duration, the flags) as uint64."""
        sent = keys[:, 5] != 0
        host_sums = np.zeros((len(keys), _WIDTH), np.uint64)
        side = np.where(sent, 0, 3)  # received sums go 3 columns further
        for column in range(3):  # flows, packets, bytes
            host_sums[np.arange(len(keys)), side + column] = sums[:, column]
        host_sums[:, 6:] = sums[:, 3:]  # duration, then the flags
        hosts = grouped_rows(np.ascontiguousarray(keys[:, :2]), host_sums)
        partners = grouped_rows(np.ascontiguousarray(keys[:, :4]), np.zeros((len(keys), 0), np.uint64))[0]
        port_sums = np.concatenate([sums[:, :3], sent[:, None].astype(np.uint64)], axis=1)
        ports = grouped_rows(np.ascontiguousarray(keys[:, [0, 1, 4]]), port_sums)
        return cls(hosts[0], hosts[1], partners, ports[0], ports[1])

    def merged(self, other: HostSums) -> HostSums:
        """The union of both (``self`` and ``other`` are left as they are)."""
        hosts = _merged(self.hosts, self.host_sums, other.hosts, other.host_sums)
        no_sums = np.zeros((len(self.partners), 0), np.uint64)
        partners = _merged(self.partners, no_sums, other.partners, np.zeros((len(other.partners), 0), np.uint64))[0]
        ports = _merged(self.ports, self.port_sums, other.ports, other.port_sums)
        return HostSums(hosts[0], hosts[1], partners, ports[0], ports[1])

    def __len__(self) -> int:
        return len(self.hosts)

    # files ---------------------------------------------------------------------------------------
    def save(self, target: Path) -> None:
        """Writes atomically (a crash leaves the old version or the new one, never half a file)."""
        save_arrays(target, hosts=self.hosts, host_sums=self.host_sums, partners=self.partners, ports=self.ports,
                    port_sums=self.port_sums)

    @classmethod
    def load(cls, source: Path) -> HostSums:
        with np.load(source) as saved:
            return cls(saved["hosts"].astype(np.int64), saved["host_sums"].astype(np.uint64),
                       saved["partners"].astype(np.int64), saved["ports"].astype(np.int64),
                       saved["port_sums"].astype(np.uint64))


def rolled_up_hosts(table: Any, intervals_ms: list[int]) -> dict[tuple[int, int], HostSums]:
    """The batch's host partial rows (an Arrow table of ``host_partials``) per window of every length."""
    if table.num_rows == 0:
        return {}
    column = {name: table.column(name).to_numpy().astype(np.int64) for name in (*HOST_KEY, *HOST_SUMS)}
    keys = np.stack([column[name] for name in HOST_KEY[1:]], axis=1)
    with np.errstate(over="ignore"):
        joined = [(column[f"{name}_hi"].astype(np.uint64) << np.uint64(32)) + column[f"{name}_lo"].astype(np.uint64)
                  for name in ("packets", "bytes")]
    sums = np.stack([column["flows"].astype(np.uint64), *joined,
                     *(column[name].astype(np.uint64) for name in ("duration_ms", *FLAG_NAMES))], axis=1)
    found: dict[tuple[int, int], HostSums] = {}
    for interval in intervals_ms:
        starts = column["start_ms"] - column["start_ms"] % interval
        for start in np.unique(starts).tolist():
            rows = starts == start
            found[(interval, int(start))] = HostSums.of_rows(keys[rows], sums[rows])
    return found


# -- the driver: the ``hosts`` section of a window ------------------------------------------------

def _unsigned(keys: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    return keys[:, 0].view(np.uint64), keys[:, 1].view(np.uint64)


def _host_index(hosts: npt.NDArray[np.int64], keys: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """For each (hi, lo) row of ``keys`` (sorted, each present in ``hosts``), its row in ``hosts``
    (sorted, unique): one binary search per distinct host of ``keys``."""
    if not len(keys):
        return np.zeros(0, np.intp)
    new = np.ones(len(keys), np.bool_)
    new[1:] = (keys[1:, 0] != keys[:-1, 0]) | (keys[1:, 1] != keys[:-1, 1])
    starts = np.flatnonzero(new)
    rows = np.searchsorted(_sortable(hosts), _sortable(np.ascontiguousarray(keys[starts, :2])))
    found: npt.NDArray[np.intp] = np.repeat(rows, np.diff(np.append(starts, len(keys)))).astype(np.intp)
    return found


def _address(key: npt.NDArray[np.int64]) -> bytes:
    return struct.pack(">qq", int(key[0]), int(key[1]))


def host_section(state: HostSums, spec: StatsSpec, watched: list[bytes]) -> dict[str, Any]:
    """The ``hosts`` section of a window (``aggregate.hosts.HostState.result``'s shape and rules).

    ``watched``: ``spark.hosts.watched_addresses`` (address order, the result's order).
    """
    hosts, sums = state.hosts, state.host_sums
    hi, lo = _unsigned(hosts)
    networks = compile_networks(tuple(spec.local_networks))
    local = networks.contains(hi, lo)
    partners = np.bincount(_host_index(hosts, state.partners[:, :2]), minlength=len(hosts))
    sent_ports = state.ports[state.port_sums[:, 3] > 0]
    dst_ports = np.bincount(_host_index(hosts, sent_ports[:, :2]), minlength=len(hosts))
    port_host = _host_index(hosts, state.ports[:, :2])  # non-decreasing: both sorted by host first

    def describe(row: int, exact: bool) -> dict[str, Any]:
        first, last = np.searchsorted(port_host, row, "left"), np.searchsorted(port_host, row, "right")
        ports, values = state.ports[first:last, 2], state.port_sums[first:last]
        order = np.lexsort((ports, ~values[:, 0]))[:HOST_TOP_PORTS]  # flows descending, then the lower port
        if exact:  # watched: flows, packets, bytes of every port it used
            top = [{"port": int(ports[i]), "flows": int(values[i, 0]), "packets": int(values[i, 1]),
                    "bytes": int(values[i, 2])} for i in order.tolist()]
        else:  # local: flows only, ports that counted a flow (the embedded summary's rule)
            top = [{"port": int(ports[i]), "flows": int(values[i, 0])} for i in order.tolist() if values[i, 0] > 0]
        return host_json(address_text(_address(hosts[row])), exact, [int(v) for v in sums[row].tolist()],
                         int(partners[row]), int(dst_ports[row]), top)

    top: dict[str, list[dict[str, Any]]] = {}
    for metric in RESULT_METRICS:
        columns = METRICS[metric]
        if columns:
            value = sums[:, list(columns)].sum(axis=1, dtype=np.uint64)
        else:
            value = (partners if metric == "partners" else dst_ports).astype(np.uint64)
        candidates = np.flatnonzero(local & (value > 0))
        order = np.lexsort((lo[candidates], hi[candidates], ~value[candidates]))[:spec.top_n]
        top[metric] = [describe(int(row), exact=False) for row in candidates[order].tolist()]
    section_watched = []
    if watched:
        present = host_set(tuple(watched)).contains(hash_halves(hi, lo), hi, lo)
        rows = {_address(hosts[row]): row for row in np.flatnonzero(present).tolist()}
        for address in watched:
            row = rows.get(address)
            section_watched.append(
                describe(row, exact=True) if row is not None
                else host_json(address_text(address), True, [0] * _WIDTH, 0, 0, []))
    return {"watched": section_watched, "local": {"hosts": int(local.sum()), "top": top}}
