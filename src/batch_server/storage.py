"""Bytes of uploaded and produced files, kept apart from their metadata in the database.

Keys are ids this server generated (never user input), so no key can reach a path
outside the store. Writes go to a temporary name and are renamed into place, so a file
is either complete or absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
CHUNK = 1024 * 1024


class FileStore:
    """A local directory (which may be a mount shared by several hosts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not _SAFE_KEY.match(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[-2:] / key

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """Open ``key`` for writing; the bytes become visible when the block ends cleanly."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".part")
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream ``key`` (or the byte range ``[start, end)``) in chunks."""
        with self.open(key) as fh:
            fh.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
