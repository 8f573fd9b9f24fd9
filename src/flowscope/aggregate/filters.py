"""View filters: nfdump-like filter text compiled once, evaluated per FlowBatch as a numpy mask.

``compile_filter("proto tcp and dst port in [80 443]")`` parses the text into a syntax tree
(``filterparse``: the language, its tree and the parser) and returns a ``Filter``, whose
``mask(batch)`` evaluates the tree column-wise on the batch: one vectorized numpy operation per
node, never a Python loop per flow. Addresses are compared as two native uint64 words per
16-byte address (``S16`` viewed in place, no copy), with the filter's prefix and mask bytes
viewed the same way, so no byte swapping is needed.

Other backends plug in as further ``FilterVisitor`` implementations over the same tree. The
Spark engine will add a ``SparkColumn(FilterVisitor[pyspark.sql.Column])`` returning
``F.lit(True)`` for ``MatchAll``; ``~``, ``&``, ``|`` for Not, And, Or; ``F.col(c) <op> v`` for
``Compare``; ``F.col(c).isin(...)`` for ``InSet``; ``F.col(c).bitwiseAND(bits) == bits`` for
``BitsSet`` (``!= 0`` for ``BitsAny``); and, for ``AddressIn``, the same two-word prefix test on
two 64-bit columns per address (or a ``substring`` comparison of the 16-byte binary column when
the prefix ends on a byte boundary). ``filter.ast.accept(SparkColumn())`` then gives the
expression for ``DataFrame.filter``, from the same compiled tree as the numpy mask.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.filterparse import FilterSyntaxError, parse
from flowscope.aggregate.filtertree import (
    AddressIn,
    And,
    BitsAny,
    BitsSet,
    Compare,
    FilterVisitor,
    InSet,
    MatchAll,
    Network,
    Node,
    Not,
    Or,
)
from flowscope.model import FlowBatch

__all__ = [
    "AddressIn",
    "And",
    "BitsAny",
    "BitsSet",
    "Compare",
    "Filter",
    "FilterSyntaxError",
    "FilterVisitor",
    "InSet",
    "MatchAll",
    "Network",
    "Node",
    "Not",
    "NumpyMask",
    "Or",
    "compile_filter",
]

Mask = npt.NDArray[np.bool_]

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}
_SHORT_LIST = 8  # up to this many values, a chain of == beats np.isin (which sorts)
_HOST_LOOKUP_MIN = 8  # from this many full-length addresses on, a binary search replaces the == chain


def _words(value: bytes) -> tuple[np.uint64, np.uint64]:
    """16 bytes as the two native-endian uint64 words numpy sees when viewing ``S16`` as uint64."""
    high, low = np.frombuffer(value, dtype=np.uint64)
    return high, low


def _prefix_mask(prefix_len: int) -> bytes:
    return (((1 << 128) - 1) ^ ((1 << (128 - prefix_len)) - 1)).to_bytes(16, "big")


class NumpyMask(FilterVisitor[Mask]):
    """Evaluates a syntax tree on one FlowBatch; every visit returns a fresh boolean array."""

    def __init__(self, batch: FlowBatch) -> None:
        self.batch = batch
        self.size = len(batch)
        self._address_words: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]] = {}

    def visit_all(self, node: MatchAll) -> Mask:
        return np.ones(self.size, dtype=np.bool_)

    def visit_not(self, node: Not) -> Mask:
        result = node.operand.accept(self)
        return np.logical_not(result, out=result)

    def visit_and(self, node: And) -> Mask:
        result = node.operands[0].accept(self)
        for operand in node.operands[1:]:
            result &= operand.accept(self)
        return result

    def visit_or(self, node: Or) -> Mask:
        result = node.operands[0].accept(self)
        for operand in node.operands[1:]:
            result |= operand.accept(self)
        return result

    def visit_compare(self, node: Compare) -> Mask:
        column = self.batch[node.column]
        if node.value > np.iinfo(column.dtype).max:  # nothing in the column can reach the value
            fill = node.op in ("<", "<=")
            return np.full(self.size, fill, dtype=np.bool_)
        result: Mask = _OPERATORS[node.op](column, column.dtype.type(node.value))
        return result

    def visit_in_set(self, node: InSet) -> Mask:
        column = self.batch[node.column]
        limit = int(np.iinfo(column.dtype).max)
        values = [v for v in node.values if v <= limit]
        if len(values) <= _SHORT_LIST:
            result = np.zeros(self.size, dtype=np.bool_)
            for value in values:
                result |= column == column.dtype.type(value)
            return result
        if column.dtype.itemsize <= 2:  # ports, protocol, tos: one lookup in a table of every value
            table = np.zeros(limit + 1, dtype=np.bool_)
            table[values] = True
            found: Mask = table[column]
            return found
        return np.isin(column, np.array(values, dtype=column.dtype))

    def visit_bits_set(self, node: BitsSet) -> Mask:
        column = self.batch[node.column]
        bits = column.dtype.type(node.bits)
        result: Mask = (column & bits) == bits
        return result

    def visit_bits_any(self, node: BitsAny) -> Mask:
        column = self.batch[node.column]
        result: Mask = (column & column.dtype.type(node.bits)) != 0
        return result

    def visit_address_in(self, node: AddressIn) -> Mask:
        high, low = self.words(node.column)
        result = np.zeros(self.size, dtype=np.bool_)
        hosts = [n for n in node.networks if n.prefix_len == 128]
        chained = [n for n in node.networks if n.prefix_len < 128]
        if len(hosts) >= _HOST_LOOKUP_MIN:
            chained += self.match_hosts(high, low, hosts, result)
        else:
            chained += hosts
        for network in chained:
            result |= self.prefix_match(high, low, network)
        return result

    @staticmethod
    def match_hosts(
        high: npt.NDArray[np.uint64], low: npt.NDArray[np.uint64], hosts: list[Network], result: Mask
    ) -> list[Network]:
        """Marks the rows equal to one of ``hosts`` with one binary search per row over the hosts'
        second words; hosts sharing their second word with another are returned for the chain."""
        words = np.frombuffer(b"".join(h.address for h in hosts), dtype=np.uint64).reshape(-1, 2)
        lows, counts = np.unique(words[:, 1], return_counts=True)
        unique = np.isin(words[:, 1], lows[counts == 1])
        order = np.argsort(words[unique, 1])
        host_high, host_low = words[unique, 0][order], words[unique, 1][order]
        if len(host_low):
            index = np.searchsorted(host_low, low)
            np.minimum(index, len(host_low) - 1, out=index)
            result |= (host_low[index] == low) & (host_high[index] == high)
        return [host for host, alone in zip(hosts, unique.tolist(), strict=True) if not alone]

    def words(self, column: str) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """The address column as (first 8 bytes, last 8 bytes) uint64 views, no copy (a strided
        comparison costs less than copying the words out first)."""
        found = self._address_words.get(column)
        if found is None:
            raw = np.ascontiguousarray(self.batch[column])
            if raw.dtype != np.dtype("S16"):
                raise TypeError(f"filter: column {column} is {raw.dtype}, expected S16 addresses")
            pairs = raw.view(np.uint64).reshape(-1, 2)
            found = (pairs[:, 0], pairs[:, 1])
            self._address_words[column] = found
        return found

    def prefix_match(self, high: npt.NDArray[np.uint64], low: npt.NDArray[np.uint64], network: Network) -> Mask:
        if network.prefix_len == 0:
            return np.ones(self.size, dtype=np.bool_)
        value_high, value_low = _words(network.address)
        mask_high, mask_low = _words(_prefix_mask(network.prefix_len))
        result: Mask
        if network.prefix_len <= 64:
            result = (high if network.prefix_len == 64 else high & mask_high) == value_high
            return result
        result = high == value_high
        result &= (low if network.prefix_len == 128 else low & mask_low) == value_low
        return result


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled filter: its text and syntax tree. ``mask`` selects the matching flows."""

    text: str
    ast: Node

    def mask(self, batch: FlowBatch) -> Mask:
        """One boolean per flow of ``batch``: True where the flow matches the filter."""
        return self.ast.accept(NumpyMask(batch))

    def __str__(self) -> str:
        return self.text


def compile_filter(text: str) -> Filter:
    """Parses ``text`` once; raises ``FilterSyntaxError`` (a ``ConfigError``) naming the position."""
    return Filter(text, parse(text))
