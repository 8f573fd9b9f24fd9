"""Host statistics: hand-computed cases, CIDR matching, merging, checkpoints, distinct counts."""

from __future__ import annotations

import ipaddress
import pickle
from typing import Any

import numpy as np
import pytest

from flowscope.aggregate.hostrows import BatchColumns, Sides
from flowscope.aggregate.hosts import (
    COMPACT_MIN,
    FLAG_NAMES,
    HostState,
    address_bytes,
    compile_networks,
)
from flowscope.aggregate.localhosts import LocalHosts
from flowscope.aggregate.sketch import split_addresses
from flowscope.aggregate.state import Rows
from flowscope.aggregate.stats import StatsSpec
from flowscope.errors import ConfigError

TCP, UDP, ICMP = 6, 17, 1
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = (1 << i for i in range(8))


def make_rows(flows: list[tuple[Any, ...]]) -> Rows:
    """Rows from (protocol, src, src_port, dst, dst_port, flags, duration_ms, packets, bytes[, flows])."""
    n = len(flows)
    column = list(zip(*flows, strict=True)) if flows else [()] * 9
    counted = column[9] if len(column) > 9 else (1,) * n
    return Rows(
        protocol=np.array(column[0], np.uint8),
        src_port=np.array(column[2], np.uint16),
        dst_port=np.array(column[4], np.uint16),
        src_addr=np.array([address_bytes(a) for a in column[1]], "S16"),
        dst_addr=np.array([address_bytes(a) for a in column[3]], "S16"),
        exporter=np.zeros(n, np.uint32),
        tcp_flags=np.array(column[5], np.uint8),
        duration_ms=np.array(column[6], np.int64),
        flows=np.array(counted, np.uint64),
        packets=np.array(column[7], np.uint64),
        bytes=np.array(column[8], np.uint64),
    )


def concat_rows(parts: list[Rows]) -> Rows:
    return Rows(*(np.concatenate([getattr(p, name) for p in parts]) for name in Rows.__slots__))


def flags(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in FLAG_NAMES}


# ------------------------------------------------------------------ hand-computed statistics

SPEC = StatsSpec(local_networks=("10.0.0.0/24", "2001:db8::/64"), watched_hosts=("192.0.2.10", "10.0.0.1"))

HAND_FLOWS = [
    # protocol, src, sport, dst, dport, flags, duration, packets, bytes
    (TCP, "10.0.0.1", 40000, "192.0.2.10", 443, FIN | SYN | PSH | ACK, 1000, 10, 1500),  # 1
    (TCP, "192.0.2.10", 443, "10.0.0.1", 40000, FIN | SYN | PSH | ACK, 900, 8, 6000),  # 2
    (TCP, "10.0.0.1", 40001, "198.51.100.7", 443, SYN | RST, 10, 2, 120),  # 3
    (UDP, "10.0.0.1", 5353, "10.0.0.2", 53, 0, 0, 1, 70),  # 4
    (UDP, "10.0.0.2", 53, "10.0.0.1", 5353, SYN, 0, 1, 130),  # 5: flags on UDP are ignored
    (TCP, "198.51.100.7", 50000, "2001:db8::5", 22, SYN | ACK | ECE | CWR, 5000, 30, 4000),  # 6
    (TCP, "10.0.0.1", 40002, "192.0.2.10", 80, ACK | URG, 200, 3, 300),  # 7
    (ICMP, "203.0.113.9", 0, "198.51.100.7", 0, 0, 40, 1, 84),  # 8: no tracked endpoint
]

