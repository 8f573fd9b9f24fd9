"""Which exporters a listener accepts, by network prefix; decisions cached per address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from flowscope.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED_NETWORK = ipaddress.IPv6Network("::ffff:0:0/96")
_CACHE_MAX = 65_536  # bounds memory under a flood of spoofed sources


def _parse_network(value: object) -> Network:
    if not isinstance(value, str):
        raise ConfigError(f"exporter allowlist: {value!r} is not a network string")
    try:
        network = ipaddress.ip_network(value.strip())
    except ValueError as error:
        raise ConfigError(f"exporter allowlist: invalid network {value!r}: {error}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_NETWORK):
        # ::ffff:10.0.0.0/104 means 10.0.0.0/8: exporters are compared as plain IPv4.
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class ExporterAllowlist:
    """Allows exporter addresses inside any of ``networks``; an empty list allows everybody.

    ``networks`` are CIDR prefixes or single addresses (``"10.0.0.0/8"``, ``"192.0.2.7"``,
    ``"2001:db8::/32"``); an invalid one raises ``ConfigError`` naming it. IPv4-mapped IPv6
    addresses and prefixes are treated as IPv4. Text that is not an address is not allowed
    (unless the list is empty). After the first sight of an address, ``allows`` is a dict lookup.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        if isinstance(networks, str):
            raise ConfigError(f"exporter allowlist: expected a list of networks, got the string {networks!r}")
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for value in networks:
            network = _parse_network(value)
            if isinstance(network, ipaddress.IPv4Network):
                v4.append(network)
            else:
                v6.append(network)
        self._v4 = tuple(v4)
        self._v6 = tuple(v6)
        self._allow_all = not (v4 or v6)
        self._cache: dict[str, bool] = {}

    @property
    def allows_all(self) -> bool:
        return self._allow_all

    @property
    def networks(self) -> list[str]:
        return [str(n) for n in (*self._v4, *self._v6)]

    def allows(self, address_text: str) -> bool:
        decision = self._cache.get(address_text)
        if decision is None:
            decision = self._decide(address_text)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[address_text] = decision
        return decision

    def _decide(self, address_text: str) -> bool:
        if self._allow_all:
            return True
        try:
            address = ipaddress.ip_address(address_text.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in network for network in self._v4)
        return any(address in network for network in self._v6)

    def __repr__(self) -> str:
        return f"ExporterAllowlist({self.networks!r})"
