"""Spool ingest on real temp directories with a real inotify observer (watchdog)."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest
import structlog
import wfdb
from structlog.testing import capture_logs

import ecgd
from ecgd.config import SpoolConfig
from ecgd.errors import ConfigError
from ecgd.sources.spool import (
    ClaimedInput,
    Spool,
    SpoolItem,
    hash_name,
    is_ignored_name,
    sanitize_name,
)

SETTLE_S = 0.2


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while time.monotonic() < deadline:
        if condition():
            return True
        pause.wait(0.02)
    return condition()


def drop(spool_dir: Path, name: str, data: bytes) -> Path:
    """Write-then-rename, the way well-behaved devices drop a file."""
    temp = spool_dir / f".{name}.tmp"
    temp.write_bytes(data)
    target = spool_dir / name
    os.rename(temp, target)
    return target


def take(spool: Spool, timeout_s: float = 20.0) -> ClaimedInput:
    """The next ready input, claimed; fails the test when none comes."""
    item = spool.next_ready(timeout_s)
    assert item is not None, "no input became ready"
    claimed = spool.claim(item)
    assert claimed is not None, "claim returned None"
    return claimed


def error_files(folder: Path) -> List[Path]:
    return sorted(folder.rglob("*.error.json"))


@pytest.fixture
def spool_config(tmp_path: Path) -> SpoolConfig:
    """Fast timings; wfdb_wait_s long so it only fires in the tests that shorten it."""
    return SpoolConfig(dir=tmp_path / "incoming", processing_dir=tmp_path / "processing",
                       done_dir=tmp_path / "done", failed_dir=tmp_path / "failed",
                       settle_s=SETTLE_S, rescan_s=0.5, wfdb_wait_s=30.0)


@pytest.fixture
def make_spool(spool_config: SpoolConfig) -> Iterator[Callable[..., Spool]]:
    """Build a Spool (dirs ensured, started unless start=False); stopped after the test."""
    started: List[Spool] = []

    def make(start: bool = True, max_input_bytes: int = 1_000_000, **overrides: object) -> Spool:
        config = dataclasses.replace(spool_config, **overrides)
        spool = Spool(config, max_input_bytes, structlog.get_logger("test"))
        spool.ensure_dirs()
        if start:
            spool.start()
            started.append(spool)
        return spool

    yield make
    for spool in started:
        spool.stop()


def test_write_then_rename_drop_is_claimed_and_completed(make_spool, spool_config):
    """A file renamed into the spool is handed out, claimed into processing, then done."""
    spool = make_spool()
    drop(spool_config.dir, "rec.xml", b"<RestingECG/>")
    claimed = take(spool)
    assert claimed.original_name == "rec.xml"
    assert claimed.primary.read_bytes() == b"<RestingECG/>"
    assert spool_config.processing_dir in claimed.primary.parents
    assert not (spool_config.dir / "rec.xml").exists()
    done = spool.complete(claimed)
    assert done == (spool_config.done_dir / "rec.xml",)
    assert done[0].read_bytes() == b"<RestingECG/>"
    assert list(spool_config.processing_dir.iterdir()) == []


def test_slow_partial_write_is_not_taken_before_close(make_spool, spool_config):
    """A file written in two halves with a pause > settle_s is taken only once closed."""
    spool = make_spool()
    payload = bytes(range(256)) * 64
    with open(spool_config.dir / "slow.csv", "wb") as handle:
        handle.write(payload[: len(payload) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        assert spool.next_ready(SETTLE_S * 5) is None
        handle.write(payload[len(payload) // 2:])
    claimed = take(spool)
    assert claimed.primary.read_bytes() == payload


def test_hidden_temporary_and_error_files_are_ignored(make_spool, spool_config):
    """Hidden, .tmp, .part and .error.json names are never handed out nor moved."""
    spool = make_spool()
    ignored = [".hidden.xml", "upload.tmp", "upload.xml.part", "old.xml.error.json"]
    for name in ignored:
        (spool_config.dir / name).write_bytes(b"x")
    drop(spool_config.dir, "real.xml", b"<x/>")
    assert take(spool).original_name == "real.xml"
    assert spool.next_ready(SETTLE_S * 5) is None
    assert sorted(os.listdir(spool_config.dir)) == sorted(ignored)
    assert all(is_ignored_name(name) for name in ignored)


def test_wfdb_header_waits_for_its_data_file(make_spool, spool_config, shared_data):
    """A .hea is held until the .mat it names arrives; both travel together and still read."""
    spool = make_spool()
    record = shared_data / "cinc2021" / "E07500"
    drop(spool_config.dir, "E07500.hea", record.with_suffix(".hea").read_bytes())
    assert spool.next_ready(SETTLE_S * 5) is None
    drop(spool_config.dir, "E07500.mat", record.with_suffix(".mat").read_bytes())
    item = spool.next_ready(20)
    assert item is not None
    assert item.primary.name == "E07500.hea"
    assert [path.name for path in item.companions] == ["E07500.mat"]
    claimed = spool.claim(item)
    assert claimed is not None
    assert sorted(path.name for path in claimed.files) == ["E07500.hea", "E07500.mat"]
    signal = wfdb.rdrecord(str(claimed.primary.with_suffix("")))
    assert signal.n_sig == 12
    assert spool.next_ready(SETTLE_S * 3) is None  # the .mat is never an input of its own


def test_ptb_xyz_signal_file_dropped_first_waits_for_its_header(make_spool, spool_config,
                                                                shared_data):
    """A PTB .xyz (Frank leads) settled long before its header is not failed as an
    unsupported format: it waits, and the record travels whole."""
    spool = make_spool()
    record = shared_data / "ptbdb" / "s0010_re"
    drop(spool_config.dir, "s0010_re.xyz", record.with_suffix(".xyz").read_bytes())
    assert spool.next_ready(SETTLE_S * 5) is None
    assert error_files(spool_config.failed_dir) == []
    drop(spool_config.dir, "s0010_re.dat", record.with_suffix(".dat").read_bytes())
    drop(spool_config.dir, "s0010_re.hea", record.with_suffix(".hea").read_bytes())
    item = spool.next_ready(20)
    assert item is not None and item.primary.name == "s0010_re.hea"
    assert sorted(path.name for path in item.companions) == ["s0010_re.dat", "s0010_re.xyz"]


def test_wfdb_header_whose_data_never_arrives_goes_to_failed(make_spool, spool_config,
                                                              shared_data):
    """After wfdb_wait_s a lone header lands in failed_dir with a durable error.json."""
    with capture_logs() as logs:
        make_spool(wfdb_wait_s=1.0)
        shutil.copy(shared_data / "cinc2021" / "E07500.hea", spool_config.dir)
        assert wait_for(lambda: len(error_files(spool_config.failed_dir)) == 1)
        # The spool logs input_failed just after the error file is durable: wait for it too.
        assert wait_for(lambda: any(entry["event"] == "input_failed" for entry in logs))
    assert (spool_config.failed_dir / "E07500.hea").is_file()
    document = json.loads((spool_config.failed_dir / "E07500.hea.error.json").read_text())
    assert document["reason"] == "E07500.hea: data files never arrived: E07500.mat"
    assert document["input"] == "E07500.hea"
    assert document["ecgd_version"] == ecgd.__version__
    assert document["time"].endswith("Z")
    failed = [entry for entry in logs if entry["event"] == "input_failed"]
    assert [entry["name_hash"] for entry in failed] == [hash_name("E07500.hea")]
    assert "E07500" not in repr(logs)


def test_orphan_data_file_goes_to_failed(make_spool, spool_config, shared_data):
    """A .dat no header names is never processed alone: after wfdb_wait_s it is failed."""
    make_spool(wfdb_wait_s=1.0)
    drop(spool_config.dir, "100.dat", (shared_data / "mitdb" / "100.dat").read_bytes()[:3000])
    assert wait_for(lambda: (spool_config.failed_dir / "100.dat.error.json").exists())
    document = json.loads((spool_config.failed_dir / "100.dat.error.json").read_text())
    assert "without a header" in document["reason"]


def test_symlink_fifo_and_oversize_are_refused_unread(make_spool, spool_config, tmp_path):
    """Symlinks, FIFOs and files over max_input_bytes go to failed_dir, never handed out."""
    target = tmp_path / "secret.xml"
    target.write_bytes(b"not for ecgd")
    spool = make_spool(max_input_bytes=100)
    os.symlink(target, spool_config.dir / "link.xml")
    os.mkfifo(spool_config.dir / "pipe.xml")  # opening it for reading would block the scanner
    drop(spool_config.dir, "huge.xml", b"x" * 101)
    assert wait_for(lambda: len(error_files(spool_config.failed_dir)) == 3)
    failed = spool_config.failed_dir
    assert stat.S_ISLNK(os.lstat(failed / "link.xml").st_mode)
    assert stat.S_ISFIFO(os.lstat(failed / "pipe.xml").st_mode)
    reasons = {path.name: json.loads(path.read_text())["reason"] for path in error_files(failed)}
    assert reasons["link.xml.error.json"] == "link.xml: is a symbolic link; refused unread"
    assert reasons["pipe.xml.error.json"] == "pipe.xml: is not a regular file; refused unread"
    assert "exceeds the limit of 100 bytes" in reasons["huge.xml.error.json"]
    assert spool.next_ready(SETTLE_S * 3) is None
    assert target.read_bytes() == b"not for ecgd"


def test_names_with_control_characters_are_sanitized_and_never_logged(make_spool,
                                                                       spool_config):
    """Control characters never reach a path; the name never reaches a log line."""
    name = "PATIENT\n4711\x1b[31m..xml"
    with capture_logs() as logs:
        spool = make_spool()
        drop(spool_config.dir, name, b"<x/>")
        claimed = take(spool)
        placed = spool.fail(claimed, f"{name}: not an ECG")
    assert claimed.original_name == name
    assert claimed.primary.name == "PATIENT_4711_[31m..xml"
    assert claimed.primary.parent.parent == spool_config.processing_dir
    assert placed[0].parent == spool_config.failed_dir
    document = json.loads((spool_config.failed_dir / (placed[0].name + ".error.json")).read_text())
    assert document["input"] == name
    assert "4711" not in repr(logs)
    assert {entry["event"] for entry in logs} == {"input_claimed", "input_failed"}


@pytest.mark.parametrize("name, expected", [
    ("..", "_.."), (".", "_."), ("a/b", "a_b"), ("a\0b", "a_b"), ("ok name.xml", "ok name.xml"),
    ("a..b.hea", "a..b.hea"), ("bad\udcff.xml", "bad_.xml"),
])
def test_sanitize_name_gives_one_safe_component(name, expected):
    """Separators, NUL, dot names and undecodable bytes are neutralized; safe names kept."""
    assert sanitize_name(name) == expected


def test_header_naming_a_path_outside_the_spool_is_refused(make_spool, spool_config):
    """A header whose data file name contains a path is failed, not followed."""
    make_spool()
    drop(spool_config.dir, "evil.hea",
         b"evil 1 500 5000\n../../etc/passwd 16 1000 16 0 0 0 0 I\n")
    assert wait_for(lambda: (spool_config.failed_dir / "evil.hea.error.json").exists())
    reason = json.loads((spool_config.failed_dir / "evil.hea.error.json").read_text())["reason"]
    assert "not a plain file name" in reason


@pytest.mark.parametrize("content, reason", [
    (bytes(range(256)) * 8, "rand.hea: not a WFDB header: it is not text"),
    (b"just some words\n", "rand.hea: not a WFDB header: its first line is not a record "
                           "line 'NAME N_SIGNALS ...'"),
])
def test_header_that_is_not_a_wfdb_header_gets_an_honest_reason(make_spool, spool_config,
                                                                  content, reason):
    """Random bytes named .hea are refused as not a WFDB header, not as a header that
    "names a data file that is not a plain file name beside it"."""
    make_spool()
    drop(spool_config.dir, "rand.hea", content)
    assert wait_for(lambda: (spool_config.failed_dir / "rand.hea.error.json").exists())
    document = json.loads((spool_config.failed_dir / "rand.hea.error.json").read_text())
    assert document["reason"] == reason


def test_refused_inputs_are_claimed_logged_and_counted(make_spool, spool_config, tmp_path):
    """Each input the spool refuses itself has an input_claimed line before its
    input_failed line, and refused_count() counts it (the daemon adds it to its failures)."""
    with capture_logs() as logs:
        spool = make_spool(max_input_bytes=100)
        os.symlink(tmp_path, spool_config.dir / "link.xml")
        drop(spool_config.dir, "huge.xml", b"x" * 101)
        drop(spool_config.dir, "rand.hea", b"\x00\xff" * 40)
        assert wait_for(lambda: spool.refused_count() == 3)
        assert wait_for(lambda: sum(entry["event"] == "input_failed" for entry in logs) == 3)
    events = [(entry["event"], entry["name_hash"]) for entry in logs]
    for name in ("link.xml", "huge.xml", "rand.hea"):
        name_hash = hash_name(name)
        assert events.index(("input_claimed", name_hash)) < events.index(
            ("input_failed", name_hash))


def test_files_present_before_start_are_found_by_the_startup_scan(make_spool, spool_config):
    """Inputs dropped while ecgd was down are picked up, oldest first."""
    spool = make_spool(start=False)
    for index, name in enumerate(["b.xml", "a.xml", "c.xml"]):
        path = spool_config.dir / name
        path.write_bytes(b"<x/>")
        os.utime(path, ns=(1_000_000_000 * (10 + index), 1_000_000_000 * (10 + index)))
    spool.start()
    try:
        names = [take(spool).original_name for _ in range(3)]
    finally:
        spool.stop()
    assert names == ["b.xml", "a.xml", "c.xml"]


def test_recover_returns_inputs_left_in_processing(make_spool, spool_config, shared_data):
    """Claimed but unfinished inputs come back after a restart, WFDB partial claims completed."""
    first = make_spool()
    drop(spool_config.dir, "rec.xml", b"<x/>")
    claimed = take(first)
    first.stop()
    # A crash between moving a header and its data file: the .mat is still in the spool.
    record = shared_data / "cinc2021" / "E07501"
    partial = spool_config.processing_dir / f"{hash_name('E07501.hea')}~00000000"
    partial.mkdir()
    shutil.copy(record.with_suffix(".hea"), partial)
    shutil.copy(record.with_suffix(".mat"), spool_config.dir)
    os.utime(partial / "E07501.hea", ns=(1, 1))

    second = make_spool(start=False)
    recovered = second.recover()
    assert [item.name_hash for item in recovered] == [hash_name("E07501.hea"), claimed.name_hash]
    assert recovered[1].primary == claimed.primary
    assert [path.name for path in recovered[0].files] == ["E07501.hea", "E07501.mat"]
    assert not (spool_config.dir / "E07501.mat").exists()
    second.complete(recovered[1])
    assert (spool_config.done_dir / "rec.xml").read_bytes() == b"<x/>"


def test_burst_of_2000_files_comes_out_exactly_once_oldest_first_on_alternate_turns(
        make_spool, spool_config, tmp_path):
    """2000 files dropped at once are each handed out once; every other hand-out (the oldest
    turn) is the oldest input still waiting."""
    spool = make_spool()
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [f"r{index:04d}.csv" for index in range(2000)]
    mtimes = list(range(2000))
    random.Random(4).shuffle(mtimes)
    for name, rank in zip(names, mtimes):
        path = staging / name
        path.write_bytes(name.encode())
        os.utime(path, ns=(10**18 + rank, 10**18 + rank))
    for name in names:
        os.rename(staging / name, spool_config.dir / name)
    assert wait_for(lambda: spool.ready_count() == 2000, timeout_s=60)
    handed: List[SpoolItem] = []
    while True:
        item = spool.next_ready(SETTLE_S * 3)
        if item is None:
            break
        handed.append(item)
        claimed = spool.claim(item)
        assert claimed is not None
        spool.complete(claimed)
    waiting = sorted(10**18 + rank for rank in mtimes)
    for turn, item in enumerate(handed):
        if turn % 2 == 0:
            assert item.mtime_ns == waiting[0]
        waiting.remove(item.mtime_ns)
    assert waiting == []
    assert len({item.primary.name for item in handed}) == 2000
    assert len(os.listdir(spool_config.done_dir)) == 2000
    assert os.listdir(spool_config.dir) == []


def test_same_name_twice_never_overwrites(make_spool, spool_config):
    """A second input with a done input's name goes to a suffixed folder; both survive."""
    spool = make_spool()
    contents = [b"<first/>", b"<second/>"]
    placed = []
    for data in contents:
        drop(spool_config.dir, "ecg.xml", data)
        placed.append(spool.complete(take(spool))[0])
    assert placed[0] == spool_config.done_dir / "ecg.xml"
    assert placed[1].name == "ecg.xml" and placed[1].parent.name.startswith("ecg.xml~")
    assert [path.read_bytes() for path in placed] == contents


