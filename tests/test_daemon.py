"""``ecgd run`` as a real subprocess: notify socket, spool ingest, sealed reports, crashes."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

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
from ecgd.report_store import list_reports
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
[status]
file = "{root / 'status.json'}"
interval_s = 1.0
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
        """The reports, by the folder's naming rule (never a killed write's temporary)."""
        return list_reports(self.reports)

    def decrypted_reports(self) -> List[Dict]:
        return [open_sealed_report(p.read_bytes(), self.identity, self.enrolled).report
                for p in self.report_files()]

    def names_in(self, folder: Path) -> List[str]:
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def inputs_in_processing(self) -> List[Path]:
        """Input files claimed and not yet done or failed (not the hidden attempt records)."""
        return [p for p in self.processing.rglob("*") if p.is_file()
                and not p.name.startswith(".")]


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


def _log_events(daemon: DaemonProcess) -> List[Dict]:
    return [json.loads(line) for line in daemon.log_text().splitlines()
            if line.startswith("{")]


def test_bad_inputs_are_quarantined_and_daemon_keeps_running(appliance, daemons,
                                                             shared_data) -> None:
    """Garbage and a symlink go to failed/ with NAME.error.json; the daemon stays up and
    counts every failed input, the symlink the spool refused itself included, each with an
    input_claimed line before its input_failed line."""
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
    wait_for(lambda: "3 failed" in (daemon.notify.last("STATUS") or ""), 10,
             "STATUS= counting 3 failed inputs")
    assert daemon.terminate() == 0
    events = _log_events(daemon)
    failed = [event["name_hash"] for event in events if event["event"] == "input_failed"]
    claimed = [event["name_hash"] for event in events if event["event"] == "input_claimed"]
    assert len(failed) == 3 and set(failed) <= set(claimed)
    (stopped,) = [event for event in events if event["event"] == "daemon_stopped"]
    assert stopped["inputs_failed"] == 3 and stopped["inputs_done"] == 1


def _status(appliance: Appliance, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgd", "status", "--config",
                           str(appliance.config), *options],
                          capture_output=True, text=True, timeout=60)


def test_status_shows_the_running_daemon_then_a_hung_then_a_stopped_one(
        appliance, daemons, shared_data) -> None:
    """`ecgd status` reads the daemon's state file: not running before the start; ready with
    its counters, last window and free disk while it runs; not responding while the process
    is frozen (SIGSTOP, as a hung daemon); stopped, with the final counters, after SIGTERM."""
    before = _status(appliance)
    assert before.returncode == 1 and "no state file: the daemon is not running" in before.stdout
    daemon = daemons(appliance)
    daemon.wait_ready()
    pid = daemon.process.pid
    appliance.drop(shared_data / "cinc2021" / "E07500.mat")
    appliance.drop(shared_data / "cinc2021" / "E07500.hea")
    (appliance.incoming / "garbage.xml").write_bytes(b"<not-an-ecg/>")

    def state_counters() -> dict:
        return json.loads(_status(appliance, "--json").stdout)["state"]["counters"]

    wait_for(lambda: (state_counters()["inputs_done"], state_counters()["inputs_failed"])
             == (1, 1), 60, "one input done and one failed in the state file")
    document = json.loads(_status(appliance, "--json").stdout)
    assert document["running"] is True and document["condition"] == "running"
    state = document["state"]
    assert state["state"] == "ready" and state["pid"] == pid
    counters = state["counters"]
    assert counters["windows_done"] + counters["windows_rejected"] == 1
    assert counters["inputs_done"] == 1 and counters["inputs_failed"] == 1
    assert state["last_window"]["qc"] in ("accepted", "rejected")
    assert state["disk"]["reports"]["free_bytes"] > 0
    assert (appliance.root / "status.json").stat().st_mode & 0o777 == 0o640
    human = _status(appliance)
    assert human.returncode == 0
    assert human.stdout.splitlines()[0].startswith(f"ecgd: ready (pid {pid}), updated ")
    assert "  inputs    1 done, 1 failed, 0 waiting in the spool" in human.stdout
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _status(appliance).returncode == 1, 30, "a stale state file")
        frozen = _status(appliance)
        assert frozen.stdout.startswith(f"ecgd: not responding: pid {pid} has not updated")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _status(appliance).returncode == 0, 30, "a fresh state file again")
    assert daemon.terminate() == 0
    after = _status(appliance, "--json")
    assert after.returncode == 1
    document = json.loads(after.stdout)
    assert document["condition"] == "stopped" and document["state"]["state"] == "stopped"
    assert document["state"]["counters"]["inputs_done"] == 1


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
    """WATCHDOG=1 flows while idle; once inference has hung for half the watchdog interval
    STATUS= says so and no ping is sent for as long as it hangs; STATUS= goes on. Driven by
    what the daemon reports, not by how long this CPU takes to prepare the input."""
    from slow_model import write_slow_model

    slow = write_slow_model(reference_manifest, tmp_path / "slow", iterations=10**9)
    appliance = Appliance(tmp_path / "appliance", slow)
    daemon = daemons(appliance, watchdog_s=2.0)
    daemon.wait_ready()
    wait_for(lambda: daemon.notify.count("WATCHDOG") >= 2, 20, "watchdog pings while idle")
    # HR06004 passes quality control, so its window reaches the (hanging) model.
    appliance.drop(shared_data / "cinc2021" / "HR06004.mat")
    appliance.drop(shared_data / "cinc2021" / "HR06004.hea")
    stalled = re.compile(r"stalled: infer (\d+\.\d) s")

    def since_stalled() -> List[Dict[str, str]]:
        messages = daemon.notify.snapshot()
        first = next((index for index, message in enumerate(messages)
                      if stalled.search(message.get("STATUS", ""))), len(messages))
        return messages[first:]

    wait_for(lambda: len(since_stalled()) >= 5, 120, "5 status updates with inference stalled")
    messages = since_stalled()
    assert all("WATCHDOG" not in message for message in messages)
    seconds = [float(stalled.search(message["STATUS"]).group(1)) for message in messages]
    assert seconds == sorted(seconds) and seconds[0] >= 1.0
    assert daemon.process.poll() is None


def test_full_disk_keeps_input_and_recovers(tmp_path, reference_manifest, daemons,
                                           shared_data) -> None:
    """Reports dir on a full filesystem with the free-space floor off (so the input is
    taken): input stays in processing; freeing space recovers."""
    appliance = Appliance(tmp_path, reference_manifest, "[retention]\nmin_free_mib = 0.0\n")
    with full_filesystem(appliance.reports, "256k") as filler:
        daemon = daemons(appliance)
        daemon.wait_ready()
        appliance.drop(shared_data / "cinc2021" / "HR06001.mat")
        appliance.drop(shared_data / "cinc2021" / "HR06001.hea")
        wait_for(lambda: "reports_unwritable" in daemon.log_text(), 60, "reports_unwritable")
        assert len(appliance.inputs_in_processing()) == 2
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
    assert len(appliance.inputs_in_processing()) == 2
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
    assert len(appliance.inputs_in_processing()) == 1


def _csv_from_wfdb(header: Path, target: Path) -> Path:
    """A valid ecgd CSV (README convention) holding the WFDB record ``header`` in mV."""
    import wfdb

    record = wfdb.rdrecord(str(header.with_suffix("")))
    lines = [f"# fs_hz={record.fs:g}, units=mV", ",".join(record.sig_name)]
    lines += [",".join(f"{value:.4f}" for value in row) for row in record.p_signal]
    target.write_text("\n".join(lines) + "\n")
    return target


def test_an_undecodable_file_name_is_processed_and_never_crashes_the_daemon(
        appliance, daemons, shared_data, tmp_path) -> None:
    """A valid CSV dropped under Latin-1 bytes (not UTF-8) gets its report, whose
    source.file shows the undecodable byte escaped; the daemon keeps running and the name
    reaches no log line; a second such input that fails gets a readable error file."""
    latin1_name = os.fsdecode(b"M\xfcller.csv")
    csv = _csv_from_wfdb(shared_data / "cinc2021" / "HR06004.hea", tmp_path / "good.csv")
    daemon = daemons(appliance)
    daemon.wait_ready()
    appliance.drop(csv, latin1_name)
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("not an ecg\n")
    appliance.drop(garbage, os.fsdecode(b"Schr\xf6der.csv"))
    wait_for(lambda: appliance.names_in(appliance.done) and [
        n for n in appliance.names_in(appliance.failed) if n.endswith(".error.json")],
        60, "the good input done and the bad one failed")
    assert daemon.process.poll() is None, daemon.log_text()
    (report,) = appliance.decrypted_reports()
    assert report["source"]["file"] == "M\\xfcller.csv"
    (error_file,) = [p for p in appliance.failed.iterdir() if p.name.endswith(".error.json")]
    error_text = error_file.read_text(encoding="utf-8")  # strict: valid UTF-8 JSON text
    error = json.loads(error_text)
    assert error["input"] == "Schr\\xf6der.csv"
    assert "\\udc" not in error_text and "Schr\\xf6der" not in error["reason"].replace(
        error["input"], "")
    log = daemon.log_text()
    for fragment in ("ller", "der.csv", "\\udcfc", "\\udcf6"):
        assert fragment not in log
    assert daemon.terminate() == 0


def _kill_when(daemon: DaemonProcess, condition: Callable[[], bool], timeout_s: float) -> bool:
    """SIGKILL ``daemon`` the moment ``condition`` holds (polled as fast as it can be);
    whether it held before the daemon went idle or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and daemon.process.poll() is None:
        if condition():
            daemon.kill()
            return True
    daemon.kill()
    return False


