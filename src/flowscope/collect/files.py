"""Offline readers: captures and dumps on disk → iterators of ``Datagram``.

- ``read_pcap``: classic pcap (either byte order, µs or ns) and pcapng; every UDP datagram.
- ``read_ipfix_file``: an RFC 5655 IPFIX file (messages back to back).
- ``read_raw_datagrams``: raw export payloads, one or several back to back.
- ``read_capture``: picks one of the above by the file's content.

Data problems never raise out of an iterator: they are counted in the optional ``Counters``
(``collector_file_skipped_total{reader,reason}`` for packets passed over,
``collector_file_errors_total{reader,reason}`` for damaged files and incomplete datagrams) and the
reader skips or stops. A missing file raises ``FileNotFoundError`` when the reader is called.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterator
from typing import BinaryIO

from flowscope.collect import PathLike, ReaderTally, require_file
from flowscope.collect.pcap import PCAP_MAGIC, PCAPNG_MAGIC, read_pcap
from flowscope.metrics import Counters
from flowscope.model import Datagram

__all__ = ["read_capture", "read_ipfix_file", "read_pcap", "read_raw_datagrams"]


# -- IPFIX files and raw payloads --------------------------------------------------------------


def read_ipfix_file(
    path: PathLike, *, exporter: str = "0.0.0.0", counters: Counters | None = None
) -> Iterator[Datagram]:
    """RFC 5655 IPFIX file: messages split by their header length, time = export time × 1000."""
    require_file(path)
    return _ipfix_file(path, exporter, ReaderTally(counters, "ipfix_file"))


def _ipfix_file(path: PathLike, exporter: str, tally: ReaderTally) -> Iterator[Datagram]:
    try:
        with open(path, "rb") as f:
            while head := f.read(16):
                if len(head) < 16:
                    tally.error("truncated_message")
                    return
                version, length, export_time = struct.unpack("!HHI", head[:8])
                if version != 10 or length < 16:
                    tally.error("bad_header")
                    return
                body = f.read(length - 16)
                if len(body) < length - 16:
                    tally.error("truncated_message")
                    return
                yield tally.counted(Datagram(exporter, export_time * 1000, head + body))
    finally:
        tally.publish()


# version → (header bytes, record bytes) for the formats whose size follows from the count
_COUNTED_FORMATS = {1: (16, 48), 5: (24, 48), 7: (24, 52)}


def read_raw_datagrams(
    path: PathLike, *, exporter: str = "0.0.0.0", counters: Counters | None = None
) -> Iterator[Datagram]:
    """Raw export payloads, one or several back to back (as ``nc -u -l >> file`` leaves them).

    NetFlow v1/v5/v7 are split by their record count, IPFIX by its header length; NetFlow v9
    has no length, so the rest of the file is one datagram. A header announcing more bytes than
    the file holds yields the rest as one datagram (counted; the decoder reports it). Time is the
    header's export time, or the file's mtime when the bytes are no known format.
    """
    stat = require_file(path)
    return _raw(path, exporter, ReaderTally(counters, "raw"), stat.st_mtime_ns // 1_000_000)


def _raw(path: PathLike, exporter: str, tally: ReaderTally, mtime_ms: int) -> Iterator[Datagram]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        position = 0
        while position < len(data):
            size, time_ms = _raw_message(data, position, mtime_ms, tally)
            yield tally.counted(Datagram(exporter, time_ms, data[position : position + size]))
            position += size
    finally:
        tally.publish()


def _raw_message(data: bytes, position: int, mtime_ms: int, tally: ReaderTally) -> tuple[int, int]:
    """(size, time_received_ms) of the message starting at ``position``."""
    rest = len(data) - position
    version = int.from_bytes(data[position : position + 2]) if rest >= 2 else -1
    if version in _COUNTED_FORMATS and rest >= _COUNTED_FORMATS[version][0]:
        header_bytes, record_bytes = _COUNTED_FORMATS[version]
        count, _, seconds, nanoseconds = struct.unpack_from("!HIII", data, position + 2)
        size = header_bytes + record_bytes * count
        if size > rest:
            tally.error("count_exceeds_data")
            size = rest
        return size, seconds * 1000 + nanoseconds // 1_000_000
    if version == 9 and rest >= 20:
        return rest, int.from_bytes(data[position + 8 : position + 12]) * 1000
    if version == 10 and rest >= 16:
        length, export_time = struct.unpack_from("!HI", data, position + 2)
        if length < 16:
            tally.error("bad_header")
            return rest, export_time * 1000
        if length > rest:
            tally.error("length_exceeds_data")
            return rest, export_time * 1000
        return length, export_time * 1000
    tally.error("unknown_format")
    return rest, mtime_ms


# -- dispatch ----------------------------------------------------------------------------------


def read_capture(
    path: PathLike,
    *,
    exporter: str = "0.0.0.0",
    counters: Counters | None = None,
    ports: Collection[int] | None = None,
) -> Iterator[Datagram]:
    """Any of the formats above, recognised by content (magic numbers), not by file name.

    pcap/pcapng magic → ``read_pcap``; IPFIX messages whose header lengths tile the whole file
    → ``read_ipfix_file``; anything else → ``read_raw_datagrams``. ``exporter`` labels the
    datagrams of files that carry no addresses.
    """
    stat = require_file(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        is_ipfix_file = magic not in PCAP_MAGIC and magic != PCAPNG_MAGIC and _tiles_ipfix(f, stat.st_size)
    if magic in PCAP_MAGIC or magic == PCAPNG_MAGIC:
        return read_pcap(path, counters=counters, ports=ports)
    if is_ipfix_file:
        return read_ipfix_file(path, exporter=exporter, counters=counters)
    return read_raw_datagrams(path, exporter=exporter, counters=counters)


def _tiles_ipfix(f: BinaryIO, size: int) -> bool:
    """True if IPFIX headers (version 10, length >= 16) lead from offset 0 exactly to EOF."""
    position = 0
    while position < size:
        f.seek(position)
        head = f.read(4)
        if len(head) < 4:
            return False
        version, length = struct.unpack("!HH", head)
        if version != 10 or length < 16:
            return False
        position += length
    return position == size and size > 0
