"""The reports folder: which of its files are reports, and which are delivered.

One rule for every reader of the folder (the daemon, retention, the forwarder, tools): a
report is a file named ``<report id>.ecgr`` where the report id is a UUID. Anything else is
not a report; in particular the hidden ``.NAME.*.tmp`` files that a durable write leaves
behind when it is killed between write and rename are never read as reports.

A report waiting for delivery sits in the reports folder itself. Once the reading station
has acknowledged it (or an administrator has collected it by hand), it is moved into the
``delivered/`` folder inside it. Only delivered reports may ever be deleted by retention.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import List

REPORT_SUFFIX = ".ecgr"
DELIVERED_DIR_NAME = "delivered"
# Sealed reports are kilobytes; a far larger file is not one and is never read whole.
REPORT_MAX_BYTES = 64 * 1024 * 1024


def report_file_name(report_id: str) -> str:
    """The file name of the sealed report ``report_id``."""
    return report_id + REPORT_SUFFIX


def report_id_of(name: str) -> str:
    """The report id a report file name holds (for names ``is_report_file_name`` accepts)."""
    return name[: -len(REPORT_SUFFIX)]


def is_report_file_name(name: str) -> bool:
    """True for ``<uuid>.ecgr``; False for temporaries, hidden files and anything else."""
    if name.startswith(".") or not name.endswith(REPORT_SUFFIX):
        return False
    stem = report_id_of(name)
    try:
        return str(uuid.UUID(stem)) == stem
    except ValueError:
        return False


def delivered_dir(reports_dir: Path) -> Path:
    """Where reports the station acknowledged (or an administrator collected) are moved."""
    return Path(reports_dir) / DELIVERED_DIR_NAME


def list_reports(folder: Path) -> List[Path]:
    """The report files directly in ``folder`` (regular files only), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir()
                  if is_report_file_name(path.name) and path.is_file() and not path.is_symlink())
