"""View filters on Spark: the filter syntax tree (``aggregate.filterparse``) as a Spark ``Column``.

``SparkColumn`` is the Spark backend of ``FilterVisitor``: the same parsed tree that
``filters.NumpyMask`` evaluates on a FlowBatch becomes one boolean column expression for
``DataFrame.filter``. Addresses are tested as two signed 64-bit words per address
(``src_hi``/``src_lo``, ``dst_hi``/``dst_lo``: the big-endian halves of the 16-byte address, as
``sources.flow_table`` writes them), so a prefix of any length is one masked comparison per word;
bitwise AND and equality give the same answer on signed as on unsigned words.

Every Spark column holds its FlowBatch column's unsigned values exactly: a wider signed integer,
or DECIMAL(20,0) for packets and bytes (``sources.FLOW_SCHEMA``). Values beyond a signed long
(only packets and bytes allow them) are compared as DECIMAL(20,0) literals.
"""

from __future__ import annotations

from decimal import Decimal

from pyspark.sql import Column
from pyspark.sql import functions as F  # noqa: N812  (the usual spelling)

from flowscope.aggregate.filterparse import parse
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

__all__ = ["ADDRESS_WORDS", "SparkColumn", "filter_column"]

_LONG_MAX = (1 << 63) - 1

# The Spark columns holding the two words of each FlowBatch address column.
ADDRESS_WORDS: dict[str, tuple[str, str]] = {"src_addr": ("src_hi", "src_lo"), "dst_addr": ("dst_hi", "dst_lo")}


def _signed_words(value: bytes) -> tuple[int, int]:
    """16 bytes as two big-endian signed 64-bit integers (how the word columns store them)."""
    return int.from_bytes(value[:8], "big", signed=True), int.from_bytes(value[8:], "big", signed=True)


def _prefix_mask(prefix_len: int) -> bytes:
    return (((1 << 128) - 1) ^ ((1 << (128 - prefix_len)) - 1)).to_bytes(16, "big")


class SparkColumn(FilterVisitor[Column]):
    """Turns a filter syntax tree into one boolean Spark column expression."""

    def visit_all(self, node: MatchAll) -> Column:
        return F.lit(True)

    def visit_not(self, node: Not) -> Column:
        return ~node.operand.accept(self)

    def visit_and(self, node: And) -> Column:
        result = node.operands[0].accept(self)
        for operand in node.operands[1:]:
            result = result & operand.accept(self)
        return result

    def visit_or(self, node: Or) -> Column:
        result = node.operands[0].accept(self)
        for operand in node.operands[1:]:
            result = result | operand.accept(self)
        return result

    def visit_compare(self, node: Compare) -> Column:
        column = F.col(node.column)
        value = F.lit(node.value) if node.value <= _LONG_MAX else F.lit(Decimal(node.value)).cast("decimal(20,0)")
        if node.op == "==":
            return column == value
        if node.op == "<":
            return column < value
        if node.op == ">":
            return column > value
        if node.op == "<=":
            return column <= value
        return column >= value

    def visit_in_set(self, node: InSet) -> Column:
        small = [F.lit(v) for v in node.values if v <= _LONG_MAX]
        large = [F.lit(Decimal(v)).cast("decimal(20,0)") for v in node.values if v > _LONG_MAX]
        return F.col(node.column).isin(*small, *large)

    def visit_bits_set(self, node: BitsSet) -> Column:
        return F.col(node.column).bitwiseAND(F.lit(node.bits)) == F.lit(node.bits)

    def visit_bits_any(self, node: BitsAny) -> Column:
        return F.col(node.column).bitwiseAND(F.lit(node.bits)) != F.lit(0)

    def visit_address_in(self, node: AddressIn) -> Column:
        high, low = ADDRESS_WORDS[node.column]
        result: Column | None = None
        for network in node.networks:
            test = self.prefix_match(F.col(high), F.col(low), network)
            result = test if result is None else result | test
        return result if result is not None else F.lit(False)

    @staticmethod
    def prefix_match(high: Column, low: Column, network: Network) -> Column:
        if network.prefix_len == 0:
            return F.lit(True)
        value_high, value_low = _signed_words(network.address)
        mask_high, mask_low = _signed_words(_prefix_mask(network.prefix_len))
        if network.prefix_len <= 64:
            masked = high if network.prefix_len == 64 else high.bitwiseAND(F.lit(mask_high))
            return masked == F.lit(value_high)
        masked_low = low if network.prefix_len == 128 else low.bitwiseAND(F.lit(mask_low))
        return (high == F.lit(value_high)) & (masked_low == F.lit(value_low))


def filter_column(text_or_tree: str | Node) -> Column:
    """The boolean column of a filter given as text (parsed here) or as a parsed tree."""
    tree = parse(text_or_tree) if isinstance(text_or_tree, str) else text_or_tree
    return tree.accept(SparkColumn())
