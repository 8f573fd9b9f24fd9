"""The partial state of one window of one view, and how it turns into a result.

Everything here is mergeable: two states of adjacent windows (or of two collector processes) add
up to the state of their union, exactly. That is what lets a minute roll up from its seconds and
an hour from its minutes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.hosts import HostState
from flowscope.aggregate.keyed import KeyedSums, column_sums, top_indices
from flowscope.aggregate.stats import METRICS, PROTOCOL_CLASSES, TCP, UDP, StatsSpec
from flowscope.model import ExporterTable, address_text

PORTS = 65_536
_CLASS_OF_PROTOCOL = np.full(256, 3, np.intp)  # other
_CLASS_OF_PROTOCOL[TCP] = 0
_CLASS_OF_PROTOCOL[UDP] = 1
_CLASS_OF_PROTOCOL[1] = 2  # ICMP
_CLASS_OF_PROTOCOL[58] = 2  # ICMPv6 counts as ICMP


@dataclass(slots=True)
class Rows:
    """Flow rows attributed to one window: the columns the statistics read, counters already split."""

    protocol: npt.NDArray[np.uint8]
    src_port: npt.NDArray[np.uint16]
    dst_port: npt.NDArray[np.uint16]
    src_addr: npt.NDArray
    dst_addr: npt.NDArray
    exporter: npt.NDArray[np.uint32]
    tcp_flags: npt.NDArray[np.uint8]
    duration_ms: npt.NDArray[np.int64]
    flows: npt.NDArray[np.uint64]  # 1 for the row that counts the flow, else 0 (spread)
    packets: npt.NDArray[np.uint64]
    bytes: npt.NDArray[np.uint64]

    def __len__(self) -> int:
        return len(self.protocol)

    def take(self, index: npt.NDArray) -> Rows:
        return Rows(*(getattr(self, name)[index] for name in Rows.__slots__))

    def metrics(self) -> npt.NDArray[np.uint64]:
        return np.stack([self.flows, self.packets, self.bytes], axis=1)


def _add_rows(table: npt.NDArray[np.uint64], keys: npt.NDArray, metrics: npt.NDArray[np.uint64]) -> None:
    """Add ``metrics`` (rows × 3) into ``table`` (keys × 3) at the integer ``keys``, exactly in uint64.

    ``np.add.at`` on each column touches only the rows of the batch: a 65 536-slot histogram per
    batch (``bincount`` with ``minlength``) cost more than the batch itself.
    """
    for column in range(table.shape[1]):
        np.add.at(table[:, column], keys, metrics[:, column])


_WEB_CLASS = np.zeros(256, np.intp)  # offsets into the web table: 0 neither, then TCP, then UDP
_WEB_CLASS[TCP] = PORTS
_WEB_CLASS[UDP] = 2 * PORTS


@functools.cache
def _web_table(tcp_ports: tuple[int, ...], udp_ports: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Flat (protocol class × port) table: is this a web server port? Indexed by class | port."""
    table = np.zeros((3, PORTS), np.bool_)
    table[1, list(tcp_ports)] = True
    table[2, list(udp_ports)] = True
    return table.reshape(-1)


