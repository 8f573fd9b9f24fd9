"""ExporterAllowlist: prefixes, IPv4-mapped IPv6, config errors, per-address caching."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from flowscope.collect.allowlist import ExporterAllowlist
from flowscope.collect.files import read_pcap
from flowscope.errors import ConfigError

WIKIPEDIA = Path(__file__).resolve().parents[2] / "data" / "zeek" / "wikipedia.pcap"


def test_empty_list_allows_everybody() -> None:
    allowlist = ExporterAllowlist([])
    assert allowlist.allows_all
    assert allowlist.allows("192.0.2.1")
    assert allowlist.allows("2001:db8::1")
    assert allowlist.allows("not an address")


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("192.0.2.7", True),  # single host entry
        ("192.0.2.8", False),
        ("2001:db8:1::5", True),
        ("2001:db9::5", False),
        ("::ffff:10.9.9.9", True),  # IPv4-mapped compared as IPv4
        ("::ffff:11.0.0.1", False),
        ("fe80::1%eth0", True),  # scoped link-local
        ("garbage", False),
        ("", False),
    ],
)
def test_prefix_matching(address: str, allowed: bool) -> None:
    allowlist = ExporterAllowlist(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "fe80::/10"])
    assert allowlist.allows(address) is allowed
    assert allowlist.allows(address) is allowed  # cached answer is the same


def test_ipv4_mapped_networks_become_ipv4() -> None:
    allowlist = ExporterAllowlist(["::ffff:172.16.0.0/108"])
    assert allowlist.networks == ["172.16.0.0/12"]
    assert allowlist.allows("172.20.1.1")
    assert allowlist.allows("::ffff:172.20.1.1")
    assert not allowlist.allows("::1")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-network", "10.0.0.1/8", "2001:db8::/129", "", 42])
def test_bad_networks_raise_config_error_naming_the_value(bad: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        ExporterAllowlist(["192.0.2.0/24", bad])


def test_a_bare_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("'10.0.0.0/8'")):
        ExporterAllowlist("10.0.0.0/8")


def test_decisions_are_cached_per_address(monkeypatch: pytest.MonkeyPatch) -> None:
    allowlist = ExporterAllowlist(["10.0.0.0/8"])
    calls: list[str] = []
    decide = allowlist._decide

    def counting(address: str) -> bool:
        calls.append(address)
        return decide(address)

    monkeypatch.setattr(allowlist, "_decide", counting)
    for _ in range(1000):
        assert allowlist.allows("10.0.0.1")
        assert not allowlist.allows("192.0.2.1")
    assert calls == ["10.0.0.1", "192.0.2.1"]


def test_filtering_the_exporters_of_a_real_capture() -> None:
    exporters = Counter(d.exporter for d in read_pcap(WIKIPEDIA))
    campus = ExporterAllowlist(["141.142.220.0/24"])
    link_local = ExporterAllowlist(["fe80::/10"])
    assert sum(n for e, n in exporters.items() if campus.allows(e)) == 29
    assert sum(n for e, n in exporters.items() if link_local.allows(e)) == 5
    assert sum(n for e, n in exporters.items() if ExporterAllowlist([]).allows(e)) == 48
