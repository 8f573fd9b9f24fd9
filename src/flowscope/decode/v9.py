"""NetFlow v9 (RFC 3954): header and template parsing. No I/O; data sets are decoded by the session."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from flowscope.decode.templates import FieldSpec, Template

HEADER = struct.Struct("!HHIIII")  # version, count, sys_uptime_ms, unix_secs, sequence, source_id
SET_HEADER = struct.Struct("!HH")
TEMPLATE_SET_ID = 0
OPTIONS_TEMPLATE_SET_ID = 1
MIN_DATA_SET_ID = 256

# v9 options scope fields use their own type numbers (System, Interface, Line Card, Cache,
# Template), not element ids: they get a pseudo enterprise number so they never alias IANA ids.
V9_SCOPE_PEN = 0xFFFFFFFF
SCOPE_NAMES = {1: "system", 2: "interface", 3: "line_card", 4: "cache", 5: "template"}


@dataclass(frozen=True, slots=True)
class Header:
    count: int
    sys_uptime_ms: int
    export_time_ms: int
    sequence: int
    source_id: int


def parse_header(payload: bytes) -> Header:
    _, count, uptime, secs, sequence, source_id = HEADER.unpack_from(payload)
    return Header(count, uptime, secs * 1000, sequence, source_id)


@dataclass(slots=True)
class TemplateSetResult:
    templates: list[Template] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail)


def parse_template_set(body: memoryview) -> TemplateSetResult:
    result = TemplateSetResult()
    offset, end = 0, len(body)
    while end - offset >= 4:
        template_id, field_count = SET_HEADER.unpack_from(body, offset)
        offset += 4
        if template_id == 0 and field_count == 0:
            break  # padding
        if field_count == 0:
            result.errors.append(("template_invalid", f"template {template_id} has no fields"))
            continue
        if end - offset < 4 * field_count:
            result.errors.append(("template_truncated", f"template {template_id} needs {4 * field_count} bytes"))
            break
        specs = struct.unpack_from(f"!{2 * field_count}H", body, offset)
        offset += 4 * field_count
        if template_id < MIN_DATA_SET_ID:
            result.errors.append(("template_id_reserved", f"template id {template_id} < 256"))
            continue
        fields = tuple(FieldSpec(0, specs[i], specs[i + 1]) for i in range(0, len(specs), 2))
        result.templates.append(Template(template_id=template_id, fields=fields))
    return result


def parse_options_template_set(body: memoryview) -> TemplateSetResult:
    result = TemplateSetResult()
    offset, end = 0, len(body)
    while end - offset >= 6:
        template_id, scope_length, option_length = struct.unpack_from("!HHH", body, offset)
        offset += 6
        if template_id == 0:
            break  # padding
        if scope_length % 4 or option_length % 4:
            result.errors.append(("template_invalid", f"options template {template_id}: lengths not /4"))
            break
        if end - offset < scope_length + option_length:
            result.errors.append(("template_truncated", f"options template {template_id} overruns its set"))
            break
        scope = struct.unpack_from(f"!{scope_length // 2}H", body, offset)
        offset += scope_length
        options = struct.unpack_from(f"!{option_length // 2}H", body, offset)
        offset += option_length
        if template_id < MIN_DATA_SET_ID:
            result.errors.append(("template_id_reserved", f"options template id {template_id} < 256"))
            continue
        fields = tuple(FieldSpec(V9_SCOPE_PEN, scope[i], scope[i + 1]) for i in range(0, len(scope), 2))
        fields += tuple(FieldSpec(0, options[i], options[i + 1]) for i in range(0, len(options), 2))
        if not fields:
            result.errors.append(("template_invalid", f"options template {template_id} has no fields"))
            continue
        result.templates.append(
            Template(template_id=template_id, fields=fields, scope_count=len(scope) // 2, is_options=True)
        )
    return result