# 10.0.0.1 sends 1, 3, 4, 7 and receives 2, 5. Partners: 192.0.2.10, 198.51.100.7, 10.0.0.2.
# Destination ports of what it sent: 443, 443, 53, 80 -> 3 distinct. Ports of all its flows
# (dst port): 443 x2 (flows 1, 3), 53, 80, 5353 (flow 5), 40000 (flow 2).
# TCP flags over flows 1, 2, 3, 7. Mean duration (1000 + 900 + 10 + 0 + 0 + 200) / 6.
HOST_10_0_0_1 = {
    "address": "10.0.0.1",
    "sent": {"flows": 4, "packets": 10 + 2 + 1 + 3, "bytes": 1500 + 120 + 70 + 300},
    "received": {"flows": 2, "packets": 8 + 1, "bytes": 6000 + 130},
    "partners": 3,
    "dst_ports": 3,
    "tcp_flags": flags(FIN=2, SYN=3, RST=1, PSH=2, ACK=3, URG=1),
    "mean_duration_ms": 2110 / 6,
}
HOST_10_0_0_1_PORTS = [
    {"port": 443, "flows": 2, "packets": 12, "bytes": 1620},
    {"port": 53, "flows": 1, "packets": 1, "bytes": 70},
    {"port": 80, "flows": 1, "packets": 3, "bytes": 300},
    {"port": 5353, "flows": 1, "packets": 1, "bytes": 130},
    {"port": 40000, "flows": 1, "packets": 8, "bytes": 6000},
]
# 192.0.2.10 (watched, not local) sends 2 and receives 1, 7.
HOST_192_0_2_10 = {
    "address": "192.0.2.10",
    "exact": True,
    "sent": {"flows": 1, "packets": 8, "bytes": 6000},
    "received": {"flows": 2, "packets": 13, "bytes": 1800},
    "partners": 1,
    "dst_ports": 1,
    "top_ports": [
        {"port": 80, "flows": 1, "packets": 3, "bytes": 300},
        {"port": 443, "flows": 1, "packets": 10, "bytes": 1500},
        {"port": 40000, "flows": 1, "packets": 8, "bytes": 6000},
    ],
    "tcp_flags": flags(FIN=2, SYN=2, PSH=2, ACK=3, URG=1),
    "mean_duration_ms": 700.0,
}
# 10.0.0.2 (local): sends 5, receives 4.
HOST_10_0_0_2 = {
    "address": "10.0.0.2",
    "exact": False,
    "sent": {"flows": 1, "packets": 1, "bytes": 130},
    "received": {"flows": 1, "packets": 1, "bytes": 70},
    "partners": 1,
    "dst_ports": 1,
    "top_ports": [{"port": 53, "flows": 1}, {"port": 5353, "flows": 1}],
    "tcp_flags": flags(),
    "mean_duration_ms": 0.0,
}
# 2001:db8::5 (local): receives 6.
HOST_2001_DB8_5 = {
    "address": "2001:db8::5",
    "exact": False,
    "sent": {"flows": 0, "packets": 0, "bytes": 0},
    "received": {"flows": 1, "packets": 30, "bytes": 4000},
    "partners": 1,
    "dst_ports": 0,
    "top_ports": [{"port": 22, "flows": 1}],
    "tcp_flags": flags(SYN=1, ACK=1, ECE=1, CWR=1),
    "mean_duration_ms": 5000.0,
}


@pytest.fixture
def hand_state() -> HostState:
    state = HostState()
    state.update(make_rows(HAND_FLOWS), SPEC)
    return state


def test_hand_computed_watched_hosts(hand_state: HostState) -> None:
    result = hand_state.result(SPEC)
    # Watched hosts in address order: 10.0.0.1 (::ffff:a00:1) < 192.0.2.10 (::ffff:c000:20a).
    assert [h["address"] for h in result["watched"]] == ["10.0.0.1", "192.0.2.10"]
    assert result["watched"][0] == {**HOST_10_0_0_1, "exact": True, "top_ports": HOST_10_0_0_1_PORTS}
    assert result["watched"][1] == HOST_192_0_2_10
    assert hand_state.lookup("192.0.2.10") == HOST_192_0_2_10


def test_hand_computed_local_hosts(hand_state: HostState) -> None:
    result = hand_state.result(SPEC, n=10)
    local = result["local"]
    assert local["hosts"] == 3
    local_10_0_0_1 = {
        **HOST_10_0_0_1, "exact": False, "top_ports": [{"port": p["port"], "flows": p["flows"]}
                                                      for p in HOST_10_0_0_1_PORTS],
    }
    assert local["top"]["flows"] == [local_10_0_0_1, HOST_10_0_0_2, HOST_2001_DB8_5]  # 6, 2, 1 flows
    assert [h["address"] for h in local["top"]["bytes"]] == ["10.0.0.1", "2001:db8::5", "10.0.0.2"]  # 8120, 4000, 200
    # 3 partners, then a tie at 1 partner: the lower address first (IPv4-mapped sorts first).
    assert [h["address"] for h in local["top"]["partners"]] == ["10.0.0.1", "10.0.0.2", "2001:db8::5"]
    assert hand_state.lookup("10.0.0.2") == HOST_10_0_0_2
    assert hand_state.lookup("2001:db8::5") == HOST_2001_DB8_5
    assert hand_state.lookup("198.51.100.7") is None  # seen, but neither local nor watched
    assert hand_state.lookup("203.0.113.9") is None
    assert [h["address"] for h in hand_state.top(2, "dst_ports")] == ["10.0.0.1", "10.0.0.2"]
    assert [h["address"] for h in hand_state.top(5, "flows_received")] == ["10.0.0.1", "10.0.0.2", "2001:db8::5"]
    assert [h["address"] for h in hand_state.top(5, "bytes_sent")] == ["10.0.0.1", "10.0.0.2"]  # zeros left out
    assert hand_state.top(0, "flows") == []


