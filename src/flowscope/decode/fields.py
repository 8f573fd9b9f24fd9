"""Information-element registry: the names and abstract data types of NetFlow v9 / IPFIX fields.

The tables live in ``flowscope/decode/elements/`` as plain CSV files and are read lazily, once,
on first use:

* ``iana.csv`` -- the IANA "IPFIX Information Elements" registry (PEN 0);
* ``enterprise.csv`` -- enterprise-specific elements of a few vendors (CERT/YAF, NetScaler, ...).

RFC 5103 reverse elements of IANA elements are not listed anywhere: they are derived, PEN 29305
plus the IANA element id, named ``"reverse"`` + the capitalised IANA name
(``(29305, 1)`` -> ``reverseOctetDeltaCount``) and typed like the forward element.
Enterprise reverse elements that use the 0x4000 bit of the element id (CERT/YAF) are listed in
``enterprise.csv`` and are flagged ``reverse`` as well.

Unknown elements never raise: :func:`lookup` returns an :class:`Element` with ``known=False``,
data type ``octetArray`` and a synthetic name (``id<N>`` for PEN 0, ``e<PEN>id<N>`` otherwise).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
from importlib import resources

__all__ = ["REVERSE_PEN", "Element", "by_name", "ipfixcol2_name", "lookup"]

REVERSE_PEN = 29305
"""Private enterprise number of RFC 5103 reverse elements of IANA elements."""

_REVERSE_BIT = 0x4000  # enterprise reverse convention (RFC 5103 section 6.1, used by CERT/YAF)
_UNKNOWN_TYPE = "octetArray"
_PACKAGE = "flowscope.decode.elements"


@dataclasses.dataclass(frozen=True, slots=True)
class Element:
    """One information element: who defines it, its id, name and IANA abstract data type."""

    pen: int  # 0 for IANA
    element_id: int  # without the enterprise bit
    name: str  # e.g. "octetDeltaCount"; unknown ones get "e{pen}id{element_id}" or "id{element_id}"
    data_type: str  # IANA abstract data type name; "octetArray" for unknown elements
    reverse: bool = False  # RFC 5103 reverse element (pen 29305)
    known: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class _Tables:
    by_key: dict[tuple[int, int], Element]
    by_name: dict[str, Element]


def _reverse_name(name: str) -> str:
    return "reverse" + name[:1].upper() + name[1:]


def _read_csv(filename: str) -> list[dict[str, str]]:
    text = resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@functools.cache
def _tables() -> _Tables:
    by_key: dict[tuple[int, int], Element] = {}
    by_name: dict[str, Element] = {}

    iana: list[Element] = []
    for row in _read_csv("iana.csv"):
        element = Element(0, int(row["element_id"]), row["name"], row["data_type"])
        iana.append(element)
        by_key[(0, element.element_id)] = element
        by_name.setdefault(element.name, element)

    for forward in iana:
        reverse = Element(
            REVERSE_PEN, forward.element_id, _reverse_name(forward.name), forward.data_type, reverse=True
        )
        by_key[(REVERSE_PEN, reverse.element_id)] = reverse
        by_name.setdefault(reverse.name, reverse)

    enterprise = [
        Element(int(row["pen"]), int(row["element_id"]), row["name"], row["data_type"])
        for row in _read_csv("enterprise.csv")
    ]
    listed = {(element.pen, element.element_id): element for element in enterprise}
    for candidate in enterprise:
        base_id = candidate.element_id & ~_REVERSE_BIT
        base = listed.get((candidate.pen, base_id))
        is_reverse = (
            base_id != candidate.element_id
            and base is not None
            and candidate.name == _reverse_name(base.name)
        )
        element = dataclasses.replace(candidate, reverse=True) if is_reverse else candidate
        by_key.setdefault((element.pen, element.element_id), element)
        by_name.setdefault(element.name, element)

    return _Tables(by_key=by_key, by_name=by_name)


def _unknown(pen: int, element_id: int) -> Element:
    name = f"id{element_id}" if pen == 0 else f"e{pen}id{element_id}"
    return Element(pen, element_id, name, _UNKNOWN_TYPE, reverse=pen == REVERSE_PEN, known=False)


def lookup(pen: int, element_id: int) -> Element:
    """The element ``element_id`` of enterprise ``pen`` (0 for IANA); never raises.

    ``element_id`` is taken as given: the IPFIX decoder strips the enterprise bit, and NetFlow v9
    vendor types above 32767 (Cisco ASA 33000+, Palo Alto 56701 ...) are real ids of their own,
    not IANA elements with a stray bit. Elements that no table knows come back with
    ``known=False`` and data type ``octetArray``.
    """
    element = _tables().by_key.get((pen, element_id))
    return element if element is not None else _unknown(pen, element_id)


def by_name(name: str) -> Element | None:
    """The element called ``name`` (IANA, RFC 5103 reverse or enterprise), or ``None``.

    Names are unique within each table; where an enterprise element shares an IANA name
    (CERT's ``httpUserAgent``, for example) the IANA element wins.
    """
    return _tables().by_name.get(name)


# --- IPFIXcol2 / libfds naming ------------------------------------------------------------
# IPFIXcol2's JSON output names a field "<scope>:<element name>" after the libfds element
# definitions (config/system/elements/*.xml of CESNET/libfds), "en<PEN>:id<ID>" when libfds does
# not know the element.  Reverse elements are named "<name>@reverse": IANA ones live in the
# scope "iana@reverse" (biflow mode "pen"), CERT ones in "cert" itself (biflow mode "split",
# bit 0x4000).  Our enterprise names follow logstash-codec-netflow, which prefixes NetScaler and
# VMware names with the vendor; libfds does not.
_IPFIXCOL2_SCOPES: dict[int, str] = {5951: "netscaler", 6871: "cert", 6876: "vmware"}
_IPFIXCOL2_SPLIT_BIFLOW = frozenset({6871})
_IPFIXCOL2_PREFIXES: dict[int, str] = {5951: "netscaler", 6876: "vmware"}
_IPFIXCOL2_NAMES: dict[tuple[int, int], str] = {
    (5951, 200): "icaSessionGuid",  # logstash: netscalerICASessionGuid
    (5951, 201): "icaClientVersion",  # logstash: netscaleIcaClientVersion
}
# CERT elements we list that libfds's cert.xml does not define (flowAttributes is commented out
# there; the rest are newer than the yaf-2.10.0 model libfds was extracted from).
_IPFIXCOL2_MISSING: dict[int, frozenset[int]] = {
    6871: frozenset({40, 553, 554, *range(302, 338)}),
}


def _libfds_name(pen: int, element_id: int) -> str | None:
    split = pen in _IPFIXCOL2_SPLIT_BIFLOW and bool(element_id & _REVERSE_BIT)
    base_id = element_id & ~_REVERSE_BIT if split else element_id
    if base_id in _IPFIXCOL2_MISSING.get(pen, frozenset()):
        return None
    base = _tables().by_key.get((pen, base_id))
    if base is None or base.reverse:
        return None
    name = _IPFIXCOL2_NAMES.get((pen, base_id))
    if name is None:
        name = base.name
        prefix = _IPFIXCOL2_PREFIXES.get(pen)
        if prefix is not None and name.startswith(prefix) and len(name) > len(prefix):
            rest = name[len(prefix) :]
            name = rest[:1].lower() + rest[1:]
    return name + "@reverse" if split else name


def ipfixcol2_name(element: Element) -> str:
    """The field name IPFIXcol2's JSON output uses for ``element``.

    ``iana:octetDeltaCount``; ``iana@reverse:octetDeltaCount@reverse`` for RFC 5103 reverse
    elements; libfds scope names for the enterprise elements libfds defines (``cert:silkAppLabel``,
    ``netscaler:httpReqUrl``, ``vmware:tenantProtocol``); ``en<PEN>:id<ID>`` otherwise.
    """
    pen, element_id = element.pen, element.element_id
    if pen == 0:
        if element.known:
            return f"iana:{element.name}"
    elif pen == REVERSE_PEN:
        forward = _tables().by_key.get((0, element_id))
        if forward is not None:
            return f"iana@reverse:{forward.name}@reverse"
    else:
        scope = _IPFIXCOL2_SCOPES.get(pen)
        name = _libfds_name(pen, element_id) if scope is not None else None
        if name is not None:
            return f"{scope}:{name}"
    return f"en{pen}:id{element_id}"