def _temporaries(folder: Path) -> List[str]:
    """write_durable's hidden temporaries in ``folder`` (a write between write and rename)."""
    try:
        return [name for name in os.listdir(folder)
                if name.startswith(".") and name.endswith(".tmp")]
    except FileNotFoundError:
        return []


def _three_window_inputs(shared_data: Path, folder: Path, count: int) -> List[Path]:
    """``count`` distinct 30-s .npz inputs, three real LUDB records end to end in each."""
    singles = _distinct_ludb_inputs(shared_data, folder, count + 2)
    signals = [np.load(path)["signal"] for path in singles]
    paths = []
    for index in range(count):
        path = folder / f"three{index:03d}.npz"
        np.savez(path, signal=np.concatenate(signals[index:index + 3], axis=1), fs_hz=500.0,
                 lead_names=np.load(singles[index])["lead_names"], units="mV")
        paths.append(path)
    for path in singles:
        path.unlink()
    return paths


def test_sigkill_inside_a_report_write_leaves_no_second_copy_of_any_report(
        appliance, daemons, shared_data, tmp_path) -> None:
    """SIGKILL while a report's temporary exists (written, not yet renamed), restart, SIGKILL
    between two reports of one input, restart: every file in reports/, hidden ones included,
    decrypts to a distinct report id, exactly one per window of each input (re-processing
    gave the same ids); the killed write's temporary is removed at start."""
    staging = tmp_path / "staging"
    staging.mkdir()
    inputs = _three_window_inputs(shared_data, staging, 12)
    for path in inputs:
        appliance.drop(path)
    daemon = daemons(appliance)
    daemon.wait_ready()
    # Inside a report write: a complete sealed report sits in a hidden temporary.
    assert _kill_when(daemon, lambda: bool(_temporaries(appliance.reports)), 60)
    assert _temporaries(appliance.reports), "the kill did not land inside a write"
    daemon = daemons(appliance)
    daemon.wait_ready()
    assert _temporaries(appliance.reports) == []
    # Between two reports of one input: window 0 durable, the input not done.
    assert _kill_when(daemon, lambda: len(appliance.report_files()) % 3 != 0, 60)
    daemon = daemons(appliance)
    daemon.wait_ready()
    wait_for(lambda: len(appliance.names_in(appliance.done)) == 12, 300, "all 12 inputs done")
    assert daemon.terminate() == 0
    ids: Dict[str, List[str]] = {}
    windows: Dict[str, List[int]] = {}
    for path in appliance.reports.iterdir():  # every file, hidden or not
        if path.is_dir():  # delivered/
            continue
        name = path.name
        report = open_sealed_report(path.read_bytes(), appliance.identity,
                                    appliance.enrolled).report
        ids.setdefault(report["report_id"], []).append(name)
        windows.setdefault(report["source"]["content_sha256"], []).append(
            report["window"]["index"])
    assert {rid: names for rid, names in ids.items() if len(names) > 1} == {}
    assert all(names == [f"{rid}.ecgr"] for rid, names in ids.items())
    assert len(windows) == 12
    assert all(sorted(indexes) == [0, 1, 2] for indexes in windows.values())


