"""A generator of realistic flow traffic, as ``FlowBatch`` columns, from a seeded numpy Generator.

The traffic of one site: ``local_hosts`` hosts of a local network talking to ``remote_hosts``
hosts elsewhere (and a few of them serving remote clients). Every choice is drawn per batch with
numpy, never per flow in Python:

* hosts: bounded Zipf popularity (exponent ``host_skew``) on both sides, ranks shuffled over the
  address space so the busiest host is not simply the first address;
* services: a web-heavy mix (``web_share`` of all flows to TCP 443/80/8080/8443 and UDP 443),
  DNS, SSH, NTP and mail, a Zipf-ranked tail of other service ports (``port_skew``),
  peer-to-peer flows between ephemeral ports, ICMP and other IP protocols (GRE, ESP, OSPF);
  each connection is seen as a request flow (client → server) or a response flow;
* sizes: heavy-tailed packets per flow (Lomax/Pareto II), bytes per packet by direction and
  service, durations growing with packets and capped by the active timeout, TCP flags by
  connection state, a DSCP mix, IPv6 for ``ipv6_share`` of the flows;
* times: flows end shortly before "now" (the send time), up to ``export_delay_ms`` earlier.

``RateSchedule`` describes how fast flows are due over time, with optional bursts
(``BurstSpec``, parsed from ``5x:2s:every30s``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from flowscope.errors import ConfigError
from flowscope.model import FLOW_COLUMNS, FlowBatch, ipv4_to_mapped

__all__ = [
    "WEB_SERVICES",
    "BurstSpec",
    "GeneratorConfig",
    "RateSchedule",
    "TrafficGenerator",
    "parse_burst",
    "zipf_probabilities",
]

TCP, UDP, ICMP, ICMPV6, GRE, ESP, OSPF = 6, 17, 1, 58, 47, 50, 89

# (protocol, port, share of web flows)
WEB_SERVICES: tuple[tuple[int, int, float], ...] = (
    (TCP, 443, 0.62),
    (TCP, 80, 0.18),
    (UDP, 443, 0.12),  # QUIC
    (TCP, 8080, 0.04),
    (TCP, 8443, 0.04),
)
# Named non-web services: (protocol, port, share of the non-web TCP/UDP flows)
_NAMED_SERVICES: tuple[tuple[int, int, float], ...] = (
    (UDP, 53, 0.40),
    (TCP, 22, 0.06),
    (UDP, 123, 0.04),
    (TCP, 993, 0.04),
    (TCP, 25, 0.03),
    (TCP, 53, 0.02),
)
_TAIL_SHARE = 0.26  # other well-known services, Zipf-ranked over the list below
_P2P_SHARE = 0.15  # ephemeral port to ephemeral port
_TAIL_SERVICES: tuple[tuple[int, int], ...] = (
    (TCP, 445), (TCP, 3389), (TCP, 587), (UDP, 5353), (TCP, 5222), (UDP, 3478), (TCP, 3306), (TCP, 5432),
    (UDP, 1194), (TCP, 143), (TCP, 110), (TCP, 995), (UDP, 51820), (TCP, 6379), (TCP, 1883), (TCP, 8000),
    (UDP, 5060), (TCP, 21), (TCP, 9200), (TCP, 27017), (TCP, 23), (UDP, 161), (UDP, 514), (TCP, 8888),
    (TCP, 9000), (UDP, 1900), (TCP, 636), (TCP, 389), (UDP, 67), (TCP, 465),
)
# ICMP type/code as nfdump stores it in the destination port: (IPv4 value, IPv6 value, share)
_ICMP_KINDS: tuple[tuple[int, int, float], ...] = (
    (8 << 8, 128 << 8, 0.45),  # echo request
    (0, 129 << 8, 0.35),  # echo reply
    ((3 << 8) | 3, (1 << 8) | 4, 0.10),  # port unreachable
    ((3 << 8) | 1, (1 << 8) | 3, 0.03),  # host / address unreachable
    (11 << 8, 3 << 8, 0.07),  # time exceeded
)
_OTHER_PROTOCOLS: tuple[tuple[int, float], ...] = ((GRE, 0.45), (ESP, 0.45), (OSPF, 0.10))
# TCP flags of multi-packet flows and of single-packet flows
_TCP_FLAGS: tuple[tuple[int, float], ...] = (
    (0x1B, 0.55), (0x1A, 0.10), (0x18, 0.12), (0x10, 0.08), (0x1F, 0.03), (0x16, 0.04), (0x13, 0.08),
)
_TCP_FLAGS_SINGLE: tuple[tuple[int, float], ...] = ((0x02, 0.45), (0x10, 0.25), (0x04, 0.15), (0x14, 0.10),
                                                    (0x12, 0.05))
_TOS: tuple[tuple[int, float], ...] = ((0x00, 0.88), (0x28, 0.04), (0xB8, 0.03), (0x48, 0.03), (0x20, 0.02))
_REMOTE_AS: tuple[int, ...] = (
    15169, 13335, 16509, 8075, 32934, 20940, 2906, 714, 54113, 3356, 174, 6939, 1299, 2914, 7922, 3320,
    12322, 4134, 16276, 24940, 14061, 63949, 46606, 36459, 13414, 19551, 396982, 22822, 8068, 6461,
)
_EPHEMERAL = (32_768, 61_000)  # Linux ip_local_port_range
_PRIVATE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
              "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24")
)


def zipf_probabilities(count: int, exponent: float) -> npt.NDArray[np.float64]:
    """P(rank k) ∝ 1 / k**exponent for k = 1..count (a bounded Zipf law)."""
    weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** exponent
    probabilities: npt.NDArray[np.float64] = weights / weights.sum()
    return probabilities


class _Sampler:
    """Draws indexes with given probabilities: inverse CDF sped up by a guide table.

    ``guide[j]`` is the index for u = j / M. A draw u in [j/M, (j+1)/M) whose bin lies inside
    one index takes it from the table; only draws in bins that straddle a CDF step use a binary
    search. The result is exactly ``searchsorted(cdf, u, "right")``, only faster (binary search
    over random queries is slow, even over a few dozen entries).
    """

    def __init__(self, probabilities: npt.NDArray[np.float64]) -> None:
        cdf = np.cumsum(probabilities, dtype=np.float64)
        self.cdf = cdf / cdf[-1]
        self.last = len(cdf) - 1
        self.bins = int(min(1 << 18, max(1 << 12, 4 * len(cdf))))
        steps = np.arange(self.bins + 1, dtype=np.float64) / self.bins
        self.guide = np.minimum(np.searchsorted(self.cdf, steps, side="right"), self.last)

    def __call__(self, rng: np.random.Generator, count: int) -> npt.NDArray[np.intp]:
        u = rng.random(count)
        bins = (u * self.bins).astype(np.intp)
        index: npt.NDArray[np.intp] = self.guide[bins]
        straddle = np.flatnonzero(index != self.guide[bins + 1])
        if len(straddle):
            index[straddle] = np.minimum(np.searchsorted(self.cdf, u[straddle], side="right"), self.last)
        return index


def _shares(table: tuple[tuple[int, float], ...]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    values = np.array([v for v, _ in table], np.int64)
    weights = np.array([w for _, w in table], np.float64)
    return values, weights / weights.sum()


_ICMP_SAMPLER = _Sampler(np.array([w for _, _, w in _ICMP_KINDS]))
_CHOICES: dict[tuple[tuple[int, float], ...], tuple[npt.NDArray[np.int64], _Sampler]] = {}


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    seed: int | None = None
    local_network: str = "10.0.0.0/16"
    local_hosts: int = 2_000
    remote_hosts: int = 50_000
    local_network_v6: str = "fd00:10::/64"
    remote_network_v6: str = "2001:db8::/32"
    host_skew: float = 1.1  # Zipf exponent of host popularity (both sides)
    port_skew: float = 1.2  # Zipf exponent of the tail of service ports
    web_share: float = 0.60  # flows with a web server (TCP 80/443/8080/8443, UDP 443)
    icmp_share: float = 0.02
    other_protocol_share: float = 0.01  # GRE, ESP, OSPF
    ipv6_share: float = 0.15
    local_server_share: float = 0.05  # connections where the server is a local host
    export_delay_ms: int = 2_000  # flows end up to this long before "now"
    active_timeout_ms: int = 60_000  # longest flow duration
    local_as: int = 64_512
    lan_interfaces: int = 4  # local hosts sit behind interfaces 1..N; the uplink is N + 1

    def __post_init__(self) -> None:
        try:
            local = ipaddress.ip_network(self.local_network)
            ipaddress.IPv6Network(self.local_network_v6)
            ipaddress.IPv6Network(self.remote_network_v6)
        except ValueError as error:
            raise ConfigError(f"local_network/local_network_v6/remote_network_v6: {error}") from None
        if local.version != 4:
            raise ConfigError(f"local_network: {self.local_network} is not an IPv4 network")
        if not 1 <= self.local_hosts <= local.num_addresses - 2:
            raise ConfigError(f"local_hosts: {self.local_hosts} does not fit {self.local_network}")
        if not 1 <= self.remote_hosts <= 50_000_000:
            raise ConfigError(f"remote_hosts: {self.remote_hosts} must be within 1-50000000")
        for name in ("web_share", "icmp_share", "other_protocol_share", "ipv6_share", "local_server_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: {getattr(self, name)} is not a share within 0-1")
        if self.web_share + self.icmp_share + self.other_protocol_share > 1.0:
            raise ConfigError("web_share + icmp_share + other_protocol_share must not exceed 1")
        if self.host_skew <= 0 or self.port_skew <= 0:
            raise ConfigError("host_skew and port_skew must be > 0")
        if self.export_delay_ms < 0 or self.active_timeout_ms < 0:
            raise ConfigError("export_delay_ms and active_timeout_ms must be >= 0")
        if not 1 <= self.lan_interfaces <= 1000:
            raise ConfigError(f"lan_interfaces: {self.lan_interfaces} must be within 1-1000")


@dataclass(slots=True)
class _Tables:
    """Per-generator constants drawn once from the seed: addresses, AS numbers, distributions."""

    local_addresses: npt.NDArray  # S16: IPv4-mapped of each local host, then its IPv6 address
    remote_addresses: npt.NDArray  # S16: the same for the remote hosts
    remote_as: npt.NDArray[np.uint32]
    local: _Sampler  # host popularity ranks → index into local_v4 / local_v6
    remote: _Sampler
    service_protocol: npt.NDArray[np.int64]  # -1 = peer-to-peer, 0 = ICMP, -2 = other protocol
    service_port: npt.NDArray[np.int64]
    service: _Sampler
    web_count: int  # services[:web_count] are the web services


class TrafficGenerator:
    """Seeded, deterministic: the same config and the same calls give the same flows."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = config or GeneratorConfig()
        self._rng = np.random.default_rng(self.config.seed)
        self._tables: _Tables | None = None

    # ------------------------------------------------------------------ tables
    def _build_tables(self) -> _Tables:
        config, rng = self.config, self._rng
        local = ipaddress.IPv4Network(config.local_network)
        offsets = rng.permutation(local.num_addresses - 2)[: config.local_hosts] + 1
        local_v4 = (int(local.network_address) + offsets).astype(np.uint32)
        local_v6 = _v6_addresses(config.local_network_v6, offsets.astype(np.uint64))
        remote_v4 = _public_v4(rng, config.remote_hosts, local)
        remote_v6 = _v6_addresses(config.remote_network_v6,
                                  rng.integers(1, 1 << 62, config.remote_hosts, dtype=np.uint64))
        as_index = _Sampler(zipf_probabilities(len(_REMOTE_AS), 1.0))(rng, config.remote_hosts)
        remote_as = np.array(_REMOTE_AS, np.uint32)[as_index]

        protocols: list[int] = []
        ports: list[int] = []
        weights: list[float] = []
        for protocol, port, share in WEB_SERVICES:
            protocols.append(protocol)
            ports.append(port)
            weights.append(config.web_share * share)
        rest = 1.0 - config.web_share - config.icmp_share - config.other_protocol_share
        named_total = sum(share for _, _, share in _NAMED_SERVICES)
        scale = rest / (named_total + _TAIL_SHARE + _P2P_SHARE)
        for protocol, port, share in _NAMED_SERVICES:
            protocols.append(protocol)
            ports.append(port)
            weights.append(share * scale)
        tail = zipf_probabilities(len(_TAIL_SERVICES), config.port_skew)
        for (protocol, port), share in zip(_TAIL_SERVICES, tail, strict=True):
            protocols.append(protocol)
            ports.append(port)
            weights.append(float(share) * _TAIL_SHARE * scale)
        protocols += [-1, 0, -2]
        ports += [0, 0, 0]
        weights += [_P2P_SHARE * scale, config.icmp_share, config.other_protocol_share]
        return _Tables(
            local_addresses=np.concatenate([ipv4_to_mapped(local_v4), local_v6]),
            remote_addresses=np.concatenate([ipv4_to_mapped(remote_v4), remote_v6]),
            remote_as=remote_as,
            local=_Sampler(zipf_probabilities(config.local_hosts, config.host_skew)),
            remote=_Sampler(zipf_probabilities(config.remote_hosts, config.host_skew)),
            service_protocol=np.array(protocols, np.int64),
            service_port=np.array(ports, np.int64),
            service=_Sampler(np.array(weights)),
            web_count=len(WEB_SERVICES),
        )

    def _choice(self, table: tuple[tuple[int, float], ...], count: int) -> npt.NDArray[np.int64]:
        choice = _CHOICES.get(table)
        if choice is None:
            values, probabilities = _shares(table)
            choice = _CHOICES[table] = (values, _Sampler(probabilities))
        chosen: npt.NDArray[np.int64] = choice[0][choice[1](self._rng, count)]
        return chosen

    # ------------------------------------------------------------------- flows
    def flows(self, count: int, now_ms: int) -> FlowBatch:
        """``count`` flows that ended at most ``export_delay_ms`` before ``now_ms``."""
        if self._tables is None:
            self._tables = self._build_tables()
        tables, config, rng = self._tables, self.config, self._rng
        if count <= 0:
            return FlowBatch.empty()

        service = tables.service(rng, count)
        kind = tables.service_protocol[service]
        port = tables.service_port[service]
        p2p = kind == -1
        icmp = kind == 0
        other = kind == -2
        protocol = np.where(p2p, np.where(rng.random(count) < 0.5, TCP, UDP), kind)
        protocol = np.where(icmp, ICMP, protocol)
        other_protocol = self._choice(_OTHER_PROTOCOLS, count)
        protocol = np.where(other, other_protocol, protocol)
        ported = ~(icmp | other)
        server_port = np.where(p2p, rng.integers(*_EPHEMERAL, count), port)
        client_port = rng.integers(*_EPHEMERAL, count)

        ipv6 = rng.random(count) < config.ipv6_share
        local_index = tables.local(rng, count)
        remote_index = tables.remote(rng, count)
        local_addr = tables.local_addresses[local_index + ipv6 * config.local_hosts]
        remote_addr = tables.remote_addresses[remote_index + ipv6 * config.remote_hosts]

        server_local = rng.random(count) < config.local_server_share
        response = rng.random(count) < 0.5  # the flow goes from the server to the client
        src_local = server_local == response  # server local and response, or client local and request
        src_addr = np.where(src_local, local_addr, remote_addr)
        dst_addr = np.where(src_local, remote_addr, local_addr)
        src_port = np.where(ported, np.where(response, server_port, client_port), 0)
        dst_port = np.where(ported, np.where(response, client_port, server_port), 0)

        icmp_kind = _ICMP_SAMPLER(rng, count)
        icmp_v4 = np.array([k[0] for k in _ICMP_KINDS], np.int64)[icmp_kind]
        icmp_v6 = np.array([k[1] for k in _ICMP_KINDS], np.int64)[icmp_kind]
        dst_port = np.where(icmp, np.where(ipv6, icmp_v6, icmp_v4), dst_port)
        protocol = np.where(icmp & ipv6, ICMPV6, protocol)

        # Packets: heavy tail; DNS/NTP/ICMP short, web and P2P responses long.
        web = service < tables.web_count
        scale = np.where(web | p2p, 6.0, np.where(protocol == TCP, 3.0, 0.4))
        scale = np.where(response, scale * 1.5, scale)
        packets = 1 + np.floor(rng.pareto(1.15, count) * scale)
        packets = np.minimum(packets, 5_000_000).astype(np.uint64)
        # Bytes per packet: small requests (acks), large responses; IPv6 headers 20 bytes more.
        mean_size = np.where(response & (web | p2p), rng.uniform(700, 1500, count), rng.uniform(52, 400, count))
        mean_size = np.where(icmp | (port == 53) | (port == 123), rng.uniform(60, 180, count), mean_size)
        mean_size = mean_size + np.where(ipv6, 20, 0)
        octets = np.maximum(np.round(packets * mean_size), packets * 40).astype(np.uint64)

        gap_ms = np.exp(rng.normal(1.5, 1.5, count))
        duration = np.where(packets > 1, (packets - 1).astype(np.float64) * gap_ms, 0.0)
        duration = np.minimum(duration, config.active_timeout_ms).astype(np.int64)
        end = now_ms - rng.integers(0, config.export_delay_ms + 1, count)
        start = end - duration

        flags_multi = self._choice(_TCP_FLAGS, count)
        flags_single = self._choice(_TCP_FLAGS_SINGLE, count)
        flags = np.where(packets > 1, flags_multi, flags_single)
        flags = np.where(protocol == TCP, flags, 0)
        tos = self._choice(_TOS, count)

        lan_if = (local_index % config.lan_interfaces + 1).astype(np.uint32)
        wan_if = np.uint32(config.lan_interfaces + 1)
        remote_as = tables.remote_as[remote_index]
        local_as = np.uint32(config.local_as)

        columns: dict[str, npt.NDArray] = {
            "time_received": np.full(count, now_ms, np.int64),
            "time_start": start.astype(np.int64),
            "time_end": end.astype(np.int64),
            "exporter": np.zeros(count, np.uint32),
            "src_addr": src_addr,
            "dst_addr": dst_addr,
            "src_port": src_port.astype(np.uint16),
            "dst_port": dst_port.astype(np.uint16),
            "protocol": protocol.astype(np.uint8),
            "tcp_flags": flags.astype(np.uint8),
            "tos": tos.astype(np.uint8),
            "packets": packets,
            "bytes": octets,
            "in_if": np.where(src_local, lan_if, wan_if).astype(np.uint32),
            "out_if": np.where(src_local, wan_if, lan_if).astype(np.uint32),
            "src_as": np.where(src_local, local_as, remote_as).astype(np.uint32),
            "dst_as": np.where(src_local, remote_as, local_as).astype(np.uint32),
            "sampling_rate": np.ones(count, np.uint32),
        }
        return FlowBatch({name: columns[name].astype(dtype, copy=False) for name, dtype in FLOW_COLUMNS.items()})


