"""The view filter language's syntax tree and its visitor (see ``filterparse`` for the grammar).

A filter is an immutable tree of ``Node`` objects that knows nothing about numpy or Spark; a
backend is a ``FilterVisitor`` that turns each node into its own kind of value
(``filters.NumpyMask`` makes boolean arrays, ``spark.columns`` Spark column expressions).
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = [
    "MAPPED_PREFIX", "AddressColumn", "AddressIn", "And", "BitsAny", "BitsSet", "Compare", "FilterVisitor",
    "InSet", "MatchAll", "Network", "Node", "Not", "Op", "Or",
]

T = TypeVar("T")

AddressColumn = Literal["src_addr", "dst_addr"]
Op = Literal["==", "<", ">", "<=", ">="]

MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"  # the first 12 bytes of ::ffff:a.b.c.d


# -- syntax tree ------------------------------------------------------------------------------


class Node(ABC):
    """One node of a compiled filter; ``accept`` hands it to the visitor method of its kind."""

    __slots__ = ()

    @abstractmethod
    def accept(self, visitor: FilterVisitor[T]) -> T: ...


@dataclass(frozen=True, slots=True)
class MatchAll(Node):
    """True for every flow (``any``, and the empty filter)."""

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_all(self)


@dataclass(frozen=True, slots=True)
class Not(Node):
    operand: Node

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_not(self)


@dataclass(frozen=True, slots=True)
class And(Node):
    operands: tuple[Node, ...]  # two or more

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_and(self)


@dataclass(frozen=True, slots=True)
class Or(Node):
    operands: tuple[Node, ...]  # two or more

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_or(self)


@dataclass(frozen=True, slots=True)
class Compare(Node):
    """``column <op> value`` on an unsigned integer FlowBatch column."""

    column: str
    op: Op
    value: int

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_compare(self)


@dataclass(frozen=True, slots=True)
class InSet(Node):
    """The column's value is one of ``values`` (``port in [...]``, ``as in [...]``)."""

    column: str
    values: tuple[int, ...]

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_in_set(self)


@dataclass(frozen=True, slots=True)
class BitsSet(Node):
    """Every bit of ``bits`` is set in the column (``flags SA``: SYN and ACK seen)."""

    column: str
    bits: int

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_bits_set(self)


@dataclass(frozen=True, slots=True)
class BitsAny(Node):
    """At least one bit of ``bits`` is set: what a multi-letter ``flags`` means under ``not``."""

    column: str
    bits: int

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_bits_any(self)


@dataclass(frozen=True, slots=True)
class Network:
    """A 128-bit prefix in FlowBatch's address space (IPv4 as ``::ffff:a.b.c.d``, so an IPv4
    /n is a /(96+n) here and can only match IPv4 flows). ``address`` has its host bits cleared."""

    address: bytes  # 16 bytes
    prefix_len: int  # 0..128

    def __str__(self) -> str:
        if self.prefix_len >= 96 and self.address.startswith(MAPPED_PREFIX):
            text, bits = str(ipaddress.IPv4Address(self.address[12:])), self.prefix_len - 96
            return text if bits == 32 else f"{text}/{bits}"
        text = str(ipaddress.IPv6Address(self.address))
        return text if self.prefix_len == 128 else f"{text}/{self.prefix_len}"


@dataclass(frozen=True, slots=True)
class AddressIn(Node):
    """The address column lies in any of ``networks`` (a host is a full-length prefix)."""

    column: AddressColumn
    networks: tuple[Network, ...]

    def accept(self, visitor: FilterVisitor[T]) -> T:
        return visitor.visit_address_in(self)


class FilterVisitor(ABC, Generic[T]):
    """A filter backend: one method per node kind, each returning the backend's value."""

    @abstractmethod
    def visit_all(self, node: MatchAll) -> T: ...

    @abstractmethod
    def visit_not(self, node: Not) -> T: ...

    @abstractmethod
    def visit_and(self, node: And) -> T: ...

    @abstractmethod
    def visit_or(self, node: Or) -> T: ...

    @abstractmethod
    def visit_compare(self, node: Compare) -> T: ...

    @abstractmethod
    def visit_in_set(self, node: InSet) -> T: ...

    @abstractmethod
    def visit_bits_set(self, node: BitsSet) -> T: ...

    @abstractmethod
    def visit_bits_any(self, node: BitsAny) -> T: ...

    @abstractmethod
    def visit_address_in(self, node: AddressIn) -> T: ...
