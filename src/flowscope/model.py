"""The data that flows between pipeline stages.

``Datagram``: one export message as received (collect → decode).
``FlowBatch``: equal-length numpy columns, one row per flow (normalize → aggregate/export).
Nothing here holds one Python object per flow.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class Datagram:
    """One export message: who sent it, when it arrived, and its bytes (no parsing here)."""

    exporter: str  # exporter address as text ("192.0.2.1", "2001:db8::1")
    time_received_ms: int  # collector clock, UTC milliseconds
    payload: bytes
    port: int = 0  # exporter's source port, 0 when unknown (files)


# Canonical FlowBatch columns and their dtypes (DESIGN.md section 2). Addresses are 16 bytes,
# IPv4 stored IPv4-mapped (::ffff:a.b.c.d), so one column serves both families.
FLOW_COLUMNS: dict[str, np.dtype] = {
    "time_received": np.dtype(np.int64),
    "time_start": np.dtype(np.int64),
    "time_end": np.dtype(np.int64),
    "exporter": np.dtype(np.uint32),
    "src_addr": np.dtype("S16"),
    "dst_addr": np.dtype("S16"),
    "src_port": np.dtype(np.uint16),
    "dst_port": np.dtype(np.uint16),
    "protocol": np.dtype(np.uint8),
    "tcp_flags": np.dtype(np.uint8),
    "tos": np.dtype(np.uint8),
    "packets": np.dtype(np.uint64),
    "bytes": np.dtype(np.uint64),
    "in_if": np.dtype(np.uint32),
    "out_if": np.dtype(np.uint32),
    "src_as": np.dtype(np.uint32),
    "dst_as": np.dtype(np.uint32),
    "sampling_rate": np.dtype(np.uint32),
}

IPV4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


@dataclass(slots=True)
class FlowBatch:
    """A batch of flows as numpy columns of equal length (see ``FLOW_COLUMNS``)."""

    columns: dict[str, npt.NDArray]
    COLUMN_NAMES: ClassVar[tuple[str, ...]] = tuple(FLOW_COLUMNS)

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"FlowBatch columns differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        for column in self.columns.values():
            return len(column)
        return 0

    def __getitem__(self, name: str) -> npt.NDArray:
        return self.columns[name]

    @classmethod
    def empty(cls) -> FlowBatch:
        return cls({name: np.empty(0, dtype) for name, dtype in FLOW_COLUMNS.items()})

    @classmethod
    def concat(cls, batches: list[FlowBatch]) -> FlowBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls({name: np.concatenate([b.columns[name] for b in batches]) for name in FLOW_COLUMNS})

    def take(self, index: npt.NDArray) -> FlowBatch:
        """Rows selected by an integer index or boolean mask."""
        return FlowBatch({name: column[index] for name, column in self.columns.items()})


def ipv4_to_mapped(addresses: npt.NDArray[np.uint32]) -> npt.NDArray:
    """uint32 IPv4 addresses (host order values) → 16-byte IPv4-mapped addresses, vectorized."""
    out = np.zeros((len(addresses), 16), dtype=np.uint8)
    out[:, 10] = 0xFF
    out[:, 11] = 0xFF
    out[:, 12:16] = addresses.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out.view("S16").reshape(-1)


def address_text(raw: bytes) -> str:
    """One 16-byte address as text: dotted quad for IPv4-mapped, compressed IPv6 otherwise."""
    raw = raw.ljust(16, b"\x00")  # numpy's S16 drops trailing NUL bytes on item access
    if raw[:12] == IPV4_MAPPED_PREFIX:
        return ".".join(str(b) for b in raw[12:])
    return str(ipaddress.IPv6Address(raw))


def addresses_text(column: npt.NDArray) -> list[str]:
    """A whole address column as text; each distinct address is formatted once."""
    if len(column) == 0:
        return []
    unique, inverse = np.unique(column, return_inverse=True)
    texts = [address_text(bytes(u)) for u in unique]
    return [texts[i] for i in inverse.tolist()]


@dataclass(slots=True)
class ExporterTable:
    """Index ↔ (exporter address, observation domain / source id), shared by decode and stats."""

    _index: dict[tuple[str, int], int] = field(default_factory=dict)
    _keys: list[tuple[str, int]] = field(default_factory=list)

    def index_of(self, address: str, domain: int) -> int:
        key = (address, domain)
        found = self._index.get(key)
        if found is None:
            found = len(self._keys)
            self._index[key] = found
            self._keys.append(key)
        return found

    def key_of(self, index: int) -> tuple[str, int]:
        return self._keys[index]

    def __len__(self) -> int:
        return len(self._keys)

    def entries(self) -> list[tuple[str, int]]:
        return list(self._keys)
