"""Whole small files, read with one bound: never more than the limit plus one byte is read.

For key files, XML and CSV recordings. Errors are plain ``OSError`` (``FileTooLargeError``
for the limit); callers translate them into their own error class at their edge, as with
:mod:`ecgd.durable`.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional


class FileTooLargeError(OSError):
    """The file holds more than ``max_bytes``; ``strerror`` says whether it was read at all."""

    def __init__(self, max_bytes: int, size_bytes: Optional[int]) -> None:
        if size_bytes is None:
            reason = f"grew past the limit of {max_bytes} bytes while being read; refused"
        else:
            reason = f"{size_bytes} bytes exceeds the limit of {max_bytes} bytes; refused unread"
        super().__init__(errno.EFBIG, reason)
        self.max_bytes = max_bytes


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """All bytes of ``path``: refused from its size before it is opened when that is over
    ``max_bytes``, and refused again if it grows past ``max_bytes`` while it is read."""
    size_bytes = os.stat(path).st_size
    if size_bytes > max_bytes:
        raise FileTooLargeError(max_bytes, size_bytes)
    with open(path, "rb") as handle:
        # asking for max_bytes + 1 up front would allocate that much for every small file
        data = handle.read(min(size_bytes, max_bytes) + 1)
        if len(data) > size_bytes:  # it grew while being read
            data += handle.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:
        raise FileTooLargeError(max_bytes, None)
    return data
