"""The traffic generator (seeded, Zipf hosts and ports, web-heavy mix) and the rate schedule with bursts."""

from __future__ import annotations

import ipaddress
import math

import numpy as np
import pytest

from flowscope.errors import ConfigError
from flowscope.model import FLOW_COLUMNS, IPV4_MAPPED_PREFIX, FlowBatch, addresses_text
from flowscope.tools.generate import (
    BurstSpec,
    GeneratorConfig,
    RateSchedule,
    TrafficGenerator,
    parse_burst,
    parse_duration_s,
    zipf_probabilities,
)

NOW_MS = 1_722_000_000_000
WEB_TCP = [80, 443, 8080, 8443]


def generate(count: int = 100_000, **overrides: object) -> FlowBatch:
    config = GeneratorConfig(**{"seed": 42, **overrides})  # type: ignore[arg-type]
    return TrafficGenerator(config).flows(count, NOW_MS)


@pytest.fixture(scope="module")
def flows() -> FlowBatch:
    return generate()


def web_mask(batch: FlowBatch) -> np.ndarray:
    protocol, src, dst = batch["protocol"], batch["src_port"], batch["dst_port"]
    tcp_web = (protocol == 6) & (np.isin(src, WEB_TCP) | np.isin(dst, WEB_TCP))
    quic = (protocol == 17) & ((src == 443) | (dst == 443))
    return tcp_web | quic


def is_v4(column: np.ndarray) -> np.ndarray:
    raw = np.ascontiguousarray(column).view(np.uint8).reshape(-1, 16)
    return (raw[:, :12] == np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)).all(axis=1)


def v4_values(column: np.ndarray) -> np.ndarray:
    raw = np.ascontiguousarray(column).view(np.uint8).reshape(-1, 16)
    return raw[:, 12:].copy().view(">u4").reshape(-1).astype(np.uint32)


def test_columns_are_the_canonical_flowbatch_columns(flows: FlowBatch) -> None:
    assert list(flows.columns) == list(FLOW_COLUMNS)
    for name, dtype in FLOW_COLUMNS.items():
        assert flows[name].dtype == dtype, name
        assert len(flows[name]) == 100_000


def test_same_seed_same_flows_other_seed_other_flows() -> None:
    first = TrafficGenerator(GeneratorConfig(seed=5))
    second = TrafficGenerator(GeneratorConfig(seed=5))
    for count in (1000, 37, 5000):  # the same sequence of calls
        a, b = first.flows(count, NOW_MS), second.flows(count, NOW_MS)
        for name in FLOW_COLUMNS:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    other = TrafficGenerator(GeneratorConfig(seed=6)).flows(1000, NOW_MS)
    again = TrafficGenerator(GeneratorConfig(seed=5)).flows(1000, NOW_MS)
    assert not np.array_equal(other["src_addr"], again["src_addr"])
    assert not np.array_equal(other["bytes"], again["bytes"])


def test_host_popularity_is_zipf_skewed(flows: FlowBatch) -> None:
    local = np.where(is_v4(flows["src_addr"]) & (v4_values(flows["src_addr"]) >> 16 == 0x0A00),
                     flows["src_addr"], flows["dst_addr"])
    hosts, counts = np.unique(local, return_counts=True)
    per_host = np.sort(counts)[::-1]
    assert per_host[0] > 50 * np.median(per_host)
    # rank 1 vs rank 10 close to 10**1.1 (hosts are dual-stack: v4 and v6 flows are split)
    ratio = per_host[0] / per_host[9]
    assert 7 < ratio < 20
    # the busiest host is not simply the first address of the network
    assert addresses_text(hosts[np.argmax(counts) : np.argmax(counts) + 1]) != ["10.0.0.1"]


def test_web_share_follows_the_configuration(flows: FlowBatch) -> None:
    assert 0.58 <= web_mask(flows).mean() <= 0.62
    for share in (0.2, 0.8):
        assert share - 0.02 <= web_mask(generate(50_000, web_share=share)).mean() <= share + 0.02


