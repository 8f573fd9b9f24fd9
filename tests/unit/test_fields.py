"""Unit tests for the information-element registry (flowscope.decode.fields)."""

from __future__ import annotations

import csv
import dataclasses
import io
from importlib import resources

import pytest

from flowscope.decode.fields import REVERSE_PEN, Element, by_name, ipfixcol2_name, lookup

ABSTRACT_TYPES = frozenset(
    {
        "unsigned8",
        "unsigned16",
        "unsigned32",
        "unsigned64",
        "unsigned256",  # registry type of 515, 520 and 525 since 2024
        "signed8",
        "signed16",
        "signed32",
        "signed64",
        "float32",
        "float64",
        "boolean",
        "macAddress",
        "octetArray",
        "string",
        "dateTimeSeconds",
        "dateTimeMilliseconds",
        "dateTimeMicroseconds",
        "dateTimeNanoseconds",
        "ipv4Address",
        "ipv6Address",
        "basicList",
        "subTemplateList",
        "subTemplateMultiList",
    }
)
SEMANTICS = frozenset(
    {
        "",
        "default",
        "quantity",
        "totalCounter",
        "deltaCounter",
        "identifier",
        "flags",
        "list",
        "snmpCounter",
        "snmpGauge",
    }
)


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files("flowscope.decode.elements").joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


IANA_ROWS = _rows("iana.csv")
ENTERPRISE_ROWS = _rows("enterprise.csv")
IANA_NAMES = {row["name"] for row in IANA_ROWS}


# --- known IANA elements ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("element_id", "name", "data_type"),
    [
        (1, "octetDeltaCount", "unsigned64"),
        (2, "packetDeltaCount", "unsigned64"),
        (4, "protocolIdentifier", "unsigned8"),
        (6, "tcpControlBits", "unsigned16"),
        (7, "sourceTransportPort", "unsigned16"),
        (8, "sourceIPv4Address", "ipv4Address"),
        (12, "destinationIPv4Address", "ipv4Address"),
        (27, "sourceIPv6Address", "ipv6Address"),
        (28, "destinationIPv6Address", "ipv6Address"),
        (34, "samplingInterval", "unsigned32"),
        (35, "samplingAlgorithm", "unsigned8"),
        (56, "sourceMacAddress", "macAddress"),
        (89, "forwardingStatus", "unsigned32"),
        (150, "flowStartSeconds", "dateTimeSeconds"),
        (152, "flowStartMilliseconds", "dateTimeMilliseconds"),
        (153, "flowEndMilliseconds", "dateTimeMilliseconds"),
        (154, "flowStartMicroseconds", "dateTimeMicroseconds"),
        (156, "flowStartNanoseconds", "dateTimeNanoseconds"),
        (160, "systemInitTimeMilliseconds", "dateTimeMilliseconds"),
        (291, "basicList", "basicList"),
        (292, "subTemplateList", "subTemplateList"),
        (293, "subTemplateMultiList", "subTemplateMultiList"),
        (302, "selectorId", "unsigned64"),
        (305, "samplingPacketInterval", "unsigned32"),
        (306, "samplingPacketSpace", "unsigned32"),
        (311, "samplingProbability", "float64"),
        (434, "mibObjectValueInteger", "signed32"),
        (507, "gtpuTEid", "unsigned32"),
        (529, "udpUnsafeExIDList", "basicList"),
    ],
)
def test_known_iana_elements(element_id: int, name: str, data_type: str) -> None:
    element = lookup(0, element_id)
    assert element == Element(0, element_id, name, data_type)
    assert element.known
    assert not element.reverse


def test_netflow_v9_vendor_types_above_32767_are_not_iana_elements() -> None:
    # Cisco ASA NSEL 33000 (ingress ACL id) must not alias IANA 232 (responderOctets).
    asa = lookup(0, 33000)
    assert not asa.known
    assert asa.element_id == 33000
    assert asa.data_type == "octetArray"
    assert lookup(0, 232).name == "responderOctets"