def test_watched_host_without_traffic_reports_zeros() -> None:
    state = HostState()
    spec = StatsSpec(watched_hosts=("2001:db8::99",))
    state.update(make_rows(HAND_FLOWS), spec)
    [host] = state.result(spec)["watched"]
    assert host["address"] == "2001:db8::99" and host["exact"]
    assert host["sent"] == host["received"] == {"flows": 0, "packets": 0, "bytes": 0}
    assert host["partners"] == 0 and host["top_ports"] == [] and host["mean_duration_ms"] is None
    assert state.result(spec)["local"] == {"hosts": 0, "top": {"flows": [], "bytes": [], "partners": []}}


def test_spread_rows_count_the_flow_once() -> None:
    # One flow split over two windows' rows: flows/duration/flags only on the row that counts it.
    rows = make_rows([
        (TCP, "10.0.0.1", 1000, "192.0.2.1", 443, SYN | ACK, 4000, 6, 600, 0),
        (TCP, "10.0.0.1", 1000, "192.0.2.1", 443, SYN | ACK, 4000, 4, 400, 1),
        (TCP, "10.0.0.1", 1001, "192.0.2.2", 8443, SYN, 100, 2, 200, 0),  # only its first share
    ])
    spec = StatsSpec(local_networks=("10.0.0.0/8",), watched_hosts=("10.0.0.1",))
    state = HostState()
    state.update(rows, spec)
    for host in (state.lookup("10.0.0.1"), state.result(spec)["watched"][0]):
        assert host is not None
        assert host["sent"] == {"flows": 1, "packets": 12, "bytes": 1200}
        assert host["partners"] == 2 and host["dst_ports"] == 2
        assert host["tcp_flags"] == flags(SYN=1, ACK=1)
        assert host["mean_duration_ms"] == 4000.0
        assert host["top_ports"][0]["port"] == 443 and host["top_ports"][0]["flows"] == 1
    local_ports = state.lookup("10.0.0.1", StatsSpec(local_networks=("10.0.0.0/8",)))
    assert local_ports is not None and local_ports["top_ports"] == [{"port": 443, "flows": 1}]


def test_local_host_top_ports_keep_the_heaviest() -> None:
    # 12 ports for one host (more than its 8 slots): counts are lower bounds, heavy ones stay.
    flows = []
    for port, count in [(443, 40), (80, 20), (53, 10)] + [(p, 1) for p in range(1000, 1009)]:
        flows += [(TCP, "10.0.0.7", 30000, "192.0.2.1", port, ACK, 1, 1, 60)] * count
    state = HostState()
    state.update(make_rows(flows), StatsSpec(local_networks=("10.0.0.0/8",)))
    host = state.lookup("10.0.0.7")
    assert host is not None
    top = host["top_ports"]
    assert [p["port"] for p in top[:3]] == [443, 80, 53]
    total = 79
    for port, exact in ((443, 40), (80, 20), (53, 10)):
        reported = next(p["flows"] for p in top if p["port"] == port)
        assert exact - total / 9 <= reported <= exact
    assert host["dst_ports"] == 12  # distinct ports stay exact


# ----------------------------------------------------------------------------------- CIDRs


def _member(networks: tuple[str, ...], addresses: list[str]) -> list[bool]:
    column = np.array([address_bytes(a) for a in addresses], "S16")
    return compile_networks(networks).contains(*split_addresses(column)).tolist()


def test_cidr_matching_ipv4() -> None:
    networks = ("10.0.0.0/8", "192.168.1.0/24", "192.168.2.0/24", "172.16.0.5/32", "10.1.0.0/16")
    addresses = ["10.0.0.0", "10.255.255.255", "11.0.0.0", "9.255.255.255", "192.168.1.77", "192.168.2.1",
                 "192.168.3.1", "172.16.0.5", "172.16.0.4", "::a00:1", "::ffff:10.1.2.3", "2001:db8::1"]
    # ::a00:1 is IPv4-compatible, not IPv4-mapped: not 10.0.0.1.
    assert _member(networks, addresses) == [True, True, False, False, True, True, False, True, False, False,
                                            True, False]


