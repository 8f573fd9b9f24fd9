"""The Parquet stream's driver-side window state (traffic sums, host state): merging, files, and ranking
with the documented tie rules, checked against a plain-Python reference on random sums with many ties."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowscope.aggregate.hostaddr import address_bytes
from flowscope.aggregate.stats import METRICS, TCP, UDP, StatsSpec
from flowscope.model import address_text
from flowscope.spark.hostpartials import HostSums, host_section
from flowscope.spark.hosts import watched_addresses
from flowscope.spark.partials import CLASS, CLIENT, EXPORTER, LATE, PORT, SERVER, WEB, WindowSums, rank_window

pytestmark = pytest.mark.spark


def random_rows(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every facet, two views, few distinct values (ties) and repeated keys."""
    kind = rng.choice([CLASS, WEB, LATE, EXPORTER, PORT, SERVER, CLIENT], count)
    num = np.where(kind == CLASS, rng.integers(0, 4, count), 0)
    num = np.where(kind == EXPORTER, rng.integers(0, 3, count), num)
    num = np.where(kind == PORT, rng.choice([TCP, UDP], count) * 65536 + rng.integers(0, 40, count), num)
    addressed = (kind == SERVER) | (kind == CLIENT)
    # Halves with the sign bit set as well: unsigned byte order must rank them after the others.
    hi = np.where(addressed, rng.choice([0, 1, -(2**63), -1], count), 0)
    lo = np.where(addressed, rng.integers(-3, 3, count), 0)
    keys = np.stack([rng.integers(0, 2, count), kind, num, hi, lo], axis=1).astype(np.int64)
    sums = rng.integers(0, 4, (count, 3)).astype(np.uint64)
    return keys, sums


def by_metric(entries: list[tuple[Any, list[int]]], metric: int, top_n: int) -> list[tuple[Any, list[int]]]:
    """The reference order: the metric descending, then the key ascending (ports, address bytes)."""
    return sorted(entries, key=lambda entry: (-entry[1][metric], entry[0]))[:top_n]


