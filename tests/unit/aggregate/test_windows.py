"""Window alignment and time attribution, every expected value worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from tests.support.flows import make_batch

from flowscope.aggregate.windows import (
    Resolution,
    attribute,
    check_resolutions,
    format_duration,
    parse_duration_ms,
    split_counts,
)
from flowscope.errors import ConfigError

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, a multiple of 1 s and of 1 min (T0 % 60000 == 20000)


def test_durations_parse_and_print() -> None:
    assert parse_duration_ms("1s") == 1000
    assert parse_duration_ms("500ms") == 500
    assert parse_duration_ms("1m") == 60_000
    assert parse_duration_ms("1h") == 3_600_000
    assert parse_duration_ms("1d") == 86_400_000
    assert format_duration(60_000) == "1m"
    assert format_duration(1500) == "1500ms"
    with pytest.raises(ConfigError, match=r"windows\.live: '1 fortnight'"):
        parse_duration_ms("1 fortnight", key="windows.live")
    with pytest.raises(ConfigError, match="longer than zero"):
        parse_duration_ms("0s")


def test_windows_align_to_utc_and_must_divide_each_other() -> None:
    minute = Resolution(60_000)
    assert minute.start_of(T0) == T0 - 20_000
    assert minute.starts_of(np.array([T0, T0 + 39_999, T0 + 40_000])).tolist() == [
        T0 - 20_000, T0 - 20_000, T0 + 40_000,
    ]
    assert Resolution(1000).start_of(-1) == -1000  # floor, not truncation
    assert [r.name for r in check_resolutions([3_600_000, 1000, 60_000])] == ["1s", "1m", "1h"]
    with pytest.raises(ConfigError, match="1m is not a multiple of 7s"):
        check_resolutions([7000, 60_000])


def test_received_start_and_end_pick_their_column() -> None:
    batch = make_batch(2, time_received=[T0 + 5_500, T0 + 100], time_start=[T0 - 3000, T0],
                       time_end=[T0 + 1200, T0 + 2999])
    second = Resolution(1000)
    assert attribute(batch, "received", second).window_start_ms.tolist() == [T0 + 5000, T0]
    assert attribute(batch, "start", second).window_start_ms.tolist() == [T0 - 3000, T0]
    assert attribute(batch, "end", second).window_start_ms.tolist() == [T0 + 1000, T0 + 2000]
    with pytest.raises(ConfigError, match="time_base"):
        attribute(batch, "arrival", second)


def test_spread_shares_packets_and_bytes_by_overlap() -> None:
    # One flow lives 2.5 s: from 0.5 s into window 0 to the middle of window 2.
    batch = make_batch(1, time_start=[T0 + 500], time_end=[T0 + 3000 - 500], packets=[100], bytes=[1001])
    spread = attribute(batch, "spread", Resolution(1000))
    assert spread.window_start_ms.tolist() == [T0, T0 + 1000, T0 + 2000]
    assert spread.share is not None and spread.counts_flow is not None
    assert spread.share.tolist() == pytest.approx([0.5 / 2, 1 / 2, 0.5 / 2])
    assert spread.counts_flow.tolist() == [False, False, True]  # the flow counts once, at its end
    assert split_counts(batch["packets"], spread).tolist() == [25, 50, 25]
    # 1001 bytes: floors 250, 500, 250 = 1000, the remaining byte goes to the last window.
    assert split_counts(batch["bytes"], spread).tolist() == [250, 500, 251]


def test_spread_never_writes_into_closed_windows() -> None:
    batch = make_batch(1, time_start=[T0], time_end=[T0 + 4000], packets=[8], bytes=[8])
    spread = attribute(batch, "spread", Resolution(1000), earliest_start_ms=T0 + 2000)
    assert spread.window_start_ms.tolist() == [T0 + 2000, T0 + 3000, T0 + 4000]
    # Windows 0 and 1 are closed: their half of the lifetime is folded into window 2.
    assert split_counts(batch["packets"], spread).tolist() == [6, 2, 0]
    assert int(split_counts(batch["bytes"], spread).sum()) == 8


def test_instantaneous_and_reversed_flows_take_one_window() -> None:
    batch = make_batch(2, time_start=[T0 + 10, T0 + 5000], time_end=[T0 + 10, T0 + 1000], packets=[3, 4])
    spread = attribute(batch, "spread", Resolution(1000))
    assert spread.window_start_ms.tolist() == [T0, T0 + 1000]
    assert split_counts(batch["packets"], spread).tolist() == [3, 4]
