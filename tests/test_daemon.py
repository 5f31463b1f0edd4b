"""``ecgd run`` as a real subprocess: notify socket, spool ingest, sealed reports, crashes."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from daemon_harness import DaemonProcess, full_filesystem, wait_for
from seal_helpers import age_decrypt
from ecgd.daemon import Job, StageAborted, StageQueue
from ecgd.security.keys import (
    generate_keys,
    generate_signing_key,
    load_enrolled_appliances,
    load_identity,
)
from ecgd.report import SCHEMA_PATH
from ecgd.security.unseal import open_sealed_report

jsonschema = pytest.importorskip("jsonschema")


class Appliance:
    """A complete local installation in a temp dir: config, keys, spool and report folders."""

    def __init__(self, root: Path, manifest: Path, extra_toml: str = "") -> None:
        self.root = root
        self.keys = generate_keys(root / "keys")
        self.signing_keys = generate_signing_key(root / "appliance")
        self.incoming = root / "spool" / "incoming"
        self.done = root / "spool" / "done"
        self.failed = root / "spool" / "failed"
        self.processing = root / "spool" / "processing"
        self.reports = root / "reports"
        self.config = root / "ecgd.toml"
        self.config.write_text(f"""
[model]
manifest = "{manifest}"
threads = 1
[spool]
dir = "{self.incoming}"
processing_dir = "{self.processing}"
done_dir = "{self.done}"
failed_dir = "{self.failed}"
settle_s = 0.3
rescan_s = 1.0
[reports]
dir = "{self.reports}"
recipients = ["{self.keys['public']}"]
retry_s = 0.2
signing_key_file = "{self.signing_keys['private']}"
[privacy]
pseudonym_key_file = "{self.keys['pseudonym']}"
patient_file = "{root / 'patient' / 'current'}"
[host]
poll_s = 0.5
[logging]
format = "json"
{extra_toml}
""")
        self.identity = load_identity(self.keys["private"])
        self.enrolled = load_enrolled_appliances(root / "appliance")

    def drop(self, source: Path, name: str = "") -> Path:
        """Copy a file into the spool the way vendors should: write a temp name, rename."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        target = self.incoming / (name or source.name)
        temp = self.incoming / f".{target.name}.part"
        shutil.copyfile(source, temp)
        os.rename(temp, target)
        return target

    def report_files(self) -> List[Path]:
        return sorted(self.reports.glob("*.ecgr")) if self.reports.exists() else []

    def decrypted_reports(self) -> List[Dict]:
        return [open_sealed_report(p.read_bytes(), self.identity, self.enrolled).report
                for p in self.report_files()]

    def names_in(self, folder: Path) -> List[str]:
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _windows_in_status(status: Optional[str]) -> int:
    """Windows done + rejected, as STATUS= reports them."""
    match = re.search(r"windows (\d+) done, (\d+) rejected", status or "")
    return int(match.group(1)) + int(match.group(2)) if match else -1


@pytest.fixture
def appliance(tmp_path: Path, reference_manifest: Path) -> Appliance:
    return Appliance(tmp_path, reference_manifest)