def test_claim_failure_is_logged_once_and_retried(make_spool, spool_config):
    """An input that cannot be moved stays in the spool, is retried, and is claimed later."""
    with capture_logs() as logs:
        spool = make_spool()
        processing = spool_config.processing_dir
        processing.rmdir()
        processing.write_bytes(b"")  # mkdir under it now fails with ENOTDIR
        drop(spool_config.dir, "rec.xml", b"<x/>")
        for _ in range(2):
            item = spool.next_ready(20)
            assert item is not None
            assert spool.claim(item) is None
            assert (spool_config.dir / "rec.xml").exists()
        processing.unlink()
        processing.mkdir()
        claimed = take(spool)
    assert claimed.primary.read_bytes() == b"<x/>"
    assert [entry["event"] for entry in logs].count("input_claim_failed") == 1


def test_stop_joins_every_thread_and_wakes_a_waiting_reader(make_spool):
    """After stop() no spool or watchdog thread is left, and a blocked next_ready returns."""
    before = set(threading.enumerate())
    spool = make_spool(start=False)
    spool.start()
    result: List[Optional[SpoolItem]] = []
    reader = threading.Thread(target=lambda: result.append(spool.next_ready(60)))
    reader.start()
    assert wait_for(lambda: len(set(threading.enumerate()) - before) >= 3)
    spool.stop()
    reader.join(20)
    assert not reader.is_alive()
    assert result == [None]
    assert set(threading.enumerate()) - before == set()