class TrafficState:
    """Totals, protocol split, exporters, top ports and web traffic of one window of one view."""

    def __init__(self, hosts: HostState | None = None) -> None:
        self.hosts = hosts  # host statistics: only the "all" view keeps them (memory)
        self.by_class = np.zeros((len(PROTOCOL_CLASSES), 3), np.uint64)
        self.exporters = KeyedSums(np.dtype(np.uint32), 3)
        self.tcp_ports = np.zeros((PORTS, 3), np.uint64)
        self.udp_ports = np.zeros((PORTS, 3), np.uint64)
        self.web = np.zeros(3, np.uint64)
        self.web_servers = KeyedSums("S16", 3)
        self.web_clients = KeyedSums("S16", 3)
        self.late_flows = 0

    # ----------------------------------------------------------------- update
    def update(self, rows: Rows, spec: StatsSpec) -> None:
        if len(rows) == 0:
            return
        metrics = rows.metrics()  # (rows × 3): flows, packets, bytes; built once per update
        _add_rows(self.by_class, _CLASS_OF_PROTOCOL[rows.protocol], metrics)
        self.exporters.add(rows.exporter, metrics)
        for protocol, histogram in ((TCP, self.tcp_ports), (UDP, self.udp_ports)):
            selected = np.flatnonzero(rows.protocol == protocol)
            if not len(selected):
                continue
            selected_metrics = np.take(metrics, selected, axis=0)  # 3× faster than metrics[selected]
            _add_rows(histogram, rows.dst_port[selected], selected_metrics)
            if spec.port_side == "either":
                # nfdump -s port: a flow counts for its source port too, also when both ports are the
                # same (nfdump adds each side unconditionally: such a flow counts twice for its port).
                _add_rows(histogram, rows.src_port[selected], selected_metrics)
        self._update_web(rows, metrics, spec)
        if self.hosts is not None:
            self.hosts.update(rows, spec)

    def _update_web(self, rows: Rows, all_metrics: npt.NDArray[np.uint64], spec: StatsSpec) -> None:
        # One lookup in a flat (protocol class, port) table instead of comparing against every
        # port; rows picked by index (gathers by a boolean mask were 3× slower).
        table = _web_table(spec.web.tcp_ports, spec.web.udp_ports)
        row_class = _WEB_CLASS[rows.protocol]
        to_server = table[row_class | rows.dst_port]
        from_server = table[row_class | rows.src_port]
        web = np.flatnonzero(to_server | from_server)
        if not len(web):
            return
        metrics = np.take(all_metrics, web, axis=0)
        self.web += column_sums(metrics)
        towards = to_server[web]
        source, destination = rows.src_addr[web], rows.dst_addr[web]
        self.web_servers.add(np.where(towards, destination, source), metrics)
        self.web_clients.add(np.where(towards, source, destination), metrics)

    # ------------------------------------------------------------------ merge
    def merge(self, other: TrafficState) -> None:
        self.by_class += other.by_class
        self.exporters.merge(other.exporters)
        self.tcp_ports += other.tcp_ports
        self.udp_ports += other.udp_ports
        self.web += other.web
        self.web_servers.merge(other.web_servers)
        self.web_clients.merge(other.web_clients)
        self.late_flows += other.late_flows
        if other.hosts is not None:
            if self.hosts is None:
                self.hosts = HostState()
            self.hosts.merge(other.hosts)

    # ------------------------------------------------------------- checkpoint
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("tcp_ports", "udp_ports"):  # sparse on disk: only the ports that were seen
            histogram = state.pop(name)
            used = np.flatnonzero(histogram.any(axis=1))
            state[name] = (used, histogram[used])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("tcp_ports", "udp_ports"):
            used, values = state.pop(name)
            histogram = np.zeros((PORTS, 3), np.uint64)
            histogram[used] = values
            state[name] = histogram
        self.__dict__.update(state)

    # ----------------------------------------------------------------- result
    def result(self, spec: StatsSpec, exporters: ExporterTable) -> dict[str, Any]:
        totals = self.by_class.sum(axis=0, dtype=np.uint64)
        return {
            "totals": {
                **_metrics(totals),
                "by_protocol": {name: _metrics(self.by_class[i]) for i, name in enumerate(PROTOCOL_CLASSES)},
                "by_exporter": self._exporters(exporters),
            },
            "top_ports": {
                "tcp": _top_ports(self.tcp_ports, spec.top_n),
                "udp": _top_ports(self.udp_ports, spec.top_n),
            },
            "web": {
                **_metrics(self.web),
                "top_servers": _top_addresses(self.web_servers, spec.top_n),
                "top_clients": _top_addresses(self.web_clients, spec.top_n),
            },
            "late_flows": self.late_flows,
            **({"hosts": self.hosts.result(spec)} if self.hosts is not None else {}),
        }

    def _exporters(self, exporters: ExporterTable) -> list[dict[str, Any]]:
        self.exporters.compact()
        result = []
        for index, sums in zip(self.exporters.keys.tolist(), self.exporters.sums, strict=True):
            address, domain = exporters.key_of(index) if index < len(exporters) else ("?", 0)
            result.append({"exporter": address, "domain": domain, **_metrics(sums)})
        return result


def _metrics(values: npt.NDArray[np.uint64]) -> dict[str, int]:
    return {name: int(values[i]) for i, name in enumerate(METRICS)}


def _top_ports(histogram: npt.NDArray[np.uint64], n: int) -> dict[str, list[dict[str, int]]]:
    """Top n ports by each metric; ties go to the lower port number (documented rule)."""
    used = np.flatnonzero(histogram[:, 0] | histogram[:, 1] | histogram[:, 2])
    counts = histogram[used]
    result: dict[str, list[dict[str, int]]] = {}
    for column, metric in enumerate(METRICS):
        values = counts[:, column]
        result[metric] = [
            {"port": int(used[i]), **_metrics(counts[i])} for i in top_indices(values, n) if values[i] > 0
        ]
    return result


def _top_addresses(table: KeyedSums, n: int) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for column, metric in enumerate(METRICS):
        keys, sums = table.top(n, column)
        result[metric] = [
            {"address": address_text(bytes(k)), **_metrics(s)} for k, s in zip(keys, sums, strict=True)
        ]
    return result
