"""NetFlow v1, v5 and v7: fixed records, decoded through fixed 'virtual' templates.

The record layouts are expressed as templates of IANA elements, so these versions flow through
the same columnar decode and normalize path as NetFlow v9 and IPFIX (IPFIXcol2's idea: normalize
early). No I/O here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from flowscope.decode.templates import FieldSpec, Template, compile_template

PADDING = 210  # IANA paddingOctets


def _layout(template_id: int, fields: list[tuple[int, int]]) -> Template:
    return compile_template(
        Template(template_id=template_id, fields=tuple(FieldSpec(0, e, n) for e, n in fields))
    )


_V5_V7_COMMON = [
    (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2), (11, 2),
]

V5_TEMPLATE = _layout(
    5,
    [*_V5_V7_COMMON, (PADDING, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (PADDING, 2)],
)
V7_TEMPLATE = _layout(
    7,
    [*_V5_V7_COMMON, (PADDING, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (PADDING, 2),
     (PADDING, 4)],  # flags2 and router_sc: bookkeeping of the Catalyst switch, not flow data
)
V1_TEMPLATE = _layout(
    1,
    [*_V5_V7_COMMON, (PADDING, 2), (4, 1), (5, 1), (6, 1), (PADDING, 7)],
)


@dataclass(frozen=True, slots=True)
class LegacyFormat:
    version: int
    header: struct.Struct
    template: Template

    @property
    def header_length(self) -> int:
        return self.header.size

    @property
    def record_length(self) -> int:
        return self.template.fixed_length


# version, count, sys_uptime_ms, unix_secs, unix_nsecs, flow_sequence, engine_type, engine_id, sampling
V5_HEADER = struct.Struct("!HHIIIIBBH")
V7_HEADER = struct.Struct("!HHIIII4x")  # version, count, uptime, secs, nsecs, flow_sequence, reserved
V1_HEADER = struct.Struct("!HHIII")  # version, count, uptime, secs, nsecs

FORMATS = {
    1: LegacyFormat(1, V1_HEADER, V1_TEMPLATE),
    5: LegacyFormat(5, V5_HEADER, V5_TEMPLATE),
    7: LegacyFormat(7, V7_HEADER, V7_TEMPLATE),
}


@dataclass(slots=True)  # not frozen: made once per message, and a frozen dataclass costs 5x more to build
class LegacyHeader:
    version: int
    count: int
    sys_uptime_ms: int
    export_time_ms: int
    flow_sequence: int | None
    domain: int  # v5: engine_type << 8 | engine_id (as nfdump), else 0
    sampling_interval: int  # v5 header sampling interval (0 = not sampled)


def parse_header(fmt: LegacyFormat, payload: bytes) -> LegacyHeader:
    values = fmt.header.unpack_from(payload)
    export_time_ms = values[3] * 1000 + values[4] // 1_000_000
    if fmt.version == 5:
        engine_type, engine_id, sampling = values[6], values[7], values[8]
        return LegacyHeader(5, values[1], values[2], export_time_ms, values[5],
                            (engine_type << 8) | engine_id, sampling & 0x3FFF)
    sequence = values[5] if fmt.version == 7 else None
    return LegacyHeader(fmt.version, values[1], values[2], export_time_ms, sequence, 0, 0)