def test_ensure_dirs_creates_private_folders(spool_config):
    """Folders ecgd creates are 0700; a file in place of a folder is a ConfigError."""
    spool = Spool(spool_config, 1000, structlog.get_logger("test"))
    spool.ensure_dirs()
    for folder in (spool_config.dir, spool_config.processing_dir, spool_config.done_dir,
                   spool_config.failed_dir):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    spool_config.done_dir.rmdir()
    spool_config.done_dir.write_bytes(b"")
    with pytest.raises(ConfigError, match="done_dir"):
        spool.ensure_dirs()


def test_file_rewritten_after_hand_out_is_not_claimed_until_settled(make_spool, spool_config):
    """A write between next_ready and claim makes claim back off; the full file comes later."""
    spool = make_spool()
    path = drop(spool_config.dir, "grow.csv", b"1,2\n")
    item = spool.next_ready(20)
    assert item is not None
    with open(path, "ab") as handle:
        handle.write(b"3,4\n")
    assert spool.claim(item) is None
    assert take(spool).primary.read_bytes() == b"1,2\n3,4\n"


def test_rename_from_another_folder_is_ready_without_settling(make_spool, spool_config,
                                                              tmp_path):
    """A file renamed in from outside the spool is complete: ready at once, not after settle_s.

    (watchdog's default observer reports such a rename as a creation, which would wait for
    the settle time, here far longer than the wait below.)
    """
    spool = make_spool(settle_s=120.0, wfdb_wait_s=300.0, rescan_s=300.0)
    staging = tmp_path / "staging"
    staging.mkdir()
    for name in ("first.xml", "second.xml"):
        (staging / name).write_bytes(b"<RestingECG/>")
        os.rename(staging / name, spool_config.dir / name)
        # The claim renames out of the folder: the next drop must not wait behind it.
        claimed = take(spool, timeout_s=20.0)
        assert claimed.original_name == name
        spool.complete(claimed)


