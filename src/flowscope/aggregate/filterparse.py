"""The view filter language's parser (an nfdump-compatible subset).

A filter is parsed once into an immutable tree of ``Node`` objects (``filtertree``). The tree knows
nothing about numpy or Spark: a backend is a ``FilterVisitor`` that turns each node into its own
kind of value (``filters.NumpyMask`` makes boolean arrays). Every direction-less primitive is expanded by the
parser, so ``port 80`` arrives as ``Or(Compare(src_port == 80), Compare(dst_port == 80))`` and a
backend only deals with single columns.

Grammar (keywords case-insensitive; ``and``/``&&``, ``or``/``||``, ``not``/``!``; precedence
not > and > or; ``#`` starts a comment that runs to the end of the line)::

    filter    := [expr]                       (empty: every flow, as in nfdump)
    expr      := term ("or" term)*
    term      := factor ("and" factor)*
    factor    := "not" factor | "(" expr ")" | primitive
    primitive := "any" | "ipv4" | "inet" | "ip" | "ipv6" | "inet6"
               | "proto" (NAME | N)
               | [dir] ("host" | "ip") (ADDRESS | "in" "[" NETWORK ("," | " ") ... "]")
               | [dir] "net" (ADDRESS "/" BITS | IPV4 NETMASK)
               | [dir] ("port" | "as") ([cmp] N | "in" "[" N ... "]")
               | ["in" | "out"] "if" N
               | ["in"] ("packets" | "bytes") [cmp] N
               | "flags" (LETTERS | [cmp] N)      (implies proto tcp; see below)
               | "tos" [cmp] N
    dir       := "src" | "dst" | "src or dst" | "src and dst" (also "dst or src", "dst and src")
    cmp       := "=" | "==" | ">" | "<" | ">=" | "<=" | "eq" | "gt" | "lt" | "ge" | "le"

Numbers are decimal or ``0x`` hex, with nfdump's scale suffixes k, m, g, t (powers of 1000).

``flags LETTERS`` is true when every listed flag is set, except under an odd number of ``not``s,
where it is true when any listed flag is set: nfdump up to 1.7.1 evaluates it this way (its
filter engine tests "any" for an inverted flags block), so ``flags S and not flags AFRPU``
selects SYN-only flows, the recipe nfdump's manual gives. nfdump 1.7.2's new filter engine
tests "all" in both places.

Differences from nfdump 1.7.1 (the peer test, tests/integration/peer/test_filters_nfdump.py,
compares both on the same flows):

- FlowBatch stores IPv4 as ``::ffff:a.b.c.d``: an IPv4 host or network matches IPv4 flows only,
  ``host ::ffff:a.b.c.d`` is ``host a.b.c.d``, and IPv6 flows whose addresses really are
  ``::ffff:a.b.c.d`` count as IPv4. nfdump 1.7.1 keeps IPv4 as ``::a.b.c.d``, so its IPv4
  filters also match IPv6 addresses whose first 64 bits are zero (``host 10.0.0.1`` matches
  ``::10.0.0.1``, ``net 0.0.0.0/0`` matches ``::1``). IPv6 networks are plain 128-bit prefixes.
- Host names are not resolved; netmasks must be contiguous (nfdump applies any mask).
- Primitives without a FlowBatch column (vlan, mac, mpls, duration, pps, ..., ``out bytes``,
  ``prev as``) are rejected with an error that names them.
- Extensions: flag letters E (ECE) and C (CWR) and lower-case letters (nfdump 1.7.2 has E and
  C too), a bare ``ip`` meaning ``ipv4`` (tcpdump), IPv4 networks shortened as ``10/8``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from flowscope.aggregate.filtertree import (
    MAPPED_PREFIX,
    AddressColumn,
    AddressIn,
    And,
    BitsAny,
    BitsSet,
    Compare,
    InSet,
    MatchAll,
    Network,
    Node,
    Not,
    Op,
    Or,
)
from flowscope.errors import ConfigError

T = TypeVar("T")


# -- errors -----------------------------------------------------------------------------------


class FilterSyntaxError(ConfigError):
    """A filter that does not parse. ``position`` is the 1-based character position in the text
    (the column, for a one-line filter), ``found`` what stands there and ``expected`` what
    would have been valid; the message shows the line with a caret under the position."""

    def __init__(self, text: str, offset: int, found: str, expected: str) -> None:
        self.text = text
        self.position = offset + 1
        self.found = found
        self.expected = expected
        line_start = text.rfind("\n", 0, offset) + 1
        line_end = text.find("\n", offset)
        line = text[line_start : len(text) if line_end < 0 else line_end]
        self.line = text.count("\n", 0, offset) + 1
        self.column = offset - line_start + 1
        where = f"line {self.line}, column {self.column}" if "\n" in text else f"column {self.column}"
        super().__init__(
            f"filter syntax error at {where}: found {found}, expected {expected}\n"
            f"  {line}\n  {' ' * (self.column - 1)}^"
        )


# -- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["word", "op", "end"]
    text: str
    offset: int

    @property
    def lower(self) -> str:
        return self.text.lower() if self.kind == "word" else ""

    def describe(self) -> str:
        return "end of filter" if self.kind == "end" else repr(self.text)


_LEXER = re.compile(
    r"(?P<skip>\s+|\#[^\n]*)|(?P<op>&&|\|\||==|>=|<=|[()\[\],/!=<>])|(?P<word>[A-Za-z0-9_:.\-]+)"
)
_OP_WORDS = {"&&": "and", "||": "or", "!": "not"}
_COMPARATORS: dict[str, Op] = {
    "=": "==", "==": "==", "eq": "==", ">": ">", "gt": ">", "<": "<", "lt": "<",
    ">=": ">=", "ge": ">=", "<=": "<=", "le": "<=",
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    offset = 0
    while offset < len(text):
        match = _LEXER.match(text, offset)
        if match is None:
            raise FilterSyntaxError(text, offset, repr(text[offset]), "a keyword, number, address or operator")
        if match.lastgroup == "op":
            tokens.append(_Token("op", match.group(), offset))
        elif match.lastgroup == "word":
            tokens.append(_Token("word", match.group(), offset))
        offset = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


# -- vocabulary -------------------------------------------------------------------------------

# Protocol names nfdump accepts, lower-cased (nfdump's table: short IANA names).
PROTOCOLS = {
    "icmp": 1, "igmp": 2, "ggp": 3, "ipip": 4, "st": 5, "tcp": 6, "egp": 8, "igp": 9, "pup": 12,
    "udp": 17, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "icmp6": 58, "eigrp": 88, "ospf": 89,
    "encap": 98, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132,
}
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}
_ALL_FLAGS_X = 0x3F  # nfdump's X: FIN SYN RST PSH ACK URG

PRIMITIVES = "a filter primitive (any, proto, host, ip, net, port, as, if, packets, bytes, flags, tos, ipv4, ipv6)"
_EXPECT_FACTOR = f"{PRIMITIVES}, 'not' or '('"

# nfdump primitives without a FlowBatch column: named as such in the error.
_UNSUPPORTED = frozenset((
    "ident", "count", "tun", "tunip", "flowdir", "dir", "geo", "mac", "mpls", "vlan", "mask", "router",
    "next", "prev", "previous", "bgpnext", "icmp-type", "icmp-code", "engine-type", "engine-id", "sysid",
    "exporter", "duration", "pps", "bps", "bpp", "flows", "nfversion", "fwdstat", "asa", "nat", "xip", "nip",
    "xnet", "xport", "nport", "ingress", "egress", "payload", "observation", "latency", "client", "server",
    "app", "pblock", "flowlabel", "pf",
))
_KEYWORDS = _UNSUPPORTED | frozenset((
    "any", "ipv4", "inet", "ip", "ipv6", "inet6", "proto", "host", "net", "port", "as", "if", "in", "out",
    "packets", "bytes", "flags", "tos", "src", "dst", "and", "or", "not", "eq", "gt", "lt", "ge", "le",
))

_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1
_SCALE = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_NUMBER = re.compile(r"(?:0x([0-9a-f]+)|([0-9]+)([kmgt]?))")

Direction = Literal["src", "dst", "either", "both"]
_MAX_DEPTH = 100


# -- parser -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.negated = False  # inside an odd number of "not"s (see flags)
        self.depth = 0  # nested "not"s and parentheses, bounded to stay clear of Python's recursion limit

    # token access

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def ahead(self, distance: int) -> _Token:
        return self.tokens[min(self.index + distance, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    @staticmethod
    def keyword(token: _Token) -> str:
        """The token as a keyword: lower-cased word, or the word an operator spells (&& → and)."""
        return _OP_WORDS.get(token.text, "") if token.kind == "op" else token.lower

    def error(self, token: _Token, expected: str, found: str | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(self.text, token.offset, found or token.describe(), expected)

    def expect_op(self, op: str, expected: str) -> _Token:
        if self.token.kind != "op" or self.token.text != op:
            raise self.error(self.token, expected)
        return self.advance()

    # expressions

    def parse(self) -> Node:
        if self.at_end():
            return MatchAll()
        node = self.expression()
        if not self.at_end():
            raise self.error(self.token, "'and', 'or' or end of filter")
        return node

    def at_end(self) -> bool:
        return self.token.kind == "end"

    def expression(self) -> Node:
        terms = [self.term()]
        while self.keyword(self.token) == "or":
            self.advance()
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def term(self) -> Node:
        factors = [self.factor()]
        while self.keyword(self.token) == "and":
            self.advance()
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else And(tuple(factors))

    def factor(self) -> Node:
        if self.keyword(self.token) == "not" or self.at_op("("):
            if self.depth >= _MAX_DEPTH:
                raise self.error(self.token, f"at most {_MAX_DEPTH} nested parentheses and 'not's")
            self.depth += 1
            node = self.nested()
            self.depth -= 1
            return node
        return self.primitive()

    def nested(self) -> Node:
        if self.keyword(self.token) == "not":
            self.advance()
            self.negated = not self.negated
            operand = self.factor()
            self.negated = not self.negated
            return Not(operand)
        self.advance()  # "("
        inner = self.expression()
        self.expect_op(")", "'and', 'or' or ')'")
        return inner

    # primitives

    def primitive(self) -> Node:
        token = self.token
        word = token.lower
        if token.kind != "word":
            raise self.error(token, _EXPECT_FACTOR)
        if word in _UNSUPPORTED:
            raise self.error(token, _EXPECT_FACTOR, f"'{token.text}' (an nfdump primitive flowscope does not support)")
        self.advance()
        if word == "any":
            return MatchAll()
        if word == "ip" and not self.starts_address():
            return _ipv4()  # tcpdump's bare "ip"; "ip ADDRESS" is nfdump's synonym of "host"
        if word in ("ipv4", "inet"):
            return _ipv4()
        if word in ("ipv6", "inet6"):
            return And((Not(AddressIn("src_addr", (_V4_MAPPED,))), Not(AddressIn("dst_addr", (_V4_MAPPED,)))))
        if word == "proto":
            return Compare("protocol", "==", self.protocol())
        if word in ("src", "dst"):
            direction = self.direction(word)
            last = self.tokens[self.index - 1]
            return self.directed(direction, f"after '{self.text[token.offset : last.offset + len(last.text)]}'")
        if word in ("host", "ip", "net", "port", "as"):
            return self.sided(word, "either")
        if word in ("in", "out"):
            return self.in_out(token)
        if word == "if":
            number = self.number("an interface number 0..4294967295", _U32)
            return Or((Compare("in_if", "==", number), Compare("out_if", "==", number)))
        if word in ("packets", "bytes"):
            op = self.comparator()
            return Compare(word, op, self.number(f"a {word} count", _U64))
        if word == "flags":
            return And((Compare("protocol", "==", 6), self.flags()))
        if word == "tos":
            op = self.comparator()
            return Compare("tos", op, self.number("a TOS value 0..255", 255))
        raise self.error(token, _EXPECT_FACTOR, f"unknown keyword '{token.text}'")

    def starts_address(self) -> bool:
        token = self.token
        return token.kind == "word" and (token.lower == "in" or token.lower not in _KEYWORDS)

    def direction(self, first: str) -> Direction:
        other = "dst" if first == "src" else "src"
        joiner = self.keyword(self.token)
        if joiner in ("and", "or") and self.ahead(1).lower == other:
            self.advance()
            self.advance()
            return "both" if joiner == "and" else "either"
        return "src" if first == "src" else "dst"

    def directed(self, direction: Direction, where: str) -> Node:
        token = self.token
        if token.lower not in ("host", "ip", "net", "port", "as"):
            raise self.error(token, f"'host', 'ip', 'net', 'port' or 'as' {where}")
        self.advance()
        return self.sided(token.lower, direction)

    def sided(self, word: str, direction: Direction) -> Node:
        """A primitive that applies to the source side, the destination side, or both."""
        sides = ("src", "dst") if direction in ("either", "both") else (direction,)
        nodes: list[Node]
        if word in ("host", "ip"):
            networks = self.address_list() if self.token.lower == "in" else (self.host(),)
            nodes = [AddressIn(_ADDRESS_COLUMN[side], networks) for side in sides]
        elif word == "net":
            network = (self.network(),)
            nodes = [AddressIn(_ADDRESS_COLUMN[side], network) for side in sides]
        else:
            what, limit = ("a port number 0..65535", 0xFFFF) if word == "port" else ("an AS number", _U32)
            if self.token.lower == "in":
                values = self.number_list(what, limit)
                nodes = [InSet(f"{side}_{word}", values) for side in sides]
            else:
                op = self.comparator()
                value = self.number(what, limit)
                nodes = [Compare(f"{side}_{word}", op, value) for side in sides]
        if len(nodes) == 1:
            return nodes[0]
        return Or(tuple(nodes)) if direction == "either" else And(tuple(nodes))

    def in_out(self, token: _Token) -> Node:
        word = token.lower
        follower = self.token
        if follower.lower == "if":
            self.advance()
            return Compare(f"{word}_if", "==", self.number("an interface number 0..4294967295", _U32))
        if word == "in" and follower.lower in ("packets", "bytes"):
            self.advance()
            op = self.comparator()
            return Compare(follower.lower, op, self.number(f"a {follower.lower} count", _U64))
        expected = "'if', 'packets' or 'bytes' after 'in'" if word == "in" else "'if' after 'out'"
        raise self.error(follower, expected)

    # values

    def comparator(self) -> Op:
        token = self.token
        op = _COMPARATORS.get(token.text if token.kind == "op" else token.lower)
        if op is None:
            return "=="
        self.advance()
        return op

    def number(self, what: str, limit: int, alternatives: str = "") -> int:
        """A number up to ``limit``; ``alternatives`` extends the expectation when it is no number."""
        token = self.token
        value = _parse_number(token.text) if token.kind == "word" else None
        if value is None:
            raise self.error(token, what + alternatives)
        if value > limit:
            raise self.error(token, what)
        self.advance()
        return value

    def at_op(self, op: str) -> bool:
        return self.token.kind == "op" and self.token.text == op

    def list_items(self, parse_item: Callable[[str], T]) -> list[T]:
        """``in [ITEM ITEM, ITEM ...]``: at least one item, separated by spaces or commas."""
        self.advance()  # "in"
        self.expect_op("[", "'[' starting a list")
        items = [parse_item("")]
        while not self.at_op("]"):
            if self.at_op(","):
                self.advance()
                items.append(parse_item(""))
            else:
                items.append(parse_item(", ',' or ']'"))
        self.advance()
        return items

    def number_list(self, what: str, limit: int) -> tuple[int, ...]:
        values = self.list_items(lambda more: self.number(what, limit, more))
        return tuple(sorted(set(values)))

    def protocol(self) -> int:
        token = self.token
        expected = "a protocol name (tcp, udp, icmp, icmp6, gre, esp, ...) or number 0..255"
        if token.kind == "word" and token.lower in PROTOCOLS:
            self.advance()
            return PROTOCOLS[token.lower]
        return self.number(expected, 255)

    def flags(self) -> Node:
        token = self.token
        if token.kind == "word" and token.text[:1].isalpha():
            bits = 0
            for letter in token.text.upper():
                if letter == "X":
                    bits |= _ALL_FLAGS_X
                elif letter in TCP_FLAGS:
                    bits |= TCP_FLAGS[letter]
                else:
                    raise self.error(token, "TCP flag letters F S R P A U E C (X: all of FSRPAU)")
            self.advance()
            if self.negated and bits.bit_count() > 1:
                return BitsAny("tcp_flags", bits)
            return BitsSet("tcp_flags", bits)
        op = self.comparator()
        return Compare("tcp_flags", op, self.number("TCP flag letters or a flags number 0..255", 255))

    def host(self) -> Network:
        token = self.token
        expected = "an IPv4 or IPv6 address (host names are not resolved)"
        if token.kind != "word":
            raise self.error(token, expected)
        try:
            address = ipaddress.ip_address(token.text)
        except ValueError:
            raise self.error(token, expected) from None
        self.advance()
        return _network(address.packed, address.max_prefixlen)

    def network(self) -> Network:
        """``ADDRESS/BITS`` or ``IPV4 NETMASK``; IPv4 may be shortened (``10.1/16``) as in nfdump."""
        token = self.token
        packed = _parse_network_address(token.text) if token.kind == "word" else None
        if packed is None:
            raise self.error(token, "an IPv4 or IPv6 network address")
        self.advance()
        bits = len(packed) * 8
        family = "IPv4" if bits == 32 else "IPv6"
        if self.token.kind == "op" and self.token.text == "/":
            self.advance()
            prefix_len = self.number(f"a prefix length 0..{bits} for an {family} network", bits)
        elif bits == 32 and self.token.kind == "word" and "." in self.token.text:
            prefix_len = self.netmask()
        else:
            expected = "'/' and a prefix length" + (", or a netmask," if bits == 32 else "")
            raise self.error(self.token, f"{expected} after the network address")
        return _network(packed, prefix_len)

    def netmask(self) -> int:
        token = self.token
        try:
            mask = int(ipaddress.IPv4Address(token.text))
        except ValueError:
            mask = -1
        inverted = ~mask & _U32
        if mask < 0 or inverted & (inverted + 1):
            raise self.error(token, "a contiguous IPv4 netmask such as 255.255.0.0")
        self.advance()
        return 32 - inverted.bit_length()

    def address_list(self) -> tuple[Network, ...]:
        def item(more: str) -> Network:
            if self.token.kind != "word":
                raise self.error(self.token, "an address or network" + more)
            return self.network() if self.ahead(1).text == "/" else self.host()

        return tuple(dict.fromkeys(self.list_items(item)))


# -- helpers ----------------------------------------------------------------------------------

_ADDRESS_COLUMN: dict[str, AddressColumn] = {"src": "src_addr", "dst": "dst_addr"}


def _network(packed: bytes, prefix_len: int) -> Network:
    """A Network in the 16-byte space from a 4- or 16-byte address and its family's prefix length."""
    if len(packed) == 4:
        packed, prefix_len = MAPPED_PREFIX + packed, prefix_len + 96
    value = int.from_bytes(packed, "big")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix_len)) - 1)
    return Network((value & mask).to_bytes(16, "big"), prefix_len)


_V4_MAPPED = Network(MAPPED_PREFIX + b"\x00" * 4, 96)


def _ipv4() -> Node:
    return And((AddressIn("src_addr", (_V4_MAPPED,)), AddressIn("dst_addr", (_V4_MAPPED,))))


def _parse_number(text: str) -> int | None:
    match = _NUMBER.fullmatch(text.lower())
    if match is None:
        return None
    if match.group(1) is not None:
        return int(match.group(1), 16)
    return int(match.group(2)) * _SCALE.get(match.group(3), 1)


def _parse_network_address(text: str) -> bytes | None:
    """4 bytes for IPv4 (1 to 4 dotted octets, missing ones zero), 16 for IPv6, else None."""
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text).packed
        except ValueError:
            return None
    parts = text.split(".")
    if len(parts) > 4 or not all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        return None
    return bytes(int(p) for p in parts) + b"\x00" * (4 - len(parts))


def parse(text: str) -> Node:
    """The syntax tree of one filter; raises ``FilterSyntaxError``."""
    return _Parser(text).parse()
