"""Checkpoint files: streamed level files, the manifest commit, and a write that fails half-way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowscope.aggregate.checkpoint import MANIFEST, CheckpointFiles


class Unpicklable:
    def __reduce__(self) -> tuple[object, ...]:
        raise OSError("disk full (simulated by the object being written)")


def test_levels_round_trip_and_unchanged_levels_keep_their_file(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path)
    big = np.arange(3_000_000, dtype=np.uint64)  # 24 MB: written from the array's own memory
    assert files.write({"version": 1}, [{"a": big}, {"b": [1, 2]}]) == 2
    first_names = sorted(p.name for p in tmp_path.glob("level*.pkl"))
    assert files.write({"version": 1}, [None, {"b": [3]}]) == 1  # only level 1 changed
    header, levels = CheckpointFiles(tmp_path).read() or ({}, [])
    assert header["version"] == 1
    assert (levels[0]["a"] == big).all() and levels[1] == {"b": [3]}
    names = sorted(p.name for p in tmp_path.glob("level*.pkl"))
    assert names[0] == first_names[0] and names[1] != first_names[1]  # the old level-1 file is gone
    assert len(names) == 2


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    files = CheckpointFiles(tmp_path)
    files.write({"version": 1}, [{"a": 1}, {"b": 2}])
    manifest = (tmp_path / MANIFEST).read_text()
    with pytest.raises(OSError, match="disk full"):
        files.write({"version": 2}, [{"a": 10}, {"b": Unpicklable()}])
    assert (tmp_path / MANIFEST).read_text() == manifest
    assert not list(tmp_path.glob(".tmp-*"))  # the partial file is removed
    header, levels = CheckpointFiles(tmp_path).read() or ({}, [])
    assert header["version"] == 1 and levels == [{"a": 1}, {"b": 2}]
    assert files.write({"version": 3}, [{"a": 11}, {"b": 12}]) == 2  # and writing goes on
    header, levels = CheckpointFiles(tmp_path).read() or ({}, [])
    assert header["version"] == 3 and levels == [{"a": 11}, {"b": 12}]