def test_wake_event_is_set_when_an_input_becomes_ready(spool_config):
    """A consumer sleeping on the shared wake event is woken by a drop; next_ready(0) has it."""
    wake = threading.Event()
    spool = Spool(spool_config, 1_000_000, structlog.get_logger("test"), wake=wake)
    spool.ensure_dirs()
    spool.start()
    try:
        assert spool.next_ready(0) is None
        wake.clear()
        drop(spool_config.dir, "rec.xml", b"<RestingECG/>")
        assert wake.wait(20.0)
        assert wait_for(lambda: spool.ready_count() == 1)
        item = spool.next_ready(0)
        assert item is not None and item.primary.name == "rec.xml"
    finally:
        spool.stop()


def test_inputs_with_the_longest_names_are_quarantined_with_their_error_file(make_spool,
                                                                             spool_config):
    """A 255-byte input name still gets its error file in failed/ (fail() and refusal)."""
    spool = make_spool(max_input_bytes=100)
    names = ["a" * 251 + ".xml", "b" * 251 + ".xml"]
    for name, data in zip(names, (b"<x/>", b"<x/>" * 100)):  # the second one is oversized
        temp = spool_config.dir / ".drop.tmp"
        temp.write_bytes(data)
        os.rename(temp, spool_config.dir / name)
    claimed = take(spool)
    assert claimed.original_name == names[0]
    placed = spool.fail(claimed, "not an ECG")
    assert placed == (spool_config.failed_dir / names[0],)
    # The refused input is moved first and its error file written just after: wait for both.
    assert wait_for(lambda: len(error_files(spool_config.failed_dir)) == 2)
    assert (spool_config.failed_dir / names[1]).exists()
    documents = [json.loads(path.read_text()) for path in error_files(spool_config.failed_dir)]
    assert sorted(document["input"] for document in documents) == names
    assert all(len(path.name.encode()) <= 255 for path in spool_config.failed_dir.iterdir())