def test_protocol_mix_and_ports_look_like_a_site(flows: FlowBatch) -> None:
    protocol = flows["protocol"]
    tcp, udp = (protocol == 6).mean(), (protocol == 17).mean()
    icmp = np.isin(protocol, (1, 58)).mean()
    other = 1 - tcp - udp - icmp
    assert 0.6 < tcp < 0.8 and 0.2 < udp < 0.35
    assert 0.015 < icmp < 0.025 and 0.005 < other < 0.015
    assert set(np.unique(protocol[~np.isin(protocol, (1, 6, 17, 58))]).tolist()) == {47, 50, 89}
    server_ports = np.where(flows["src_port"] < flows["dst_port"], flows["src_port"], flows["dst_port"])
    tcp_ports, tcp_counts = np.unique(server_ports[protocol == 6], return_counts=True)
    top_tcp = tcp_ports[np.argsort(tcp_counts)[::-1][:4]].tolist()
    assert top_tcp[:2] == [443, 80]
    udp_ports, udp_counts = np.unique(server_ports[protocol == 17], return_counts=True)
    assert udp_ports[np.argsort(udp_counts)[::-1][:2]].tolist() == [53, 443]
    assert ((protocol == 6) & (server_ports == 22)).sum() > 500  # SSH present
    # clients use ephemeral ports
    client = np.where(flows["src_port"] < flows["dst_port"], flows["dst_port"], flows["src_port"])
    assert (client[np.isin(protocol, (6, 17))] >= 32768).all()


def test_icmp_types_sit_in_the_destination_port_and_v6_uses_icmpv6(flows: FlowBatch) -> None:
    protocol = flows["protocol"]
    icmp4, icmp6 = protocol == 1, protocol == 58
    assert set(np.unique(flows["dst_port"][icmp4]).tolist()) <= {0x0800, 0x0000, 0x0303, 0x0301, 0x0B00}
    assert set(np.unique(flows["dst_port"][icmp6]).tolist()) <= {0x8000, 0x8100, 0x0104, 0x0103, 0x0300}
    assert is_v4(flows["src_addr"][icmp4]).all() and not is_v4(flows["src_addr"][icmp6]).any()
    assert not flows["src_port"][icmp4 | icmp6].any()


def test_ipv6_share_and_address_ranges(flows: FlowBatch) -> None:
    v4 = is_v4(flows["src_addr"])
    assert (v4 == is_v4(flows["dst_addr"])).all()  # no mixed families
    assert 0.14 <= (~v4).mean() <= 0.16
    local_net = ipaddress.IPv4Network("10.0.0.0/16")
    texts = addresses_text(np.concatenate([flows["src_addr"][v4][:2000], flows["dst_addr"][v4][:2000]]))
    addresses = [ipaddress.IPv4Address(t) for t in texts]
    local = [a for a in addresses if a in local_net]
    remote = [a for a in addresses if a not in local_net]
    assert local and remote
    assert all(a.is_global for a in remote)
    # every IPv4 flow has exactly one local end
    src_local = (v4_values(flows["src_addr"][v4]) >> 16) == 0x0A00
    dst_local = (v4_values(flows["dst_addr"][v4]) >> 16) == 0x0A00
    assert (src_local ^ dst_local).all()
    v6_texts = addresses_text(flows["src_addr"][~v4][:500])
    assert all(ipaddress.IPv6Address(t) in ipaddress.IPv6Network("fd00:10::/64")
               or ipaddress.IPv6Address(t) in ipaddress.IPv6Network("2001:db8::/32") for t in v6_texts)


def test_local_hosts_and_network_are_configurable() -> None:
    batch = generate(20_000, local_network="192.168.7.0/24", local_hosts=50, ipv6_share=0.0)
    values = np.concatenate([v4_values(batch["src_addr"]), v4_values(batch["dst_addr"])])
    local = values[(values >> 8) == (192 << 16 | 168 << 8 | 7)]
    assert len(np.unique(local)) == 50
    assert len(local) == 20_000


