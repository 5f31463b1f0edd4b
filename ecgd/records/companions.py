"""Which files make up one recording: a WFDB header names its signal files."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import List, Tuple

from ecgd.errors import RecordError
from ecgd.records.wfdb_header import header_lines

# WFDB headers are ASCII text: printable characters and tabs on every line that is not a
# comment (comments are skipped unread).
_HEADER_LINE = re.compile(r"[\t\x20-\x7e]*")
# The record line: a record name (with /segments for a multi-segment record) and the number
# of signals, then optional fields.
_RECORD_LINE = re.compile(r"\S+\s+\d+(\s.*)?")


def wfdb_header_lines(header_path: Path) -> List[Tuple[int, str]]:
    """The non-comment lines of a WFDB header with their line numbers, as
    :func:`~ecgd.records.wfdb_header.header_lines` gives them; the first is the record line.

    RecordError naming the file when it cannot be read or is not a WFDB header at all (not
    text, or no record line), so that random bytes named ``.hea`` get that reason.
    """
    name = Path(header_path).name
    try:
        text = Path(header_path).read_bytes().decode("latin-1")
    except OSError as exc:
        raise RecordError(f"{name}: cannot read header: {exc.strerror}") from exc
    lines, _comments = header_lines(text)
    if not all(_HEADER_LINE.fullmatch(line) for _line_no, line in lines):
        raise RecordError(f"{name}: not a WFDB header: it is not text")
    if not lines or not _RECORD_LINE.fullmatch(lines[0][1]):
        raise RecordError(f"{name}: not a WFDB header: its first line is not a record line "
                          f"'NAME N_SIGNALS ...'")
    return lines


def wfdb_signal_files(header_path: Path) -> List[str]:
    """Base names of the signal files a WFDB header names, in order, without duplicates.

    The first non-comment line is the record line; every following non-comment line is a
    signal line whose first token is the signal file name (``~`` means no file).
    """
    lines = wfdb_header_lines(header_path)
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
