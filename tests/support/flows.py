"""Build FlowBatches by hand for tests: give the columns you care about, the rest default."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import numpy as np

from flowscope.model import FLOW_COLUMNS, FlowBatch, ipv4_to_mapped


def addresses(texts: Sequence[str]) -> np.ndarray:
    """Address texts → the S16 column (IPv4 as IPv4-mapped)."""
    out = np.zeros(len(texts), "S16")
    for i, text in enumerate(texts):
        parsed = ipaddress.ip_address(text)
        if parsed.version == 4:
            out[i] = ipv4_to_mapped(np.array([int(parsed)], np.uint32))[0]
        else:
            out[i] = parsed.packed
    return out


def make_batch(rows: int, **columns: object) -> FlowBatch:
    """A batch of ``rows`` flows; columns given as sequences (or scalars, repeated)."""
    data: dict[str, np.ndarray] = {}
    for name, dtype in FLOW_COLUMNS.items():
        value = columns.pop(name, None)
        if value is None:
            default = addresses(["192.0.2.1"] * rows) if name.endswith("_addr") else np.zeros(rows, dtype)
            if name in ("packets", "sampling_rate"):
                default = np.ones(rows, dtype)
            data[name] = default
        elif name.endswith("_addr"):
            texts = [value] * rows if isinstance(value, str) else list(value)  # type: ignore[call-overload]
            data[name] = addresses(texts)
        else:
            array = np.asarray(value, dtype=dtype)
            data[name] = np.full(rows, array, dtype) if array.ndim == 0 else array
    if columns:
        raise TypeError(f"unknown columns: {sorted(columns)}")
    return FlowBatch(data)