def test_element_is_frozen_and_hashable() -> None:
    element = lookup(0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        element.name = "x"  # type: ignore[misc]
    assert {element: 1}[lookup(0, 1)] == 1


# --- RFC 5103 reverse elements ---------------------------------------------------------------


def test_reverse_octet_delta_count() -> None:
    assert REVERSE_PEN == 29305
    element = lookup(REVERSE_PEN, 1)
    assert element == Element(REVERSE_PEN, 1, "reverseOctetDeltaCount", "unsigned64", reverse=True)
    assert element.known
    assert by_name("reverseOctetDeltaCount") == element


@pytest.mark.parametrize(
    ("element_id", "name"),
    [(8, "reverseSourceIPv4Address"), (236, "reverseVRFname"), (295, "reverseIPSecSPI")],
)
def test_reverse_names_capitalise_first_letter(element_id: int, name: str) -> None:
    assert lookup(REVERSE_PEN, element_id).name == name


def test_every_iana_element_has_a_reverse() -> None:
    for row in IANA_ROWS:
        forward = lookup(0, int(row["element_id"]))
        reverse = lookup(REVERSE_PEN, forward.element_id)
        assert reverse.reverse and reverse.known
        assert reverse.data_type == forward.data_type
        assert reverse.name == "reverse" + forward.name[0].upper() + forward.name[1:]
        assert by_name(reverse.name) == reverse


def test_cert_reverse_elements() -> None:
    element = lookup(6871, 0x4000 | 14)
    assert element == Element(6871, 0x4000 | 14, "reverseInitialTCPFlags", "unsigned16", reverse=True)
    # CERT's reverseFlowDeltaMilliseconds (21) is a forward element despite its name
    assert not lookup(6871, 21).reverse


# --- unknown elements ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pen", "element_id", "name"),
    [
        (0, 999, "id999"),
        (0, 0, "id0"),
        (0, 32767, "id32767"),
        (12345, 7, "e12345id7"),
        (6871, 31000, "e6871id31000"),
    ],
)
def test_unknown_elements(pen: int, element_id: int, name: str) -> None:
    element = lookup(pen, element_id)
    assert element == Element(pen, element_id, name, "octetArray", reverse=False, known=False)
    assert by_name(name) is None


def test_unknown_reverse_element() -> None:
    element = lookup(REVERSE_PEN, 30000)
    assert element == Element(REVERSE_PEN, 30000, "e29305id30000", "octetArray", reverse=True, known=False)


def test_lookup_never_raises_on_odd_ids() -> None:
    assert not lookup(0, -1).known
    assert not lookup(0, 1 << 20).known
    assert not lookup(-5, 1).known


def test_by_name_unknown() -> None:
    assert by_name("") is None
    assert by_name("noSuchElement") is None


# --- by_name round trips -----------------------------------------------------------------------


def test_by_name_round_trips_every_iana_row() -> None:
    for row in IANA_ROWS:
        element = by_name(row["name"])
        assert element is not None
        assert element == lookup(0, int(row["element_id"]))
        assert element.data_type == row["data_type"]


def test_by_name_round_trips_every_enterprise_row() -> None:
    for row in ENTERPRISE_ROWS:
        pen, element_id = int(row["pen"]), int(row["element_id"])
        listed = lookup(pen, element_id)
        assert listed.known
        assert (listed.name, listed.data_type) == (row["name"], row["data_type"])
        found = by_name(row["name"])
        assert found is not None
        if row["name"] in IANA_NAMES:
            # CERT reuses two IANA names; the IANA element wins
            assert found.pen == 0
        else:
            assert found == listed


def test_iana_wins_name_collisions() -> None:
    assert by_name("httpUserAgent") == lookup(0, 468)
    assert lookup(6871, 111).name == "httpUserAgent"


@pytest.mark.parametrize(
    ("name", "pen", "element_id", "data_type"),
    [
        ("silkAppLabel", 6871, 33, "unsigned16"),
        ("netscalerHttpReqUrl", 5951, 130, "string"),
        ("netscalerConnectionChainID", 5951, 192, "octetArray"),
        ("vmwareEgressInterfaceAttr", 6876, 888, "unsigned16"),
        ("ixiaSrcLatitude", 3054, 126, "float32"),
        ("ixiaL7AppName", 3054, 111, "string"),
        ("proceraIncomingOctets", 15397, 3, "unsigned64"),
        ("proceraInternalRtt", 15397, 11, "signed32"),
        ("BindIPv4Address", 10704, 8, "ipv4Address"),
        ("natSubString", 637, 93, "string"),
        ("viptelaVPNId", 41916, 4321, "unsigned64"),
    ],
)
def test_enterprise_elements(name: str, pen: int, element_id: int, data_type: str) -> None:
    assert by_name(name) == Element(pen, element_id, name, data_type)


