"""View filters: every construct on a hand-built batch, precedence, IPv6, errors, the visitor.

The expected masks are sets of row numbers worked out by hand from the ROWS table below (the
reasoning is in the comment next to each case), never from the code under test.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import pickle

import numpy as np
import pytest

from flowscope.aggregate.filters import (
    AddressIn,
    And,
    BitsAny,
    BitsSet,
    Compare,
    Filter,
    FilterSyntaxError,
    FilterVisitor,
    InSet,
    MatchAll,
    Network,
    Not,
    Or,
    compile_filter,
)
from flowscope.errors import ConfigError
from flowscope.model import FLOW_COLUMNS, FlowBatch

# fmt: off
#   row  src              dst              sport  dport  proto flags tos packets    bytes        in out src_as dst_as
ROWS = [
    (0,  "10.0.0.1",      "192.168.1.10",  51000, 80,    6,  0x12, 0,   10,        1500,          1, 2, 0,     0),
    (1,  "192.168.1.10",  "10.0.0.1",      80,    51000, 6,  0x1B, 0,   8,         12000,         2, 1, 0,     0),
    (2,  "10.1.2.3",      "8.8.8.8",       53000, 53,    17, 0x00, 0,   1,         75,            1, 3, 0,     15169),
    (3,  "8.8.8.8",       "10.1.2.3",      53,    53000, 17, 0x02, 0,   1,         140,           3, 1, 15169, 0),
    (4,  "172.16.5.4",    "10.0.0.1",      0,     771,   1,  0x00, 184, 3,         252,           4, 1, 64512, 0),
    (5,  "2001:db8::1",   "2001:db8:1::2", 443,   50000, 6,  0x02, 0,   2,         120,           5, 6, 65000, 65001),
    (6,  "2001:db8:1::2", "2001:db8::1",   50000, 443,   6,  0x3F, 32,  1_500_000, 2_000_000_000, 6, 5, 65001, 65000),
    (7,  "fe80::1",       "ff02::1",       0,     34560, 58, 0x00, 0,   1,         72,            7, 0, 0,     0),
    (8,  "::10.0.0.1",    "2001:db8::1",   1024,  1023,  17, 0x00, 0,   5,         1000,          1, 2, 0,     0),
    (9,  "192.168.1.10",  "192.168.1.255", 137,   137,   17, 0x00, 0,   4,         1001,          2, 0, 0,     0),
    (10, "10.0.0.1",      "203.0.113.5",   40000, 8080,  6,  0xC2, 2,   1000,      1_000_000,     1, 2, 0,     64496),
    (11, "198.51.100.7",  "10.0.0.1",      1023,  22,    47, 0x00, 0,   1001,      1_000_001,     3, 1, 64497, 0),
]
# fmt: on
# Row 3 is UDP with a SYN bit in tcp_flags (garbage an exporter may send): "flags" must skip it.
# Row 8's source is the IPv4-compatible IPv6 address ::10.0.0.1, which is not IPv4 (not mapped).
ALL = set(range(len(ROWS)))
V4 = {0, 1, 2, 3, 4, 9, 10, 11}
V6 = {5, 6, 7, 8}
TCP = {0, 1, 5, 6, 10}


def stored(text: str) -> bytes:
    """The 16 bytes FlowBatch stores for an address (IPv4 as ::ffff:a.b.c.d)."""
    address = ipaddress.ip_address(text)
    return (b"\x00" * 10 + b"\xff\xff" + address.packed) if address.version == 4 else address.packed


def batch_of(rows: list[tuple]) -> FlowBatch:
    names = ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "tcp_flags", "tos", "packets", "bytes",
             "in_if", "out_if", "src_as", "dst_as")
    columns = {name: np.zeros(len(rows), dtype) for name, dtype in FLOW_COLUMNS.items()}
    for position, name in enumerate(names, start=1):
        values = [row[position] for row in rows]
        if name.endswith("_addr"):
            values = [stored(v) for v in values]
        columns[name] = np.array(values, dtype=FLOW_COLUMNS[name])
    return FlowBatch(columns)


BATCH = batch_of(ROWS)


def rows_matching(text: str, batch: FlowBatch = BATCH) -> set[int]:
    mask = compile_filter(text).mask(batch)
    assert mask.dtype == np.bool_ and mask.shape == (len(batch),)
    return set(np.flatnonzero(mask).tolist())


CASES = [
    # everything
    ("any", ALL),
    ("", ALL),  # nfdump: no filter selects every flow
    ("  # only a comment\n", ALL),
    # protocols
    ("proto tcp", TCP),
    ("proto udp", {2, 3, 8, 9}),
    ("proto icmp", {4}),
    ("proto icmp6", {7}),
    ("proto 58", {7}),
    ("proto gre", {11}),
    ("proto 47", {11}),
    ("PROTO TCP", TCP),
    # hosts: either side by default; IPv4 matches only mapped addresses
    ("host 10.0.0.1", {0, 1, 4, 10, 11}),  # row 8 (::10.0.0.1) is IPv6
    ("ip 10.0.0.1", {0, 1, 4, 10, 11}),
    ("src host 10.0.0.1", {0, 10}),
    ("src ip 10.0.0.1", {0, 10}),
    ("dst host 10.0.0.1", {1, 4, 11}),
    ("host 8.8.8.8", {2, 3}),
    ("host ::ffff:10.0.0.1", {0, 1, 4, 10, 11}),  # the mapped spelling is the same address here
    ("host ::10.0.0.1", {8}),
    ("host 2001:db8::1", {5, 6, 8}),
    ("dst host ff02::1", {7}),
    ("host in [8.8.8.8 fe80::1]", {2, 3, 7}),
    ("src ip in [8.8.8.8, 192.168.1.0/24]", {1, 3, 9}),
    ("dst host in [10.0.0.0/8 2001:db8::/32]", {1, 3, 4, 5, 6, 8, 11}),
    # networks
    ("net 10.0.0.0/8", {0, 1, 2, 3, 4, 10, 11}),  # not row 8: ::10.0.0.1 is not in the IPv4 10/8
    ("net 10.0.0.0 255.0.0.0", {0, 1, 2, 3, 4, 10, 11}),
    ("net 10.200.0.0/8", {0, 1, 2, 3, 4, 10, 11}),  # host bits are cleared, as nfdump does
    ("net 10.1/16", {2, 3}),  # nfdump's shortened IPv4 network
    ("net 10/8", {0, 1, 2, 3, 4, 10, 11}),  # shortened further (nfdump wants a dot)
    ("src net 10.0.0.0/8", {0, 2, 10}),
    ("dst net 10.0.0.0/8", {1, 3, 4, 11}),
    ("net 192.168.1.0/24", {0, 1, 9}),
    ("src and dst net 192.168.1.0/24", {9}),
    ("dst and src net 192.168.1.0/24", {9}),
    ("src or dst net 172.16.0.0/12", {4}),
    ("net 172.16.0.0 255.240.0.0", {4}),
    ("net 0.0.0.0/0", V4),  # every IPv4 flow, no IPv6 flow
    ("net 10.0.0.1/32", {0, 1, 4, 10, 11}),
    # IPv6 networks, on both sides of the 64-bit word boundary
    ("net 2001:db8::/32", {5, 6, 8}),
    ("net 2001:db8:1::/48", {5, 6}),
    ("src net 2001:db8::/64", {5}),  # 2001:db8:1::2 has 1 in its third group
    ("net 2001:db8::/100", {5, 6, 8}),
    ("net 2001:db8::1/128", {5, 6, 8}),
    ("net fe80::/10", {7}),
    ("net ::/0", ALL),  # the whole IPv6 space holds the mapped IPv4 addresses too
    # address families
    ("ipv4", V4), ("inet", V4), ("ip", V4), ("IPv4", V4),
    ("ipv6", V6), ("inet6", V6),
    # ports (any protocol; ICMP type/code sits in the destination port)
    ("port 80", {0, 1}),
    ("src port 80", {1}),
    ("dst port 80", {0}),
    ("port 53", {2, 3}),
    ("port 771", {4}),
    ("port > 1023", {0, 1, 2, 3, 5, 6, 7, 8, 10}),
    ("dst port < 1024", {0, 2, 4, 6, 8, 9, 11}),
    ("src port >= 1023 and src port <= 1024", {8, 11}),
    ("port eq 53", {2, 3}),
    ("port = 443", {5, 6}),
    ("port == 443", {5, 6}),
    ("port gt 50000", {0, 1, 2, 3}),  # 50000 itself is not greater
    ("port ge 50000", {0, 1, 2, 3, 5, 6}),
    ("port lt 1", {4, 7}),
    ("port le 22", {4, 7, 11}),
    ("dst port in [80 443 8080]", {0, 6, 10}),
    ("port in [22, 137]", {9, 11}),
    ("port in [1 2 3 4 5 6 7 8 9 22 80]", {0, 1, 11}),  # long list: table lookup
    ("src and dst port 137", {9}),
    ("port 0x50", {0, 1}),
    # counters, with nfdump's decimal scale suffixes
    ("packets > 1000", {6, 11}),
    ("packets > 1k", {6, 11}),
    ("packets >= 1K", {6, 10, 11}),
    ("packets > 1M", {6}),
    ("in packets 8", {1}),
    ("bytes > 1M", {6, 11}),
    ("bytes >= 1m", {6, 10, 11}),
    ("bytes > 1G", {6}),
    ("bytes > 2g", set()),
    ("bytes = 2G", {6}),
    ("bytes < 100", {2, 7}),
    ("bytes 0x4b", {2}),
    ("in bytes > 1000000", {6, 11}),
    ("bytes > 1t", set()),
    # TCP flags: all given flags set, TCP only
    ("flags S", {0, 1, 5, 6, 10}),  # not row 3 (UDP)
    ("flags SA", {0, 1, 6}),
    ("flags AS", {0, 1, 6}),
    ("flags sa", {0, 1, 6}),
    ("flags FSPA", {1, 6}),
    ("flags RA", {6}),
    ("flags X", {6}),
    ("flags U", {6}),
    ("flags E", {10}),
    ("flags EC", {10}),
    ("flags 2", {5}),  # exactly SYN, TCP only (row 3 is UDP)
    ("flags > 0x20", {6, 10}),
    # Under "not", a multi-letter flags test means "any of them" (nfdump <= 1.7.1), which makes
    # the manual's recipe for SYN-only flows work: rows 5 (S) and 10 (S E C; E and C not listed).
    ("flags S and not flags AFRPU", {5, 10}),
    ("not flags RA", ALL - {0, 1, 6}),  # rows 0, 1 (A) and 6 (R and A) have R or A
    ("not not flags RA", {6}),
    ("not (proto udp or not flags SA)", {0, 1, 6}),  # flags SA is back under two nots: all of them
    ("not flags A", ALL - {0, 1, 6}),  # one letter: "any" and "all" agree
    ("not flags X", ALL - TCP),  # every TCP row has one of FSRPAU
    # type of service
    ("tos 184", {4}),
    ("tos > 0", {4, 6, 10}),
    ("tos 0x20", {6}),
    # AS numbers
    ("as 15169", {2, 3}),
    ("src as 15169", {3}),
    ("dst as 15169", {2}),
    ("as > 65000", {5, 6}),
    ("as in [64496 64497]", {10, 11}),
    ("src as in [64496 64497]", {11}),
    ("as in [1 2 3 4 5 6 7 8 9 10 64496]", {10}),  # long list: np.isin
    ("as 0", ALL - {5, 6}),
    ("src and dst as 0", {0, 1, 7, 8, 9}),
    # interfaces
    ("if 3", {2, 3, 11}),
    ("in if 3", {3, 11}),
    ("out if 3", {2}),
    ("if 0", {7, 9}),
    # boolean operators
    ("proto tcp and port 80", {0, 1}),
    ("proto tcp && port 80", {0, 1}),
    ("proto tcp&&port 80", {0, 1}),
    ("proto udp or proto icmp", {2, 3, 4, 8, 9}),
    ("proto udp || proto icmp", {2, 3, 4, 8, 9}),
    ("not proto tcp", ALL - TCP),
    ("! proto tcp", ALL - TCP),
    ("!proto tcp", ALL - TCP),
    ("not not proto tcp", TCP),
    ("not port 53", ALL - {2, 3}),
    ("(proto tcp)", TCP),
    ("((proto tcp) and ((port 80)))", {0, 1}),
    ("PROTO Tcp AND NOT Port 80", {5, 6, 10}),
    ("proto tcp # the web\n  and dst port 443", {6}),
    ("any and port 53", {2, 3}),
    ("not any", set()),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_construct_selects_hand_computed_rows(text: str, expected: set[int]) -> None:
    assert rows_matching(text) == expected


# -- precedence: not > and > or -----------------------------------------------------------------

PRECEDENCE = [
    # udp ∪ (tcp ∩ port 80) = {2,3,8,9} ∪ {0,1}
    ("proto udp or proto tcp and port 80", {0, 1, 2, 3, 8, 9}),
    ("(proto udp or proto tcp) and port 80", {0, 1}),
    # (tcp ∩ port 80) ∪ icmp
    ("proto tcp and port 80 or proto icmp", {0, 1, 4}),
    ("proto tcp and (port 80 or proto icmp)", {0, 1}),
    # (not tcp) ∩ port 53
    ("not proto tcp and port 53", {2, 3}),
    ("not (proto tcp and port 80)", ALL - {0, 1}),
    ("not proto tcp or port 80", (ALL - TCP) | {0, 1}),
    ("not (proto tcp or port 80)", ALL - TCP),
    ("not proto tcp and not proto udp", {4, 7, 11}),
    ("! proto tcp || port 80 && proto udp", ALL - TCP),  # (!tcp) ∪ (port 80 ∩ udp = ∅)
]


@pytest.mark.parametrize(("text", "expected"), PRECEDENCE, ids=[c[0] for c in PRECEDENCE])
def test_precedence_not_binds_tighter_than_and_tighter_than_or(text: str, expected: set[int]) -> None:
    assert rows_matching(text) == expected


def test_syntax_tree_groups_by_precedence_and_flattens_chains() -> None:
    tcp, udp, icmp = (Compare("protocol", "==", n) for n in (6, 17, 1))
    port80 = Or((Compare("src_port", "==", 80), Compare("dst_port", "==", 80)))
    assert compile_filter("proto udp or proto tcp and port 80").ast == Or((udp, And((tcp, port80))))
    assert compile_filter("not proto tcp and proto udp").ast == And((Not(tcp), udp))
    assert compile_filter("proto tcp or proto udp or proto icmp").ast == Or((tcp, udp, icmp))
    assert compile_filter("proto tcp and proto udp and proto icmp").ast == And((tcp, udp, icmp))
    assert compile_filter("(proto tcp or proto udp) and proto icmp").ast == And((Or((tcp, udp)), icmp))
    assert compile_filter("").ast == MatchAll()


def test_primitives_expand_to_single_column_nodes() -> None:
    ten = Network(b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 0]), 104)
    assert compile_filter("net 10.0.0.0/8").ast == Or((AddressIn("src_addr", (ten,)), AddressIn("dst_addr", (ten,))))
    assert compile_filter("src and dst port in [443, 80 80]").ast == And(
        (InSet("src_port", (80, 443)), InSet("dst_port", (80, 443)))
    )
    assert compile_filter("flags SA").ast == And((Compare("protocol", "==", 6), BitsSet("tcp_flags", 0x12)))
    assert compile_filter("bytes > 1k").ast == Compare("bytes", ">", 1000)
    assert compile_filter("in if 7").ast == Compare("in_if", "==", 7)
    assert str(ten) == "10.0.0.0/8"
    assert str(Network(ipaddress.IPv6Address("2001:db8::").packed, 32)) == "2001:db8::/32"


# -- IPv6 and the address paths ------------------------------------------------------------------


def test_long_host_lists_match_like_a_chain_of_hosts() -> None:
    # 2001:db8:1::2 and 2001:db8:2::2 share their last 64 bits: the binary search cannot tell them
    # apart by that word alone, so they must still be told apart exactly.
    hosts = ["10.0.0.1", "8.8.8.8", "2001:db8:1::2", "2001:db8:2::2", "fe80::1", "192.0.2.1", "192.0.2.2",
             "192.0.2.3", "192.0.2.4", "::10.0.0.1"]
    listed = rows_matching(f"host in [{' '.join(hosts)}]")
    assert listed == {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11}  # every row but 9 has one of those hosts
    assert listed == rows_matching(" or ".join(f"host {h}" for h in hosts))
    assert rows_matching(f"dst host in [{' '.join(hosts[2:])}]") == {5}  # only row 5 has dst 2001:db8:1::2


def test_ipv4_network_never_matches_ipv6_flows_with_the_same_low_bits() -> None:
    # ::10.0.0.1 and ::ffff:10.0.0.1 end in the same 32 bits; only the mapped one is IPv4.
    rows = [(0, "::10.0.0.1", "::10.0.0.2", 1, 2, 17, 0, 0, 1, 1, 0, 0, 0, 0),
            (1, "10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 0, 1, 1, 0, 0, 0, 0)]
    batch = batch_of(rows)
    assert rows_matching("net 10.0.0.0/8", batch) == {1}
    assert rows_matching("host 10.0.0.2", batch) == {1}
    assert rows_matching("net ::/96", batch) == {0}  # IPv4-compatible space, not the mapped one
    assert rows_matching("net ::ffff:0:0/96", batch) == {1}


# -- errors ---------------------------------------------------------------------------------------

ERRORS = [
    # text, 1-based position, found, expected
    ("proto tcp and", 14, "end of filter", "a filter primitive (any, proto, host, ip, net, port, as, if, packets, "
                                           "bytes, flags, tos, ipv4, ipv6), 'not' or '('"),
    ("port 99999", 6, "'99999'", "a port number 0..65535"),
    ("net 10.0.0.0/33", 14, "'33'", "a prefix length 0..32 for an IPv4 network"),
    ("net 2001:db8::/129", 16, "'129'", "a prefix length 0..128 for an IPv6 network"),
    ("host 300.1.1.1", 6, "'300.1.1.1'", "an IPv4 or IPv6 address (host names are not resolved)"),
    ("host 10.1", 6, "'10.1'", "an IPv4 or IPv6 address (host names are not resolved)"),
    ("host www.example.com", 6, "'www.example.com'", "an IPv4 or IPv6 address (host names are not resolved)"),
    ("(proto tcp", 11, "end of filter", "'and', 'or' or ')'"),
    ("((proto tcp) or port 80", 24, "end of filter", "'and', 'or' or ')'"),
    ("proto tcp)", 10, "')'", "'and', 'or' or end of filter"),
    ("proto tcp port 80", 11, "'port'", "'and', 'or' or end of filter"),
    ("()", 2, "')'", "a filter primitive (any, proto, host, ip, net, port, as, if, packets, bytes, flags, tos, "
                     "ipv4, ipv6), 'not' or '('"),
    ("foo 1", 1, "unknown keyword 'foo'", "a filter primitive (any, proto, host, ip, net, port, as, if, packets, "
                                          "bytes, flags, tos, ipv4, ipv6), 'not' or '('"),
    ("proto tcp and vlan 3", 15, "'vlan' (an nfdump primitive flowscope does not support)",
     "a filter primitive (any, proto, host, ip, net, port, as, if, packets, bytes, flags, tos, ipv4, ipv6), "
     "'not' or '('"),
    ("proto 256", 7, "'256'", "a protocol name (tcp, udp, icmp, icmp6, gre, esp, ...) or number 0..255"),
    ("proto tcpx", 7, "'tcpx'", "a protocol name (tcp, udp, icmp, icmp6, gre, esp, ...) or number 0..255"),
    ("flags SZ", 7, "'SZ'", "TCP flag letters F S R P A U E C (X: all of FSRPAU)"),
    ("flags 256", 7, "'256'", "TCP flag letters or a flags number 0..255"),
    ("tos 300", 5, "'300'", "a TOS value 0..255"),
    ("as 4294967296", 4, "'4294967296'", "an AS number"),
    ("if > 3", 4, "'>'", "an interface number 0..4294967295"),
    ("packets > 18446744073709551616", 11, "'18446744073709551616'", "a packets count"),
    ("port in [80", 12, "end of filter", "a port number 0..65535, ',' or ']'"),
    ("port in []", 10, "']'", "a port number 0..65535"),
    ("port in 80", 9, "'80'", "'[' starting a list"),
    ("port in [80 70000]", 13, "'70000'", "a port number 0..65535"),
    ("host in [1.2.3.4, ]", 19, "']'", "an address or network"),
    ("net 10.0.0.0 255.0.255.0", 14, "'255.0.255.0'", "a contiguous IPv4 netmask such as 255.255.0.0"),
    ("net 10.0.0.0", 13, "end of filter", "'/' and a prefix length, or a netmask, after the network address"),
    ("net 2001:db8:: ffff::", 16, "'ffff::'", "'/' and a prefix length after the network address"),
    ("net 10.0.0.256/8", 5, "'10.0.0.256'", "an IPv4 or IPv6 network address"),
    ("src proto tcp", 5, "'proto'", "'host', 'ip', 'net', 'port' or 'as' after 'src'"),
    ("src and proto tcp", 5, "'and'", "'host', 'ip', 'net', 'port' or 'as' after 'src'"),
    ("src or  dst tos 1", 13, "'tos'", "'host', 'ip', 'net', 'port' or 'as' after 'src or  dst'"),
    ("out bytes > 1", 5, "'bytes'", "'if' after 'out'"),
    ("in src 1", 4, "'src'", "'if', 'packets' or 'bytes' after 'in'"),
    ("port != 80", 6, "'!'", "a port number 0..65535"),
    ("port 80;", 8, "';'", "a keyword, number, address or operator"),
    ("not", 4, "end of filter", "a filter primitive (any, proto, host, ip, net, port, as, if, packets, bytes, "
                                "flags, tos, ipv4, ipv6), 'not' or '('"),
]


@pytest.mark.parametrize(("text", "position", "found", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
def test_syntax_error_names_position_found_and_expected(text: str, position: int, found: str, expected: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(text)
    error = caught.value
    assert (error.position, error.found, error.expected) == (position, found, expected)
    assert isinstance(error, ConfigError)
    headline, shown, caret = str(error).splitlines()
    assert headline == f"filter syntax error at column {position}: found {found}, expected {expected}"
    assert shown == f"  {text}"
    assert caret == " " * (2 + position - 1) + "^"


def test_syntax_error_in_a_multi_line_filter_names_line_and_column() -> None:
    text = "proto tcp  # web\nand port"
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(text)
    error = caught.value
    assert (error.position, error.line, error.column) == (len(text) + 1, 2, 9)
    assert str(error).splitlines() == [
        "filter syntax error at line 2, column 9: found end of filter, expected a port number 0..65535",
        "  and port",
        "          ^",
    ]


def test_nesting_is_bounded_with_a_syntax_error_not_a_recursion_error() -> None:
    assert rows_matching("not " * 99 + "proto tcp") == ALL - TCP  # 99 nots: odd
    assert rows_matching("(" * 100 + "proto tcp" + ")" * 100) == TCP
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter("(" * 101 + "proto tcp" + ")" * 101)
    assert (caught.value.position, caught.value.expected) == (101, "at most 100 nested parentheses and 'not's")
    with pytest.raises(FilterSyntaxError):
        compile_filter("not " * 5000 + "any")


# -- the Filter object ------------------------------------------------------------------------------


def test_filter_is_compiled_once_and_evaluated_on_any_batch() -> None:
    web = compile_filter("proto tcp and dst port in [80 443]")
    assert web.text == "proto tcp and dst port in [80 443]" and str(web) == web.text
    with pytest.raises(dataclasses.FrozenInstanceError):
        web.text = "any"  # type: ignore[misc]
    assert set(np.flatnonzero(web.mask(BATCH)).tolist()) == {0, 6}
    assert set(np.flatnonzero(web.mask(batch_of(ROWS[5:7]))).tolist()) == {1}  # row 6 is 2nd here
    empty = web.mask(FlowBatch.empty())
    assert empty.dtype == np.bool_ and empty.shape == (0,)
    assert pickle.loads(pickle.dumps(web)) == web


def test_values_beyond_a_narrower_column_type_compare_correctly() -> None:
    # A batch may carry a narrower integer type than FLOW_COLUMNS; 70000 does not fit uint16.
    narrow = FlowBatch({"packets": np.array([1, 65535], dtype=np.uint16)})
    assert compile_filter("packets > 70000").mask(narrow).tolist() == [False, False]
    assert compile_filter("packets <= 70000").mask(narrow).tolist() == [True, True]
    assert compile_filter("packets 70000").mask(narrow).tolist() == [False, False]
    assert compile_filter("packets >= 65535").mask(narrow).tolist() == [False, True]


def test_mask_works_on_non_contiguous_columns() -> None:
    every_other = FlowBatch({name: column[::2] for name, column in BATCH.columns.items()})  # rows 0,2,4,...
    assert set(np.flatnonzero(compile_filter("net 10.0.0.0/8").mask(every_other)).tolist()) == {0, 1, 2, 5}


class Render(FilterVisitor[str]):
    """A second backend over the same tree: a fully parenthesized text form (as a Spark
    backend would build column expressions)."""

    def visit_all(self, node: MatchAll) -> str:
        return "TRUE"

    def visit_not(self, node: Not) -> str:
        return f"NOT {node.operand.accept(self)}"

    def visit_and(self, node: And) -> str:
        return "(" + " AND ".join(o.accept(self) for o in node.operands) + ")"

    def visit_or(self, node: Or) -> str:
        return "(" + " OR ".join(o.accept(self) for o in node.operands) + ")"

    def visit_compare(self, node: Compare) -> str:
        return f"{node.column} {node.op} {node.value}"

    def visit_in_set(self, node: InSet) -> str:
        return f"{node.column} IN {list(node.values)}"

    def visit_bits_set(self, node: BitsSet) -> str:
        return f"{node.column} & {node.bits} = {node.bits}"

    def visit_bits_any(self, node: BitsAny) -> str:
        return f"{node.column} & {node.bits} != 0"

    def visit_address_in(self, node: AddressIn) -> str:
        return f"{node.column} IN {[str(n) for n in node.networks]}"


def test_visitor_backends_see_single_column_nodes() -> None:
    tree = compile_filter("not src net 10.0.0.0/8 and (flags SA or port in [53 80]) or not flags RA").ast
    assert tree.accept(Render()) == (
        "((NOT src_addr IN ['10.0.0.0/8'] AND ((protocol == 6 AND tcp_flags & 18 = 18) OR "
        "(src_port IN [53, 80] OR dst_port IN [53, 80]))) OR NOT (protocol == 6 AND tcp_flags & 20 != 0))"
    )


def test_a_flow_batch_filter_is_a_value() -> None:
    assert compile_filter("port 80") == Filter("port 80", compile_filter("src or dst port 80").ast)
