"""The reports folder's naming rule: only ``<uuid>.ecgr`` files are reports."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from ecgd.report_store import (
    delivered_dir,
    is_report_file_name,
    list_reports,
    report_file_name,
    report_id_of,
)


def test_report_names_are_uuid_dot_ecgr() -> None:
    """A report id gives its file name, that name is recognised as a report, and gives the
    id back."""
    report_id = str(uuid.uuid4())
    assert report_file_name(report_id) == report_id + ".ecgr"
    assert is_report_file_name(report_file_name(report_id))
    assert report_id_of(report_file_name(report_id)) == report_id


def test_temporaries_and_strangers_are_not_reports() -> None:
    """A killed durable write's hidden temporary, other suffixes and non-UUID stems are not reports."""
    report_id = str(uuid.uuid4())
    for name in (f".{report_id}.ecgr.0123456789abcdef.tmp", f".{report_id}.ecgr",
                 f"{report_id}.ecgr.tmp", "notes.ecgr", f"{report_id.upper()}.ecgr",
                 report_id, f"{report_id}.json"):
        assert not is_report_file_name(name), name


def test_list_reports_skips_temporaries_links_and_folders(tmp_path: Path) -> None:
    """Only regular report files directly in the folder are listed, sorted by name."""
    ids = sorted(str(uuid.uuid4()) for _ in range(2))
    for report_id in ids:
        (tmp_path / report_file_name(report_id)).write_bytes(b"x")
    (tmp_path / f".{ids[0]}.ecgr.00ff.tmp").write_bytes(b"complete but never renamed")
    os.symlink(tmp_path / report_file_name(ids[0]),
               tmp_path / report_file_name(str(uuid.uuid4())))
    delivered_dir(tmp_path).mkdir()
    assert [p.name for p in list_reports(tmp_path)] == [report_file_name(i) for i in ids]
    assert list_reports(tmp_path / "missing") == []