@pytest.fixture
def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture
def daemons(tmp_path: Path):
    started: List[DaemonProcess] = []

    def start(appliance: Appliance, **kwargs) -> DaemonProcess:
        daemon = DaemonProcess(appliance.config, tmp_path, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def test_dropped_records_become_sealed_reports(appliance, daemons, shared_data,
                                               validator) -> None:
    """READY=1, then WFDB, DICOM and XML drops each end in done/ with signed reports that
    ecgd and the standard age tool both decrypt."""
    daemon = daemons(appliance)
    daemon.wait_ready()
    appliance.drop(shared_data / "cinc2021" / "E07500.mat")
    appliance.drop(shared_data / "cinc2021" / "E07500.hea")
    appliance.drop(shared_data / "dicom" / "waveform_ecg.dcm")
    appliance.drop(shared_data / "ge-muse-xml" / "BRAVEHEART" / "example1.xml")
    wait_for(lambda: len(appliance.names_in(appliance.done)) == 4, 60, "4 inputs in done/")
    reports = appliance.decrypted_reports()
    assert len(reports) == 3
    for report in reports:
        validator.validate(report)
        assert report["host"]["source"] in ("vcgencmd", "thermal", "unknown")
    assert {r["source"]["format"] for r in reports} == {"wfdb", "dicom", "ge-muse"}
    for path in appliance.report_files():
        assert path.stat().st_mode & 0o777 == 0o600
    assert [json.loads(age_decrypt(path, appliance.keys["private"]))
            for path in appliance.report_files()] == reports
    assert {r["signer_key_id"] for r in reports} == set(appliance.enrolled)
    assert appliance.reports.stat().st_mode & 0o777 == 0o700
    assert appliance.names_in(appliance.processing) == []
    wait_for(lambda: _windows_in_status(daemon.notify.last("STATUS")) == 3, 10,
             "STATUS= counting 3 windows")
    assert daemon.terminate() == 0
    assert daemon.notify.has("STOPPING", "1")


def test_bad_inputs_are_quarantined_and_daemon_keeps_running(appliance, daemons,
                                                             shared_data) -> None:
    """Garbage and a symlink go to failed/ with NAME.error.json; the daemon stays up."""
    daemon = daemons(appliance)
    daemon.wait_ready()
    (appliance.incoming / "garbage.xml").write_bytes(b"<not-an-ecg/>")
    (appliance.incoming / "noise.dcm").write_bytes(os.urandom(4096))
    (appliance.incoming / "link.hea").symlink_to(shared_data / "cinc2021" / "E07501.hea")
    wait_for(lambda: len([n for n in appliance.names_in(appliance.failed)
                          if n.endswith(".error.json")]) == 3, 30, "3 error.json files")
    for name in ("garbage.xml", "noise.dcm"):
        error = json.loads((appliance.failed / f"{name}.error.json").read_text())
        assert error["reason"] and error["time"].endswith("Z") and error["ecgd_version"]
    appliance.drop(shared_data / "cinc2021" / "E07502.mat")
    appliance.drop(shared_data / "cinc2021" / "E07502.hea")
    wait_for(lambda: len(appliance.report_files()) == 1, 60, "a report after the bad inputs")
    assert daemon.process.poll() is None


def test_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    """An unknown key refuses to start: exit 78 and one line naming the key."""
    config = tmp_path / "bad.toml"
    config.write_text("[model]\nthreads = 2\nturbo = true\n")
    result = subprocess.run([sys.executable, "-m", "ecgd", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[model] turbo: unknown key" in lines[0]


def test_missing_model_exits_78(appliance, tmp_path: Path) -> None:
    """A config whose model manifest is missing refuses to start with exit 78."""
    text = appliance.config.read_text()
    missing = tmp_path / "missing.json"
    config = tmp_path / "missing-model.toml"
    config.write_text(text.replace('manifest = "', f'manifest = "{missing}" #', 1))
    result = subprocess.run([sys.executable, "-m", "ecgd", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "missing.json" in result.stderr


def test_check_reports_each_problem(appliance, tmp_path: Path) -> None:
    """`ecgd check` prints every problem (keys, signing key, model) and exits 78; good exits 0."""
    good = subprocess.run([sys.executable, "-m", "ecgd", "check", "--config",
                           str(appliance.config)], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    text = appliance.config.read_text()
    text = text.replace(str(appliance.keys["public"]), str(tmp_path / "nokey.pub"))
    text = text.replace(str(appliance.keys["pseudonym"]), str(tmp_path / "nopseudonym.key"))
    text = text.replace(str(appliance.signing_keys["private"]), str(tmp_path / "nosigning.key"))
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = subprocess.run([sys.executable, "-m", "ecgd", "check", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    for missing in ("nokey.pub", "nopseudonym.key", "nosigning.key"):
        assert missing in result.stdout


def _distinct_ludb_inputs(shared_data: Path, folder: Path, count: int) -> List[Path]:
    """``count`` distinct 10-s 12-lead .npz recordings made from real LUDB records."""
    import wfdb

    records = sorted((shared_data / "ludb" / "data").glob("*.hea"))
    paths = []
    for index in range(count):
        header = records[index % len(records)]
        record = wfdb.rdrecord(str(header.with_suffix("")))
        signal = record.p_signal.T.astype(np.float32)
        # A different tiny DC offset per copy keeps contents (and report ids) distinct.
        signal += np.float32(0.001 * (index // len(records)))
        path = folder / f"rec{index:04d}.npz"
        np.savez(path, signal=signal, fs_hz=float(record.fs),
                 lead_names=np.array(record.sig_name), units="mV")
        paths.append(path)
    return paths


def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(
        appliance, daemons, shared_data, tmp_path) -> None:
    """200 inputs, SIGKILL at random moments, restart: each window has exactly one report."""
    staging = tmp_path / "staging"
    staging.mkdir()
    inputs = _distinct_ludb_inputs(shared_data, staging, 200)
    for path in inputs:
        appliance.drop(path)
    rng = random.Random(7)
    for _ in range(4):
        daemon = daemons(appliance)
        daemon.wait_ready()
        # Let it make some progress (a random amount), then kill it without warning.
        target = min(200, len(appliance.names_in(appliance.done)) + rng.randint(5, 30))
        wait_for(lambda target=target: len(appliance.names_in(appliance.done)) >= target,
                 120, "progress before the kill")
        daemon.kill()
    daemon = daemons(appliance)
    daemon.wait_ready()
    wait_for(lambda: len(appliance.names_in(appliance.done)) == 200, 300, "all 200 inputs done")
    assert appliance.names_in(appliance.failed) == []
    assert appliance.names_in(appliance.processing) == []
    reports = appliance.decrypted_reports()
    assert len(reports) == 200
    ids = [r["report_id"] for r in reports]
    assert len(set(ids)) == 200
    digests = {r["source"]["content_sha256"] for r in reports}
    assert len(digests) == 200
    assert daemon.terminate() == 0


def test_two_inference_workers_drain_a_backlog_and_stop_cleanly(
        appliance, daemons, shared_data, tmp_path) -> None:
    """[model] inference_workers = 2: a backlog dropped at once, SIGTERM part-way, restart:
    every input done once with one report, nothing left in processing, exit 0 both times."""
    appliance.config.write_text(appliance.config.read_text().replace(
        "threads = 1\n", "threads = 1\ninference_workers = 2\n", 1))
    staging = tmp_path / "staging"
    staging.mkdir()
    inputs = _distinct_ludb_inputs(shared_data, staging, 40)
    daemon = daemons(appliance)
    daemon.wait_ready()
    started = [json.loads(line) for line in daemon.log_text().splitlines()
               if '"daemon_started"' in line]
    assert started and started[0]["inference_workers"] == 2
    appliance.incoming.mkdir(parents=True, exist_ok=True)
    for path in inputs:  # all at once, as a vendor's resend would arrive
        os.rename(path, appliance.incoming / path.name)
    wait_for(lambda: len(appliance.names_in(appliance.done)) >= 10, 120, "10 inputs done")
    assert daemon.terminate() == 0
    assert appliance.names_in(appliance.processing) == []
    assert len(appliance.report_files()) == len(appliance.names_in(appliance.done))
    daemon = daemons(appliance)
    daemon.wait_ready()
    wait_for(lambda: len(appliance.names_in(appliance.done)) == 40, 120, "all 40 inputs done")
    reports = appliance.decrypted_reports()
    assert len({r["report_id"] for r in reports}) == len(reports) == 40
    assert {r["source"]["file"] for r in reports} == {p.name for p in inputs}
    wait_for(lambda: _windows_in_status(daemon.notify.last("STATUS")) >= 1, 10, "STATUS=")
    assert daemon.terminate() == 0
    assert appliance.names_in(appliance.failed) == []


def test_no_patient_identifier_reaches_logs_reports_or_file_names(
        appliance, daemons, shared_data, tmp_path) -> None:
    """Known identifiers in DICOM, XML and WFDB inputs appear nowhere: logs, reports, names."""
    import pydicom

    identifiers = []
    dicom = pydicom.dcmread(shared_data / "dicom" / "waveform_ecg.dcm")
    identifiers.append(str(dicom.PatientID))
    muse = (shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml").read_text(errors="replace")
    marker = "<PatientID>"
    identifiers.append(muse.split(marker, 1)[1].split("<", 1)[0].strip())
    dicom.PatientID = "ECGD-TEST-ID-4711"
    identifiers.append("ECGD-TEST-ID-4711")
    modified = tmp_path / "modified.dcm"
    dicom.save_as(modified)
    # A WFDB record whose header comments carry a patient id (the reader picks it up).
    wfdb_dir = tmp_path / "wfdb-with-id"
    wfdb_dir.mkdir()
    header = (shared_data / "cinc2021" / "E07501.hea").read_text()
    (wfdb_dir / "E07501.hea").write_text(header + "# Patient ID: WFDB-PATIENT-7781\n")
    shutil.copyfile(shared_data / "cinc2021" / "E07501.mat", wfdb_dir / "E07501.mat")
    identifiers.append("WFDB-PATIENT-7781")
    identifiers = [i for i in identifiers if len(i) >= 4]
    daemon = daemons(appliance)
    daemon.wait_ready()
    appliance.drop(shared_data / "dicom" / "waveform_ecg.dcm")
    appliance.drop(shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml")
    appliance.drop(modified, "study.dcm")
    appliance.drop(wfdb_dir / "E07501.mat")
    appliance.drop(wfdb_dir / "E07501.hea")
    wait_for(lambda: len(appliance.names_in(appliance.done)) == 5, 60, "4 inputs done")
    assert daemon.terminate() == 0
    reports = appliance.decrypted_reports()
    assert len(reports) == 4
    assert all(r["patient"]["pseudonym"] for r in reports)
    haystacks = [daemon.log_text(), json.dumps(reports)]
    haystacks += [str(p) for p in tmp_path.rglob("*")]
    haystacks += [p.read_bytes().decode("latin-1") for p in appliance.report_files()]
    for identifier in identifiers:
        for haystack in haystacks:
            assert identifier not in haystack


def test_sigterm_drains_and_exits_zero(appliance, daemons, shared_data) -> None:
    """SIGTERM: STOPPING=1, the input in progress finishes, nothing is left half-done."""
    records = sorted((shared_data / "cinc2021").glob("JS2000*.hea"))[:5]
    daemon = daemons(appliance)
    daemon.wait_ready()
    for header in records:
        appliance.drop(header.with_suffix(".mat"))
        appliance.drop(header)
    wait_for(lambda: appliance.report_files(), 60, "the first report")
    assert daemon.terminate() == 0
    assert daemon.notify.has("STOPPING", "1")
    assert appliance.names_in(appliance.processing) == []
    done_headers = [n for n in appliance.names_in(appliance.done) if n.endswith(".hea")]
    assert len(appliance.report_files()) == len(done_headers) >= 1
    # Whatever was not taken is still waiting in the spool, not lost.
    waiting = [n for n in appliance.names_in(appliance.incoming) if n.endswith(".hea")]
    assert len(done_headers) + len(waiting) == len(records)


def test_watchdog_pings_stop_while_inference_hangs(tmp_path, reference_manifest, daemons,
                                                   shared_data) -> None:
    """WATCHDOG=1 flows while idle and stops while inference is stuck; STATUS= continues."""
    from slow_model import write_slow_model

    slow = write_slow_model(reference_manifest, tmp_path / "slow", iterations=10**9)
    appliance = Appliance(tmp_path / "appliance", slow)
    daemon = daemons(appliance, watchdog_s=2.0)
    daemon.wait_ready()
    wait_for(lambda: daemon.notify.count("WATCHDOG") >= 2, 20, "watchdog pings while idle")
    # HR06004 passes quality control, so its window reaches the (hanging) model.
    appliance.drop(shared_data / "cinc2021" / "HR06004.mat")
    appliance.drop(shared_data / "cinc2021" / "HR06004.hea")
    wait_for(lambda: appliance.names_in(appliance.processing), 30, "the input being processed")
    status_count = daemon.notify.count("STATUS")
    wait_for(lambda: daemon.notify.count("STATUS") >= status_count + 3, 30, "3 status updates")
    pings = daemon.notify.count("WATCHDOG")
    status_count = daemon.notify.count("STATUS")
    wait_for(lambda: daemon.notify.count("STATUS") >= status_count + 4, 30, "4 status updates")
    assert daemon.notify.count("WATCHDOG") == pings
    assert daemon.process.poll() is None


def test_full_disk_keeps_input_and_recovers(appliance, daemons, shared_data) -> None:
    """Reports dir on a full filesystem: input stays in processing; freeing space recovers."""
    with full_filesystem(appliance.reports, "256k") as filler:
        daemon = daemons(appliance)
        daemon.wait_ready()
        appliance.drop(shared_data / "cinc2021" / "HR06001.mat")
        appliance.drop(shared_data / "cinc2021" / "HR06001.hea")
        wait_for(lambda: "reports_unwritable" in daemon.log_text(), 60, "reports_unwritable")
        assert len([p for p in appliance.processing.rglob("*") if p.is_file()]) == 2
        assert appliance.names_in(appliance.done) == []
        filler.unlink()
        wait_for(lambda: len(appliance.names_in(appliance.done)) == 2, 60, "recovery")
        assert len(appliance.report_files()) == 1
        log = daemon.log_text()
        assert log.count("reports_unwritable") == 1
        assert "reports_writable_again" in log
        assert daemon.terminate() == 0


def _job(n_windows: int, live: bool = False, tag: str = "") -> Job:
    """A Job with ``n_windows`` placeholder windows (the queue only counts them)."""
    from ecgd.pipeline import PreparedRecording, PreparedWindow, SourceInfo

    windows = [PreparedWindow(i, {}, "rejected", None, (), {}, 0.0) for i in range(n_windows)]
    prepared = PreparedRecording(SourceInfo({"tag": tag}, tag), None, windows, 0.0, 0.0)
    return Job(prepared, None, 0.0, live=live)


def test_stage_queue_hands_live_jobs_first_and_the_end_mark_last() -> None:
    """Live jobs overtake queued files; the end mark comes after every job queued before it."""
    queue = StageQueue(8, threading.Event())
    for job in (_job(1, tag="file-1"), _job(1, tag="file-2")):
        queue.put(job)
    queue.put(None)
    queue.put(_job(1, live=True, tag="live"))
    order = []
    while True:
        waiting, job = queue.get_nowait()
        assert waiting
        if job is None:
            break
        order.append(job.prepared.source.id_seed)
    assert order == ["live", "file-1", "file-2"]
    assert queue.get_nowait() == (False, None) and len(queue) == 0


def test_stage_queue_blocks_the_producer_at_capacity_and_admits_a_large_job_alone() -> None:
    """Bounded in windows: a put waits while full (live jobs excepted); a job above capacity
    passes when the queue is empty."""
    queue = StageQueue(4, threading.Event())
    queue.put(_job(10))  # larger than the capacity, but the queue was empty
    blocked = threading.Thread(target=queue.put, args=(_job(1),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and len(queue) == 10
    queue.put(_job(1, live=True))  # a live window is never held back by a backlog
    assert queue.get().live
    assert len(queue.get().prepared.windows) == 10
    blocked.join(10)
    assert not blocked.is_alive() and len(queue) == 1


def test_stage_queue_unblocks_waiters_when_a_stage_crashed() -> None:
    """After abort, a consumer waiting on an empty queue and a producer on a full one stop."""
    abort = threading.Event()
    queue = StageQueue(1, abort)
    queue.put(_job(1))
    errors: List[type] = []

    def expect_abort(action) -> None:
        try:
            action()
        except StageAborted:
            errors.append(StageAborted)

    producer = threading.Thread(target=expect_abort, args=(lambda: queue.put(_job(1)),))
    consumer = threading.Thread(target=expect_abort,
                                args=(lambda: StageQueue(1, abort).get(),))
    producer.start()
    consumer.start()
    abort.set()
    producer.join(10)
    consumer.join(10)
    assert errors == [StageAborted, StageAborted]


def test_inference_across_inputs_equals_inference_input_by_input(reference_manifest,
                                                                 shared_data) -> None:
    """Batching windows of several recordings together changes no logit (beyond float noise)."""
    from ecgd.config import parse_config
    from ecgd.model.session import ModelSession
    from ecgd.pipeline import Analyzer, SourceInfo
    from ecgd.records.reader import read_recording

    config = parse_config("")
    analyzer = Analyzer(ModelSession.open(reference_manifest, threads=2), config.window,
                        config.qc, config.preprocess.mains_hz, batch_max=3)
    headers = sorted((shared_data / "ludb" / "data").glob("*.hea"))[:6]
    prepared = [analyzer.prepare(read_recording(h, 10**8), SourceInfo({}, h.name), None)
                for h in headers]
    counts = [len(p.model_inputs()) for p in prepared]
    assert sum(counts) > 3, "needs more accepted windows than one batch holds"
    together = analyzer.infer_recordings(prepared)
    for item, count, (logits, inference_ms) in zip(prepared, counts, together):
        alone, _ = analyzer.infer(item.model_inputs())
        assert logits.shape == (count, 150) and inference_ms >= 0.0
        np.testing.assert_allclose(logits, alone, atol=1e-4)


def test_crashed_stage_exits_non_zero_and_keeps_the_input(appliance, daemons,
                                                          shared_data) -> None:
    """done_dir replaced by a file: the write stage crashes, the daemon exits 1, input kept."""
    daemon = daemons(appliance)
    daemon.wait_ready()
    shutil.rmtree(appliance.done)
    appliance.done.write_bytes(b"not a folder")
    appliance.drop(shared_data / "cinc2021" / "HR06001.mat")
    appliance.drop(shared_data / "cinc2021" / "HR06001.hea")
    assert daemon.process.wait(60) == 1
    assert "stage_crashed" in daemon.log_text()
    assert len([p for p in appliance.processing.rglob("*") if p.is_file()]) == 2
    assert len(appliance.report_files()) == 1


def test_check_creates_nothing(appliance, tmp_path: Path) -> None:
    """`ecgd check` only looks: run as root before the first start it must not create the
    service's folders (they would belong to root); an uncreatable folder is a problem."""
    result = subprocess.run([sys.executable, "-m", "ecgd", "check", "--config",
                             str(appliance.config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not appliance.reports.exists() and not appliance.incoming.exists()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should go")
    bad = tmp_path / "bad.toml"
    bad.write_text(appliance.config.read_text().replace(
        f'dir = "{appliance.reports}"', f'dir = "{blocker / "reports"}"'))
    result = subprocess.run([sys.executable, "-m", "ecgd", "check", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert f"[reports] dir: {blocker} is not a directory" in result.stdout


@pytest.mark.parametrize("folder, source", [("done", "dicom"), ("failed", "garbage")])
def test_crash_traceback_holds_no_input_name(appliance, daemons, shared_data, tmp_path,
                                             folder, source) -> None:
    """A crash logged with its traceback (an OSError on processing/<hash>~token/NAME, a
    RecordError naming NAME) shows no input name; the error type is still logged."""
    name = "MRN-4711-DOE.dcm" if source == "dicom" else "MRN-4712-DOE.xml"
    daemon = daemons(appliance)
    daemon.wait_ready()
    target = appliance.done if folder == "done" else appliance.failed
    shutil.rmtree(target)
    target.write_bytes(b"not a folder")
    if source == "dicom":
        appliance.drop(shared_data / "dicom" / "waveform_ecg.dcm", name)
    else:
        garbage = tmp_path / "garbage.xml"
        garbage.write_bytes(b"<not-an-ecg/>")
        appliance.drop(garbage, name)
    assert daemon.process.wait(60) == 1
    log = daemon.log_text()
    assert "stage_crashed" in log and "NotADirectoryError" in log
    assert "MRN-471" not in log
    assert len([p for p in appliance.processing.rglob("*") if p.is_file()]) == 1
