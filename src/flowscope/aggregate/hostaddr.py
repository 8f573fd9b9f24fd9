"""Which addresses host statistics track: local networks (CIDRs) and watched hosts.

Addresses are the 16 bytes of the flow columns (IPv4 as IPv4-mapped IPv6), handled as their two
big-endian 64-bit halves; membership is tested on whole columns (see ``Networks``, ``HostSet``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from flowscope.aggregate.sketch import U64, hash_halves
from flowscope.errors import ConfigError
from flowscope.model import IPV4_MAPPED_PREFIX

_LOW64 = (1 << 64) - 1


def address_bytes(text: str) -> bytes:
    """An address as the 16 bytes of the flow columns (IPv4 as IPv4-mapped IPv6)."""
    try:
        parsed = ipaddress.ip_address(text.strip())
    except ValueError as error:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from error
    if parsed.version == 4:
        return IPV4_MAPPED_PREFIX + parsed.packed
    return parsed.packed


def halves(raw: bytes) -> tuple[int, int]:
    value = int.from_bytes(raw, "big")
    return value >> 64, value & _LOW64


@dataclass(frozen=True, slots=True)
class Networks:
    """CIDR membership over 128-bit addresses, grouped by prefix length.

    For each distinct prefix length, the masked address's hash is looked up among the
    networks' hashes (one ``searchsorted``), then verified exactly: the cost is one pass per
    prefix length, not per network.
    """

    groups: tuple[tuple[int, int, U64, U64, U64], ...]  # mask hi, mask lo, hashes, net hi, net lo

    @property
    def empty(self) -> bool:
        return not self.groups

    def contains(self, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        inside = np.zeros(len(hi), np.bool_)
        for mask_hi, mask_lo, hashes, net_hi, net_lo in self.groups:
            masked_hi = hi & np.uint64(mask_hi)
            masked_lo = lo & np.uint64(mask_lo)
            if len(hashes) == 1:
                inside |= (masked_hi == net_hi[0]) & (masked_lo == net_lo[0])
                continue
            keys = hash_halves(masked_hi, masked_lo)
            at = np.minimum(np.searchsorted(hashes, keys), len(hashes) - 1)
            inside |= (hashes[at] == keys) & (net_hi[at] == masked_hi) & (net_lo[at] == masked_lo)
        return inside


@lru_cache(maxsize=64)
def compile_networks(texts: tuple[str, ...]) -> Networks:
    """Parse CIDRs (``10.0.0.0/8``, ``2001:db8::/32``; a bare address is a /32 or /128)."""
    by_length: dict[int, set[int]] = {}
    for text in texts:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as error:
            raise ConfigError(f"stats.local_networks: {text!r} is not an IPv4 or IPv6 network") from error
        value = int(network.network_address)
        length = network.prefixlen
        if network.version == 4:
            value |= 0xFFFF << 32
            length += 96
        by_length.setdefault(length, set()).add(value)
    # Drop networks inside a shorter one: they add nothing.
    kept: dict[int, list[int]] = {}
    for length in sorted(by_length):
        for value in sorted(by_length[length]):
            if not any(_mask(shorter) & value in kept[shorter] for shorter in kept):
                kept.setdefault(length, []).append(value)
    groups = []
    for length, values in kept.items():
        mask = _mask(length)
        hi = np.array([v >> 64 for v in values], np.uint64)
        lo = np.array([v & _LOW64 for v in values], np.uint64)
        hashes = hash_halves(hi, lo)
        order = np.argsort(hashes)
        groups.append((mask >> 64, mask & _LOW64, hashes[order], hi[order], lo[order]))
    return Networks(tuple(groups))


def _mask(length: int) -> int:
    return ((1 << length) - 1) << (128 - length)


@dataclass(frozen=True, slots=True)
class HostSet:
    """A small exact set of addresses, matched against columns by hash then verified."""

    hashes: U64
    hi: U64
    lo: U64

    @property
    def empty(self) -> bool:
        return not len(self.hashes)

    def contains(self, hashes: U64, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        if self.empty:
            return np.zeros(len(hashes), np.bool_)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        # Equal hashes of distinct addresses (never seen in practice) would shadow one another
        # here; the verification keeps the answer exact either way for addresses not in the set.
        result: npt.NDArray[np.bool_] = (self.hashes[at] == hashes) & (self.hi[at] == hi) & (self.lo[at] == lo)
        return result


@lru_cache(maxsize=64)
def host_set(addresses: tuple[bytes, ...]) -> HostSet:
    hi = np.array([halves(a)[0] for a in addresses], np.uint64)
    lo = np.array([halves(a)[1] for a in addresses], np.uint64)
    hashes = hash_halves(hi, lo)
    order = np.argsort(hashes)
    return HostSet(hashes[order], hi[order], lo[order])


@lru_cache(maxsize=64)
def configured_hosts(texts: tuple[str, ...]) -> frozenset[bytes]:
    result = set()
    for text in texts:
        try:
            result.add(address_bytes(text))
        except ValueError as error:
            raise ConfigError(f"stats.watched_hosts: {error}") from error
    return frozenset(result)
