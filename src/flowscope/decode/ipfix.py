"""IPFIX (RFC 7011): header and (options) template parsing, withdrawals. No I/O."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from flowscope.decode.templates import FieldSpec, Template

HEADER = struct.Struct("!HHIII")  # version, length, export_time_s, sequence, observation_domain
HEADER_LENGTH = HEADER.size
SET_HEADER = struct.Struct("!HH")
TEMPLATE_SET_ID = 2
OPTIONS_TEMPLATE_SET_ID = 3
MIN_DATA_SET_ID = 256
ENTERPRISE_BIT = 0x8000


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    export_time_ms: int
    sequence: int
    domain: int


def parse_header(payload: bytes | memoryview, offset: int = 0) -> Header:
    _, length, export_time, sequence, domain = HEADER.unpack_from(payload, offset)
    return Header(length, export_time * 1000, sequence, domain)


@dataclass(slots=True)
class TemplateSetResult:
    templates: list[Template] = field(default_factory=list)
    withdrawals: list[int] = field(default_factory=list)  # template ids; set id = withdraw all
    errors: list[tuple[str, str]] = field(default_factory=list)


def _field_specs(body: memoryview, offset: int, count: int, end: int) -> tuple[list[FieldSpec], int] | None:
    specs: list[FieldSpec] = []
    for _ in range(count):
        if end - offset < 4:
            return None
        element_id, length = SET_HEADER.unpack_from(body, offset)
        offset += 4
        pen = 0
        if element_id & ENTERPRISE_BIT:
            if end - offset < 4:
                return None
            (pen,) = struct.unpack_from("!I", body, offset)
            offset += 4
            element_id &= ~ENTERPRISE_BIT
        specs.append(FieldSpec(pen, element_id, length))
    return specs, offset


def parse_template_set(body: memoryview, *, options: bool) -> TemplateSetResult:
    result = TemplateSetResult()
    set_id = OPTIONS_TEMPLATE_SET_ID if options else TEMPLATE_SET_ID
    offset, end = 0, len(body)
    while end - offset >= 4:
        template_id, field_count = SET_HEADER.unpack_from(body, offset)
        offset += 4
        if template_id == 0 and field_count == 0:
            break  # padding
        if field_count == 0:
            # Withdrawal (RFC 7011 §8.1); the set id as template id withdraws all of this kind.
            result.withdrawals.append(template_id)
            continue
        scope_count = 0
        if options:
            if end - offset < 2:
                result.errors.append(("template_truncated", f"options template {template_id} truncated"))
                break
            (scope_count,) = struct.unpack_from("!H", body, offset)
            offset += 2
            if scope_count > field_count:
                result.errors.append(("template_invalid", f"options template {template_id}: scope > fields"))
                break
        parsed = _field_specs(body, offset, field_count, end)
        if parsed is None:
            result.errors.append(("template_truncated", f"template {template_id} overruns its set"))
            break
        specs, offset = parsed
        if template_id < MIN_DATA_SET_ID:
            result.errors.append(("template_id_reserved", f"template id {template_id} < 256 in set {set_id}"))
            continue
        result.templates.append(
            Template(template_id=template_id, fields=tuple(specs), scope_count=scope_count, is_options=options)
        )
    return result
