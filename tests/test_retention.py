"""Retention on real folders: what may go goes oldest first, what may not never does; the
free-space floor on a real small filesystem pauses and resumes spool intake."""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from daemon_harness import small_filesystem
from ecgd.config import RetentionConfig
from ecgd.report_store import delivered_dir, report_file_name
from ecgd.retention import MIB, SECONDS_PER_DAY, Retention, StoredItem, select_for_deletion


def _items(*specs):
    return [StoredItem(Path(name), size, stored_at) for name, size, stored_at in specs]


def test_select_expired_then_oldest_until_within_size():
    """Older than max_age goes; then the oldest of the rest until the rest fits."""
    items = _items(("a", 100, 1.0), ("b", 100, 5.0), ("c", 100, 6.0), ("d", 100, 7.0))
    chosen = select_for_deletion(items, now_s=10.0, max_age_s=8.0, max_bytes=150)
    assert [item.path.name for item in chosen] == ["a", "b", "c"]
    assert select_for_deletion(items, 10.0, float("inf"), float("inf")) == []


@pytest.fixture
def store(tmp_path: Path):
    """A spool done folder and a reports folder with undelivered and delivered reports."""
    done = tmp_path / "done"
    reports = tmp_path / "reports"
    delivered = delivered_dir(reports)
    failed = tmp_path / "failed"
    for folder in (done, delivered, failed):
        folder.mkdir(parents=True)
    return done, reports, delivered, failed


def _write(path: Path, size: int) -> Path:
    path.write_bytes(b"\x5a" * size)
    return path


def _report(folder: Path, size: int = 3000) -> Path:
    return _write(folder / report_file_name(str(uuid.uuid4())), size)


def _retention(done: Path, reports: Path, **limits) -> Retention:
    return Retention(RetentionConfig(**limits), done, reports, structlog.get_logger())


def test_size_limit_deletes_oldest_done_inputs_and_delivered_reports(store):
    """Over their size limits, the oldest done inputs (a claim folder counts as one input of
    its files' size) and the oldest delivered reports go; the newest stay."""
    done, reports, delivered, _ = store
    for name in ("a.csv", "b.csv"):
        _write(done / name, 4000)
    folder = done / "c.hea~1a2b3c4d"
    folder.mkdir()
    _write(folder / "c.hea", 1000)
    _write(folder / "c.dat", 3000)
    _write(done / "d.csv", 4000)
    old_reports = [_report(delivered) for _ in range(3)]
    time.sleep(0.02)  # the newest report must be stored at a later clock tick
    newest = _report(delivered)
    retention = _retention(done, reports, done_max_mib=9000 / MIB, delivered_max_mib=4000 / MIB)
    with capture_logs() as logs:
        result = retention.sweep()
    assert sorted(os.listdir(done)) == ["c.hea~1a2b3c4d", "d.csv"]
    assert os.listdir(delivered) == [newest.name]
    assert (result.done_deleted, result.done_bytes) == (2, 8000)
    assert (result.delivered_deleted, result.delivered_bytes) == (3, 9000)
    assert not any(path.exists() for path in old_reports)
    assert [e["event"] for e in logs] == ["retention_deleted"]
    assert "a.csv" not in str(logs)


def test_age_counts_from_the_move_not_from_the_vendors_mtime(store):
    """An input written a year ago and moved into done/ now is young: its age is the time
    since the move (ctime), not its mtime, so it is kept until done_max_age_days passed."""
    done, reports, _, _ = store
    incoming = _write(done.parent / "old.csv", 100)
    year_ago = time.time() - 365 * SECONDS_PER_DAY
    os.utime(incoming, (year_ago, year_ago))
    os.rename(incoming, done / "old.csv")
    retention = _retention(done, reports, done_max_age_days=30.0)
    assert retention.sweep(now_s=time.time() + 29 * SECONDS_PER_DAY).done_deleted == 0
    assert retention.sweep(now_s=time.time() + 31 * SECONDS_PER_DAY).done_deleted == 1
    assert os.listdir(done) == []


