"""Which files make up one recording: a WFDB header names its signal files; and which
recordings a folder tree holds."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple, Union

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


@dataclasses.dataclass(frozen=True)
class FoundRecording:
    """A recording found in a folder tree: its primary file, or why it is not read.

    ``refusal`` is set (one line naming the entry, never its target) for what the walk does
    not follow or cannot read: a symbolic link leaving the tree, a folder it cannot list.
    """

    path: Path
    refusal: Optional[str] = None


def find_recordings(roots: Sequence[Path],
                    exclude: Sequence[Path] = ()) -> Iterator[FoundRecording]:
    """Every recording under the folders ``roots``, depth first in name order (the order
    of ``sorted()`` on the paths), without holding the tree in memory.

    A WFDB record is found by its header: files sharing a header's stem in its folder are
    its signal and annotation files. Hidden names (a leading dot) are skipped, and so are
    the folders in ``exclude`` (e.g. the caller's own output). Symbolic links are never
    followed: one whose target lies inside a root is skipped (the walk reaches the target
    itself), one that leaves the roots or leads nowhere is found with a refusal. Anything
    else, including a file of no known format, is found, for the reader to judge.
    """
    real_roots = [os.path.realpath(root) for root in roots]
    excluded = {os.path.realpath(folder) for folder in exclude}
    for root in real_roots:
        yield from _walk(root, real_roots, excluded)


_Entry = Union["os.DirEntry[str]", FoundRecording]


def _walk(root: str, real_roots: Sequence[str], excluded: Set[str]) -> Iterator[FoundRecording]:
    stack = [iter(_listing(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if isinstance(entry, FoundRecording):
            yield entry
        elif entry.is_symlink():
            refusal = _link_refusal(entry, real_roots)
            if refusal is not None:
                yield FoundRecording(Path(entry.path), refusal)
        elif entry.is_dir(follow_symlinks=False):
            if entry.path not in excluded:
                stack.append(iter(_listing(entry.path)))
        else:
            yield FoundRecording(Path(entry.path))


def _listing(folder: str) -> List[_Entry]:
    """The folder's entries to visit, in name order: hidden names and the companions of
    WFDB headers left out; a folder that cannot be listed is one refusal."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted((entry for entry in scan if not entry.name.startswith(".")),
                             key=lambda entry: entry.name)
    except OSError as exc:
        name = os.path.basename(folder)
        return [FoundRecording(Path(folder), f"{name}: folder cannot be read: {exc.strerror}")]
    header_stems = {os.path.splitext(entry.name)[0] for entry in entries
                    if entry.name.lower().endswith(".hea")}
    kept: List[_Entry] = [entry for entry in entries
                          if entry.name.lower().endswith(".hea")
                          or os.path.splitext(entry.name)[0] not in header_stems
                          or entry.is_dir(follow_symlinks=False)]
    return kept


def _link_refusal(entry: "os.DirEntry[str]", real_roots: Sequence[str]) -> Optional[str]:
    target = os.path.realpath(entry.path)
    if not os.path.exists(target):
        return f"{entry.name}: is a symbolic link to nothing; not followed"
    if any(os.path.commonpath([root, target]) == root for root in real_roots):
        return None
    return f"{entry.name}: is a symbolic link leading outside the source folders; not followed"