def test_sizes_are_heavy_tailed_and_consistent(flows: FlowBatch) -> None:
    packets, octets = flows["packets"], flows["bytes"]
    assert packets.min() >= 1
    assert np.percentile(packets, 99) > 20 * np.median(packets)
    assert packets.max() > 10_000
    assert (octets >= 40 * packets).all() and (octets <= 1520 * packets).all()
    top = np.sort(octets)[::-1]
    assert top[: len(top) // 100].sum() > 0.3 * top.sum()  # 1% of flows carry a large share of bytes


def test_times_durations_and_flags(flows: FlowBatch) -> None:
    start, end = flows["time_start"], flows["time_end"]
    assert (end <= NOW_MS).all() and (end >= NOW_MS - 2_000).all()
    duration = end - start
    assert (duration >= 0).all() and duration.max() <= 60_000
    assert (duration[flows["packets"] == 1] == 0).all()
    assert (duration[flows["packets"] > 1000] > 0).all()
    assert (flows["time_received"] == NOW_MS).all()
    tcp = flows["protocol"] == 6
    assert not flags_outside_tcp(flows) and (flows["tcp_flags"][tcp] > 0).all()
    syn_only = (flows["tcp_flags"] == 0x02) & tcp
    assert 0 < syn_only.mean() < 0.2 and (flows["packets"][syn_only] == 1).all()
    assert (flows["sampling_rate"] == 1).all()


def flags_outside_tcp(flows: FlowBatch) -> bool:
    return bool(flows["tcp_flags"][flows["protocol"] != 6].any())


def test_interfaces_and_as_numbers_follow_the_direction(flows: FlowBatch) -> None:
    v4 = is_v4(flows["src_addr"])
    outbound = (v4_values(flows["src_addr"]) >> 16 == 0x0A00) & v4
    assert (flows["out_if"][outbound] == 5).all() and (flows["in_if"][outbound] <= 4).all()
    assert (flows["src_as"][outbound] == 64_512).all() and (flows["dst_as"][outbound] != 64_512).all()
    inbound = ~outbound & v4
    assert (flows["in_if"][inbound] == 5).all() and (flows["dst_as"][inbound] == 64_512).all()


def test_zipf_probabilities() -> None:
    p = zipf_probabilities(1000, 1.0)
    assert math.isclose(p.sum(), 1.0)
    assert math.isclose(p[0] / p[9], 10.0)


def test_invalid_generator_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="local_hosts"):
        GeneratorConfig(local_network="10.0.0.0/24", local_hosts=300)
    with pytest.raises(ConfigError, match="web_share"):
        GeneratorConfig(web_share=1.5)
    with pytest.raises(ConfigError, match="local_network"):
        GeneratorConfig(local_network="fd00::/64")
    with pytest.raises(ConfigError, match="must not exceed 1"):
        GeneratorConfig(web_share=0.9, icmp_share=0.2)


# ----------------------------------------------------------------------------- bursts and schedule
def test_parse_burst_and_durations() -> None:
    assert parse_burst("5x:2s:every30s") == BurstSpec(5.0, 2.0, 30.0)
    assert parse_burst("2.5x:500ms:1m") == BurstSpec(2.5, 0.5, 60.0)
    assert parse_duration_s("1.5h") == 5400.0 and parse_duration_s("10") == 10.0
    for bad in ("5:2s:30s", "5x:2s", "x:1s:2s", "5x:40s:every30s", "5x:2q:30s"):
        with pytest.raises(ConfigError, match=r"burst|duration"):
            parse_burst(bad)


def test_schedule_without_bursts_is_linear() -> None:
    schedule = RateSchedule(50_000)
    assert schedule.flows_due(1.0) == 50_000
    assert schedule.time_for(25_000) == 0.5
    assert schedule.flows_due(-1) == 0


def test_schedule_bursts_multiply_the_rate_after_each_period() -> None:
    schedule = RateSchedule(100, BurstSpec(5.0, 2.0, 30.0))
    assert schedule.rate_at(10) == 100 and schedule.rate_at(31) == 500 and schedule.rate_at(33) == 100
    assert schedule.flows_due(30) == 3_000  # no burst in the first period
    assert schedule.flows_due(32) == 3_000 + 1_000
    assert schedule.flows_due(60) == 6_000 + 800
    assert schedule.flows_due(61) == 6_800 + 500
    for t in np.linspace(0.01, 200, 997):
        assert math.isclose(schedule.time_for(schedule.flows_due(float(t))), float(t), rel_tol=1e-9)
    with pytest.raises(ConfigError):
        RateSchedule(0)