def _public_v4(rng: np.random.Generator, count: int, local: ipaddress.IPv4Network) -> npt.NDArray[np.uint32]:
    """``count`` distinct unicast addresses outside private, reserved and the local ranges."""
    excluded = (*_PRIVATE_V4, local)
    found = np.zeros(0, np.uint32)
    while len(found) < count:
        draw = rng.integers(1 << 24, 224 << 24, 2 * (count - len(found)) + 64, dtype=np.uint64).astype(np.uint32)
        keep = np.ones(len(draw), bool)
        for network in excluded:
            mask = np.uint32(int(network.netmask))
            keep &= (draw & mask) != np.uint32(int(network.network_address))
        found = np.concatenate([found, draw[keep]])
        _, first = np.unique(found, return_index=True)
        found = found[np.sort(first)]
    return found[:count]


def _v6_addresses(network: str, host_ids: npt.NDArray[np.uint64]) -> npt.NDArray:
    """Addresses of a /64-or-shorter network with the given 64-bit interface identifiers."""
    prefix = np.frombuffer(ipaddress.IPv6Network(network).network_address.packed[:8], np.uint8)
    out = np.empty((len(host_ids), 16), np.uint8)
    out[:, :8] = prefix
    out[:, 8:] = host_ids.astype(">u8").view(np.uint8).reshape(-1, 8)
    return out.view("S16").reshape(-1)


