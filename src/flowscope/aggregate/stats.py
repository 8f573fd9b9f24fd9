"""The statistics, declared once: what is counted, over which flows, and how results look.

Both engines (embedded numpy, Spark) read these declarations; neither hard-codes a port list or
a top-N size. Metrics are always the triple (flows, packets, bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowscope.errors import ConfigError

METRICS: tuple[str, ...] = ("flows", "packets", "bytes")
PROTOCOL_CLASSES: tuple[str, ...] = ("tcp", "udp", "icmp", "other")
TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
PortSide = Literal["dst", "either"]


@dataclass(frozen=True, slots=True)
class WebSpec:
    """Which connections count as web traffic: a server port on either side of the flow."""

    tcp_ports: tuple[int, ...] = (80, 443, 8080, 8443)
    udp_ports: tuple[int, ...] = (443,)  # QUIC


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """A named subset of the traffic, by an nfdump-like filter, with its own totals and top ports."""

    name: str
    filter: str


@dataclass(frozen=True, slots=True)
class StatsSpec:
    top_n: int = 10
    port_side: PortSide = "dst"  # "dst": nfdump -s dstport; "either": nfdump -s port
    web: WebSpec = field(default_factory=WebSpec)
    local_networks: tuple[str, ...] = ()
    watched_hosts: tuple[str, ...] = ()
    views: tuple[ViewSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise ConfigError(f"stats.top_n: {self.top_n} must be at least 1")
        if self.port_side not in ("dst", "either"):
            raise ConfigError(f"stats.port_side: {self.port_side!r} must be 'dst' or 'either'")
        names = [v.name for v in self.views]
        if "all" in names:
            raise ConfigError("views: 'all' is the name of the unfiltered traffic; choose another")
        if len(set(names)) != len(names):
            raise ConfigError(f"views: duplicate view names in {names}")
        for port in (*self.web.tcp_ports, *self.web.udp_ports):
            if not 0 <= port <= 65_535:
                raise ConfigError(f"stats.web: {port} is not a port")

    @property
    def view_names(self) -> tuple[str, ...]:
        return ("all", *(v.name for v in self.views))