def test_header_naming_itself_or_another_header_as_data_is_failed(make_spool, spool_config):
    """A WFDB header naming itself (or another header, in a cycle) as its data file is failed
    with the reason; before, it waited for itself forever with no error file."""
    make_spool()
    drop(spool_config.dir, "self.hea", b"self 1 500 5000\nself.hea 16 1000 16 0 0 0 0 I\n")
    drop(spool_config.dir, "a.hea", b"a 1 500 5000\nb.hea 16 1000 16 0 0 0 0 I\n")
    drop(spool_config.dir, "b.hea", b"b 1 500 5000\na.hea 16 1000 16 0 0 0 0 I\n")
    assert wait_for(lambda: len(error_files(spool_config.failed_dir)) == 3)
    reasons = {path.name: json.loads(path.read_text())["reason"]
               for path in error_files(spool_config.failed_dir)}
    assert reasons["self.hea.error.json"] == "self.hea: names a WFDB header as its data file"
    assert reasons["a.hea.error.json"] == "a.hea: names a WFDB header as its data file"
    assert os.listdir(spool_config.dir) == []


def test_directory_dropped_into_the_spool_is_failed_unread(make_spool, spool_config):
    """A folder dropped into incoming/ moves to failed/ whole, with its reason; before, it
    stayed in incoming/ forever. ecgd's own folders inside the spool are left alone."""
    spool = make_spool()
    inner = spool_config.dir / "export"
    inner.mkdir()
    (inner / "rec.xml").write_bytes(b"<x/>")
    assert wait_for(lambda: (spool_config.failed_dir / "export.error.json").exists())
    document = json.loads((spool_config.failed_dir / "export.error.json").read_text())
    assert document["reason"] == "export: is a directory; refused unread"
    assert (spool_config.failed_dir / "export" / "rec.xml").read_bytes() == b"<x/>"
    assert spool.next_ready(SETTLE_S * 3) is None


