"""The decoder session (flowscope.decode.session.DecoderSession), with crafted and real messages.

Crafted messages come from ``support.exports`` (an independent struct-based writer of the wire
formats); expected values are stated by hand. Real messages come from tests/data, with the values
their source projects assert (expected.json) or that the folder's MANIFEST.md documents.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderConfig, DecoderSession
from flowscope.decode.templates import FieldSpec
from flowscope.decode.v9 import V9_SCOPE_PEN
from flowscope.metrics import Counters
from flowscope.model import Datagram, ExporterTable
from support.exports import (
    REVERSE_PEN,
    VARIABLE,
    data_set,
    flowset,
    ipfix_message,
    ipfix_options_template,
    ipfix_options_template_set,
    ipfix_template,
    ipfix_template_set,
    ipfix_withdrawal,
    ipv4,
    ipv6,
    record,
    u8,
    u16,
    u32,
    u64,
    uint,
    v5_message,
    v5_record,
    v9_message,
    v9_options_template,
    v9_options_template_set,
    v9_template,
    v9_template_set,
    varlen,
)

DATA = Path(__file__).resolve().parents[2] / "data"
LOGSTASH = DATA / "logstash-codec-netflow"
SOFTFLOWD = DATA / "python-netflow-v9-softflowd"
IPFIXCOL2 = DATA / "ipfixcol2"

A, B = "192.0.2.1", "198.51.100.7"
T0 = 1_700_000_000_000  # collector clock, ms
EXPORT_S = 1_699_999_990  # exporter clock, s


# -- helpers --------------------------------------------------------------------------------------


def run(session: DecoderSession, *payloads: bytes, exporter: str = A, at: int = T0) -> list[RecordSet]:
    return session.decode([Datagram(exporter, at, payload) for payload in payloads])


def errors(session: DecoderSession, exporter: str = A) -> dict[str, int]:
    return {
        labels["kind"]: value
        for labels, value in session.counters.series("decode_errors_total")
        if labels["exporter"] == exporter and value
    }


def total(session: DecoderSession, name: str, **labels: str) -> int:
    return session.counters.total(name, **labels)


def column(records: RecordSet, element: int, pen: int = 0) -> list[int]:
    position = records.template.field_position(pen, element)
    assert position is not None, f"template {records.template.template_id} has no element {pen}/{element}"
    return records.unsigned(position).tolist()


def of(record_sets: list[RecordSet], template_id: int, exporter: str = A) -> RecordSet:
    found = [r for r in record_sets if r.template.template_id == template_id and r.exporter == exporter]
    assert len(found) == 1, f"{len(found)} record sets for template {template_id} of {exporter}"
    return found[0]


def count_records(record_sets: list[RecordSet]) -> int:
    return sum(len(r) for r in record_sets)


def tpl(template_id: int, fields: list[tuple[int, int]], **header: int) -> bytes:
    """An IPFIX message holding one template."""
    return ipfix_message([ipfix_template_set(ipfix_template(template_id, fields))], **header)


def data(template_id: int, *records: bytes, **header: int) -> bytes:
    """An IPFIX message holding one data set."""
    return ipfix_message([data_set(template_id, records)], **header)


# Two layouts under the same id: IPv4 pair + packets, and a port pair.
LAYOUT_V4 = [(8, 4), (12, 4), (2, 4)]
LAYOUT_PORTS = [(7, 2), (11, 2)]


# -- template scoping -----------------------------------------------------------------------------


def test_same_template_id_from_two_exporters_never_mixes() -> None:
    session = DecoderSession()
    out = session.decode([
        Datagram(A, T0, tpl(256, LAYOUT_V4, domain=1)),
        Datagram(B, T0, tpl(256, LAYOUT_PORTS, domain=1)),
        Datagram(B, T0, data(256, record(u16(80), u16(443)), record(u16(53), u16(5353)), domain=1)),
        Datagram(A, T0, data(256, record(ipv4("10.0.0.1"), ipv4("10.0.0.2"), u32(7)), domain=1)),
    ])
    from_a, from_b = of(out, 256, A), of(out, 256, B)
    assert len(from_a) == 1 and len(from_b) == 2
    assert column(from_a, 8) == [0x0A000001] and column(from_a, 12) == [0x0A000002] and column(from_a, 2) == [7]
    assert column(from_b, 7) == [80, 53] and column(from_b, 11) == [443, 5353]
    assert (from_a.domain, from_b.domain) == (1, 1)
    assert from_a.exporter_index != from_b.exporter_index
    # across calls the scopes stay apart too
    later = run(session, data(256, record(u16(1), u16(2)), domain=1), exporter=B)
    assert column(of(later, 256, B), 11) == [2]


def test_same_template_id_in_two_domains_of_one_exporter() -> None:
    session = DecoderSession()
    out = run(
        session,
        tpl(300, LAYOUT_V4, domain=5),
        tpl(300, LAYOUT_PORTS, domain=6),
        data(300, record(u16(22), u16(2222)), domain=6),
        data(300, record(ipv4("192.0.2.9"), ipv4("192.0.2.10"), u32(3)), domain=5),
    )
    by_domain = {r.domain: r for r in out}
    assert column(by_domain[5], 2) == [3]
    assert column(by_domain[6], 7) == [22]
    # a domain that never announced template 300 holds its data
    assert run(session, data(300, record(u16(1), u16(2)), domain=7)) == []
    assert session.pending_sets() == 1


def test_v9_and_ipfix_of_one_exporter_never_share_templates() -> None:
    # One host exporting NetFlow v9 (source id 0) and IPFIX (domain 0), both with template 256:
    # IPFIX data held for its template must not be decoded with the v9 template of that number.
    session = DecoderSession()
    held = run(session, data(256, record(u16(80), u16(443))))
    v9_out = run(session, v9_message([v9_template_set(v9_template(256, LAYOUT_V4))]))
    assert held == [] and v9_out == []
    assert session.pending_sets() == 1
    out = run(
        session,
        v9_message([data_set(256, [record(ipv4("10.0.0.1"), ipv4("10.0.0.2"), u32(5))])]),
        tpl(256, LAYOUT_PORTS),
    )
    by_version = {r.version: r for r in out}
    assert column(by_version[9], 2) == [5]
    assert column(by_version[10], 11) == [443]
    assert session.templates.get(A, 0, 256, version=10) is by_version[10].template
    assert session.templates.get(A, 0, 256, version=9) is by_version[9].template
    assert session.templates.get(A, 0, 256) is by_version[10].template  # no version: IPFIX first
    # an IPFIX withdrawal of everything leaves the v9 templates alone
    run(session, ipfix_message([ipfix_template_set(ipfix_withdrawal(2))]))
    assert session.templates.get(A, 0, 256, version=9) is not None
    assert session.templates.get(A, 0, 256) is by_version[9].template  # now the only one
    assert total(session, "decode_templates_total", event="new") == 2
    assert errors(session) == {}


def test_v9_template_scopes_in_one_batch() -> None:
    session = DecoderSession()
    v9_a = v9_message([v9_template_set(v9_template(256, [(7, 2)])), data_set(256, [u16(10)])], source_id=0)
    v9_b = v9_message([v9_template_set(v9_template(256, [(4, 1)])), data_set(256, [u8(17), u8(6)])])
    out = session.decode([Datagram(A, T0, v9_a), Datagram(B, T0, v9_b)])
    assert column(of(out, 256, A), 7) == [10]
    assert column(of(out, 256, B), 4) == [17, 6]


def test_v5_records_of_different_exporters_and_engines_stay_apart() -> None:
    # The v5 layout is one fixed template shared by every exporter: its records must still be
    # returned per exporter and engine (domain = engine_type << 8 | engine_id).
    exporters = ExporterTable()
    session = DecoderSession(exporters=exporters)
    out = session.decode([
        Datagram(A, T0, v5_message([v5_record(src="10.0.0.1", packets=1)], unix_secs=100)),
        Datagram(B, T0 + 1, v5_message([v5_record(src="10.0.0.2", packets=2)], unix_secs=200, engine_id=3)),
        Datagram(A, T0 + 2, v5_message([v5_record(src="10.0.0.3", packets=3)], unix_secs=300, engine_type=1)),
        Datagram(A, T0 + 3, v5_message([v5_record(src="10.0.0.4", packets=4)], unix_secs=400)),
    ])
    assert len(out) == 3
    keyed = {(r.exporter, r.domain): r for r in out}
    assert set(keyed) == {(A, 0), (B, 3), (A, 256)}
    assert column(keyed[(A, 0)], 2) == [1, 4]
    assert keyed[(A, 0)].export_time_ms.tolist() == [100_000, 400_000]
    assert column(keyed[(B, 3)], 2) == [2]
    assert column(keyed[(A, 256)], 2) == [3]
    for (exporter, domain), records in keyed.items():
        assert exporters.key_of(records.exporter_index) == (exporter, domain)


# -- template refresh, change, withdrawal ---------------------------------------------------------


def test_template_refresh_and_change() -> None:
    session = DecoderSession()
    run(session, tpl(256, LAYOUT_PORTS))
    run(session, tpl(256, LAYOUT_PORTS))
    assert total(session, "decode_templates_total", event="new") == 1
    assert total(session, "decode_templates_total", event="refreshed") == 1
    first = session.templates.get(A, 0, 256)
    run(session, tpl(256, LAYOUT_PORTS))
    assert session.templates.get(A, 0, 256) is first  # a refresh keeps the compiled template
    # same id, new layout: data from now on uses the new layout
    out = run(
        session,
        data(256, record(u16(80), u16(8080))),
        tpl(256, LAYOUT_V4),
        data(256, record(ipv4("10.1.1.1"), ipv4("10.2.2.2"), u32(99))),
    )
    assert total(session, "decode_templates_total", event="changed") == 1
    assert len(out) == 2
    old, new = out
    assert [s.length for s in old.template.fields] == [2, 2] and column(old, 11) == [8080]
    assert [s.length for s in new.template.fields] == [4, 4, 4] and column(new, 2) == [99]
    assert old.order.tolist() == [0] and new.order.tolist() == [1]
    assert len(session.templates) == 1


def test_ipfix_withdrawal_of_one_template() -> None:
    session = DecoderSession()
    run(session, ipfix_message([ipfix_template_set(ipfix_template(256, LAYOUT_PORTS), ipfix_template(257, [(4, 1)]))]))
    run(session, ipfix_message([ipfix_template_set(ipfix_withdrawal(256))]))
    assert session.templates.get(A, 0, 256) is None
    assert session.templates.get(A, 0, 257) is not None
    assert total(session, "decode_templates_total", event="withdrawn") == 1
    # data for the withdrawn template waits for a new announcement; the other still decodes
    out = run(session, ipfix_message([data_set(256, [record(u16(1), u16(2))]), data_set(257, [u8(6)])]))
    assert [r.template.template_id for r in out] == [257]
    assert session.pending_sets() == 1
    # withdrawing what is not there is counted apart
    run(session, ipfix_message([ipfix_template_set(ipfix_withdrawal(999))]))
    assert total(session, "decode_templates_total", event="withdraw_unknown") == 1
    # announced again, it is new and releases the held data
    out = run(session, tpl(256, LAYOUT_PORTS))
    assert column(of(out, 256), 11) == [2]
    assert total(session, "decode_templates_total", event="new") == 3
    assert errors(session) == {}


def test_ipfix_withdraw_all_data_templates_with_set_id_2() -> None:
    session = DecoderSession()
    run(
        session,
        ipfix_message([
            ipfix_template_set(ipfix_template(256, LAYOUT_PORTS), ipfix_template(257, [(4, 1)])),
            ipfix_options_template_set(ipfix_options_template(258, [(149, 4)], [(34, 4)]), padding=2),
        ]),
        tpl(256, LAYOUT_PORTS, domain=9),
    )
    run(session, ipfix_message([ipfix_template_set(ipfix_withdrawal(2))]))
    assert session.templates.get(A, 0, 256) is None
    assert session.templates.get(A, 0, 257) is None
    assert session.templates.get(A, 0, 258) is not None  # options templates are not in set 2's scope
    assert session.templates.get(A, 9, 256) is not None  # nor other domains
    assert total(session, "decode_templates_total", event="withdrawn") == 2
    assert len(session.templates) == 2


def test_ipfix_withdraw_all_options_templates_with_set_id_3() -> None:
    session = DecoderSession()
    run(
        session,
        ipfix_message([
            ipfix_template_set(ipfix_template(256, LAYOUT_PORTS)),
            ipfix_options_template_set(
                ipfix_options_template(258, [(149, 4)], [(34, 4)]),
                ipfix_options_template(259, [(10, 4)], [(82, VARIABLE)]),
            ),
        ]),
    )
    run(session, ipfix_message([ipfix_options_template_set(ipfix_withdrawal(3))]))
    assert session.templates.get(A, 0, 258) is None
    assert session.templates.get(A, 0, 259) is None
    assert session.templates.get(A, 0, 256) is not None
    assert total(session, "decode_templates_total", event="withdrawn") == 2
    # withdrawing all when none are left is "unknown"
    run(session, ipfix_message([ipfix_options_template_set(ipfix_withdrawal(3))]))
    assert total(session, "decode_templates_total", event="withdraw_unknown") == 1


def test_v9_template_can_be_changed_but_not_withdrawn_by_zero_fields() -> None:
    session = DecoderSession()
    run(session, v9_message([v9_template_set(v9_template(300, [(1, 4)]))]))
    # field count 0 is no withdrawal in NetFlow v9: it is an invalid template
    run(session, v9_message([v9_template_set(v9_template(300, []), v9_template(301, [(2, 4)]))]))
    assert session.templates.get(A, 0, 300, version=9) is not None
    assert errors(session) == {"template_invalid": 1}
    assert session.templates.get(A, 0, 301, version=9) is not None


# -- data before its template ---------------------------------------------------------------------


def test_data_before_template_is_held_and_released_later() -> None:
    session = DecoderSession()
    early = data(256, record(u16(5), u16(6)), record(u16(7), u16(8)), export_time=EXPORT_S)
    assert run(session, early, at=T0) == []
    assert session.pending_sets() == 1
    assert total(session, "decode_pending_sets_total") == 1
    out = run(session, tpl(256, LAYOUT_PORTS, export_time=EXPORT_S + 5), at=T0 + 1000)
    records = of(out, 256)
    assert column(records, 7) == [5, 7]
    # the released records keep the context of the message that carried them
    assert records.export_time_ms.tolist() == [EXPORT_S * 1000] * 2
    assert records.time_received_ms.tolist() == [T0] * 2
    assert session.pending_sets() == 0
    assert total(session, "decode_pending_released_total") == 1
    assert total(session, "decode_records_total", kind="data") == 2
    assert errors(session) == {}


def test_data_before_template_in_the_same_message() -> None:
    session = DecoderSession()
    message = ipfix_message([
        data_set(256, [record(u16(1), u16(2))]),
        ipfix_template_set(ipfix_template(256, LAYOUT_PORTS)),
        data_set(256, [record(u16(3), u16(4))]),
    ])
    out = run(session, message)
    assert len(out) == 1
    assert column(out[0], 7) == [1, 3]
    assert session.pending_sets() == 0
    assert total(session, "decode_pending_released_total") == 1


def test_v9_data_before_template_in_the_same_packet_real() -> None:
    # packet_v9_template_mixed.bin: the data set (8 records) comes before both template sets
    session = DecoderSession()
    out = run(session, (SOFTFLOWD / "packet_v9_template_mixed.bin").read_bytes())
    records = of(out, 1024)
    assert len(records) == 8
    expected = json.loads((SOFTFLOWD / "expected.json").read_text())
    scenario = next(s for s in expected["scenarios"] if s["packets_in_order"] == ["packet_v9_template_mixed.bin"])
    first, last = scenario["flows"]
    assert column(records, 4)[0] == first["PROTOCOL"]
    assert column(records, 7)[0] == first["L4_SRC_PORT"]
    assert records.values(records.template.field_position(0, 8))[0] == ipv4(first["IPV4_SRC_ADDR"])
    assert column(records, 4)[-1] == last["PROTOCOL"]
    assert column(records, 11)[-1] == last["L4_DST_PORT"]


def test_held_data_waits_for_its_own_scope() -> None:
    session = DecoderSession()
    run(session, data(256, record(u16(1), u16(2)), domain=1))
    run(session, tpl(256, LAYOUT_PORTS, domain=2))  # other domain
    run(session, tpl(256, LAYOUT_PORTS, domain=1), exporter=B)  # other exporter
    assert session.pending_sets() == 1
    out = run(session, tpl(256, LAYOUT_PORTS, domain=1))
    assert column(of(out, 256), 11) == [2]


def test_held_data_is_bounded_by_count_per_exporter() -> None:
    session = DecoderSession(DecoderConfig(pending_max_sets_per_exporter=3))
    for value in range(1, 6):
        run(session, data(256, record(u16(value), u16(0))))
    run(session, data(256, record(u16(100), u16(0))), exporter=B)
    assert session.pending_sets() == 4  # 3 for A, 1 for B
    assert session.counters.get("decode_pending_dropped_total", exporter=A, reason="overflow") == 2
    assert total(session, "decode_pending_dropped_total", exporter=B) == 0
    out = run(session, tpl(256, LAYOUT_PORTS))
    assert column(of(out, 256), 7) == [3, 4, 5]  # the oldest were dropped
    out = run(session, tpl(256, LAYOUT_PORTS), exporter=B)
    assert column(of(out, 256, B), 7) == [100]
    assert total(session, "decode_pending_sets_total") == 6
    assert total(session, "decode_pending_released_total") == 4


def test_held_data_is_bounded_by_age() -> None:
    session = DecoderSession(DecoderConfig(pending_max_age_ms=60_000))
    run(session, data(256, record(u16(1), u16(0))), at=T0)
    run(session, data(256, record(u16(2), u16(0))), at=T0 + 30_000)
    # holding at T0 + 61 s expires what arrived before T0 + 1 s
    run(session, data(256, record(u16(3), u16(0))), at=T0 + 61_000)
    assert session.counters.get("decode_pending_dropped_total", exporter=A, reason="expired") == 1
    assert session.pending_sets() == 2
    # the template comes at T0 + 95 s: the set from T0 + 30 s is now too old to be released
    out = run(session, tpl(256, LAYOUT_PORTS), at=T0 + 95_000)
    assert column(of(out, 256), 7) == [3]
    assert session.counters.get("decode_pending_dropped_total", exporter=A, reason="expired") == 2
    assert total(session, "decode_pending_released_total") == 1
    assert session.pending_sets() == 0


def test_real_ipfix_data_template_data() -> None:
    # python-netflow-v9-softflowd scenario "IPFIX data, template, data": 26 flows in total
    session = DecoderSession()
    data_packet = (SOFTFLOWD / "packet_ipfix.bin").read_bytes()
    template_packet = (SOFTFLOWD / "packet_ipfix_template.bin").read_bytes()
    counts = [count_records(run(session, p)) for p in (data_packet, template_packet, data_packet)]
    assert counts == [0, 20 + 3, 3]
    assert session.pending_sets() == 0


# -- refused templates ----------------------------------------------------------------------------


def test_template_ids_below_256_are_refused_and_counted() -> None:
    session = DecoderSession()
    run(
        session,
        v9_message([
            v9_template_set(v9_template(255, [(1, 4)]), v9_template(1, [(2, 4)]), v9_template(256, [(4, 1)])),
            v9_options_template_set(v9_options_template(100, [(1, 4)], [(34, 4)])),
        ]),
        ipfix_message([
            ipfix_template_set(ipfix_template(2, [(1, 4)])),
            ipfix_options_template_set(ipfix_options_template(17, [(149, 4)], [(34, 4)])),
        ]),
    )
    assert errors(session) == {"template_id_reserved": 5}
    assert [key.template_id for key, _ in session.templates.templates_of(A)] == [256]


def test_template_flood_is_bounded_per_exporter() -> None:
    session = DecoderSession(DecoderConfig(max_templates_per_exporter=4))
    flood = ipfix_template_set(*(ipfix_template(256 + i, [(1, 4)]) for i in range(6)))
    run(session, ipfix_message([flood]))
    assert errors(session) == {"template_limit": 2}
    assert len(session.templates) == 4
    assert session.templates.get(A, 0, 260) is None
    # other domains of the same exporter share its budget; other exporters have their own
    run(session, tpl(256, [(2, 4)], domain=1))
    assert errors(session) == {"template_limit": 3}
    run(session, ipfix_message([flood]), exporter=B)
    assert errors(session, B) == {"template_limit": 2}
    assert total(session, "decode_templates_total", event="new") == 8


# -- sequence numbers -----------------------------------------------------------------------------


def test_v5_sequence_counts_flows() -> None:
    session = DecoderSession()
    one = v5_record()
    run(
        session,
        v5_message([one, one], sequence=0),
        v5_message([one, one, one], sequence=2),
        v5_message([one], sequence=10),  # 5, 6, 7, 8, 9 missing
    )
    assert session.counters.get("decode_sequence_lost_total", exporter=A, unit="records") == 5


def test_v9_sequence_counts_packets_with_wrap_and_reordering() -> None:
    session = DecoderSession()
    top = 1 << 32
    # across the wrap; 1 is lost; 2 arrives after 3 (so when 3 arrives, 1 and 2 are missing)
    sequences = [top - 2, top - 1, 0, 3, 2, 4, 5]
    run(session, *(v9_message([], sequence=s, source_id=4) for s in sequences))
    assert session.counters.get("decode_sequence_lost_total", exporter=A, unit="packets") == 2
    state = session.sequences.states()[(A, 9, 4)]
    # the late 2 is reordering: it does not make 4 look lost
    assert (state.lost, state.reordered, state.received) == (2, 1, 7)


def test_ipfix_sequence_counts_data_and_options_records() -> None:
    session = DecoderSession()
    setup = ipfix_message(
        [
            ipfix_template_set(ipfix_template(256, [(7, 2)])),
            ipfix_options_template_set(ipfix_options_template(257, [(149, 4)], [(34, 4)])),
        ],
        sequence=0,
    )
    run(
        session,
        setup,  # templates do not advance the sequence
        ipfix_message([data_set(256, [u16(6), u16(17)], padding=1), data_set(257, [u32(1) + u32(100)])], sequence=0),
        ipfix_message([data_set(256, [u16(1)])], sequence=3),
        ipfix_message([data_set(256, [u16(6)])], sequence=8),  # 4..7 missing
    )
    assert session.counters.get("decode_sequence_lost_total", exporter=A, unit="records") == 4
    assert session.sequences.states()[(A, 10, 0)].expected == 9


def test_ipfix_sequence_is_forgotten_while_data_is_held() -> None:
    session = DecoderSession()
    run(
        session,
        ipfix_message([data_set(300, [u8(1)] * 5)], sequence=100),  # unknown template: held
        ipfix_message([ipfix_template_set(ipfix_template(256, [(4, 1)]))], sequence=7),
        ipfix_message([data_set(256, [u8(1)])], sequence=7),
    )
    assert total(session, "decode_sequence_lost_total") == 0
    assert session.sequences.states()[(A, 10, 0)].expected == 8


# -- sets: padding, zero fill, reserved ids, lengths ----------------------------------------------


def test_padding_inside_sets_is_not_a_record() -> None:
    session = DecoderSession()
    # records of 5 bytes with 3 padding bytes: 13 bytes of body, 2 records
    fields = [(8, 4), (4, 1)]
    out = run(
        session,
        ipfix_message([
            ipfix_template_set(ipfix_template(256, fields), padding=4),
            data_set(256, [ipv4("10.0.0.1") + u8(6), ipv4("10.0.0.2") + u8(17)], padding=3),
        ]),
        v9_message([
            v9_template_set(v9_template(257, fields), padding=2),
            data_set(257, [ipv4("10.9.9.9") + u8(1)], padding=3),
        ]),
    )
    assert column(of(out, 256), 4) == [6, 17]
    assert column(of(out, 257), 8) == [0x0A090909]
    assert errors(session) == {}
    assert total(session, "decode_ignored_bytes_total") == 0


def test_leftover_bytes_after_the_last_set() -> None:
    session = DecoderSession()
    sets = [v9_template_set(v9_template(256, [(4, 1)])), data_set(256, [u8(6)] * 4)]
    run(session, v9_message(sets, trailer=b"\x00\x00\x00"))
    assert session.counters.get("decode_ignored_bytes_total", exporter=A, kind="padding") == 3
    run(session, v9_message(sets, trailer=bytes(300)))
    assert session.counters.get("decode_ignored_bytes_total", exporter=A, kind="zero_fill") == 300
    assert errors(session) == {}
    # non-zero garbage that does not parse as a set is an error
    run(session, v9_message(sets, trailer=b"\x01\x02\x00\x02\xff"))
    assert errors(session) == {"set_length": 1}


def test_zero_filled_real_packets() -> None:
    session = DecoderSession()
    out = run(
        session,
        (LOGSTASH / "netflow9_test_paloalto_81_tpl256-263.dat").read_bytes(),
        (LOGSTASH / "netflow9_test_paloalto_81_data257_1flowset_in_large_zerofilled_packet.dat").read_bytes(),
    )
    assert count_records(out) == 1
    assert errors(session) == {}
    assert total(session, "decode_ignored_bytes_total", kind="zero_fill") == 1220
    session = DecoderSession()
    assert run(session, (SOFTFLOWD / "packet_v9_with_zeros.bin").read_bytes()) == []
    assert session.pending_sets() == 5
    assert errors(session) == {}


def test_reserved_set_ids() -> None:
    session = DecoderSession()
    # v9: set ids 2..255 are reserved; IPFIX: 0, 1 and 4..255 (0 and 1 are v9's)
    run(session, v9_message([flowset(2, b"\x00" * 8), flowset(255, b"")]))
    run(session, ipfix_message([flowset(0, b"\x01\x00\x00\x01\x00\x01\x00\x04"), flowset(4, b"")]))
    assert errors(session) == {"set_id_reserved": 4}
    assert len(session.templates) == 0


def test_set_length_lies() -> None:
    session = DecoderSession()
    body = data_set(256, [u8(1)])
    run(session, ipfix_message([flowset(256, u8(1), length=3)]))  # shorter than a set header
    run(session, ipfix_message([flowset(256, u8(1), length=40)]))  # longer than the message
    run(session, ipfix_message([body], length=15))  # message shorter than its header
    run(session, ipfix_message([body], length=200))  # message longer than the datagram
    assert errors(session) == {"set_length": 2, "bad_length": 1, "truncated": 1}
    assert session.pending_sets() == 1  # the truncated message's complete set is still read


def test_zero_length_record_template() -> None:
    session = DecoderSession()
    out = run(session, v9_message([v9_template_set(v9_template(256, [(1, 0), (2, 0)])), data_set(256, [b"\x00" * 8])]))
    assert out == []
    assert errors(session) == {"zero_length_record": 1}


def test_zero_length_fields_real_packet() -> None:
    session = DecoderSession()
    out = run(session, (LOGSTASH / "netflow9_test_0length_fields_tpl_data.dat").read_bytes())
    records = of(out, 256)
    assert len(records) == 10
    zero = [p for p, spec in enumerate(records.template.fields) if spec.length == 0]
    assert zero, "the template of this capture has zero-length fields"
    assert all(records.values(p) == [b""] * 10 for p in zero)
    assert not any(records.has(p) for p in zero)


def test_invalid_options_templates() -> None:
    session = DecoderSession()
    bad_lengths = struct.pack("!HHH", 300, 3, 4) + b"\x00" * 7
    no_fields = struct.pack("!HHH", 301, 0, 0)
    run(session, v9_message([flowset(1, no_fields + bad_lengths)]))
    assert errors(session) == {"template_invalid": 2}
    too_many_scopes = struct.pack("!HHH", 302, 1, 2) + struct.pack("!HH", 149, 4)
    run(session, ipfix_message([flowset(3, too_many_scopes)]))
    assert errors(session) == {"template_invalid": 3}
    truncated = struct.pack("!HH", 303, 5) + struct.pack("!HH", 1, 4)
    run(session, ipfix_message([flowset(2, truncated)]))
    assert errors(session) == {"template_invalid": 3, "template_truncated": 1}
    assert len(session.templates) == 0


# -- field encodings ------------------------------------------------------------------------------


def test_variable_length_fields_with_one_and_three_byte_prefixes() -> None:
    session = DecoderSession()
    fields = [(8, 4), (82, VARIABLE), (7, 2), (83, VARIABLE)]
    long_value = bytes(range(256)) + b"tail" * 20  # 336 bytes: needs the 3-byte prefix
    records = [
        record(ipv4("10.0.0.1"), varlen(b"eth0"), u16(1), varlen(b"")),
        record(ipv4("10.0.0.2"), varlen(long_value), u16(2), varlen(b"uplink", long=True)),
        record(ipv4("10.0.0.3"), varlen(b"x" * 254), u16(3), varlen(b"y" * 255)),
    ]
    message = ipfix_message([ipfix_template_set(ipfix_template(256, fields)), data_set(256, records, padding=3)])
    out = run(session, message)
    got = of(out, 256)
    assert len(got) == 3
    assert column(got, 8) == [0x0A000001, 0x0A000002, 0x0A000003]
    assert column(got, 7) == [1, 2, 3]
    assert got.values(1) == [b"eth0", long_value, b"x" * 254]
    assert got.values(3) == [b"", b"uplink", b"y" * 255]
    assert got.has(1) and got.has(3)
    assert errors(session) == {}


def test_variable_length_sets_across_messages_and_truncation() -> None:
    session = DecoderSession()
    run(session, tpl(256, [(82, VARIABLE), (4, 1)]))
    first = data(256, record(varlen(b"a"), u8(1)))
    overrun = ipfix_message([data_set(256, [record(varlen(b"bb"), u8(2)), b"\x09abc"])])  # 2nd claims 9 bytes
    out = run(session, first, overrun)
    got = of(out, 256)
    assert got.values(0) == [b"a", b"bb"]
    assert column(got, 4) == [1, 2]
    assert errors(session) == {"record_truncated": 1}


def test_variable_length_real_netscaler() -> None:
    # one NetScaler value is longer than 255 bytes (3-byte length prefix); set 280 has no template
    session = DecoderSession()
    run(session, (LOGSTASH / "ipfix_test_netscaler_tpl.dat").read_bytes())
    out = run(session, (LOGSTASH / "ipfix_test_netscaler_data.dat").read_bytes())
    assert count_records(out) == 3
    assert session.pending_sets() == 1
    expected = json.loads((LOGSTASH / "expected.json").read_text())
    case = next(c for c in expected["cases"] if c["case"] == "IPFIX Netscaler with variable length fields"
                and len(c["packets_in_order"]) == 2)
    event = next(e for e in case["events"] if e["event_index"] == 2)["complete_event"]["netflow"]
    cookie = event["netscalerHttpReqCookie"].encode()
    assert len(cookie) > 255
    # NetScaler sends its strings NUL-terminated (Logstash strips the NUL)
    values = [
        v.rstrip(b"\x00") for r in out if r.template.is_variable for p in r.template.variable_index for v in r.values(p)
    ]
    assert cookie in values
    assert event["netscalerHttpReqUserAgent"].encode() in values
    assert errors(session) == {}


def test_enterprise_elements() -> None:
    session = DecoderSession()
    fields = [(8, 4), (18, 4, 6871), (1, 8, REVERSE_PEN), (1, 8), (300, 2, 41916)]
    out = run(
        session,
        ipfix_message([
            ipfix_template_set(ipfix_template(256, fields)),
            data_set(256, [record(ipv4("10.0.0.1"), u32(0xDEADBEEF), u64(1234), u64(5678), u16(42))]),
        ]),
    )
    got = of(out, 256)
    assert got.template.fields == (
        FieldSpec(0, 8, 4), FieldSpec(6871, 18, 4), FieldSpec(REVERSE_PEN, 1, 8), FieldSpec(0, 1, 8),
        FieldSpec(41916, 300, 2),
    )
    assert column(got, 18, 6871) == [0xDEADBEEF]
    assert column(got, 1, REVERSE_PEN) == [1234]
    assert column(got, 1) == [5678]
    assert column(got, 300, 41916) == [42]


def test_enterprise_elements_real_yaf() -> None:
    session = DecoderSession()
    for name in ("ipfix_test_yaf_tpls_option_tpl.dat", "ipfix_test_yaf_tpl45841.dat"):
        run(session, (LOGSTASH / name).read_bytes())
    out = run(session, *((LOGSTASH / n).read_bytes() for n in (
        "ipfix_test_yaf_data45841.dat", "ipfix_test_yaf_data45873.dat", "ipfix_test_yaf_data53248.dat")))
    assert count_records(out) == 3
    pens = {spec.pen for r in out for spec in r.template.fields}
    assert {6871, REVERSE_PEN} <= pens
    assert errors(session) == {}


def test_reduced_size_encoding() -> None:
    session = DecoderSession()
    # octetDeltaCount (unsigned64) sent in 1, 2, 3, 4, 5 and 8 bytes
    lengths = [1, 2, 3, 4, 5, 8]
    values = [0xAB, 0xABCD, 0xABCDEF, 0xABCDEF01, 0xAB_CDEF_0123, 0xABCD_EF01_2345_6789]
    templates = ipfix_template_set(*(ipfix_template(256 + i, [(1, n)]) for i, n in enumerate(lengths)))
    sets = [data_set(256 + i, [uint(v, n), uint(1, n)]) for i, (n, v) in enumerate(zip(lengths, values, strict=True))]
    out = run(session, ipfix_message([templates, *sets]))
    for i, value in enumerate(values):
        assert column(of(out, 256 + i), 1) == [value, 1]


def test_reduced_size_encoding_real_ipt_netflow() -> None:
    session = DecoderSession()
    out = run(session, (LOGSTASH / "netflow9_test_iptnetflow_reduced_size_encoding_tpldata260.dat").read_bytes())
    records = of(out, 260)
    assert len(records) == 12
    lengths = {spec.element_id: spec.length for spec in records.template.fields}
    # unsigned64 counters in 4 bytes, unsigned32 interfaces in 2
    assert (lengths[1], lengths[2], lengths[10], lengths[14]) == (4, 4, 2, 2)
    expected = json.loads((LOGSTASH / "expected.json").read_text())
    case = next(c for c in expected["cases"] if c["case"] == "Netflow 9 ipt_netflow reduced size encoding")
    event = case["events"][0]["complete_event"]["netflow"]
    assert case["events"][0]["event_index"] == 11
    assert column(records, 1)[11] == event["in_bytes"]
    assert column(records, 2)[11] == event["in_pkts"]
    assert column(records, 7)[11] == event["l4_src_port"]
    assert session.pending_sets() == 6  # data for templates 259/262, never announced in the file


# -- record order ---------------------------------------------------------------------------------


def test_record_order_across_sets_and_messages() -> None:
    session = DecoderSession()
    templates = ipfix_message([ipfix_template_set(ipfix_template(256, [(1, 4)]), ipfix_template(257, [(7, 2)]))])
    one = ipfix_message([
        data_set(256, [u32(1), u32(2)], padding=2),
        data_set(257, [u16(3)], padding=1),
        data_set(256, [u32(4)], padding=3),
    ])
    two = ipfix_message([data_set(257, [u16(5), u16(6)])])
    out = run(session, templates, one, two)
    a, b = of(out, 256), of(out, 257)
    assert column(a, 1) == [1, 2, 4] and a.order.tolist() == [0, 1, 3]
    assert column(b, 7) == [3, 5, 6] and b.order.tolist() == [2, 4, 5]
    # a new call starts again from 0
    assert of(run(session, two), 257).order.tolist() == [0, 1]


# -- headers, versions, counters ------------------------------------------------------------------


def test_v5_header_context_real() -> None:
    payload = (SOFTFLOWD / "packet_v5.bin").read_bytes()
    _, count, uptime, secs, nsecs, _ = struct.unpack_from("!HHIIII", payload)
    session = DecoderSession()
    records = of(run(session, payload, at=T0), 5)
    assert len(records) == count == 3
    assert records.version == 5
    assert records.export_time_ms.tolist() == [secs * 1000 + nsecs // 1_000_000] * 3
    assert records.sys_uptime_ms.tolist() == [uptime] * 3
    assert records.time_received_ms.tolist() == [T0] * 3
    assert records.header_sampling_interval is not None
    assert records.header_sampling_interval.tolist() == [0, 0, 0]
    assert column(records, 4)[0] == 1  # ICMP, as the library's test asserts
    assert records.values(0)[0] in (ipv4("172.17.0.1"), ipv4("172.17.0.2"))


def test_v1_real_packet() -> None:
    session = DecoderSession()
    records = of(run(session, (SOFTFLOWD / "packet_v1.bin").read_bytes()), 1)
    assert len(records) == 2
    assert column(records, 4) == [1, 1]
    assert records.header_sampling_interval is None


def test_v5_header_sampling_interval() -> None:
    session = DecoderSession()
    payload = v5_message([v5_record(packets=1)], sampling_interval=1000, sampling_mode=1)
    records = of(run(session, payload), 5)
    assert records.header_sampling_interval is not None
    assert records.header_sampling_interval.tolist() == [1000]  # the mode bits are not part of it


def test_v5_count_lies() -> None:
    session = DecoderSession()
    one = v5_record(packets=1)
    run(session, v5_message([one, one], count=5))
    assert errors(session) == {"truncated": 1}
    assert total(session, "decode_records_total") == 2
    run(session, v5_message([one, one], count=1))
    assert session.counters.get("decode_ignored_bytes_total", exporter=A, kind="trailing") == 48
    assert total(session, "decode_records_total") == 3


@pytest.mark.parametrize("name", ["netflow5_test_invalid01.dat", "netflow5_test_invalid02.dat"])
def test_v5_real_invalid_counts(name: str) -> None:
    session = DecoderSession()
    out = run(session, (LOGSTASH / name).read_bytes())
    assert count_records(out) == 30
    assert errors(session) == {"truncated": 1}


def test_real_softflowd_v9_template_then_data() -> None:
    session = DecoderSession()
    names = ["packet_v9_template.bin", "packets_v9_0.bin", "packets_v9_1.bin", "packets_v9_2.bin"]
    counts = [count_records(run(session, (SOFTFLOWD / n).read_bytes())) for n in names]
    assert counts == [8, 12, 12, 12]
    assert total(session, "decode_packets_total", version="9") == 4


def test_real_ipfix_template_packet_values() -> None:
    expected = json.loads((SOFTFLOWD / "expected.json").read_text())
    scenario = next(s for s in expected["scenarios"] if s["scenario"] == "IPFIX template packet")
    session = DecoderSession()
    out = run(session, (SOFTFLOWD / "packet_ipfix_template.bin").read_bytes())
    assert count_records(out) == scenario["flow_count"]
    assert len(session.templates) == scenario["template_count"]
    by_order = {int(o): (r, i) for r in out for i, o in enumerate(r.order)}
    flows = {f["index"]: f for f in scenario["flows"]}
    options, i = by_order[0]
    assert options.is_options
    assert column(options, 143)[i] == flows[0]["meteringProcessId"]
    assert column(options, 304)[i] == flows[0]["selectorAlgorithm"]
    assert column(options, 160)[i] == flows[0]["systemInitTimeMilliseconds"]
    state = session.options.get(A, 0)
    assert state is not None and state.system_init_ms == flows[0]["systemInitTimeMilliseconds"]
    flow, i = by_order[1]
    assert flow.values(flow.template.field_position(0, 12))[i] == ipv4(flows[1]["destinationIPv4Address"])
    assert column(flow, 4)[i] == flows[1]["protocolIdentifier"]
    assert column(flow, 7)[i] == flows[1]["sourceTransportPort"]
    assert column(flow, 11)[i] == flows[1]["destinationTransportPort"]
    assert column(flow, 6)[i] == flows[1]["tcpControlBits"]
    flow, i = by_order[17]
    assert column(flow, 4)[i] == flows[17]["protocolIdentifier"]
    assert flow.values(flow.template.field_position(0, 27))[i] == ipv6(flows[17]["sourceIPv6Address"])
    assert total(session, "decode_records_total", kind="options") == 1
    assert total(session, "decode_records_total", kind="data") == 19


def test_real_ipfix_padding_between_sets() -> None:
    session = DecoderSession()
    out = run(session, (SOFTFLOWD / "packet_ipfix_padding.bin").read_bytes())
    last = max(out, key=lambda r: int(r.order.max()))
    assert last.is_options
    assert column(last, 143)[-1] == 45786
    assert errors(session) == {}


def test_real_ipfix_file_all_messages() -> None:
    # example_flows.ipfix: 68 messages, 3,979 records (counts per template from the MANIFEST)
    raw = (IPFIXCOL2 / "example_flows.ipfix").read_bytes()
    messages, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("!H", raw, offset + 2)
        messages.append(raw[offset : offset + length])
        offset += length
    assert len(messages) == 68
    session = DecoderSession()
    out = run(session, *messages)
    per_template: dict[int, int] = {}
    for records in out:
        per_template[records.template.template_id] = per_template.get(records.template.template_id, 0) + len(records)
    assert per_template == {256: 1848, 257: 2051, 258: 16, 259: 57, 260: 3, 261: 4}
    assert {r.domain for r in out} == {6}
    assert errors(session) == {}
    # the sequence restarts at 0 after the empty second message, then runs without gaps
    state = session.sequences.states()[(A, 10, 6)]
    assert (state.lost, state.reordered, state.received) == (0, 1, 3979)
    # the whole file as one datagram: messages back to back are walked one by one
    again = DecoderSession()
    assert count_records(run(again, raw)) == 3979


def test_logstash_multiple_exporters_case_real() -> None:
    # nProbe (source id 147) and softflowd (source id 0) packets through one session
    session = DecoderSession()
    names = ["netflow9_test_nprobe_tpl.dat", "netflow9_test_softflowd_tpl_data.dat", "netflow9_test_nprobe_data.dat"]
    out = [r for n in names for r in run(session, (LOGSTASH / n).read_bytes())]
    assert count_records(out) == 9
    assert {r.domain for r in out} == {0, 147}


def test_error_counters_by_kind_and_exporter() -> None:
    counters = Counters()
    session = DecoderSession(counters=counters)
    session.decode([
        Datagram(A, T0, b"\x00\x09\x00"),  # 3 bytes: not even a version
        Datagram(A, T0, struct.pack("!HH", 8, 0) + bytes(40)),  # NetFlow v8: not supported
        Datagram(B, T0, struct.pack("!HH", 9, 0) + bytes(10)),  # v9 header cut short
        Datagram(B, T0, struct.pack("!HH", 5, 1) + bytes(10)),  # v5 header cut short
        Datagram(B, T0, struct.pack("!HH", 10, 16) + bytes(4)),  # IPFIX header cut short
        Datagram(B, T0, (SOFTFLOWD / "packet_invalid.bin").read_bytes()),  # 21 x 0xff
    ])
    assert errors(session, A) == {"truncated": 1, "unknown_version": 1}
    assert errors(session, B) == {"truncated": 3, "unknown_version": 1}
    # every datagram of 4 bytes or more is a packet, labelled with its version
    assert counters.get("decode_packets_total", exporter=A, version="8") == 1
    assert counters.get("decode_packets_total", exporter=B, version="9") == 1
    assert counters.get("decode_packets_total", exporter=B, version="65535") == 1
    assert counters.total("decode_packets_total") == 5


def test_ipfix_messages_back_to_back_and_trailing_bytes() -> None:
    session = DecoderSession()
    first = ipfix_message([ipfix_template_set(ipfix_template(256, [(4, 1)])), data_set(256, [u8(1)])], sequence=0)
    second = ipfix_message([data_set(256, [u8(2), u8(3)])], sequence=1)
    out = run(session, first + second + b"\x00\x09" + bytes(20))
    assert column(of(out, 256), 4) == [1, 2, 3]
    assert session.counters.get("decode_ignored_bytes_total", exporter=A, kind="trailing") == 22
    assert total(session, "decode_packets_total") == 1


def test_options_records_are_returned_and_learned() -> None:
    session = DecoderSession()
    options = v9_message([
        v9_options_template_set(v9_options_template(300, [(2, 4)], [(82, 8)])),  # scope interface; IF_NAME
        data_set(300, [u32(7) + b"ge-0/0/1", u32(8) + b"lo\x00\x00\x00\x00\x00\x00"]),
    ], source_id=3)
    out = run(session, options)
    records = of(out, 300)
    assert records.is_options and records.template.scope_count == 1
    assert records.template.fields[0] == FieldSpec(V9_SCOPE_PEN, 2, 4)
    assert total(session, "decode_records_total", kind="options") == 2
    state = session.options.get(A, 3)
    assert state is not None and state.interface_names == {7: "ge-0/0/1", 8: "lo"}


def test_odd_fields_decode_without_crashing() -> None:
    # integer elements sent with variable length, a 16-byte counter, an oversized address
    session = DecoderSession()
    fields = [(34, VARIABLE), (48, VARIABLE), (1, 16), (8, 8), (2, VARIABLE, REVERSE_PEN)]
    options = ipfix_message([
        ipfix_options_template_set(ipfix_options_template(400, [(48, VARIABLE)], [(34, VARIABLE), (160, VARIABLE)])),
        data_set(400, [varlen(b"\x01") + varlen(b"\x00\x64") + varlen(u64(5))]),
    ])
    flows = ipfix_message([
        ipfix_template_set(ipfix_template(401, fields)),
        data_set(401, [varlen(b"\x0a") + varlen(b"\x01") + uint(9, 16) + bytes(8) + varlen(b"\x02")]),
    ])
    out = run(session, options, flows)
    assert count_records(out) == 2
    assert column(of(out, 401), 1) == [9]  # wider than 8 bytes: the low 8 bytes
    state = session.options.get(A, 0)
    assert state is not None
    assert state.sampling_by_id == {} and state.system_init_ms is None  # nothing readable as integers
