"""Parameter declarations: parsing, errors naming the parameter, and their OpenAPI form."""

from __future__ import annotations

import pytest

from flowscope.serve.params import (
    FINEST,
    REPORT,
    ApiError,
    Catalog,
    Param,
    canonical_address,
    iso,
    parse_args,
    parse_time,
)

NOW = 1_795_784_400_000
CATALOG = Catalog.of([1_000, 60_000, 3_600_000], ["all", "ssh"])


def test_times() -> None:
    assert parse_time("t", "1795784400000", NOW) == NOW
    assert parse_time("t", "2026-11-27T13:00:00Z", NOW) == NOW
    assert parse_time("t", "2026-11-27T14:00:00+01:00", NOW) == NOW
    assert parse_time("t", "2026-11-27 13:00", NOW) == NOW  # naive means UTC
    assert parse_time("t", "2026-11-27T13:00:00.250z", NOW) == NOW + 250
    assert parse_time("t", "now", NOW) == NOW
    assert parse_time("t", "-5m", NOW) == NOW - 300_000
    assert parse_time("t", "-1500ms", NOW) == NOW - 1_500
    assert iso(NOW + 7) == "2026-11-27T13:00:00.007Z"
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    for bad in ("tomorrow", "13:00", "1e12", "-5x", "1969-12-31T23:59:59Z", "99999999999999999", "-1", "٣"):
        with pytest.raises(ApiError) as caught:
            parse_time("from", bad, NOW)
        assert (caught.value.status, caught.value.parameter) == (400, "from")


def test_addresses_are_canonical() -> None:
    assert canonical_address("a", " 10.0.0.1 ") == "10.0.0.1"
    assert canonical_address("a", "::ffff:10.0.0.1") == "10.0.0.1"  # as flowscope writes IPv4 flows
    assert canonical_address("a", "2001:DB8:0:0::1") == "2001:db8::1"
    for bad in ("10.0.0.256", "example.com", "fe80::1%eth0", ""):
        with pytest.raises(ApiError):
            canonical_address("address", bad)


def test_catalog_defaults() -> None:
    assert CATALOG.intervals == ("1s", "1m", "1h") and (CATALOG.finest, CATALOG.report) == ("1s", "1m")
    assert Catalog.of([1_000, 10_000], ["all"]).report == "10s"
    assert Catalog.of([60_000], ["all"]).report == "1m"
    assert Catalog.of([5_000], ["all"]).report == "5s"


def test_parse_args_fills_defaults_and_rejects_what_is_not_declared() -> None:
    params = (Param("interval", "interval", "", default=REPORT), Param("stream", "intervals", "", default=FINEST),
              Param("view", "view", "", default="all"), Param("limit", "int", "", default=5, minimum=1, maximum=9),
              Param("final", "bool", "", default=False), Param("address", "address", "", location="path"))
    args = parse_args(params, [("limit", "7"), ("final", "YES"), ("token", "x")], {"address": "10.0.0.1"}, CATALOG,
                      NOW)
    assert args.values == {"interval": "1m", "stream": ("1s",), "view": "all", "limit": 7, "final": True,
                           "address": "10.0.0.1"}
    assert parse_args(params, [("stream", "1m,1s,1m")], {"address": "::1"}, CATALOG, NOW).texts("stream") == (
        "1m", "1s")
    for query, parameter in ([("limit", "10")], "limit"), ([("view", "all"), ("view", "ssh")], "view"), \
            ([("stream", "1s,")], "stream"), ([("x", "1")], "x"), ([("final", "2")], "final"):
        with pytest.raises(ApiError) as caught:
            parse_args(params, query, {"address": "10.0.0.1"}, CATALOG, NOW)
        assert caught.value.parameter == parameter
    with pytest.raises(ApiError) as missing:
        parse_args(params, [], {}, CATALOG, NOW)
    assert missing.value.message == "address: is required"


def test_openapi_form_of_parameters() -> None:
    assert Param("interval", "interval", "window", default=REPORT).openapi(CATALOG) == {
        "name": "interval", "in": "query", "description": "window", "required": False,
        "schema": {"type": "string", "enum": ["1s", "1m", "1h"], "default": "1m"}}
    assert Param("interval", "intervals", "w", default=FINEST).openapi(CATALOG) == {
        "name": "interval", "in": "query", "description": "w", "required": False, "style": "form", "explode": False,
        "schema": {"type": "array", "items": {"type": "string", "enum": ["1s", "1m", "1h"]}, "minItems": 1,
                   "default": ["1s"]}}
    assert Param("n", "int", "n", default=3, minimum=1, maximum=9).schema(CATALOG) == {
        "type": "integer", "minimum": 1, "maximum": 9, "default": 3}
    assert Param("address", "address", "a", location="path").openapi(CATALOG)["required"] is True
