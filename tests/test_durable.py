"""Crash-safe writes: temp file, fsync, rename, fsync of the folder."""
from __future__ import annotations

import os

import pytest

from ecgd.durable import ensure_private_dir, remove_stale_temporaries, write_durable


def test_write_replaces_atomically_and_leaves_no_temp(tmp_path) -> None:
    """The target holds the new bytes with the asked mode; no hidden temp file remains."""
    write_durable(tmp_path, "a.json", b"old")
    target = write_durable(tmp_path, "a.json", b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_no_replace_refuses_existing_file(tmp_path) -> None:
    """replace=False never overwrites: FileExistsError, old content kept, no temp left."""
    write_durable(tmp_path, "key", b"first")
    with pytest.raises(FileExistsError):
        write_durable(tmp_path, "key", b"second", replace=False)
    assert (tmp_path / "key").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_owner_is_set_before_the_file_appears(tmp_path) -> None:
    """owner=(uid, gid) is applied to the file (root only: chown to another user)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    target = write_durable(tmp_path, "current", b"x", owner=(65534, 65534))
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)


def test_errors_propagate_as_oserror(tmp_path) -> None:
    """A folder that is a regular file: the OSError reaches the caller (who translates it)."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        write_durable(blocker, "x", b"data")
    with pytest.raises(ValueError):
        write_durable(tmp_path, "../escape", b"data")


def test_private_dir_is_0700_and_refuses_symlinks(tmp_path) -> None:
    """ensure_private_dir creates or tightens to 0700 and never follows a symlink."""
    folder = ensure_private_dir(tmp_path / "a" / "b")
    assert folder.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "link"
    link.symlink_to(folder)
    with pytest.raises(NotADirectoryError):
        ensure_private_dir(link)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path) -> None:
    """Only write_durable's own hidden temporaries go (a killed write's leftovers); other
    hidden files, *.tmp names and a folder of the same shape stay."""
    write_durable(tmp_path, "a.ecgr", b"sealed")
    stale = tmp_path / ".a.ecgr.0123456789abcdef.tmp"
    stale.write_bytes(b"sealed")
    keep = [".hidden", "upload.tmp", ".a.ecgr.0123.tmp", ".b.ecgr.0123456789ABCDEF.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".c.ecgr.fedcba9876543210.tmp").mkdir()
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        keep + ["a.ecgr", ".c.ecgr.fedcba9876543210.tmp"])
    assert remove_stale_temporaries(tmp_path) == 0