# --- IPFIXcol2 names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pen", "element_id", "expected"),
    [
        (0, 1, "iana:octetDeltaCount"),
        (0, 152, "iana:flowStartMilliseconds"),
        (REVERSE_PEN, 1, "iana@reverse:octetDeltaCount@reverse"),
        (REVERSE_PEN, 6, "iana@reverse:tcpControlBits@reverse"),
        (6871, 33, "cert:silkAppLabel"),
        (6871, 0x4000 | 14, "cert:initialTCPFlags@reverse"),
        (6871, 302, "en6871:id302"),  # not in libfds's cert.xml
        (6871, 40, "en6871:id40"),  # commented out in libfds's cert.xml
        (5951, 130, "netscaler:httpReqUrl"),
        (5951, 200, "netscaler:icaSessionGuid"),
        (5951, 201, "netscaler:icaClientVersion"),
        (6876, 880, "vmware:tenantProtocol"),
        (6876, 889, "vmware:vxlanExportRole"),
        (3054, 111, "en3054:id111"),
        (15397, 1, "en15397:id1"),
        (0, 999, "en0:id999"),
        (REVERSE_PEN, 30000, "en29305:id30000"),
        (5951, 300, "en5951:id300"),
        (12345, 7, "en12345:id7"),
    ],
)
def test_ipfixcol2_names(pen: int, element_id: int, expected: str) -> None:
    assert ipfixcol2_name(lookup(pen, element_id)) == expected


def test_ipfixcol2_name_of_every_iana_row() -> None:
    for row in IANA_ROWS:
        assert ipfixcol2_name(lookup(0, int(row["element_id"]))) == "iana:" + row["name"]


# --- the CSV files -------------------------------------------------------------------------------


def test_iana_csv_shape() -> None:
    assert list(IANA_ROWS[0]) == ["element_id", "name", "data_type", "semantics", "units"]
    assert len(IANA_ROWS) > 450
    ids = [int(row["element_id"]) for row in IANA_ROWS]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids)
    assert all(0 < element_id < 0x8000 for element_id in ids)
    assert len(IANA_NAMES) == len(IANA_ROWS)
    assert {row["data_type"] for row in IANA_ROWS} <= ABSTRACT_TYPES
    assert {row["semantics"] for row in IANA_ROWS} <= SEMANTICS
    assert all(row["name"] and row["name"].strip() == row["name"] for row in IANA_ROWS)


def test_iana_csv_semantics_and_units() -> None:
    by_id = {int(row["element_id"]): row for row in IANA_ROWS}
    assert (by_id[1]["semantics"], by_id[1]["units"]) == ("deltaCounter", "octets")
    assert (by_id[85]["semantics"], by_id[85]["units"]) == ("totalCounter", "octets")
    assert (by_id[152]["semantics"], by_id[152]["units"]) == ("default", "milliseconds")
    assert (by_id[9]["semantics"], by_id[9]["units"]) == ("", "bits")


def test_enterprise_csv_shape() -> None:
    assert list(ENTERPRISE_ROWS[0]) == ["pen", "element_id", "name", "data_type"]
    keys = [(int(row["pen"]), int(row["element_id"])) for row in ENTERPRISE_ROWS]
    assert len(keys) == len(set(keys))
    assert all(pen not in (0, REVERSE_PEN) for pen, _ in keys)
    assert all(0 <= element_id < 0x8000 for _, element_id in keys)
    names = [row["name"] for row in ENTERPRISE_ROWS]
    assert len(names) == len(set(names))
    assert {row["data_type"] for row in ENTERPRISE_ROWS} <= ABSTRACT_TYPES
    assert {pen for pen, _ in keys} >= {637, 3054, 5951, 6871, 6876, 10704, 15397, 41916}
