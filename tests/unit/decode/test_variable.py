"""Records with variable-length fields (``decode/variable.py``): lengths in both forms, fixed runs
read as one slice, and where a set's records stop."""

from __future__ import annotations

from flowscope.decode.templates import VARIABLE_LENGTH, FieldSpec, Template, compile_template
from flowscope.decode.variable import layout, walk_records
from support.exports import u16, u32, varlen

# sourceIPv4Address, sourceTransportPort, interfaceName (variable), destinationTransportPort,
# applicationName (variable)
TEMPLATE = compile_template(Template(template_id=300, fields=(
    FieldSpec(0, 8, 4), FieldSpec(0, 7, 2), FieldSpec(0, 82, VARIABLE_LENGTH), FieldSpec(0, 11, 2),
    FieldSpec(0, 96, VARIABLE_LENGTH))))


def _record(n: int, name: bytes, application: bytes, *, long: bool | None = None) -> bytes:
    return u32(0x0A000000 + n) + u16(1000 + n) + varlen(name, long=long) + u16(443) + varlen(application)


def test_layout_joins_adjacent_fixed_fields() -> None:
    assert layout(TEMPLATE) == ((-1, 6), (2, 0), (-1, 2), (4, 0))
    assert layout(TEMPLATE) is layout(TEMPLATE)  # planned once per template


def test_short_and_long_length_forms() -> None:
    body = _record(1, b"eth0", b"https") + _record(2, b"x" * 300, b"") + _record(3, b"ge-0/0/1", b"dns", long=True)
    walked = walk_records(TEMPLATE, memoryview(body))
    assert walked.count == 3 and not walked.overrun
    assert walked.values == {2: [b"eth0", b"x" * 300, b"ge-0/0/1"], 4: [b"https", b"", b"dns"]}
    assert walked.fixed == b"".join(u32(0x0A000000 + n) + u16(1000 + n) + u16(443) for n in (1, 2, 3))


def test_padding_ends_the_set_quietly_and_an_overrun_is_reported() -> None:
    good = _record(1, b"eth0", b"https")
    padded = walk_records(TEMPLATE, memoryview(good + bytes(5)))
    assert (padded.count, padded.overrun) == (1, False)
    cut = walk_records(TEMPLATE, memoryview(good + _record(2, b"eth1", b"ssh")[:-2]))
    assert (cut.count, cut.overrun, cut.values[2]) == (1, True, [b"eth0"])
    lying = walk_records(TEMPLATE, memoryview(good + u32(1) + u16(2) + b"\xff\xff\xff"))  # 65535-byte value
    assert (lying.count, lying.overrun) == (1, True)
