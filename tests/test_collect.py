"""``ecgd collect``: reports copied out durably before they are marked delivered, never after."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from daemon_harness import small_filesystem
from ecgd.cli import main
from ecgd.report_store import delivered_dir, list_reports, report_file_name


@pytest.fixture
def reports(tmp_path: Path):
    """A config naming a reports folder holding five reports and a killed write's temporary."""
    folder = tmp_path / "reports"
    folder.mkdir(mode=0o700)
    for report_id in sorted(str(uuid.uuid4()) for _ in range(5)):
        (folder / report_file_name(report_id)).write_bytes(os.urandom(20_000))
    (folder / f".{uuid.uuid4()}.ecgr.0123456789abcdef.tmp").write_bytes(b"partial")
    config = tmp_path / "ecgd.toml"
    config.write_text(f'[reports]\ndir = "{folder}"\n')
    return config, folder


def test_collect_copies_then_marks_delivered(reports, tmp_path, capsys):
    """Every report is copied byte for byte into DIR and then moved into delivered/; the
    temporary stays; a second run finds nothing left to collect."""
    config, folder = reports
    into = tmp_path / "usb"
    into.mkdir()
    originals = {path.name: path.read_bytes() for path in list_reports(folder)}
    assert main(["collect", "--config", str(config), "--into", str(into)]) == 0
    assert {p.name: p.read_bytes() for p in into.iterdir()} == originals
    assert {p.name: p.read_bytes() for p in list_reports(delivered_dir(folder))} == originals
    assert list_reports(folder) == [] and len(os.listdir(folder)) == 2  # delivered/ + .tmp
    assert "collected 5 reports" in capsys.readouterr().out
    assert main(["collect", "--config", str(config), "--into", str(into)]) == 0
    assert "collected 0 reports" in capsys.readouterr().out


def test_full_destination_leaves_the_rest_undelivered(reports, tmp_path, capsys):
    """A destination that fills up mid-way (a real 64 kB tmpfs): exit 74; the reports copied
    before are delivered, every other one stays undelivered, and DIR holds no partial copy."""
    config, folder = reports
    with small_filesystem(tmp_path / "stick", "64k") as into:
        code = main(["collect", "--config", str(config), "--into", str(into)])
        copied = sorted(p.name for p in into.iterdir())
    assert code == 74
    delivered = sorted(p.name for p in list_reports(delivered_dir(folder)))
    assert delivered == copied and 0 < len(copied) < 5
    assert len(list_reports(folder)) == 5 - len(copied)
    assert f"collected {len(copied)} reports" in capsys.readouterr().out


def test_destination_inside_the_reports_folder_refused(reports):
    """Collecting into the reports folder itself (or below it) is refused; nothing moves."""
    config, folder = reports
    assert main(["collect", "--config", str(config), "--into", str(folder)]) == 78
    assert len(list_reports(folder)) == 5 and not delivered_dir(folder).exists()


def test_delivered_folder_made_for_the_service_user(reports, tmp_path):
    """Run as root, the delivered/ folder collect creates belongs to the reports folder's
    owner, so the service's retention can still delete from it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the reports folder another owner")
    config, folder = reports
    os.chown(folder, 65534, 65534)
    into = tmp_path / "usb"
    into.mkdir()
    assert main(["collect", "--config", str(config), "--into", str(into)]) == 0
    info = delivered_dir(folder).stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 65534, 0o700)
