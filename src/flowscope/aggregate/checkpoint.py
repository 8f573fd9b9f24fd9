"""Checkpoints of the engine's open windows: one file per resolution, committed by a manifest.

An hour with a million hosts is hundreds of MB, but it only changes when a minute closes into it,
while the seconds and the open minute change all the time. So each resolution is written to its
own file, and only when it changed since the last checkpoint; a small JSON manifest, replaced
atomically last, names the file of every level. A crash at any point leaves either the old
manifest with the old files or the new manifest with the new ones, never a mix that would count
a minute twice (once in the hour, once as an open minute). Files no manifest names are removed.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
PICKLE_PROTOCOL = 5  # out-of-band capable buffers: numpy arrays are written without a copy


class CheckpointError(Exception):
    """The checkpoint cannot be used (unreadable or written by another configuration)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class CheckpointFiles:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._files: list[str | None] = []
        self._generation = 0

    def write(self, header: dict[str, Any], levels: list[Any | None]) -> int:
        """Write the changed levels (``None`` = unchanged since the last write), then the manifest.

        Returns the number of level files written.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if len(self._files) != len(levels):
            self._files = [None] * len(levels)
        self._generation += 1
        files = list(self._files)
        written = 0
        for level, content in enumerate(levels):
            if content is None and files[level] is not None:
                continue
            name = f"level{level}-{os.getpid()}-{self._generation}.pkl"
            # Streamed into the file: protocol 5 writes large numpy arrays straight from their
            # memory, so an hour of host state never exists a second time as one bytes object.
            _write_atomically(self.directory / name, _pickler(content))
            files[level] = name
            written += 1
        manifest = {**header, "levels": files}
        encoded = json.dumps(manifest).encode()
        _write_atomically(self.directory / MANIFEST, lambda handle: handle.write(encoded))
        self._files = files
        self._remove_unreferenced(set(name for name in files if name))
        return written

    def read(self) -> tuple[dict[str, Any], list[Any]] | None:
        """The last committed checkpoint, or None if there is none."""
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            return None
        try:
            header = json.loads(manifest_path.read_text())
            levels = []
            for name in header["levels"]:
                with (self.directory / name).open("rb") as handle:
                    levels.append(pickle.load(handle))  # our own files, named by our manifest
        except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as error:
            raise CheckpointError("unreadable", f"checkpoint in {self.directory} unreadable: {error}") from None
        self._files = list(header["levels"])
        return header, levels

    def _remove_unreferenced(self, keep: set[str]) -> None:
        for path in self.directory.glob("level*.pkl"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _pickler(content: object) -> Callable[[IO[bytes]], object]:
    return lambda handle: pickle.dump(content, handle, protocol=PICKLE_PROTOCOL)


def _write_atomically(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    """``write`` into a temporary file, synced, then renamed onto ``target`` (removed on failure)."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", delete=False) as handle:
        try:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
            raise
    os.replace(handle.name, target)