def test_an_input_dropped_after_a_flood_is_interpreted_before_the_flood_drains(
        appliance, daemons, shared_data, tmp_path) -> None:
    """1500 tiny unreadable files already waiting do not hold back a recording dropped after
    them: it is done while most of the flood still waits (before: after all of it), and the
    flood files are failed, each with its reason."""
    staging = tmp_path / "staging"
    staging.mkdir()
    for index in range(1500):
        (staging / f"flood{index:04d}.csv").write_bytes(b"x\n")
    daemon = daemons(appliance)
    daemon.wait_ready()
    for index in range(1500):
        name = f"flood{index:04d}.csv"
        os.rename(staging / name, appliance.incoming / name)
    wait_for(lambda: len([n for n in appliance.names_in(appliance.failed)
                          if n.endswith(".error.json")]) >= 20, 60, "the flood failing")
    appliance.drop(shared_data / "cinc2021" / "HR06004.mat")
    appliance.drop(shared_data / "cinc2021" / "HR06004.hea")
    wait_for(lambda: "HR06004.hea" in appliance.names_in(appliance.done)
             or daemon.process.poll() is not None, 120, "the recording done")
    still_waiting = len([n for n in appliance.names_in(appliance.incoming)
                         if n.startswith("flood")])
    assert still_waiting >= 1000, f"only {still_waiting} flood files were still waiting"
    assert daemon.terminate() == 0
    errors = [n for n in appliance.names_in(appliance.failed) if n.endswith(".error.json")]
    assert len(errors) >= 20
    assert "fs_hz" in json.loads((appliance.failed / errors[0]).read_text())["reason"]