def test_cidr_matching_ipv6() -> None:
    networks = ("2001:db8::/64", "2001:db8:1::/48", "fe80::1/128", "::ffff:0:0/96")
    addresses = ["2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8:0:1::1", "2001:db8:1:ffff::9",
                 "2001:db8:2::1", "fe80::1", "fe80::2", "203.0.113.1", "::1"]
    # ::ffff:0:0/96 holds every IPv4 address.
    assert _member(networks, addresses) == [True, True, False, True, False, True, False, True, False]


def test_cidr_matching_many_networks_of_one_length() -> None:
    networks = tuple(f"10.{i}.{j}.0/24" for i in range(0, 40, 3) for j in range(0, 256, 7))
    rng = np.random.default_rng(1)
    octets = rng.integers(0, 256, (5000, 3))
    addresses = [f"10.{a}.{b}.{c}" for a, b, c in octets.tolist()]
    expected = [ipaddress.ip_address(a) in ipaddress.ip_network(f"10.{a.split('.')[1]}.{a.split('.')[2]}.0/24")
                and int(a.split(".")[1]) % 3 == 0 and int(a.split(".")[1]) < 40 and int(a.split(".")[2]) % 7 == 0
                for a in addresses]
    assert _member(networks, addresses) == expected
    assert sum(expected) > 20


def test_nested_networks_and_bad_input() -> None:
    networks = compile_networks(("10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"))
    assert len(networks.groups) == 1  # the /16 and the host are inside the /8
    with pytest.raises(ConfigError, match=r"local_networks.*'10\.0\.0\.0/33'"):
        compile_networks(("10.0.0.0/33",))
    with pytest.raises(ConfigError, match="watched_hosts"):
        HostState().update(make_rows(HAND_FLOWS), StatsSpec(watched_hosts=("not-an-address",)))
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        HostState().watch("10.0.0.256")
    with pytest.raises(ValueError, match="unknown host metric"):
        HostState().top(3, "colour")


# ------------------------------------------------------------------- random traffic, merges


def random_rows(rng: np.random.Generator, count: int, hosts: int = 3000) -> Rows:
    """Random flows between local hosts (10.0.0.0/16, 2001:db8::/64) and external partners.

    Host 10.0.0.1 talks to ~15 000 partners (a promoted HyperLogLog set); host 10.0.0.2
    contacts ~3 000 distinct ports (a promoted bitmap); the rest are small.
    """
    local_index = rng.integers(3, hosts, count)
    heavy = rng.random(count)
    local_index[heavy < 0.25] = 1
    local_index[(heavy >= 0.25) & (heavy < 0.35)] = 2
    v6 = local_index % 5 == 0
    raw_local = np.zeros((count, 16), np.uint8)
    raw_local[:, 10:12] = 0xFF
    raw_local[:, 12:14] = [10, 0]
    raw_local[:, 14:] = local_index.astype(">u2").view(np.uint8).reshape(-1, 2)
    raw_local[v6, :16] = 0
    raw_local[v6, :4] = [0x20, 0x01, 0x0D, 0xB8]
    raw_local[v6, 14:] = local_index[v6].astype(">u2").view(np.uint8).reshape(-1, 2)
    partner = rng.integers(0, 15_000, count)
    partner[local_index > 2] %= 40  # small hosts: few partners
    raw_partner = np.zeros((count, 16), np.uint8)
    raw_partner[:, 10:12] = 0xFF
    raw_partner[:, 12:] = (partner + 0xC6336400).astype(">u4").view(np.uint8).reshape(-1, 4)  # 198.51.100.0+
    outgoing = rng.random(count) < 0.5
    local_col, partner_col = raw_local.view("S16").ravel(), raw_partner.view("S16").ravel()
    dst_port = rng.choice(np.array([443, 80, 53, 22, 8080], np.uint16), count)
    dst_port[local_index == 2] = rng.integers(1, 3000, int((local_index == 2).sum()))
    return Rows(
        protocol=rng.choice(np.array([TCP, UDP, ICMP], np.uint8), count),
        src_port=rng.integers(1024, 65536, count).astype(np.uint16),
        dst_port=dst_port,
        src_addr=np.where(outgoing, local_col, partner_col),
        dst_addr=np.where(outgoing, partner_col, local_col),
        exporter=np.zeros(count, np.uint32),
        tcp_flags=rng.integers(0, 256, count).astype(np.uint8),
        duration_ms=rng.integers(-5, 10_000, count),  # negative durations count as 0
        flows=(rng.random(count) < 0.9).astype(np.uint64),
        packets=rng.integers(1, 100, count).astype(np.uint64),
        bytes=rng.integers(40, 2**40, count).astype(np.uint64),
    )


