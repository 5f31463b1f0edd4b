"""Writing what the reading station makes: whole files or nothing, readable by the owner only
(a page or an export holds health data, pseudonymised or not)."""
from __future__ import annotations

from pathlib import Path

from ecgd import durable
from ecgd.errors import OutputError


def write_output(path: Path, data: bytes) -> Path:
    """Write ``data`` as ``path`` (temporary file, fsync, rename), mode 0600; OutputError."""
    path = Path(path)
    try:
        return durable.write_durable(path.parent, path.name, data, mode=0o600)
    except ValueError as exc:
        raise OutputError(f"{path}: not a usable output file name ({exc})") from exc
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def ensure_output_dir(path: Path) -> Path:
    """The export folder, created (0700) when missing; an existing one is left as it is."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the output folder: "
                          f"{exc.strerror or exc}") from exc
    return path
