"""Exporter health from a real decoder session: counters, sequence loss, templates, sampling,
interface names (strings from the network, escaped), traffic per domain, last seen."""

from __future__ import annotations

import struct

from tests.unit.serve.world import T0, World

from flowscope.decode.session import DecoderSession
from flowscope.model import Datagram
from flowscope.normalize import NormalizeConfig, Normalizer
from support.exports import (
    SCOPE_INTERFACE,
    SCOPE_SYSTEM,
    data_set,
    ipv4,
    u8,
    u16,
    u32,
    v9_message,
    v9_options_template,
    v9_options_template_set,
    v9_template,
    v9_template_set,
)

ROUTER, SOURCE_ID, BROKEN = "192.0.2.1", 5, "2001:db8::9"
NAME = b"<script>alert(1)"  # an interface name as an exporter sends it (16 bytes)
FLOW_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4)]
UPTIME_MS, UNIX_S = 100_000, T0 // 1000


def flow(src: str, dst: str, dst_port: int, packets: int, octets: int) -> bytes:
    return ipv4(src) + ipv4(dst) + u16(40_000) + u16(dst_port) + u8(6) + u32(packets) + u32(octets) + \
        u32(UPTIME_MS - 1_000) + u32(UPTIME_MS - 10)


def datagrams() -> list[Datagram]:
    first = v9_message([
        v9_options_template_set(v9_options_template(300, [(SCOPE_INTERFACE, 4)], [(82, 16)]),
                                v9_options_template(301, [(SCOPE_SYSTEM, 4)], [(34, 4)])),
        v9_template_set(v9_template(256, FLOW_FIELDS)),
        data_set(300, [u32(3) + NAME]),
        data_set(301, [u32(0) + u32(100)]),  # 1 packet in 100 sampled
        data_set(256, [flow("10.0.0.1", "203.0.113.5", 443, 2, 300), flow("10.0.0.2", "203.0.113.5", 80, 1, 60)]),
    ], uptime_ms=UPTIME_MS, unix_secs=UNIX_S, sequence=0, source_id=SOURCE_ID)
    later = v9_message([data_set(256, [flow("10.0.0.1", "198.51.100.7", 22, 3, 500)])], uptime_ms=UPTIME_MS,
                       unix_secs=UNIX_S, sequence=3, source_id=SOURCE_ID)  # 1 and 2 never arrived
    broken = struct.pack("!HH", 10, 16) + bytes(4)  # an IPFIX header cut short
    return [Datagram(ROUTER, T0 + 500, first), Datagram(ROUTER, T0 + 600, later), Datagram(BROKEN, T0 + 700, broken)]


def test_exporters_and_their_domains(empty_world: World) -> None:
    world = empty_world
    session = DecoderSession(counters=world.counters, exporters=world.exporters)
    world.session = session
    normalizer = Normalizer(NormalizeConfig(), session.options, world.counters)
    world.feed(normalizer.normalize(session.decode(datagrams())))
    world.at(T0 + 800)
    world.activity.poll()
    world.at(T0 + 3_000)  # the second closes: its traffic is counted per domain

    response = world.client.get("/api/v1/exporters")
    assert response.status_code == 200
    assert "<script>" not in response.text and "\\u003cscript\\u003ealert(1)" in response.text
    body = response.json()
    assert (body["decoder_state"], body["time_ms"]) == ("live", T0 + 3_000)
    router, broken = body["exporters"]
    assert router == {
        "address": ROUTER, "last_seen_ms": T0 + 800, "last_seen": "2026-11-27T13:00:00.800Z",
        "datagrams": 0, "datagram_bytes": 0, "dropped": {},  # no listener in this test: decoded directly
        "packets_by_version": {"9": 2}, "records": {"data": 3, "options": 2}, "decode_errors": {},
        "decode_errors_total": 0, "sequence_lost": {"packets": 2}, "templates": {"new": 3}, "pending_dropped": {},
        "time_unknown": 0, "flows": 3, "packets": 600, "bytes": 86_000,
        "domains": [{
            "domain": SOURCE_ID, "versions": [9], "flows": 3, "packets": 600, "bytes": 86_000,
            "last_seen_ms": T0 + 1_000, "last_seen": "2026-11-27T13:00:01.000Z",
            "sequence": {"received": 2, "lost": 2, "reordered": 0},
            "templates": [{"id": 256, "fields": 9, "options": False, "scope_fields": 0},
                          {"id": 300, "fields": 2, "options": True, "scope_fields": 1},
                          {"id": 301, "fields": 2, "options": True, "scope_fields": 1}],
            "sampling": {"rate": 100, "by_sampler": {}},
            "interfaces": {"3": NAME.decode()},
        }],
    }
    assert broken["address"] == BROKEN
    assert (broken["decode_errors"], broken["decode_errors_total"], broken["packets_by_version"]) == (
        {"truncated": 1}, 1, {"10": 1})
    assert (broken["domains"], broken["flows"], broken["last_seen_ms"]) == ([], 0, T0 + 800)

    metrics = world.client.get("/metrics").text.splitlines()
    assert f'flowscope_decode_sequence_lost_total{{exporter="{ROUTER}",unit="packets"}} 2' in metrics
    assert f'flowscope_decode_errors_total{{exporter="{BROKEN}",kind="truncated"}} 1' in metrics
    assert f'flowscope_exporter_packets_total{{domain="{SOURCE_ID}",exporter="{ROUTER}"}} 600' in metrics
    assert f'flowscope_exporter_last_seen_timestamp_seconds{{exporter="{ROUTER}"}} {(T0 + 800) / 1000!r}' in metrics


def test_without_a_decoder_in_this_process(world: World) -> None:
    body = world.client.get("/api/v1/exporters").json()
    assert body["decoder_state"] == "unavailable"
    (only,) = body["exporters"]  # known from the engine's results alone
    assert (only["address"], only["flows"], only["packets_by_version"]) == ("192.0.2.1", 17, {})
    assert only["domains"][0]["sequence"] is None and only["domains"][0]["templates"] == []
