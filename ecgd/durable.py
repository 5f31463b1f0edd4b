"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

The one way ecgd makes a file durable (reports, keys, model files, error notes). Errors are
plain ``OSError``; callers translate them into their own error class at their edge.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Optional, Tuple

# ".NAME.<16 hex digits>.tmp": the hidden temporary a write goes through before its rename.
_TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing and make it mode 0700.

    A symlink or non-directory at ``path`` is refused (NotADirectoryError), never followed.
    """
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise NotADirectoryError(f"{path}: not a directory (or a symlink), refusing to use it")
    os.chmod(path, 0o700)
    return path


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"{name!r}: not a plain file name")


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # the write already failed; that error is the one to report


def fsync_directory(directory: Path) -> None:
    """fsync a folder so that renames into it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(directory: Path, name: str, data: bytes, mode: int = 0o600,
                  replace: bool = True, owner: Optional[Tuple[int, int]] = None) -> Path:
    """Atomically and durably write ``data`` as ``directory/name`` with file mode ``mode``.

    A hidden temporary file is created in ``directory`` (O_EXCL, 0600), written, fsynced and
    renamed over ``name``; then the directory is fsynced so the rename survives a power cut.
    ``owner`` (uid, gid) is set on the file before it appears under ``name``.
    With ``replace=False`` an existing ``name`` is never replaced (FileExistsError). On any
    OSError the temporary file is removed and the error propagates; a bad ``name`` is a
    ValueError.
    """
    _check_name(name)
    directory = Path(directory)
    target = directory / name
    temp = directory / f".{name}.{secrets.token_hex(8)}.tmp"  # as _TEMPORARY_NAME
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        try:
            # fchmod, not the open() mode: the umask must not change what the caller asked for.
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temp, target)
        else:
            # link() fails with EEXIST instead of replacing, atomically.
            os.link(temp, target)
            os.unlink(temp)
    except BaseException:
        _remove_quietly(temp)
        raise
    fsync_directory(directory)
    return target


def remove_stale_temporaries(directory: Path) -> int:
    """Delete what ``write_durable`` calls killed between write and rename left in
    ``directory`` (hidden ``.NAME.<16 hex>.tmp`` files); return how many were removed.

    Such a file may hold a complete copy of the file it was meant to become, which the
    interrupted caller writes again: left in place it is a second copy. Call only when no
    write into ``directory`` can be in progress (at start). OSError propagates.
    """
    removed = 0
    with os.scandir(directory) as listing:
        for entry in listing:
            if _TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
    if removed:
        fsync_directory(Path(directory))
    return removed