RANDOM_SPEC = StatsSpec(
    local_networks=("10.0.0.0/16", "2001:db8::/64"), watched_hosts=("10.0.0.1", "10.0.0.9", "198.51.100.3")
)


def all_hosts(state: HostState, spec: StatsSpec) -> dict[str, Any]:
    """Every local host's (sketch-based) statistics plus the full result, for comparisons."""
    state.compact()
    main = state._main  # the host table is internal; reading it lists every host
    described = main.describe(np.arange(main.count))
    return {"hosts": {h["address"]: h for h in sorted(described, key=lambda h: h["address"])},
            "result": state.result(spec, n=20)}


def without_local_ports(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Misra–Gries top ports of local hosts depend on the merge order; all else must not."""
    def strip(host: dict[str, Any]) -> dict[str, Any]:
        return host if host["exact"] else {k: v for k, v in host.items() if k != "top_ports"}

    result = snapshot["result"]
    return {
        "hosts": {k: strip(v) for k, v in snapshot["hosts"].items()},
        "watched": result["watched"],
        "local": {**result["local"], "top": {m: [strip(h) for h in hs] for m, hs in result["local"]["top"].items()}},
    }


def test_merge_equals_update_on_the_union() -> None:
    rng = np.random.default_rng(21)
    parts = [random_rows(rng, 12_000) for _ in range(6)]
    union = HostState()
    union.update(concat_rows(parts), RANDOM_SPEC)
    # Partial states (as seconds of a minute, or worker processes), merged as a tree.
    states = []
    for part in parts:
        state = HostState()
        state.update(part, RANDOM_SPEC)
        states.append(state)
    left, right = states[0], states[3]
    for state in states[1:3]:
        left.merge(state)
    for state in states[4:]:
        right.merge(state)
    left.merge(right)
    reversed_order = HostState()
    for part in reversed(parts):
        state = HostState()
        state.update(part, RANDOM_SPEC)
        reversed_order.merge(state)
    expected = all_hosts(union, RANDOM_SPEC)
    assert len(expected["hosts"]) > 2500
    everything = concat_rows(parts)
    host_1 = address_bytes("10.0.0.1")
    exact_partners = len(np.unique(np.concatenate([everything.dst_addr[everything.src_addr == host_1],
                                                   everything.src_addr[everything.dst_addr == host_1]])))
    assert exact_partners > 8192  # promoted to HyperLogLog registers
    assert (union.lookup("10.0.0.1") or {})["partners"] == exact_partners  # watched: exact
    assert abs(expected["hosts"]["10.0.0.1"]["partners"] / exact_partners - 1) <= 0.02  # sketch
    assert expected["hosts"]["10.0.0.2"]["dst_ports"] == len(np.unique(np.concatenate(
        [p.dst_port[(p.src_addr == address_bytes("10.0.0.2"))] for p in parts])))
    for merged in (left, reversed_order):
        snapshot = all_hosts(merged, RANDOM_SPEC)
        assert without_local_ports(snapshot) == without_local_ports(expected)
        # Misra–Gries guarantee, whatever the order: every count a lower bound within flows / 9.
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.9"):
            host = snapshot["hosts"][address]
            key = address_bytes(address)
            mine = (everything.src_addr == key) | (everything.dst_addr == key)
            ports, inverse = np.unique(everything.dst_port[mine], return_inverse=True)
            exact_flows = np.bincount(inverse, weights=everything.flows[mine].astype(float)).astype(int)
            exact_ports = dict(zip(ports.tolist(), exact_flows.tolist(), strict=True))
            flows = host["sent"]["flows"] + host["received"]["flows"]
            assert flows == sum(exact_ports.values())
            for entry in host["top_ports"]:
                assert exact_ports[entry["port"]] - flows / 9 <= entry["flows"] <= exact_ports[entry["port"]]
            heaviest = max(exact_ports.values())
            assert host["top_ports"][0]["flows"] >= heaviest - flows / 9
    # ~3 000 evenly used ports: no heavy hitter, Misra–Gries keeps at most a few leftovers.
    assert len(snapshot["hosts"]["10.0.0.2"]["top_ports"]) <= 5


def test_batch_size_does_not_change_the_result() -> None:
    rng = np.random.default_rng(22)
    rows = random_rows(rng, 30_000)
    whole, batched = HostState(), HostState()
    whole.update(rows, RANDOM_SPEC)
    for start in range(0, 30_000, 1_000):
        batched.update(rows.take(np.arange(start, start + 1_000)), RANDOM_SPEC)
    assert without_local_ports(all_hosts(batched, RANDOM_SPEC)) == without_local_ports(all_hosts(whole, RANDOM_SPEC))


def test_checkpoint_round_trip_and_continue() -> None:
    rng = np.random.default_rng(23)
    first, second = random_rows(rng, 20_000), random_rows(rng, 20_000)
    state = HostState(watched=["203.0.113.50"])
    state.update(first, RANDOM_SPEC)
    state.unwatch("10.0.0.9")
    raw = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    restored = pickle.loads(raw)
    assert restored.result(RANDOM_SPEC) == state.result(RANDOM_SPEC)
    assert [h["address"] for h in restored.result(RANDOM_SPEC)["watched"]] == [
        "10.0.0.1", "198.51.100.3", "203.0.113.50"]
    # The pickle holds arrays sized by what was seen, not preallocated tables.
    assert len(raw) < 2 * state.nbytes + 200_000
    state.update(second, RANDOM_SPEC)
    restored.update(second, RANDOM_SPEC)
    assert all_hosts(restored, RANDOM_SPEC) == all_hosts(state, RANDOM_SPEC)


def test_deterministic() -> None:
    def run() -> HostState:
        rng = np.random.default_rng(24)
        state = HostState()
        for _ in range(4):
            state.update(random_rows(rng, 10_000), RANDOM_SPEC)
        return state

    one, two = run(), run()
    assert pickle.dumps(one) == pickle.dumps(two)
    assert one.result(RANDOM_SPEC) == two.result(RANDOM_SPEC)


def test_watch_and_unwatch_at_run_time() -> None:
    spec = StatsSpec(local_networks=("10.0.0.0/24",))
    before = make_rows([(TCP, "10.0.0.1", 1, "192.0.2.1", 443, SYN, 10, 1, 100)])
    after = make_rows([(TCP, "10.0.0.1", 1, "192.0.2.2", 22, SYN, 30, 2, 200)])
    state = HostState()
    state.update(before, spec)
    state.watch("10.0.0.1")
    state.update(after, spec)
    [watched] = state.result(spec)["watched"]
    # Exact from the moment it was watched; the local (sketch) statistics cover the whole window.
    assert watched["exact"] and watched["sent"] == {"flows": 1, "packets": 2, "bytes": 200}
    assert watched["top_ports"] == [{"port": 22, "flows": 1, "packets": 2, "bytes": 200}]
    assert state.lookup("10.0.0.1") == watched
    local = state.top(1, "flows")[0]
    assert local["sent"] == {"flows": 2, "packets": 3, "bytes": 300} and not local["exact"]
    # A window that closed before the watch merges into one that had it.
    parent = HostState(watched=["10.0.0.1"])
    older = HostState()
    older.update(before, spec)
    parent.merge(older)
    parent.merge(state)
    assert parent.result(spec)["watched"][0]["sent"]["flows"] == 1
    state.unwatch("10.0.0.1")
    assert state.result(spec)["watched"] == []
    assert state.lookup("10.0.0.1") == local  # back to the sketch-based view
    parent.merge(state)  # the newer state's unwatch does not override the parent's own list
    assert [h["address"] for h in parent.result(spec)["watched"]] == ["10.0.0.1"]
    configured = StatsSpec(local_networks=("10.0.0.0/24",), watched_hosts=("10.0.0.1",))
    fresh = HostState()
    fresh.unwatch("10.0.0.1")  # unwatching a configured host
    fresh.update(after, configured)
    assert fresh.result(configured)["watched"] == []


def test_pending_parts_fold_into_main_past_the_threshold() -> None:
    rng = np.random.default_rng(25)
    spec = StatsSpec(local_networks=("0.0.0.0/0",))  # every IPv4 endpoint is local
    rows = random_rows(rng, 100_000, hosts=4_000)
    state = HostState(compact_min=5_000)
    folds = 0
    for start in range(0, len(rows), 5_000):
        before = state._main.count
        state.update(rows.take(np.arange(start, start + 5_000)), spec)
        folds += state._main.count != before
        assert state._pending_size <= max(state._main.size // 4, 5_000)
    assert folds >= 3
    assert COMPACT_MIN > 5_000
    whole = HostState()
    whole.update(rows, spec)
    assert whole._main.count == 0 and len(whole._pending) == 1  # one batch: still queued
    assert without_local_ports(all_hosts(state, spec)) == without_local_ports(all_hosts(whole, spec))


# ---------------------------------------------------------------------- distinct counts


def test_distinct_partners_of_120k_hosts_against_exact_counts() -> None:
    """120 000 local hosts, most with few partners, 25 with 9 000 - 60 000: estimate vs exact."""
    rng = np.random.default_rng(31)
    hosts = 120_000
    sizes = rng.integers(1, 30, hosts)
    heavy = rng.choice(hosts, 25, replace=False)
    sizes[heavy] = rng.integers(9_000, 60_000, 25)
    host = np.repeat(np.arange(hosts), sizes)
    k = np.arange(len(host)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    # Partner k of host h: distinct per host, shared across hosts (a permutation mod 2**31 - 1).
    partner = (host.astype(np.int64) * 7919 + k * 104_729) % (2**31 - 1)
    again = rng.random(len(host)) < 0.15  # repeated flows to the same partner
    host, partner = np.concatenate([host, host[again]]), np.concatenate([partner, partner[again]])
    order = rng.permutation(len(host))
    host, partner = host[order], partner[order]
    raw_host = np.zeros((len(host), 16), np.uint8)
    raw_host[:, 10:12] = 0xFF
    raw_host[:, 12:] = (host + 0x0A000000).astype(">u4").view(np.uint8).reshape(-1, 4)
    raw_partner = np.zeros((len(host), 16), np.uint8)
    raw_partner[:, 10:12] = 0xFF
    raw_partner[:, 12:] = (partner + 0x80000000).astype(">u4").view(np.uint8).reshape(-1, 4)  # 128.0.0.0/1
    v6 = partner % 4 == 0  # a quarter of the partners are IPv6
    raw_partner[v6, :16] = 0
    raw_partner[v6, :2] = [0x26, 0x00]
    raw_partner[v6, 8:] = partner[v6].astype(">u8").view(np.uint8).reshape(-1, 8)
    outgoing = rng.random(len(host)) < 0.5
    host_col, partner_col = raw_host.view("S16").ravel(), raw_partner.view("S16").ravel()
    n = len(host)
    rows = Rows(
        protocol=np.full(n, TCP, np.uint8), src_port=np.full(n, 40000, np.uint16), dst_port=np.full(n, 443, np.uint16),
        src_addr=np.where(outgoing, host_col, partner_col), dst_addr=np.where(outgoing, partner_col, host_col),
        exporter=np.zeros(n, np.uint32), tcp_flags=np.zeros(n, np.uint8), duration_ms=np.zeros(n, np.int64),
        flows=np.ones(n, np.uint64), packets=np.ones(n, np.uint64), bytes=np.full(n, 60, np.uint64),
    )
    spec = StatsSpec(local_networks=("10.0.0.0/8",))
    state = HostState()
    for start in range(0, n, 250_000):
        state.update(rows.take(np.arange(start, min(start + 250_000, n))), spec)
    assert state.local_hosts == hosts
    main = state._main
    ids = main.find(main.hashes, main.hi, main.lo)
    index = (main.lo & np.uint64(0xFFFFFFFF)).astype(np.int64) - 0x0A000000  # host number of each id
    estimates = main.partners.estimate(ids)
    exact = sizes[index]
    small = exact <= 8192
    assert (estimates[small] == exact[small]).all()  # exact sets below the promotion threshold
    errors = estimates[~small] / exact[~small] - 1
    assert len(errors) == 25
    assert np.abs(errors).max() <= 0.02
    # The same through the public view, for the heaviest host.
    top = state.top(1, "partners")[0]
    heaviest = int(np.argmax(sizes))
    assert top["address"] == str(ipaddress.ip_address(0x0A000000 + heaviest))
    assert abs(top["partners"] / sizes[heaviest] - 1) <= 0.02


def test_one_host_with_a_million_partners() -> None:
    rng = np.random.default_rng(32)
    partners = 1_000_000
    index = np.concatenate([np.arange(partners), rng.integers(0, partners, 200_000)])  # with repeats
    rng.shuffle(index)
    raw = np.zeros((len(index), 16), np.uint8)
    raw[:, :4] = [0x20, 0x01, 0x0D, 0xB8]
    raw[:, 8:] = (index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).astype(">u8").view(np.uint8).reshape(-1, 8)
    n = len(index)
    rows = Rows(
        protocol=np.full(n, UDP, np.uint8), src_port=np.full(n, 5000, np.uint16), dst_port=np.full(n, 53, np.uint16),
        src_addr=raw.view("S16").ravel(), dst_addr=np.full(n, address_bytes("10.9.8.7"), "S16"),
        exporter=np.zeros(n, np.uint32), tcp_flags=np.zeros(n, np.uint8), duration_ms=np.zeros(n, np.int64),
        flows=np.ones(n, np.uint64), packets=np.ones(n, np.uint64), bytes=np.full(n, 80, np.uint64),
    )
    spec = StatsSpec(local_networks=("10.0.0.0/8",), watched_hosts=("10.9.8.7",))
    state = HostState()
    for start in range(0, n, 100_000):
        state.update(rows.take(np.arange(start, min(start + 100_000, n))), spec)
    local = state.top(1, "partners")[0]
    assert local["address"] == "10.9.8.7" and not local["exact"]
    assert abs(local["partners"] / partners - 1) <= 0.02
    watched = state.lookup("10.9.8.7")
    assert watched is not None and watched["exact"] and watched["partners"] == partners
    assert watched["received"] == {"flows": n, "packets": n, "bytes": 80 * n}


def test_hash_collisions_between_hosts_stay_exact() -> None:
    """Two hosts whose 64-bit hashes are made equal still get separate ids and statistics."""
    rows = make_rows([
        (TCP, "10.0.0.1", 1, "192.0.2.1", 443, SYN, 10, 1, 100),
        (TCP, "10.0.0.2", 1, "192.0.2.2", 80, SYN, 10, 2, 200),
        (TCP, "10.0.0.3", 1, "192.0.2.3", 22, SYN, 10, 3, 300),
    ])
    columns = BatchColumns.of(rows)
    columns.src_hash[:2] = 42  # 10.0.0.1 and 10.0.0.2 collide
    sides = Sides.of(columns, np.ones(3, np.bool_), np.zeros(3, np.bool_))
    part = LocalHosts.from_sides(rows, sides)
    assert part.count == 3
    table = LocalHosts.combine([part, part])  # the same hosts twice: merged, not duplicated
    assert table.count == 3
    ids = table.find(columns.src_hash, columns.src_hi, columns.src_lo)
    assert sorted(ids.tolist()) == [0, 1, 2]
    assert [table.sums[2][i] for i in ids.tolist()] == [200, 400, 600]  # bytes sent, twice each
    main = LocalHosts.combine([part])
    main.absorb(part)
    assert main.count == 3
    assert [main.sums[1][i] for i in main.find(columns.src_hash, columns.src_hi, columns.src_lo).tolist()] == [2, 4, 6]


def test_a_window_opened_after_run_time_changes_starts_with_them() -> None:
    spec = StatsSpec(watched_hosts=("10.0.0.1", "10.0.0.2"))
    state = HostState(watched=["10.0.0.3"], unwatched=["10.0.0.1", "10.0.0.3"])
    assert [address_bytes(a) for a in ("10.0.0.2",)] == state.watched(spec)


def test_local_flow_counts_saturate_at_32_bits_other_sums_stay_exact() -> None:
    # One flow record standing for 3e9 flows (an aggregated export), 5e9 packets, 6e12 bytes.
    huge = (TCP, "10.0.0.9", 40000, "198.51.100.1", 443, SYN, 10, 5_000_000_000, 6_000_000_000_000, 3_000_000_000)
    minute = HostState()
    minute.update(make_rows([huge]), SPEC)
    hour = HostState(compact_min=1)
    for _ in range(3):
        hour.merge(minute)  # 9e9 flows: beyond 32 bits
    hour.compact()
    host = hour.lookup("10.0.0.9", SPEC)
    assert host is not None
    assert host["sent"] == {"flows": (1 << 32) - 1, "packets": 15_000_000_000, "bytes": 18_000_000_000_000}
    assert host["tcp_flags"]["SYN"] == (1 << 32) - 1 and host["tcp_flags"]["ACK"] == 0
    assert host["top_ports"] == [{"port": 443, "flows": (1 << 32) - 1}]
    restored = pickle.loads(pickle.dumps(hour))
    assert restored.lookup("10.0.0.9", SPEC) == host