def test_spool_folders_nested_in_the_drop_folder_are_never_refused(make_spool, spool_config,
                                                                   tmp_path):
    """processing/, done/ and failed/ configured inside incoming/ are not inputs."""
    incoming = spool_config.dir
    spool = make_spool(processing_dir=incoming / "processing", done_dir=incoming / "done",
                       failed_dir=incoming / "failed", rescan_s=0.2)
    drop(incoming, "rec.xml", b"<x/>")
    claimed = take(spool)
    spool.complete(claimed)
    drop(incoming, "next.xml", b"<y/>")
    assert take(spool).original_name == "next.xml"
    assert sorted(os.listdir(incoming)) == ["done", "failed", "processing"]
    assert os.listdir(incoming / "failed") == []


def test_an_arrival_gets_a_turn_before_a_flood_already_waiting(make_spool, spool_config,
                                                                tmp_path):
    """Ready inputs are handed out in turns, the oldest waiting and the newest arrival: an
    input dropped behind 3000 waiting files comes out within two hand-outs of being ready,
    not after all 3000; on the other turns the flood drains oldest first."""
    spool = make_spool()
    staging = tmp_path / "staging"
    staging.mkdir()
    for index in range(3000):
        path = staging / f"flood{index:04d}.csv"
        path.write_bytes(b"x\n")
        os.utime(path, ns=(10**18 + index, 10**18 + index))
        os.rename(path, spool_config.dir / path.name)
    assert wait_for(lambda: spool.ready_count() == 3000, timeout_s=60)
    handed = [take(spool).original_name for _ in range(5)]
    drop(spool_config.dir, "arrival.csv", b"good\n")
    assert wait_for(lambda: spool.ready_count() == 2996, timeout_s=60)
    handed += [take(spool).original_name for _ in range(2)]
    assert "arrival.csv" in handed[5:]
    assert handed[0:5:2] == ["flood0000.csv", "flood0001.csv", "flood0002.csv"]


