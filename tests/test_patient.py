"""PatientStore and `ecgd patient`: root-only atomic file, cheap re-reads, no leaks."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ecgd.cli import build_parser
from ecgd.errors import ConfigError
from ecgd.patient import PatientStore


def test_set_current_clear(tmp_path: Path):
    """set stores 0600 in a 0700 folder; current reads it; clear removes it."""
    store = PatientStore(tmp_path / "patient" / "current")
    assert store.current() is None
    store.set("MRN-0042")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700
    assert store.current() == "MRN-0042"
    assert [p.name for p in store.path.parent.iterdir()] == ["current"]
    store.clear()
    assert store.current() is None


def test_change_by_other_process_is_seen(tmp_path: Path):
    """A second store (the CLI) changing the file is picked up by the daemon's store."""
    daemon_view = PatientStore(tmp_path / "p" / "current")
    PatientStore(daemon_view.path).set("A-1")
    assert daemon_view.current() == "A-1"
    PatientStore(daemon_view.path).set("B-2")
    assert daemon_view.current() == "B-2"


def test_readable_by_others_refused_without_leaking(tmp_path: Path):
    """A patient file readable by others is refused; the message never holds the id."""
    store = PatientStore(tmp_path / "p" / "current")
    store.set("SECRET-77")
    os.chmod(store.path, 0o644)
    with pytest.raises(ConfigError) as err:
        PatientStore(store.path).current()
    assert "SECRET-77" not in str(err.value)


@pytest.mark.parametrize("bad", ["", " padded", "two\nlines", "x" * 129])
def test_bad_identifiers_refused(tmp_path: Path, bad: str):
    """Empty, padded, multi-line and over-long identifiers are refused, naming none."""
    with pytest.raises(ConfigError) as err:
        PatientStore(tmp_path / "current").set(bad)
    assert bad.strip() == "" or bad.strip() not in str(err.value)


def _run(argv):
    args = build_parser("patient").parse_args(["patient"] + argv)
    return args.handler(args)


def test_command_set_show_clear(tmp_path: Path, capsys):
    """`ecgd patient set/show/clear` use [privacy] patient_file from --config."""
    patient_file = tmp_path / "state" / "current"
    config = tmp_path / "ecgd.toml"
    config.write_text(f'[privacy]\npatient_file = "{patient_file}"\n')
    assert _run(["--config", str(config), "set", "MRN-9"]) == 0
    assert "MRN-9" not in capsys.readouterr().out
    assert _run(["--config", str(config), "show"]) == 0
    assert capsys.readouterr().out == "MRN-9\n"
    assert _run(["--config", str(config), "clear"]) == 0
    assert _run(["--config", str(config), "show"]) == 1


def test_file_takes_the_owner_of_its_folder(tmp_path) -> None:
    """Run as root, `patient set` leaves a file the service user (folder owner) can read."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the folder to another user")
    folder = tmp_path / "patient"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    store = PatientStore(folder / "current")
    store.set("OWNER-TEST-1")
    info = os.stat(folder / "current")
    assert (info.st_uid, info.st_gid) == (65534, 65534)
    assert info.st_mode & 0o777 == 0o600
