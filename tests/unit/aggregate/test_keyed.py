"""KeyedSums and group_sum against a plain-Python group-by, on the key kinds the engine uses."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import pytest
from tests.support.flows import addresses

from flowscope.aggregate.keyed import KeyedSums, column_sums, group_sum, top_indices

# Addresses on both sides of the IPv4-mapped block in byte order (::, ::1, IPv4-compatible
# ::a.b.c.d below it; ::1:0:0:0 and every global IPv6 address above it), IPv4-mapped edges,
# and IPv6 addresses sharing their low half with an IPv4-mapped one.
EDGE_ADDRESSES = [
    "::", "::1", "::10.0.0.1", "::fffe:ffff:ffff", "::ffff:0:0", "0.0.0.0", "0.0.0.1", "10.0.0.1",
    "255.255.255.255", "::1:0:0:0", "::1:ffff:a00:1", "2001:db8::ffff:a00:1", "2001:db8::1", "fd00:10::5",
    "ff02::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
]


def _reference(keys: npt.NDArray, values: npt.NDArray[np.uint64]) -> tuple[list[bytes], list[list[int]]]:
    sums: dict[bytes, list[int]] = defaultdict(lambda: [0] * values.shape[1])
    for key, row in zip(keys.view(f"V{keys.dtype.itemsize}").tolist(), values.tolist(), strict=True):
        total = sums[bytes(key)]
        for column, value in enumerate(row):
            total[column] += value
    ordered = sorted(sums)
    return ordered, [sums[k] for k in ordered]


def _as_bytes(keys: npt.NDArray) -> list[bytes]:
    return [bytes(k) for k in keys.view(f"V{keys.dtype.itemsize}").tolist()]


def _random_addresses(rng: np.random.Generator, count: int, ipv6_weight: float = 1.0) -> npt.NDArray:
    """A mix like real traffic: mostly IPv4 from a small pool (repeats), some IPv6, the edge cases."""
    v4 = [str(ipaddress.IPv4Address(int(x))) for x in rng.integers(0, 1 << 32, 300)]
    v6 = [str(ipaddress.IPv6Address(int(x) << 64 | int(y))) for x, y in
          zip(rng.integers(0, 1 << 63, 60), rng.integers(0, 1 << 63, 60), strict=True)]
    pool = addresses([*v4, *v6, *EDGE_ADDRESSES])
    weights = np.r_[np.full(300, 5.0), np.full(60, ipv6_weight), np.full(len(EDGE_ADDRESSES), 2.0)]
    return pool[rng.choice(len(pool), count, p=weights / weights.sum())]


@pytest.mark.parametrize(("rows", "ipv6_weight"), [(1, 1.0), (7, 1.0), (3_000, 1.0), (40_000, 1.0), (40_000, 500.0)])
def test_group_sum_of_addresses_equals_a_python_group_by_in_byte_order(rows: int, ipv6_weight: float) -> None:
    rng = np.random.default_rng(rows)
    keys = _random_addresses(rng, rows, ipv6_weight)
    values = rng.integers(0, 1 << 40, (rows, 3)).astype(np.uint64)
    unique, sums = group_sum(keys, values)
    expected_keys, expected_sums = _reference(keys, values)
    assert _as_bytes(unique) == expected_keys
    assert sums.tolist() == expected_sums


def test_group_sum_of_only_ipv4_and_of_only_ipv6_addresses() -> None:
    for texts in (["10.0.0.2", "10.0.0.1", "10.0.0.2", "0.0.0.0"], ["2001:db8::2", "::1", "2001:db8::2"]):
        keys = addresses(texts)
        values = np.arange(3 * len(texts), dtype=np.uint64).reshape(-1, 3)
        unique, sums = group_sum(keys, values)
        expected_keys, expected_sums = _reference(keys, values)
        assert _as_bytes(unique) == expected_keys
        assert sums.tolist() == expected_sums


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, np.int64])
def test_group_sum_of_integer_keys(dtype: type) -> None:
    rng = np.random.default_rng(3)
    keys: npt.NDArray = rng.integers(0, 50, 5_000).astype(dtype)
    values = rng.integers(0, 1 << 50, (5_000, 3)).astype(np.uint64)
    unique, sums = group_sum(keys, values)
    for key, row in zip(unique.tolist(), sums.tolist(), strict=True):
        assert row == values[keys == key].sum(axis=0).tolist()
    assert unique.tolist() == sorted(set(keys.tolist()))


def test_group_sum_of_one_repeated_key_and_of_nothing() -> None:
    keys = np.full(4, 7, np.uint32)
    values = np.array([[1, 2, 3]] * 4, np.uint64)
    unique, sums = group_sum(keys, values)
    assert unique.tolist() == [7] and sums.tolist() == [[4, 8, 12]]
    empty_keys, empty_sums = group_sum(np.empty(0, np.uint32), np.empty((0, 3), np.uint64))
    assert len(empty_keys) == 0 and empty_sums.shape == (0, 3)


def test_sums_beyond_float_precision_stay_exact() -> None:
    keys = addresses(["10.0.0.1", "10.0.0.1", "2001:db8::1"])
    big = (1 << 62) + 1
    values = np.array([[big, 1, big], [1, big, 1], [big, big, big]], np.uint64)
    _, sums = group_sum(keys, values)
    assert sums.tolist() == [[big + 1, big + 1, big + 1], [big, big, big]]
    assert column_sums(values).tolist() == [2 * big + 1, 2 * big + 1, 2 * big + 1]


def test_keyed_sums_fold_many_batches_and_merge_like_one_group_by() -> None:
    rng = np.random.default_rng(11)
    first, second = KeyedSums("S16", 3), KeyedSums("S16", 3)
    all_keys, all_values = [], []
    for batch in range(60):
        keys = _random_addresses(rng, 2_000)
        values = rng.integers(0, 1 << 30, (2_000, 3)).astype(np.uint64)
        (first if batch % 2 else second).add(keys, values)
        all_keys.append(keys)
        all_values.append(values)
    first.merge(second)
    expected_keys, expected_sums = _reference(np.concatenate(all_keys), np.concatenate(all_values))
    first.compact()
    assert _as_bytes(first.keys) == expected_keys
    assert first.sums.tolist() == expected_sums
    probe = expected_keys[len(expected_keys) // 2]
    found = first.get(probe)
    assert found is not None and found.tolist() == expected_sums[len(expected_keys) // 2]


def test_top_indices_rank_by_value_then_by_index() -> None:
    values = np.array([5, 9, 5, 0, 9, 1, 5, 5], np.uint64)
    assert top_indices(values, 3).tolist() == [1, 4, 0]
    assert top_indices(values, 5).tolist() == [1, 4, 0, 2, 6]  # ties at the cut: lower indices
    assert top_indices(values, 20).tolist() == [1, 4, 0, 2, 6, 7, 5, 3]
    assert top_indices(np.empty(0, np.uint64), 3).tolist() == []


def test_top_indices_equal_a_full_sort_on_random_values_with_many_ties() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        values = rng.integers(0, 6, int(rng.integers(1, 200))).astype(np.uint64)
        n = int(rng.integers(1, 15))
        expected = sorted(range(len(values)), key=lambda i: (-int(values[i]), i))[:n]
        assert top_indices(values, n).tolist() == expected


def test_keyed_sums_top_breaks_ties_by_the_smaller_address() -> None:
    table = KeyedSums("S16", 3)
    keys = addresses(["2001:db8::1", "10.0.0.2", "10.0.0.1", "::1", "192.0.2.1"])
    table.add(keys, np.array([[5, 1, 1], [5, 1, 1], [5, 1, 1], [5, 1, 1], [9, 1, 1]], np.uint64))
    top_keys, top_sums = table.top(3, 0)
    assert _as_bytes(top_keys) == _as_bytes(addresses(["192.0.2.1", "::1", "10.0.0.1"]))
    assert top_sums[:, 0].tolist() == [9, 5, 5]