def test_an_arrival_goes_before_a_flood_that_became_ready_after_it(make_spool, spool_config):
    """A flood seen before an input but ready only after it (still being written when the
    input arrived) does not jump the queue: the arrival is taken within two hand-outs."""
    spool = make_spool(settle_s=30.0)
    handles = []
    for index in range(400):
        handle = open(spool_config.dir / f"flood{index:04d}.csv", "wb")
        handle.write(b"x\n")
        handle.flush()
        handles.append(handle)
    drop(spool_config.dir, "arrival.csv", b"good\n")
    assert wait_for(lambda: spool.ready_count() == 1, timeout_s=60)
    for handle in handles:
        handle.close()
    assert wait_for(lambda: spool.ready_count() == 401, timeout_s=60)
    handed = [take(spool).original_name for _ in range(2)]
    assert "arrival.csv" in handed


def test_wfdb_data_file_written_slowly_in_place_is_taken_only_complete(make_spool,
                                                                      spool_config,
                                                                      shared_data):
    """A header is ready, and its .mat is still being written in place in three parts with
    pauses longer than settle_s: the record is handed out only after the last part, and
    what is claimed reads as the whole recording."""
    spool = make_spool()
    record = shared_data / "cinc2021" / "E07500"
    drop(spool_config.dir, "E07500.hea", record.with_suffix(".hea").read_bytes())
    payload = record.with_suffix(".mat").read_bytes()
    thirds = [payload[:len(payload) // 3], payload[len(payload) // 3:2 * len(payload) // 3],
              payload[2 * len(payload) // 3:]]
    with open(spool_config.dir / "E07500.mat", "wb") as handle:
        for part in thirds[:2]:
            handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
            assert spool.next_ready(SETTLE_S * 4) is None
        handle.write(thirds[2])
    claimed = take(spool)
    assert [path.name for path in claimed.files] == ["E07500.hea", "E07500.mat"]
    assert claimed.files[1].read_bytes() == payload
    assert wfdb.rdrecord(str(claimed.primary.with_suffix(""))).p_signal.shape == (5000, 12)


def test_attempts_left_by_crashes_are_counted_and_leave_with_the_input(make_spool,
                                                                       spool_config):
    """An attempt begun and never ended (the daemon died) is one crash for recover(); a
    withdrawn attempt (clean stop) is none; done and failed inputs take their records
    along, so processing/ is empty."""
    first = make_spool()
    drop(spool_config.dir, "crasher.xml", b"<x/>")
    drop(spool_config.dir, "stopped.xml", b"<y/>")
    crasher, stopped = take(first), take(first)
    first.begin_attempt(crasher)
    first.begin_attempt(stopped)
    first.end_attempt(stopped)
    first.stop()
    counts = []
    for _ in range(2):  # two more lives, each dying with the crasher in hand
        spool = make_spool(start=False)
        recovered = {item.original_name: item for item in spool.recover()}
        counts.append({name: item.crashes for name, item in recovered.items()})
        spool.begin_attempt(recovered["crasher.xml"])
    assert counts == [{"crasher.xml": 1, "stopped.xml": 0}, {"crasher.xml": 2, "stopped.xml": 0}]
    last = make_spool(start=False)
    recovered = {item.original_name: item for item in last.recover()}
    assert recovered["crasher.xml"].crashes == 3
    assert [path.name for path in recovered["crasher.xml"].files] == ["crasher.xml"]
    last.fail(recovered["crasher.xml"], "crashed the daemon 3 times")
    last.complete(recovered["stopped.xml"])
    assert os.listdir(spool_config.processing_dir) == []
    assert (spool_config.done_dir / "stopped.xml").read_bytes() == b"<y/>"