def reference_sums(keys: np.ndarray, sums: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    total: dict[tuple[int, ...], list[int]] = {}
    for key, values in zip(keys.tolist(), sums.tolist(), strict=True):
        entry = total.setdefault(tuple(key), [0, 0, 0])
        for i, value in enumerate(values):
            entry[i] = (entry[i] + value) % 2**64
    return total


def test_merging_in_parts_equals_summing_everything_once_and_wraps_as_uint64() -> None:
    rng = np.random.default_rng(11)
    keys, sums = random_rows(rng, 3000)
    sums[0, 2] = np.uint64(2**64 - 1)  # with any further bytes of that key, the sum wraps as in the engine
    merged = WindowSums.empty()
    for part in np.array_split(np.arange(len(keys)), 7):
        merged = merged.merged(WindowSums.combined(keys[part], sums[part]))
    expected = reference_sums(keys, sums)
    assert len(merged) == len(expected)
    assert {tuple(k): v for k, v in zip(merged.keys.tolist(), merged.sums.tolist(), strict=True)} == expected
    assert merged.keys.tolist() == sorted(merged.keys.tolist())


def test_a_saved_window_loads_back_equal(tmp_path: Path) -> None:
    keys, sums = random_rows(np.random.default_rng(3), 500)
    window = WindowSums.combined(keys, sums)
    target = tmp_path / "60000-0" / "v-00000001.npz"
    window.save(target)
    loaded = WindowSums.load(target)
    assert np.array_equal(loaded.keys, window.keys) and np.array_equal(loaded.sums, window.sums)
    assert loaded.sums.dtype == np.uint64
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left behind


@pytest.mark.parametrize("top_n", [1, 3, 10])
def test_ranking_follows_the_tie_rules(top_n: int) -> None:
    keys, sums = random_rows(np.random.default_rng(top_n), 4000)
    window = WindowSums.combined(keys, sums)
    expected = reference_sums(keys, sums)
    for view in (0, 1):
        ranked = rank_window(window, view, top_n)
        in_view = {key: values for key, values in expected.items() if key[0] == view}
        for protocol in (TCP, UDP):
            ports: list[tuple[Any, list[int]]] = [(key[2] & 0xFFFF, values) for key, values in in_view.items()
                     if key[1] == PORT and key[2] >> 16 == protocol]
            for m, metric in enumerate(METRICS):
                want = [(rank, port, values) for rank, (port, values)
                        in enumerate(by_metric(ports, m, top_n), start=1) if values[m] > 0]
                got = [(rank, port, [values[name] for name in METRICS])
                       for rank, port, values in ranked.ports[(protocol, metric)]]
                assert got == want, (view, protocol, metric)
        for role, kind in (("server", SERVER), ("client", CLIENT)):
            addresses: list[tuple[Any, list[int]]] = [
                (struct.pack(">qq", key[3], key[4]), values) for key, values in in_view.items() if key[1] == kind]
            for m, metric in enumerate(METRICS):
                got_addresses = [(address, [values[name] for name in METRICS])
                                 for _, address, values in ranked.addresses[(role, metric)]]
                assert got_addresses == by_metric(addresses, m, top_n), (view, role, metric)
        late = sum(values[0] for key, values in in_view.items() if key[1] == LATE)
        assert ranked.totals.late_flows == late
        web = [values for key, values in in_view.items() if key[1] == WEB]
        assert [ranked.totals.web[name] for name in METRICS] == (web[0] if web else [0, 0, 0])
        assert sorted(index for index, _ in ranked.exporters) == sorted(
            key[2] for key in in_view if key[1] == EXPORTER)


# -- host state (``spark.hostpartials``) --------------------------------------------------------

HOST_WORDS = [(0, 0xFFFF0A000001), (0, 0xFFFF0A000002), (-(2**63), 5), (-1, -1), (0x20010DB8 << 32, 1)]


def random_host_rows(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Host partial rows (host hi, lo, partner hi, lo, port, sent) of few hosts (ties), sums small."""
    host = np.array(HOST_WORDS, np.int64)[rng.integers(0, len(HOST_WORDS), count)]
    keys = np.stack([host[:, 0], host[:, 1], rng.integers(-2, 2, count), rng.integers(0, 6, count),
                     rng.integers(0, 12, count), rng.integers(0, 2, count)], axis=1).astype(np.int64)
    sums = rng.integers(0, 3, (count, 12)).astype(np.uint64)
    return keys, sums


def test_host_state_merged_in_parts_equals_the_whole_and_ranks_with_the_engines_tie_rules(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    keys, sums = random_host_rows(rng, 2000)
    merged = HostSums.empty()
    for part in np.array_split(np.arange(len(keys)), 6):
        merged = merged.merged(HostSums.of_rows(keys[part], sums[part]))
    whole = HostSums.of_rows(keys, sums)
    merged.save(tmp_path / "h-00000001.npz")
    loaded = HostSums.load(tmp_path / "h-00000001.npz")
    for name in ("hosts", "host_sums", "partners", "ports", "port_sums"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name)), name
        assert np.array_equal(getattr(loaded, name), getattr(whole, name)), name

    # The reference: plain Python over the rows, addresses ordered as unsigned bytes.
    def address(hi: int, lo: int) -> bytes:
        return struct.pack(">qq", hi, lo)

    flows: dict[bytes, int] = {}
    partners: dict[bytes, set[tuple[int, int]]] = {}
    port_sums: dict[bytes, dict[int, list[int]]] = {}  # host → port → flows, packets, bytes
    contacted: dict[bytes, set[int]] = {}  # host → ports of the flows it sent
    sent_flows: dict[bytes, int] = {}
    for (hi, lo, partner_hi, partner_lo, port, sent), values in zip(keys.tolist(), sums.tolist(), strict=True):
        host = address(hi, lo)
        flows[host] = flows.get(host, 0) + values[0]
        partners.setdefault(host, set()).add((partner_hi, partner_lo))
        entry = port_sums.setdefault(host, {}).setdefault(port, [0, 0, 0])
        for index in range(3):
            entry[index] += values[index]
        if sent:
            contacted.setdefault(host, set()).add(port)
            sent_flows[host] = sent_flows.get(host, 0) + values[0]
    texts = [address_text(address(hi, lo)) for hi, lo in HOST_WORDS]
    spec = StatsSpec(local_networks=("0.0.0.0/0", "::/0"), watched_hosts=(texts[3], "192.0.2.200"), top_n=3)
    section = host_section(merged, spec, watched_addresses(spec.watched_hosts))
    assert section["local"]["hosts"] == len(flows)
    by_flows = sorted((host for host in flows if flows[host] > 0), key=lambda host: (-flows[host], host))[:3]
    assert [h["address"] for h in section["local"]["top"]["flows"]] == [address_text(h) for h in by_flows]
    by_partners = sorted(partners, key=lambda host: (-len(partners[host]), host))[:3]
    assert [h["partners"] for h in section["local"]["top"]["partners"]] == [len(partners[h]) for h in by_partners]
    assert [h["address"] for h in section["local"]["top"]["partners"]] == [address_text(h) for h in by_partners]
    assert [h["address"] for h in section["watched"]] == sorted([texts[3], "192.0.2.200"], key=address_bytes)
    unseen = next(h for h in section["watched"] if h["address"] == "192.0.2.200")
    assert unseen["sent"]["flows"] == 0 and unseen["partners"] == 0 and unseen["top_ports"] == []
    seen = next(h for h in section["watched"] if h["address"] == texts[3])
    assert seen["exact"] and seen["sent"]["flows"] + seen["received"]["flows"] == flows[address(-1, -1)]
    assert seen["sent"]["flows"] == sent_flows[address(-1, -1)]
    assert seen["dst_ports"] == len(contacted[address(-1, -1)])
    used = port_sums[address(-1, -1)]
    assert [(p["port"], p["flows"], p["packets"], p["bytes"]) for p in seen["top_ports"]] == [
        (port, *used[port]) for port in sorted(used, key=lambda port: (-used[port][0], port))[:5]]
