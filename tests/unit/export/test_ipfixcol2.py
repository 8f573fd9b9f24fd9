"""IPFIXcol2 JSON output: real captures and hand-built IPFIX messages, decoded by the real session.

Expected values are literals read off the bytes (tshark 4.0 shows the same values for the capture
records used here) and IPFIXcol2/libfds's documented formatting rules (see the module docstring
of ``flowscope.export.ipfixcol2``), never values computed by the code under test.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from flowscope.collect.files import read_capture
from flowscope.decode.records import RecordSet
from flowscope.decode.session import DecoderSession
from flowscope.export.ipfixcol2 import Ipfixcol2Formatter, Ipfixcol2Options
from flowscope.model import Datagram

DATA = Path(__file__).resolve().parents[2] / "data"
EXAMPLE_FLOWS = DATA / "ipfixcol2" / "example_flows.ipfix"
LOGSTASH = DATA / "logstash-codec-netflow"
SOFTFLOWD = DATA / "python-netflow-v9-softflowd"


# -- helpers -------------------------------------------------------------------------------------


def decode_files(*paths: Path, exporter: str = "0.0.0.0") -> tuple[DecoderSession, list[list[RecordSet]]]:
    session = DecoderSession()
    batches = [session.decode(list(read_capture(path, exporter=exporter))) for path in paths]
    return session, batches


def encode_files(*paths: Path, exporter: str = "0.0.0.0", **options: object) -> list[bytes]:
    session, batches = decode_files(*paths, exporter=exporter)
    formatter = Ipfixcol2Formatter(Ipfixcol2Options(**options), templates=session.templates.get)  # type: ignore[arg-type]
    return b"".join(formatter.encode(batch) for batch in batches).splitlines()


def compact(expected: dict[str, object]) -> bytes:
    """The exact line IPFIXcol2 prints for ``expected`` (key order kept, no blanks)."""
    return json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()


def field(pen: int, element_id: int, length: int) -> bytes:
    if pen:
        return struct.pack("!HHI", element_id | 0x8000, length, pen)
    return struct.pack("!HH", element_id, length)


def varlen(value: bytes) -> bytes:
    return bytes([len(value)]) + value if len(value) < 255 else b"\xff" + struct.pack("!H", len(value)) + value


def ipfix_message(templates: dict[int, list[tuple[int, int, int]]], data_sets: list[tuple[int, bytes]],
                  *, domain: int = 7, export_time: int = 1526067869) -> bytes:
    """One IPFIX message: a template set with ``templates``, then one data set per entry."""
    body = b""
    if templates:
        records = b"".join(
            struct.pack("!HH", tid, len(fields)) + b"".join(field(*f) for f in fields)
            for tid, fields in templates.items()
        )
        body += struct.pack("!HH", 2, 4 + len(records)) + records
    for tid, data in data_sets:
        body += struct.pack("!HH", tid, 4 + len(data)) + data
    return struct.pack("!HHIII", 10, 16 + len(body), export_time, 0, domain) + body


def encode_messages(*messages: bytes, with_templates: bool = True, exporter: str = "192.0.2.9",
                    **options: object) -> list[bytes]:
    session = DecoderSession()
    records = session.decode([Datagram(exporter, 1_526_067_870_000, message, 4739) for message in messages])
    formatter = Ipfixcol2Formatter(Ipfixcol2Options(**options),  # type: ignore[arg-type]
                                   templates=session.templates.get if with_templates else None)
    return formatter.encode(records).splitlines()


def parse_ipfix_file(path: Path) -> list[tuple[int, dict[int, bytes], list[int]]]:
    """Independent reader for fixed-length IPFIX files: (template id, {element: bytes}, element order)."""
    data = path.read_bytes()
    templates: dict[int, list[tuple[int, int]]] = {}
    records: list[tuple[int, dict[int, bytes], list[int]]] = []
    offset = 0
    while offset < len(data):
        length = struct.unpack_from("!H", data, offset + 2)[0]
        end, at = offset + length, offset + 16
        while at < end:
            set_id, set_length = struct.unpack_from("!HH", data, at)
            body, at = data[at + 4 : at + set_length], at + set_length
            if set_id == 2:
                pos = 0
                while pos + 4 <= len(body):
                    tid, count = struct.unpack_from("!HH", body, pos)
                    specs = struct.unpack_from(f"!{2 * count}H", body, pos + 4)
                    templates[tid] = [(specs[i], specs[i + 1]) for i in range(0, 2 * count, 2)]
                    pos += 4 + 4 * count
            elif set_id >= 256:
                size = sum(n for _, n in templates[set_id])
                for start in range(0, len(body) - size + 1, size):
                    values, cursor = {}, start
                    for element, n in templates[set_id]:
                        values[element] = body[cursor : cursor + n]
                        cursor += n
                    records.append((set_id, values, [e for e, _ in templates[set_id]]))
        offset = end
    return records


NAMES = {1: "octetDeltaCount", 2: "packetDeltaCount", 4: "protocolIdentifier", 5: "ipClassOfService",
         6: "tcpControlBits", 7: "sourceTransportPort", 8: "sourceIPv4Address", 10: "ingressInterface",
         11: "destinationTransportPort", 12: "destinationIPv4Address", 14: "egressInterface",
         27: "sourceIPv6Address", 28: "destinationIPv6Address", 32: "icmpTypeCodeIPv4", 34: "samplingInterval",
         35: "samplingAlgorithm", 60: "ipVersion", 152: "flowStartMilliseconds", 153: "flowEndMilliseconds",
         192: "ipTTL", 139: "icmpTypeCodeIPv6"}


# -- example_flows.ipfix (CESNET/ipfixcol2 doc/data) ---------------------------------------------


def test_first_record_of_example_flows_is_printed_exactly() -> None:
    # Message 1, data set 256, record 1 (tshark: 194 octets, 1 packet, 12:11:29.586, UDP 53 -> 59765).
    expected = {
        "@type": "ipfix.entry",
        "iana:octetDeltaCount": 194,
        "iana:packetDeltaCount": 1,
        "iana:flowStartMilliseconds": "2015-08-03T12:11:29.586Z",
        "iana:flowEndMilliseconds": "2015-08-03T12:11:29.586Z",
        "iana:ingressInterface": 2,
        "iana:ipVersion": 4,
        "iana:sourceIPv4Address": "228.55.228.116",
        "iana:destinationIPv4Address": "9.64.56.139",
        "iana:ipClassOfService": 0,
        "iana:ipTTL": 61,
        "iana:protocolIdentifier": "UDP",
        "iana:sourceTransportPort": 53,
        "iana:destinationTransportPort": 59765,
        "iana:egressInterface": 0,
        "iana:samplingInterval": 0,
        "iana:samplingAlgorithm": 0,
    }
    lines = encode_files(EXAMPLE_FLOWS)
    assert lines[0] == compact(expected)
    first = parse_ipfix_file(EXAMPLE_FLOWS)[0][1]
    assert int.from_bytes(first[1], "big") == 194 and socket.inet_ntoa(first[8]) == "228.55.228.116"
    assert int.from_bytes(first[152], "big") == 1_438_603_889_586  # 2015-08-03T12:11:29.586Z


def test_every_example_flows_record_matches_an_independent_parse() -> None:
    records = parse_ipfix_file(EXAMPLE_FLOWS)
    lines = encode_files(EXAMPLE_FLOWS, tcp_flags="raw", timestamp="unix", protocol="raw")
    assert len(lines) == len(records) == 3979
    for line, (_, values, order) in zip(lines, records, strict=True):
        printed = json.loads(line)
        assert list(printed) == ["@type", *(f"iana:{NAMES[e]}" for e in order)]
        for element, raw in values.items():
            value = printed[f"iana:{NAMES[element]}"]
            if element in (8, 12):
                assert value == socket.inet_ntoa(raw)
            elif element in (27, 28):
                assert value == socket.inet_ntop(socket.AF_INET6, raw)
            else:
                assert value == int.from_bytes(raw, "big")


def test_timestamps_protocol_and_flags_options() -> None:
    unix = json.loads(encode_files(EXAMPLE_FLOWS, timestamp="unix", protocol="raw")[0])
    assert unix["iana:flowStartMilliseconds"] == 1_438_603_889_586
    assert unix["iana:protocolIdentifier"] == 17
    ixia = [LOGSTASH / "ipfix_test_ixia_tpldata256.dat", LOGSTASH / "ipfix_test_ixia_tpldata271.dat"]
    # Third IXIA record: TCP 8732 -> 443, flags byte 0x1b (ACK PSH SYN FIN).
    assert json.loads(encode_files(*ixia)[2])["iana:tcpControlBits"] == ".AP.SF"
    assert json.loads(encode_files(*ixia, tcp_flags="raw")[2])["iana:tcpControlBits"] == 27
    assert json.loads(encode_files(*ixia)[2])["iana:protocolIdentifier"] == "TCP"


def test_detailed_info_appends_message_details() -> None:
    line = json.loads(encode_files(EXAMPLE_FLOWS, detailed_info=True)[0])
    assert list(line)[-3:] == ["ipfix:exportTime", "ipfix:odid", "ipfix:templateId"]
    assert (line["ipfix:exportTime"], line["ipfix:odid"], line["ipfix:templateId"]) == (1438603921, 6, 256)
    networked = json.loads(encode_files(EXAMPLE_FLOWS, exporter="192.0.2.7", detailed_info=True)[0])
    assert list(networked)[-2:] == ["ipfix:srcAddr", "ipfix:templateId"]
    assert networked["ipfix:srcAddr"] == "192.0.2.7"
    # Sequence number and message length only when the record set carries them.
    _, batches = decode_files(EXAMPLE_FLOWS)
    first_set = min(batches[0], key=lambda records: int(records.order[0]))
    first_set.extra["sequence_number"] = np.zeros(len(first_set), dtype=np.int64)
    first_set.extra["message_length"] = np.full(len(first_set), 3472, dtype=np.int64)
    line = Ipfixcol2Formatter(Ipfixcol2Options(detailed_info=True)).encode([first_set]).splitlines()[0]
    assert line.endswith(b',"ipfix:exportTime":1438603921,"ipfix:seqNumber":0,"ipfix:odid":6,'
                         b'"ipfix:msgLength":3472,"ipfix:templateId":256}')


# -- vendor captures (logstash-codec-netflow) -----------------------------------------------------


def test_options_records_are_skipped_unless_asked_for() -> None:
    assert len(encode_files(LOGSTASH / "ipfix.dat")) == 12
    lines = encode_files(LOGSTASH / "ipfix.dat", ignore_options=False)
    assert len(lines) == 13
    assert lines[0] == compact({
        "@type": "ipfix.optionsEntry", "iana:meteringProcessId": 2679,
        "iana:systemInitTimeMilliseconds": "2015-05-13T11:20:13.506Z", "iana:selectorAlgorithm": 1,
        "iana:samplingPacketInterval": 1, "iana:samplingPacketSpace": 0,
    })


def test_unknown_enterprise_elements_and_octet_arrays() -> None:
    nokia = [LOGSTASH / "ipfix_test_nokia_bras_tpl.dat", LOGSTASH / "ipfix_test_nokia_bras_data256.dat"]
    default = json.loads(encode_files(*nokia)[0])
    assert not [key for key in default if key.startswith("en")]
    assert default["iana:flowId"] == 3389049088
    # PEN 637 (Nokia) is unknown to libfds: octet arrays, as integers when 8 bytes or less.
    shown = json.loads(encode_files(*nokia, ignore_unknown=False)[0])
    assert shown["en637:id91"] == 100
    assert shown["en637:id93"] == "0x55534552314031302E31302E302E31323300000000000000"  # "USER1@10.10.0.123"
    hexed = json.loads(encode_files(*nokia, ignore_unknown=False, octet_array_as_uint=False)[0])
    assert hexed["en637:id91"] == "0x0064"
    numeric = json.loads(encode_files(*nokia, numeric_names=True)[0])
    assert list(numeric)[1:4] == ["en0:id148", "en0:id8", "en0:id12"]


def test_enterprise_names_micro_timestamps_and_long_octet_arrays() -> None:
    netscaler = [LOGSTASH / "ipfix_test_netscaler_tpl.dat", LOGSTASH / "ipfix_test_netscaler_data.dat"]
    first = json.loads(encode_files(*netscaler)[0])
    assert first["netscaler:transactionId"] == 1068114973
    assert first["iana:flowStartMicroseconds"] == "2016-11-11T12:09:19.000Z"
    assert first["netscaler:connectionChainID"] == "0x00E0ED1C9CA80300EFB4255884850600"
    assert first["iana:tcpControlBits"] == ".A...."


def test_biflow_records_printed_whole_or_split() -> None:
    yaf = sorted(LOGSTASH.glob("ipfix_test_yaf_*"), key=lambda p: (0 if "tpl" in p.name else 1, p.name))
    whole = [json.loads(line) for line in encode_files(*yaf)]
    assert len(whole) == 2
    assert whole[0]["iana:octetTotalCount"] == 132
    assert whole[0]["iana@reverse:octetTotalCount@reverse"] == 200
    # The YAF record carries its MAC addresses in a subTemplateMultiList (templates from the session).
    assert whole[0]["iana:subTemplateMultiList"] == {
        "@type": "subTemplateMultiList", "semantic": "allOf",
        "data": [[{"iana:sourceMacAddress": "00:0C:29:70:86:09", "iana:destinationMacAddress": "00:0C:29:8D:AF:C3"}]],
    }
    split = [json.loads(line) for line in encode_files(*yaf, split_biflow=True)]
    assert len(split) == 4
    forward, reverse = split[0], split[1]
    assert "iana@reverse:octetTotalCount@reverse" not in forward
    assert (forward["iana:sourceIPv4Address"], forward["iana:sourceTransportPort"]) == ("172.16.32.201", 46086)
    assert reverse["iana:octetTotalCount"] == 200
    assert (reverse["iana:sourceIPv4Address"], reverse["iana:sourceTransportPort"]) == ("172.16.32.100", 53)
    assert (reverse["iana:destinationIPv4Address"], reverse["iana:destinationTransportPort"]) == (
        "172.16.32.201", 46086)
    assert not [key for key in reverse if "@reverse" in key]
    # Second record (TCP): the reverse view shows YAF's reverse TCP flags under the forward name.
    assert (split[2]["cert:initialTCPFlags"], split[3]["cert:initialTCPFlags"]) == (194, 18)


# -- NetFlow, as IPFIXcol2 converts it -----------------------------------------------------------


def test_netflow_v5_becomes_ipfixcol2s_template_256() -> None:
    payload = (LOGSTASH / "netflow5.dat").read_bytes()
    _, _, uptime, secs, nsecs, _, _, _, _ = struct.unpack_from("!HHIIIIBBH", payload)
    first, last = struct.unpack_from("!II", payload, 24 + 24)
    assert (uptime, secs, nsecs, first, last) == (3381, 1430591888, 280328000, 4294967295, 2577)
    # netflow5.c: header ms (with nanoseconds) - (uptime - first), in unsigned 64-bit arithmetic:
    # 1430591888280 - (3381 - 4294967295) = 1434886852194; 1430591888280 - (3381 - 2577) = 1430591887476.
    lines = encode_files(LOGSTASH / "netflow5.dat")
    assert len(lines) == 30
    assert lines[0] == compact({
        "@type": "ipfix.entry", "iana:sourceIPv4Address": "10.0.2.2", "iana:destinationIPv4Address": "10.0.2.15",
        "iana:ipNextHopIPv4Address": "0.0.0.0", "iana:ingressInterface": 0, "iana:egressInterface": 0,
        "iana:packetDeltaCount": 5, "iana:octetDeltaCount": 230,
        "iana:flowStartMilliseconds": "2015-06-21T11:40:52.194Z",
        "iana:flowEndMilliseconds": "2015-05-02T18:38:07.476Z",
        "iana:sourceTransportPort": 54435, "iana:destinationTransportPort": 22, "iana:tcpControlBits": ".A....",
        "iana:protocolIdentifier": "TCP", "iana:ipClassOfService": 0, "iana:bgpSourceAsNumber": 0,
        "iana:bgpDestinationAsNumber": 0, "iana:sourceIPv4PrefixLength": 0, "iana:destinationIPv4PrefixLength": 0,
        "iana:samplingAlgorithm": 0, "iana:samplingInterval": 0,
    })
    unix = json.loads(encode_files(LOGSTASH / "netflow5.dat", timestamp="unix")[0])
    assert (unix["iana:flowStartMilliseconds"], unix["iana:flowEndMilliseconds"]) == (1434886852194, 1430591887476)


def test_netflow_v1_is_not_accepted_by_ipfixcol2() -> None:
    assert encode_files(SOFTFLOWD / "packet_v1.bin") == []


def test_netflow_v9_times_become_absolute_milliseconds() -> None:
    payload = (SOFTFLOWD / "packet_v9_template.bin").read_bytes()
    _, _, uptime, secs, _, _ = struct.unpack_from("!HHIIII", payload)
    # Two templates (64 bytes each) follow the header, then data set 1024: its first record starts
    # at 152 with two addresses, then LAST_SWITCHED and FIRST_SWITCHED (uptime milliseconds).
    last, first = struct.unpack_from("!II", payload, 152 + 8)
    assert (uptime, secs, last, first) == (3, 1_553_946_008, 4_215_020_202, 4_215_019_773)
    lines = encode_files(SOFTFLOWD / "packet_v9_template.bin")
    assert len(lines) == 8
    # netflow9.c: header seconds * 1000 - uptime + value:
    # 1553946008000 - 3 + 4215020202 = 1558161028199 (06:30:28.199); ... + 4215019773 -> 06:30:27.770.
    assert lines[0] == compact({
        "@type": "ipfix.entry", "iana:sourceIPv4Address": "127.0.0.1", "iana:destinationIPv4Address": "127.0.0.1",
        "iana:flowEndMilliseconds": "2019-05-18T06:30:28.199Z",
        "iana:flowStartMilliseconds": "2019-05-18T06:30:27.770Z",
        "iana:octetDeltaCount": 102416, "iana:packetDeltaCount": 75, "iana:ingressInterface": 0,
        "iana:egressInterface": 0, "iana:sourceTransportPort": 80, "iana:destinationTransportPort": 37932,
        "iana:protocolIdentifier": "TCP", "iana:tcpControlBits": ".AP.SF", "iana:ipVersion": 4,
        "iana:ipClassOfService": 0,
    })


def netflow_v9(flowsets: list[tuple[int, bytes]], *, uptime: int = 10_000, secs: int = 1526067869) -> bytes:
    body = b"".join(struct.pack("!HH", set_id, 4 + len(data)) + data for set_id, data in flowsets)
    return struct.pack("!HHIIII", 9, len(flowsets), uptime, secs, 1, 0) + body


def test_netflow_v9_templates_ipfixcol2_cannot_convert_are_dropped() -> None:
    good = struct.pack("!HH", 300, 2) + struct.pack("!HHHH", 22, 4, 1, 4)
    long_time = struct.pack("!HH", 301, 2) + struct.pack("!HHHH", 22, 8, 1, 4)
    cache_scope = struct.pack("!HHH", 302, 4, 4) + struct.pack("!HHHH", 4, 2, 41, 4)  # scope Cache
    system_scope = struct.pack("!HHH", 303, 4, 4) + struct.pack("!HHHH", 1, 4, 41, 4)  # scope System
    message = netflow_v9([
        (0, good + long_time), (1, cache_scope + system_scope + b"\x00\x00"),
        (300, struct.pack("!II", 9_000, 77)), (301, struct.pack("!QI", 9_000, 88)),
        (302, struct.pack("!HI", 1, 99) + b"\x00\x00"), (303, struct.pack("!II", 5, 66)),
    ])
    lines = encode_messages(message, ignore_options=False, timestamp="unix")
    # FIRST_SWITCHED 9000 with uptime 10000 at 1526067869 s: 1526067869000 - 10000 + 9000.
    assert lines == [
        b'{"@type":"ipfix.entry","iana:flowStartMilliseconds":1526067868000,"iana:octetDeltaCount":77}',
        b'{"@type":"ipfix.optionsEntry","iana:exportingProcessId":5,"iana:exportedMessageTotalCount":66}',
    ]


def test_netflow_v9_cisco_fields_get_libfds_netflow_scopes() -> None:
    asa = [LOGSTASH / "netflow9_test_cisco_asa_1_tpl.dat", LOGSTASH / "netflow9_test_cisco_asa_1_data.dat"]
    first = json.loads(encode_files(*asa)[0])
    assert first["netflow:flowId"] == 8500  # NF_F_CONN_ID (148)
    assert first["netflowExtra:firewallEventExtended"] == 2025  # NF_F_FW_EXT_EVENT (33002)
    assert first["netflowExtra:ingressAclId"] == "0x0F8E7FF3FC1A030F00000000"  # NF_F_INGRESS_ACL_ID (33000)
    assert first["netflowExtra:userName"] == "\x00" * 20  # NF_F_USERNAME: twenty NULs, escaped
    assert b'"netflowExtra:userName":"' + b"\\u0000" * 20 + b'"' in encode_files(*asa)[0]
    assert json.loads(encode_files(*asa, non_printable_char=False)[0])["netflowExtra:userName"] == ""


def test_netflow_v9_options_scope_becomes_an_ipfix_element() -> None:
    asr9k = sorted(LOGSTASH.glob("netflow9_test_cisco_asr9k_*"))
    lines = encode_files(*asr9k, ignore_options=False, non_printable_char=False)
    interface = json.loads(lines[0])
    assert interface["@type"] == "ipfix.optionsEntry"
    assert (interface["iana:exportingProcessId"], interface["iana:ingressInterface"]) == (3250896451, 74)
    assert interface["iana:interfaceDescription"] == "TenGigE0_0_1_0"  # trailing NULs dropped


# -- hand-built IPFIX messages -------------------------------------------------------------------

NASTY = b'say "hi" <script>alert(1)</script>\\ \n\t\x01\x7f caf\xc3\xa9 \xe2\x82\xac \x80 \xff!'


def test_string_escaping() -> None:
    message = ipfix_message({400: [(0, 82, 0xFFFF)]}, [(400, varlen(NASTY))])
    line = encode_messages(message)[0]
    # Quote and backslash escaped, \n \t two-character escapes, 0x01 0x7F and the stray 0x80 as
    # \u00XX, the bad lead byte 0xFF as U+FFFD; "<", "/" and valid UTF-8 left alone.
    assert line == ('{"@type":"ipfix.entry","iana:interfaceName":"say \\"hi\\" <script>alert(1)</script>\\\\ '
                    '\\n\\t\\u0001\\u007F café € \\u0080 \ufffd!"}').encode()
    decoded = json.loads(line)["iana:interfaceName"]
    assert decoded == 'say "hi" <script>alert(1)</script>\\ \n\t\x01\x7f café € \x80 \ufffd!'
    dropped = encode_messages(message, non_printable_char=False)[0]
    assert json.loads(dropped)["iana:interfaceName"] == 'say "hi" <script>alert(1)</script>\\  café €  !'


def test_string_bytes_libfds_accepts_pass_through_unchanged() -> None:
    # libfds checks only lead and continuation bits: an encoded surrogate (ED A0 80) is copied as is.
    message = ipfix_message({400: [(0, 82, 0xFFFF)]}, [(400, varlen(b"a\xed\xa0\x80b"))])
    assert encode_messages(message)[0] == b'{"@type":"ipfix.entry","iana:interfaceName":"a\xed\xa0\x80b"}'


NTP_SECONDS = 3_735_056_669  # 2018-05-11T19:44:29Z in NTP seconds (1526067869 + 2208988800)
TYPES = [(0, 56, 6), (0, 27, 16), (0, 6, 2), (0, 4, 1), (0, 154, 8), (0, 156, 8), (0, 150, 4), (0, 320, 8),
         (0, 321, 4), (0, 276, 1)]


def types_record(nano_fraction: int, double: float, single: float, boolean: int) -> bytes:
    return (bytes.fromhex("000abce01234") + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
            + struct.pack("!HB", 0x00D2, 58) + struct.pack("!II", NTP_SECONDS, 0x01893800)
            + struct.pack("!II", NTP_SECONDS, nano_fraction) + struct.pack("!I", 1526067869)
            + struct.pack("!d", double) + struct.pack("!f", single) + bytes([boolean]))


def test_value_types() -> None:
    message = ipfix_message({401: TYPES}, [(401, types_record(0x0189374C, 0.1, 3.14159274, 1)
                                                 + types_record(0xFFFFFFFF, float("nan"), float("-inf"), 2))])
    first, second = encode_messages(message)
    assert first == compact({
        "@type": "ipfix.entry",
        "iana:sourceMacAddress": "00:0A:BC:E0:12:34",
        "iana:sourceIPv6Address": "2001:db8::1",
        "iana:tcpControlBits": ".A..S.",  # 0x00D2: ECE and CWR are not shown
        "iana:protocolIdentifier": "IPv6-ICMP",
        "iana:flowStartMicroseconds": "2018-05-11T19:44:29.006Z",
        "iana:flowStartNanoseconds": "2018-05-11T19:44:29.006Z",
        "iana:flowStartSeconds": "2018-05-11T19:44:29.000Z",
        "iana:absoluteError": 0.1,
        "iana:relativeError": 3.14159,  # a float64 sent in 4 bytes: %.6g
        "iana:dataRecordsReliability": True,
    })
    assert json.loads(second)["iana:relativeError"] == "-Infinity"
    assert json.loads(second)["iana:absoluteError"] == "NaN"
    assert json.loads(second)["iana:dataRecordsReliability"] is False
    # NTP fraction 0xFFFFFFFF rounds to 10^9 ns, which libfds prints as ".1000".
    assert json.loads(second)["iana:flowStartNanoseconds"] == "2018-05-11T19:44:29.1000Z"
    raw = [json.loads(line) for line in encode_messages(message, tcp_flags="raw", protocol="raw", timestamp="unix")]
    assert (raw[0]["iana:tcpControlBits"], raw[0]["iana:protocolIdentifier"]) == (210, 58)
    assert raw[0]["iana:flowStartMicroseconds"] == 1526067869006
    assert raw[0]["iana:flowStartSeconds"] == 1526067869000
    assert raw[1]["iana:flowStartNanoseconds"] == 1526067869999  # unix: the fraction is truncated


def test_impossible_lengths_zero_lengths_and_padding() -> None:
    fields = [(0, 150, 8), (0, 8, 16), (0, 276, 1), (0, 1, 0), (0, 82, 0), (0, 210, 3), (0, 56, 4), (0, 6, 4),
              (0, 4, 2), (0, 153, 4)]
    record = (struct.pack("!Q", 1526067869) + socket.inet_pton(socket.AF_INET6, "2001:db8::2") + b"\x03"
              + b"\x00\x00\x00" + b"\x01\x02\x03\x04" + struct.pack("!I", 0x12) + struct.pack("!H", 6)
              + struct.pack("!I", 1))
    line = encode_messages(ipfix_message({402: fields}, [(402, record)]))[0]
    assert line == compact({
        "@type": "ipfix.entry", "iana:flowStartSeconds": None, "iana:sourceIPv4Address": "2001:db8::2",
        "iana:dataRecordsReliability": None, "iana:octetDeltaCount": None, "iana:interfaceName": "",
        "iana:sourceMacAddress": None, "iana:tcpControlBits": None, "iana:protocolIdentifier": None,
        "iana:flowEndMilliseconds": None,
    })
    raw = json.loads(encode_messages(ipfix_message({402: fields}, [(402, record)]), tcp_flags="raw",
                                     protocol="raw")[0])
    assert (raw["iana:tcpControlBits"], raw["iana:protocolIdentifier"]) == (0x12, 6)


def test_unknown_elements_and_enterprise_names() -> None:
    fields = [(99999, 1, 4), (6871, 14, 1), (99999, 2, 10)]
    record = struct.pack("!I", 0x12345678) + b"\x12" + bytes.fromhex("00112233445566778899")
    message = ipfix_message({403: fields}, [(403, record)])
    assert encode_messages(message)[0] == b'{"@type":"ipfix.entry","cert:initialTCPFlags":18}'
    assert encode_messages(message, ignore_unknown=False)[0] == (
        b'{"@type":"ipfix.entry","en99999:id1":305419896,"cert:initialTCPFlags":18,'
        b'"en99999:id2":"0x00112233445566778899"}')
    assert encode_messages(message, ignore_unknown=False, octet_array_as_uint=False, numeric_names=True)[0] == (
        b'{"@type":"ipfix.entry","en99999:id1":"0x12345678","en6871:id14":18,'
        b'"en99999:id2":"0x00112233445566778899"}')


def test_repeated_element_is_one_array_at_its_last_occurrence() -> None:
    fields = [(0, 12, 4), (0, 7, 2), (0, 12, 4)]
    record = socket.inet_aton("10.0.0.1") + struct.pack("!H", 1234) + socket.inet_aton("10.0.0.2")
    assert encode_messages(ipfix_message({404: fields}, [(404, record)]))[0] == (
        b'{"@type":"ipfix.entry","iana:sourceTransportPort":1234,'
        b'"iana:destinationIPv4Address":["10.0.0.1","10.0.0.2"]}')


def test_records_come_out_in_arrival_order() -> None:
    one = ipfix_message({404: [(0, 7, 2)], 405: [(0, 11, 2)]},
                        [(404, struct.pack("!H", 1)), (405, struct.pack("!H", 2)), (404, struct.pack("!H", 3))])
    two = ipfix_message({}, [(405, struct.pack("!HH", 4, 5)), (404, struct.pack("!H", 6))])
    values = [next(v for k, v in json.loads(line).items() if k != "@type") for line in encode_messages(one, two)]
    assert values == [1, 2, 3, 4, 5, 6]


def test_basic_lists() -> None:
    octets = struct.pack("!BHH", 3, 1, 8) + b"".join(struct.pack("!Q", v) for v in (23, 34, 23))
    enterprise = struct.pack("!BHHI", 0xFF, 0x8001, 2, 99999) + struct.pack("!HH", 1, 2)
    message = ipfix_message({406: [(0, 291, 0xFFFF), (0, 291, 0xFFFF)]}, [(406, varlen(octets) + varlen(enterprise))])
    assert encode_messages(message)[0] == (
        b'{"@type":"ipfix.entry","iana:basicList":['
        b'{"@type":"basicList","data":[23,34,23],"semantic":"allOf","fieldID":"iana:octetDeltaCount"},'
        b'{"@type":"basicList","data":[1,2],"semantic":"undefined","fieldID":"en99999:id1"}]}')


def test_sub_template_lists_need_the_session_templates() -> None:
    sub = [(0, 8, 4), (0, 7, 2)]
    inner = (socket.inet_aton("192.0.2.1") + struct.pack("!H", 80)
             + socket.inet_aton("192.0.2.2") + struct.pack("!H", 443))
    stl = struct.pack("!BH", 3, 407) + inner
    stml = struct.pack("!B", 1) + struct.pack("!HH", 407, 4 + len(inner)) + inner + struct.pack("!HH", 999, 6) + b"xx"
    message = ipfix_message({407: sub, 408: [(0, 292, 0xFFFF), (0, 293, 0xFFFF)]},
                            [(408, varlen(stl) + varlen(stml))])
    pair = [{"iana:sourceIPv4Address": "192.0.2.1", "iana:sourceTransportPort": 80},
            {"iana:sourceIPv4Address": "192.0.2.2", "iana:sourceTransportPort": 443}]
    line = json.loads(encode_messages(message)[0])
    assert line["iana:subTemplateList"] == {"@type": "subTemplateList", "semantic": "allOf", "data": pair}
    assert line["iana:subTemplateMultiList"] == {"@type": "subTemplateMultiList", "semantic": "exactlyOneOf",
                                                 "data": [pair]}  # the block of unknown template 999 is skipped
    blind = json.loads(encode_messages(message, with_templates=False)[0])
    assert blind["iana:subTemplateList"]["data"] == [] and blind["iana:subTemplateMultiList"]["data"] == []


BIFLOW = [(0, 8, 4), (0, 12, 4), (0, 7, 2), (0, 11, 2), (0, 4, 1), (0, 1, 8), (29305, 1, 8), (0, 10, 4), (0, 6, 1),
          (29305, 6, 1), (0, 152, 8)]
BIFLOW_RECORD = (socket.inet_aton("198.51.100.1") + socket.inet_aton("203.0.113.9") + struct.pack("!HHB", 40000, 443, 6)
                 + struct.pack("!QQ", 100, 200) + struct.pack("!IBB", 5, 0x02, 0x12) + struct.pack("!Q", 1526067869006))


def test_rfc5103_biflow_split() -> None:
    message = ipfix_message({409: BIFLOW}, [(409, BIFLOW_RECORD)])
    whole = encode_messages(message)
    assert len(whole) == 1
    assert json.loads(whole[0])["iana@reverse:octetDeltaCount@reverse"] == 200
    assert json.loads(whole[0])["iana@reverse:tcpControlBits@reverse"] == ".A..S."
    forward, reverse = encode_messages(message, split_biflow=True)
    assert forward == compact({
        "@type": "ipfix.entry", "iana:sourceIPv4Address": "198.51.100.1", "iana:destinationIPv4Address": "203.0.113.9",
        "iana:sourceTransportPort": 40000, "iana:destinationTransportPort": 443, "iana:protocolIdentifier": "TCP",
        "iana:octetDeltaCount": 100, "iana:ingressInterface": 5, "iana:tcpControlBits": "....S.",
        "iana:flowStartMilliseconds": "2018-05-11T19:44:29.006Z",
    })
    # Reverse point of view: keys swapped in place, reverse fields under forward names.
    assert reverse == compact({
        "@type": "ipfix.entry", "iana:destinationIPv4Address": "198.51.100.1", "iana:sourceIPv4Address": "203.0.113.9",
        "iana:destinationTransportPort": 40000, "iana:sourceTransportPort": 443, "iana:protocolIdentifier": "TCP",
        "iana:octetDeltaCount": 200, "iana:egressInterface": 5, "iana:tcpControlBits": ".A..S.",
        "iana:flowStartMilliseconds": "2018-05-11T19:44:29.006Z",
    })


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="tcp_flags"):
        Ipfixcol2Options(tcp_flags="pretty")  # type: ignore[arg-type]
    assert Ipfixcol2Options() == Ipfixcol2Options(
        tcp_flags="formatted", timestamp="formatted", protocol="formatted", ignore_unknown=True, ignore_options=True,
        non_printable_char=True, octet_array_as_uint=True, numeric_names=False, split_biflow=False,
        detailed_info=False)
