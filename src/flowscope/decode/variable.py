"""Records of templates with variable-length fields (RFC 7011 §7), walked one by one: the slow path.

A record's fixed-length fields are kept as bytes, to be decoded with the template's dtype like
any fixed-length record; each variable-length value is kept as bytes of its own. No I/O and no
session state here: the decoder adds what comes out to its groups and counts what went wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from flowscope.decode.templates import Template

_LONG_LENGTH = struct.Struct("!H")  # the 3-byte form of a variable-length field's length
_VARIABLE_LENGTH_LONG = 255


@dataclass(frozen=True, slots=True)
class VariableRecords:
    count: int
    fixed: bytes  # the fixed-length fields of every record, end to end
    values: dict[int, list[bytes]]  # field position → one value per record
    overrun: bool  # non-zero bytes left that do not make a whole record (padding is zeros)


def layout(template: Template) -> tuple[tuple[int, int], ...]:
    """A variable-length template as the walk needs it, computed once per template:
    ``(position, 0)`` for a variable-length field, ``(-1, n)`` for a run of fixed-length fields
    of n bytes in all (adjacent fixed fields are read as one slice)."""
    steps_of: tuple[tuple[int, int], ...] | None = template.plans.get("decode_variable_layout")
    if steps_of is None:
        steps: list[tuple[int, int]] = []
        run = 0
        for position, spec in enumerate(template.fields):
            if spec.is_variable:
                if run:
                    steps.append((-1, run))
                    run = 0
                steps.append((position, 0))
            else:
                run += spec.length
        if run:
            steps.append((-1, run))
        steps_of = template.plans["decode_variable_layout"] = tuple(steps)
    return steps_of


def walk_records(template: Template, body: memoryview) -> VariableRecords:
    """The records of one data set of ``template``, up to the first that does not fit."""
    steps = layout(template)
    fixed_parts: list[bytes | memoryview] = []
    values: dict[int, list[bytes]] = {p: [] for p in template.variable_index}
    offset, end, count = 0, len(body), 0
    minimum = max(template.min_record_length, 1)
    overrun = False
    while end - offset >= minimum:
        start = offset
        record_fixed: list[memoryview] = []
        record_values: list[tuple[int, bytes]] = []
        try:
            for position, size in steps:
                if size:  # a run of fixed-length fields
                    if offset + size > end:
                        raise IndexError
                    record_fixed.append(body[offset : offset + size])
                    offset += size
                    continue
                length = body[offset]
                offset += 1
                if length == _VARIABLE_LENGTH_LONG:
                    (length,) = _LONG_LENGTH.unpack_from(body, offset)
                    offset += 2
                if offset + length > end:
                    raise IndexError
                record_values.append((position, bytes(body[offset : offset + length])))
                offset += length
        except (IndexError, struct.error):
            overrun = any(body[start:])
            break
        fixed_parts.extend(record_fixed)
        for position, value in record_values:
            values[position].append(value)
        count += 1
    else:
        overrun = any(body[offset:])  # a tail too short for a record: padding, unless it holds data
    return VariableRecords(count, b"".join(fixed_parts), values, overrun)