# ----------------------------------------------------------------------------- rate and bursts
@dataclass(frozen=True, slots=True)
class BurstSpec:
    """``multiplier`` times the base rate for ``duration_s`` at the start of every ``period_s``.

    The first burst starts after one quiet period (at ``period_s``), so a run shows the base rate
    first.
    """

    multiplier: float
    duration_s: float
    period_s: float

    def __post_init__(self) -> None:
        if self.multiplier <= 0:
            raise ConfigError(f"burst: multiplier {self.multiplier} must be > 0")
        if not 0 < self.duration_s <= self.period_s:
            raise ConfigError(f"burst: duration {self.duration_s}s must be > 0 and <= the period {self.period_s}s")


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|min|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(text: str) -> float:
    """``500ms``, ``2s``, ``2``, ``1.5m``, ``1h`` → seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"duration: {text!r} is not a duration (e.g. 500ms, 2s, 1m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_burst(text: str) -> BurstSpec:
    """``5x:2s:every30s`` (or ``5x:2s:30s``): 5 times the rate for 2 s every 30 s."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].lower().endswith("x"):
        raise ConfigError(f"burst: {text!r} is not MULTIPLIERx:DURATION:everyPERIOD (e.g. 5x:2s:every30s)")
    try:
        multiplier = float(parts[0][:-1])
    except ValueError:
        raise ConfigError(f"burst: {parts[0]!r} is not a multiplier (e.g. 5x)") from None
    period = parts[2].strip()
    if period.lower().startswith("every"):
        period = period[5:]
    return BurstSpec(multiplier, parse_duration_s(parts[1]), parse_duration_s(period))


