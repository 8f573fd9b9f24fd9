"""Templates (flowscope.decode.templates): compilation to numpy dtypes and the scoped, bounded store."""

from __future__ import annotations

import struct

import numpy as np

from flowscope.decode.templates import (
    VARIABLE_LENGTH,
    FieldSpec,
    Template,
    TemplateKey,
    TemplateStore,
    compile_template,
    field_name,
)

A, B = "192.0.2.1", "198.51.100.7"


def template(template_id: int, *fields: tuple[int, int] | tuple[int, int, int], options: bool = False) -> Template:
    specs = tuple(FieldSpec(f[2] if len(f) == 3 else 0, f[0], f[1]) for f in fields)
    return Template(template_id, specs, scope_count=1 if options else 0, is_options=options)


# -- FieldSpec / Template -------------------------------------------------------------------------


def test_field_spec_variable_flag() -> None:
    assert FieldSpec(0, 82, VARIABLE_LENGTH).is_variable
    assert VARIABLE_LENGTH == 65535
    assert not FieldSpec(0, 82, 255).is_variable
    assert not FieldSpec(0, 82, 0).is_variable


def test_compile_integer_and_byte_fields() -> None:
    # lengths 1/2/4/8 become big-endian integers, 3 and 16 byte sub-arrays, 0 takes no space
    compiled = compile_template(template(300, (4, 1), (7, 2), (8, 4), (1, 8), (2, 3), (210, 0), (27, 16)))
    dtype = compiled.fixed_dtype
    assert compiled.fixed_length == 1 + 2 + 4 + 8 + 3 + 16 == dtype.itemsize
    assert dtype.names == ("f0", "f1", "f2", "f3", "f4", "f6")
    assert [dtype.fields[n][1] for n in dtype.names] == [0, 1, 3, 7, 15, 18]
    assert dtype["f0"] == np.dtype("u1")
    assert dtype["f1"] == np.dtype(">u2")
    assert dtype["f2"] == np.dtype(">u4")
    assert dtype["f3"] == np.dtype(">u8")
    assert dtype["f4"].shape == (3,)
    assert dtype["f6"].shape == (16,)
    assert compiled.fixed_index == (0, 1, 2, 3, 4, 6)
    assert compiled.variable_index == ()
    assert not compiled.is_variable
    assert compiled.min_record_length == 34

    one = struct.pack("!BHIQ", 6, 443, 0xC0000201, 2**40 + 5) + b"\x01\x02\x03" + bytes(range(16))
    two = struct.pack("!BHIQ", 17, 53, 0x0A000001, 7) + b"\xff\xff\xff" + bytes(16)
    records = np.frombuffer(one + two, dtype=dtype)
    assert records["f0"].tolist() == [6, 17]
    assert records["f1"].tolist() == [443, 53]
    assert records["f2"].tolist() == [0xC0000201, 0x0A000001]
    assert records["f3"].tolist() == [2**40 + 5, 7]
    assert records["f4"].tolist() == [[1, 2, 3], [255, 255, 255]]
    assert bytes(records["f6"][0]) == bytes(range(16))


def test_compile_variable_fields_stay_out_of_the_dtype() -> None:
    compiled = compile_template(template(301, (82, VARIABLE_LENGTH), (10, 4), (83, VARIABLE_LENGTH), (210, 0)))
    assert compiled.fixed_dtype.names == ("f1",)
    assert compiled.fixed_length == 4
    assert compiled.fixed_index == (1,)
    assert compiled.variable_index == (0, 2)
    assert compiled.is_variable
    # smallest record: 4 fixed bytes + one length byte per variable field
    assert compiled.min_record_length == 6


def test_compile_only_zero_length_fields() -> None:
    compiled = compile_template(template(302, (1, 0), (2, 0)))
    assert compiled.fixed_length == 0
    assert compiled.fixed_dtype.itemsize == 0
    assert compiled.fixed_index == ()
    assert compiled.min_record_length == 0


def test_field_name_is_positional() -> None:
    assert field_name(0) == "f0"
    assert field_name(17) == "f17"


def test_field_position_first_match_skips_zero_length_and_respects_pen() -> None:
    t = compile_template(template(303, (1, 0), (1, 4), (1, 8), (1, 4, 29305), (1, 4, 6871)))
    assert t.field_position(0, 1) == 1  # the zero-length one is not a field to read
    assert t.field_position(29305, 1) == 3
    assert t.field_position(6871, 1) == 4
    assert t.field_position(0, 2) is None
    assert t.field_position(9, 1) is None


def test_same_layout() -> None:
    base = template(256, (8, 4), (12, 4))
    assert base.same_layout(template(256, (8, 4), (12, 4)))
    assert base.same_layout(template(999, (8, 4), (12, 4)))  # the id is the key, not the layout
    assert not base.same_layout(template(256, (8, 4), (12, 16)))
    assert not base.same_layout(template(256, (12, 4), (8, 4)))
    assert not base.same_layout(template(256, (8, 4), (12, 4, 9)))
    assert not base.same_layout(template(256, (8, 4), (12, 4), options=True))


# -- TemplateStore --------------------------------------------------------------------------------


