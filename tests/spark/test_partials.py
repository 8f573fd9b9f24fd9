"""The Parquet stream's driver-side window sums: merging, files, and ranking with the documented tie rules,
checked against a plain-Python reference on random sums with many ties."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowscope.aggregate.stats import METRICS, TCP, UDP
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