@dataclass(frozen=True, slots=True)
class RateSchedule:
    """How many flows are due after ``t`` seconds, and when the n-th flow is due."""

    rate: float  # flows per second outside bursts
    burst: BurstSpec | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"rate: {self.rate} must be > 0 flows/s")

    def _burst_elapsed(self, t: float) -> float:
        burst = self.burst
        assert burst is not None
        period = math.floor(t / burst.period_s)
        return max(0.0, period * burst.duration_s + min(t - period * burst.period_s, burst.duration_s)
                   - burst.duration_s)

    def flows_due(self, t: float) -> float:
        if t <= 0:
            return 0.0
        if self.burst is None:
            return self.rate * t
        return self.rate * (t + (self.burst.multiplier - 1.0) * self._burst_elapsed(t))

    def time_for(self, flows: float) -> float:
        """The time at which ``flows_due`` reaches ``flows`` (its inverse)."""
        if flows <= 0:
            return 0.0
        rate, burst = self.rate, self.burst
        if burst is None or flows <= rate * burst.period_s:
            return flows / rate
        rest = flows - rate * burst.period_s
        per_period = rate * (burst.period_s + (burst.multiplier - 1.0) * burst.duration_s)
        periods = math.floor(rest / per_period)
        rest -= periods * per_period
        start = burst.period_s * (periods + 1)
        in_burst = rate * burst.multiplier * burst.duration_s
        if rest <= in_burst:
            return start + rest / (rate * burst.multiplier)
        return start + burst.duration_s + (rest - in_burst) / rate

    def rate_at(self, t: float) -> float:
        burst = self.burst
        if burst is None or t < burst.period_s:
            return self.rate
        return self.rate * burst.multiplier if t % burst.period_s < burst.duration_s else self.rate
