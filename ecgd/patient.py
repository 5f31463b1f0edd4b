"""Which patient is connected to the live device: the bedside operator's one-line file.

``ecgd patient set ID`` writes the plain identifier to a root-only file (0600 in a 0700
folder, written atomically: temp file, fsync, rename, fsync of the folder); the daemon calls
``current()`` per window and picks a change up without a restart. ``current()`` is cheap: it
re-reads the file only when its stat signature changes. The identifier itself is never
logged and never put into an error message: reports carry only its pseudonym.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Tuple

from ecgd.durable import fsync_directory, write_durable
from ecgd.errors import ConfigError

MAX_IDENTIFIER_CHARS = 128
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def check_identifier(identifier: str) -> str:
    """Return ``identifier`` if usable: 1-128 printable characters, no leading/trailing
    space. The message of the error never repeats the identifier."""
    if not identifier or len(identifier) > MAX_IDENTIFIER_CHARS:
        raise ConfigError(f"patient identifier must have 1 to {MAX_IDENTIFIER_CHARS} characters")
    if not identifier.isprintable() or identifier != identifier.strip():
        raise ConfigError("patient identifier must be printable, with no control characters "
                          "and no leading or trailing spaces")
    return identifier


class PatientStore:
    """The current-patient file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._signature: Optional[Tuple[int, int, int, int]] = None
        self._identifier: Optional[str] = None

    def set(self, identifier: str) -> None:
        """Store ``identifier`` atomically and durably, readable by the folder's owner only.

        The file takes the owner of its folder: an operator running ``ecgd patient set`` as
        root writes a file the service user (who owns the state folder) can still read.
        """
        data = check_identifier(identifier).encode("utf-8") + b"\n"
        folder = self.path.parent
        try:
            folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(folder, _DIR_MODE)
            info = os.stat(folder)
            write_durable(folder, self.path.name, data, mode=_FILE_MODE,
                          owner=(info.st_uid, info.st_gid))
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot store the patient identifier: "
                              f"{exc.strerror}") from exc

    def clear(self) -> None:
        """Forget the current patient (no file = no patient)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot clear the patient: {exc.strerror}") from exc
        fsync_directory(self.path.parent)

    def current(self) -> Optional[str]:
        """The stored identifier, or None; re-read only when the file changed."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._signature, self._identifier = None, None
            return None
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the patient file: "
                              f"{exc.strerror}") from exc
        signature = (info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode)
        if signature == self._signature:
            return self._identifier
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{self.path}: patient file is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(f"{self.path}: patient file is accessible to group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):o}); refused")
        try:
            text = self.path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the patient file: "
                              f"{exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{self.path}: patient file is not UTF-8") from exc
        try:
            identifier = check_identifier(text[:-1] if text.endswith("\n") else text)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: stored {exc}") from exc
        self._signature, self._identifier = signature, identifier
        return identifier
