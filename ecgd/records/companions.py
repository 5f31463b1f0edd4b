"""Which files make up one recording: a WFDB header names its signal files."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List

from ecgd.errors import RecordError
from ecgd.records.wfdb_header import header_lines


def wfdb_signal_files(header_path: Path) -> List[str]:
    """Base names of the signal files a WFDB header names, in order, without duplicates.

    The first non-comment line is the record line; every following non-comment line is a
    signal line whose first token is the signal file name (``~`` means no file).
    """
    try:
        text = Path(header_path).read_text(encoding="latin-1")
    except OSError as exc:
        raise RecordError(f"{Path(header_path).name}: cannot read header: {exc.strerror}") from exc
    lines, _comments = header_lines(text)
    names: List[str] = []
    for _line_no, line in lines[1:]:
        name = line.split()[0]
        if name != "~" and name not in names:
            names.append(name)
    return names


def recording_files(primary: Path) -> List[Path]:
    """The primary file and every companion it needs (WFDB signal files), in a stable order."""
    primary = Path(primary)
    if primary.suffix.lower() != ".hea":
        return [primary]
    return [primary] + [primary.parent / name for name in wfdb_signal_files(primary)]


def content_sha256(paths: List[Path]) -> str:
    """sha256 over the bytes of every file of a recording, in order (report-id seed).

    Each file's bytes are prefixed with their length so that moving bytes from one file to
    the next cannot collide.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                digest.update(os.fstat(handle.fileno()).st_size.to_bytes(8, "big"))
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise RecordError(f"{Path(path).name}: cannot read: {exc.strerror}") from exc
    return digest.hexdigest()