def _long_input(shared_data: Path, folder: Path, minutes: int) -> Path:
    """A real LUDB record repeated to ``minutes`` of 12-lead .npz (one window per 10 s)."""
    (one,) = _distinct_ludb_inputs(shared_data, folder, 1)
    arrays = dict(np.load(one))
    arrays["signal"] = np.tile(arrays["signal"], (1, minutes * 6))
    path = folder / f"long-{minutes}min.npz"
    np.savez(path, **arrays)
    return path


def _failed_long_input_reason(tmp_path: Path, appliance: "Appliance", daemons: Any,
                              shared_data: Path) -> Tuple[Any, str]:
    """Start the daemon, drop a 20-minute input, wait for it in failed/; (daemon, reason)."""
    staging = tmp_path / "staging"
    staging.mkdir()
    long_input = _long_input(shared_data, staging, 20)
    daemon = daemons(appliance)
    daemon.wait_ready()
    appliance.drop(long_input)
    wait_for(lambda: f"{long_input.name}.error.json" in appliance.names_in(appliance.failed),
             120, "the long input failed")
    error_file = appliance.failed / f"{long_input.name}.error.json"
    return daemon, json.loads(error_file.read_text())["reason"]


def test_an_input_over_the_sample_limit_is_failed_and_the_next_one_interpreted(
        tmp_path, reference_manifest, daemons, shared_data) -> None:
    """[limits] max_input_samples reaches the daemon's reader: a 20-minute input over a
    lowered limit is failed with a reason naming the option, before it is interpreted; a 10-s
    input dropped after it is interpreted, and the daemon keeps running."""
    appliance = Appliance(tmp_path / "appliance", reference_manifest,
                          "[limits]\nmax_input_samples = 1000000\n")
    daemon, reason = _failed_long_input_reason(tmp_path, appliance, daemons, shared_data)
    appliance.drop(shared_data / "cinc2021" / "HR06004.mat")
    appliance.drop(shared_data / "cinc2021" / "HR06004.hea")
    wait_for(lambda: "HR06004.hea" in appliance.names_in(appliance.done), 120,
             "the short input done")
    assert "[limits] max_input_samples" in reason
    assert [r["source"]["file"] for r in appliance.decrypted_reports()] == ["HR06004.hea"]
    assert daemon.process.poll() is None


def test_an_input_over_the_time_budget_is_failed_with_its_reason(
        tmp_path, reference_manifest, daemons, shared_data) -> None:
    """[limits] input_time_budget_s: an input still being prepared when its budget has run
    out is failed with a reason naming the option, no report of it is written, and the
    daemon keeps pinging. (1 ms: reading and hashing 20 minutes of samples take longer.)"""
    appliance = Appliance(tmp_path / "appliance", reference_manifest,
                          "[limits]\ninput_time_budget_s = 0.001\n")
    daemon, reason = _failed_long_input_reason(tmp_path, appliance, daemons, shared_data)
    assert "time budget of 0.001 s ([limits] input_time_budget_s)" in reason
    assert appliance.report_files() == []
    pings = daemon.notify.count("WATCHDOG")
    wait_for(lambda: daemon.notify.count("WATCHDOG") > pings, 30, "a ping after the failure")
    assert daemon.process.poll() is None
