"""Flows as newline-delimited JSON with flowscope's canonical column names, encoded per batch.

One object per flow: ``{"time_received":…,"time_start":…,"time_end":…,"exporter":"192.0.2.1",
"domain":0,"src_addr":"10.0.0.1",…,"sampling_rate":1}``. The encoding is vectorized
(``export.text``): no Python work per flow, so the JSON stream keeps up with the collector.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import numpy.typing as npt

from flowscope.export.text import Address, Literal, Number, Piece, render_rows
from flowscope.model import ExporterTable, FlowBatch, ipv4_to_mapped

# Output key order: time, who exported, the 5-tuple, counters, interfaces and AS, sampling.
_NUMBER_KEYS = ("src_port", "dst_port", "protocol", "tcp_flags", "tos", "packets", "bytes",
                "in_if", "out_if", "src_as", "dst_as", "sampling_rate")


def exporter_columns(batch: FlowBatch, exporters: ExporterTable) -> tuple[npt.NDArray, npt.NDArray]:
    """Exporter address (16 bytes) and domain per flow, from the exporter index column."""
    keys = exporters.entries()
    addresses = np.zeros(max(len(keys), 1), "S16")
    domains = np.zeros(max(len(keys), 1), np.uint64)
    for index, (address, domain) in enumerate(keys):
        try:
            parsed: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
        except ValueError:
            parsed = ipaddress.IPv4Address(0)
        if parsed.version == 4:
            addresses[index] = ipv4_to_mapped(np.array([int(parsed)], np.uint32))[0]
        else:
            addresses[index] = parsed.packed
        domains[index] = domain
    rows = batch["exporter"].astype(np.intp)
    return addresses[rows], domains[rows]


def encode_flows(batch: FlowBatch, exporters: ExporterTable, *, padded: bool = False) -> bytes:
    """The whole batch as NDJSON bytes (each line ends with a newline).

    ``padded``: fixed-width lines with blanks where JSON allows them; faster (see export.text).
    """
    if len(batch) == 0:
        return b""
    exporter_address, domain = exporter_columns(batch, exporters)
    pieces: list[Piece] = [
        Literal(b'{"time_received":'), Number(_non_negative(batch["time_received"])),
        Literal(b',"time_start":'), Number(_non_negative(batch["time_start"])),
        Literal(b',"time_end":'), Number(_non_negative(batch["time_end"])),
        Literal(b',"exporter":'), Address(exporter_address),
        Literal(b',"domain":'), Number(domain),
        Literal(b',"src_addr":'), Address(batch["src_addr"]),
        Literal(b',"dst_addr":'), Address(batch["dst_addr"]),
    ]
    for key in _NUMBER_KEYS:
        pieces += [Literal(f',"{key}":'.encode()), Number(batch[key])]
    pieces.append(Literal(b"}\n"))
    return render_rows(pieces, len(batch), padded=padded)


def _non_negative(values: npt.NDArray) -> npt.NDArray:
    # Times before 1970 cannot come from a sane exporter; print them as 0 rather than wrap.
    result: npt.NDArray = np.maximum(values, 0).astype(np.uint64)
    return result