def test_never_deletes_what_was_not_delivered_or_failed(store):
    """With every limit at zero, done/ and delivered reports are emptied, and nothing else
    goes: undelivered reports, failed inputs with their error files, and files in delivered/
    that are not reports (a temporary of a killed write, anything else)."""
    done, reports, delivered, failed = store
    _write(done / "x.csv", 10)
    _report(delivered)
    keep = [_report(reports), _report(reports), _write(failed / "y.csv", 10),
            _write(failed / "y.csv.error.json", 10),
            _write(delivered / f".{uuid.uuid4()}.ecgr.0123456789abcdef.tmp", 10),
            _write(delivered / "notes.txt", 10)]
    retention = _retention(done, reports, done_max_age_days=0.0, done_max_mib=0.0,
                           delivered_max_age_days=0.0, delivered_max_mib=0.0)
    retention.sweep(now_s=time.time() + 1)
    assert os.listdir(done) == []
    assert sorted(p.name for p in delivered.iterdir()) == sorted(
        p.name for p in keep if p.parent == delivered)
    assert all(path.exists() for path in keep)


def test_missing_delivered_folder_is_not_an_error(tmp_path):
    """Before anything was delivered there is no delivered/ folder: nothing to do, no error."""
    (tmp_path / "done").mkdir()
    (tmp_path / "reports").mkdir()
    with capture_logs() as logs:
        result = _retention(tmp_path / "done", tmp_path / "reports").sweep()
    assert result.delivered_deleted == 0 and logs == []


def test_floor_pauses_intake_and_resumes_above_it_with_margin(tmp_path):
    """Below min_free_mib spool intake pauses (logged once however many sweeps); just above
    the floor it stays paused (within the 5 % margin); with space back it resumes, logs it
    and wakes the daemon's prepare stage."""
    with small_filesystem(tmp_path / "small", "4m") as small_fs, capture_logs() as logs:
        reports = small_fs / "reports"
        (small_fs / "done").mkdir()
        reports.mkdir()
        wake = threading.Event()
        retention = Retention(RetentionConfig(min_free_mib=2.0), small_fs / "done", reports,
                              structlog.get_logger(), wake=wake)
        assert not retention.check_free_space()
        filler = _write(small_fs / "filler", 3 * MIB)
        assert retention.sweep().intake_paused and retention.sweep().intake_paused
        assert "spool intake paused" in retention.status_text()
        filler.write_bytes(b"\0" * int(1.96 * MIB))  # 2.04 MiB free: within the margin
        assert retention.check_free_space() and not wake.is_set()
        filler.unlink()
        assert not retention.check_free_space()
    assert [e["event"] for e in logs] == ["intake_paused", "intake_resumed"]
    assert wake.is_set() and retention.status_text() == ""


def test_a_bug_in_a_sweep_is_logged_without_paths_and_retention_goes_on(tmp_path):
    """A sweep that raises something other than OSError (here a folder name os.scandir
    refuses with ValueError) is logged with its type and code frames, never its message (a
    path may hold a patient identifier), and the next sweep still runs."""
    reports = tmp_path / "reports"
    reports.mkdir()
    retention = Retention(RetentionConfig(interval_s=0.05), tmp_path / "MRN-4711\0done",
                          reports, structlog.get_logger())
    with capture_logs() as logs:
        retention.start()
        deadline = time.monotonic() + 30
        while sum(e["event"] == "retention_crashed" for e in logs) < 2:
            assert time.monotonic() < deadline, "no second sweep after the first crash"
            threading.Event().wait(0.05)
        retention.stop()
    crash = next(e for e in logs if e["event"] == "retention_crashed")
    assert crash["exception"] == "ValueError" and "done_items" in crash["frames"]
    assert "MRN-4711" not in str(logs)