def test_store_scopes_by_exporter_domain_and_id() -> None:
    store = TemplateStore()
    v4 = template(256, (8, 4), (12, 4))
    v6 = template(256, (27, 16), (28, 16))
    other_domain = template(256, (1, 8))
    assert store.put(A, 0, v4).accepted
    assert store.put(B, 0, v6).accepted
    assert store.put(A, 7, other_domain).accepted
    assert store.get(A, 0, 256) is v4
    assert store.get(B, 0, 256) is v6
    assert store.get(A, 7, 256) is other_domain
    assert store.get(A, 1, 256) is None
    assert store.get(A, 0, 257) is None
    assert len(store) == 3
    # the stored objects were compiled on the way in
    assert v4.fixed_length == 8 and v6.fixed_length == 32 and other_domain.fixed_length == 8


def test_store_refresh_keeps_the_object_change_replaces_it() -> None:
    store = TemplateStore()
    first = template(260, (8, 4), (12, 4))
    new = store.put(A, 0, first)
    assert (new.accepted, new.refreshed, new.changed) == (True, False, False)
    again = store.put(A, 0, template(260, (8, 4), (12, 4)))
    assert (again.accepted, again.refreshed, again.changed) == (True, True, False)
    assert store.get(A, 0, 260) is first  # a refresh does not recompile or replace
    changed = template(260, (8, 4), (12, 4), (7, 2))
    result = store.put(A, 0, changed)
    assert (result.accepted, result.refreshed, result.changed) == (True, False, True)
    assert store.get(A, 0, 260) is changed
    assert changed.fixed_length == 10
    assert len(store) == 1


def test_store_limit_is_per_exporter() -> None:
    store = TemplateStore(max_templates_per_exporter=3)
    for template_id in (256, 257, 258):
        assert store.put(A, 0, template(template_id, (1, 4))).accepted
    refused = store.put(A, 0, template(259, (1, 4)))
    assert (refused.accepted, refused.reason) == (False, "template_limit")
    refused_domain = store.put(A, 5, template(256, (1, 4)))  # other domain, same exporter: still bounded
    assert not refused_domain.accepted
    assert store.get(A, 0, 259) is None
    # refreshing and changing known templates is still allowed at the limit
    assert store.put(A, 0, template(256, (1, 4))).refreshed
    assert store.put(A, 0, template(257, (2, 4))).changed
    # another exporter has its own budget
    assert all(store.put(B, 0, template(t, (1, 4))).accepted for t in (256, 257, 258))
    assert len(store) == 6
    # a withdrawal frees a slot
    assert store.withdraw(A, 0, 258)
    assert store.put(A, 0, template(259, (1, 4))).accepted


def test_withdraw_single() -> None:
    store = TemplateStore()
    store.put(A, 0, template(256, (1, 4)))
    store.put(B, 0, template(256, (1, 4)))
    assert store.withdraw(A, 0, 256)
    assert not store.withdraw(A, 0, 256)  # already gone
    assert not store.withdraw(A, 3, 256)  # never there
    assert store.get(A, 0, 256) is None
    assert store.get(B, 0, 256) is not None


def test_withdraw_all_by_kind_and_scope() -> None:
    store = TemplateStore()
    store.put(A, 0, template(256, (1, 4)))
    store.put(A, 0, template(257, (1, 4)))
    store.put(A, 0, template(258, (1, 4), options=True))
    store.put(A, 1, template(256, (1, 4)))
    store.put(B, 0, template(256, (1, 4)))
    assert store.withdraw_all(A, 0, options=False) == 2
    assert store.get(A, 0, 256) is None and store.get(A, 0, 257) is None
    assert store.get(A, 0, 258) is not None  # options templates stay
    assert store.get(A, 1, 256) is not None and store.get(B, 0, 256) is not None
    assert store.withdraw_all(A, 0, options=True) == 1
    assert store.withdraw_all(A, 0, options=True) == 0
    assert len(store) == 2


def test_templates_of() -> None:
    store = TemplateStore()
    store.put(A, 0, template(256, (1, 4)))
    store.put(A, 9, template(300, (1, 4)))
    store.put(B, 0, template(256, (2, 4)))
    assert sorted(key for key, _ in store.templates_of(A)) == [TemplateKey(A, 0, 256), TemplateKey(A, 9, 300)]
    assert [key for key, _ in store.templates_of(B)] == [TemplateKey(B, 0, 256)]
    assert len(store.templates_of()) == 3
    assert store.templates_of("203.0.113.1") == []


def test_store_keeps_netflow_v9_and_ipfix_apart() -> None:
    # one host exporting both: v9 source id 0 and IPFIX observation domain 0 are separate namespaces
    store = TemplateStore(max_templates_per_exporter=3)
    ipfix = template(256, (8, 4))
    netflow = template(256, (7, 2))
    assert store.put(A, 0, ipfix).accepted
    result = store.put(A, 0, netflow, version=9)
    assert (result.accepted, result.refreshed, result.changed) == (True, False, False)
    assert store.get(A, 0, 256, version=10) is ipfix
    assert store.get(A, 0, 256, version=9) is netflow
    assert store.get(A, 0, 256) is ipfix  # without a version: the IPFIX one first
    assert sorted(key for key, _ in store.templates_of(A)) == [TemplateKey(A, 0, 256, 9), TemplateKey(A, 0, 256, 10)]
    # withdrawals name their version; both count against the exporter's bound
    assert store.withdraw_all(A, 0, options=False, version=10) == 1
    assert store.get(A, 0, 256) is netflow  # the only one left
    assert not store.withdraw(A, 0, 256)  # IPFIX: already gone
    assert store.withdraw(A, 0, 256, version=9)
    assert len(store) == 0
    for template_id in (256, 257):
        store.put(A, 0, template(template_id, (1, 4)), version=9)
    store.put(A, 0, template(256, (1, 4)))
    assert not store.put(A, 0, template(257, (1, 4))).accepted
