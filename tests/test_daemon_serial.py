"""``ecgd run`` with a live serial source: a simulator on a real pty -> sealed reports."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from daemon_harness import REPO_ROOT, DaemonProcess, wait_for
from ecgd.report import SCHEMA_PATH
from test_daemon import Appliance

jsonschema = pytest.importorskip("jsonschema")


class Simulator:
    """``ecgd simulate --pty-link PATH`` as a subprocess: a device behind a symlinked pty."""

    def __init__(self, link: Path, record: Path, speed: float, fmt: str = "ecgd-frame") -> None:
        self.link = link
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ecgd", "simulate", "--pty-link", str(link), "--format", fmt,
             "--record", str(record), "--loop", "--speed", str(speed)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(REPO_ROOT))
        wait_for(link.exists, 30, "the simulator's pseudo-terminal link")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture
def simulator(tmp_path: Path, shared_data: Path):
    started: List[Simulator] = []

    def start(speed: float) -> Simulator:
        sim = Simulator(tmp_path / "ttyECG", shared_data / "cinc2021" / "HR06004.hea", speed)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.close()


def _serial_toml(link: Path, queue_windows: int = 4) -> str:
    return (f'[serial]\nport = "{link}"\nformat = "ecgd-frame"\nstall_s = 3.0\n'
            f"queue_windows = {queue_windows}\n")


def test_live_stream_becomes_sealed_reports_with_patient_pseudonym(
        tmp_path, reference_manifest, simulator) -> None:
    """Live windows are sealed back to back; a patient set while running is picked up."""
    sim = simulator(speed=10)
    appliance = Appliance(tmp_path / "appliance", reference_manifest, _serial_toml(sim.link))
    daemon = DaemonProcess(appliance.config, tmp_path)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(appliance.report_files()) >= 2, 60, "2 live reports")
        subprocess.run([sys.executable, "-m", "ecgd", "patient", "--config",
                        str(appliance.config), "set", "BEDSIDE-PATIENT-0815"], check=True,
                       cwd=str(REPO_ROOT), capture_output=True)
        wait_for(lambda: any(r["patient"]["pseudonym"] for r in appliance.decrypted_reports()),
                 60, "a report with the patient's pseudonym")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    reports = appliance.decrypted_reports()
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for report in reports:
        validator.validate(report)
        assert report["source"]["kind"] == "serial"
        assert report["source"]["device"] == str(sim.link)
        assert report["source"]["format"] == "serial:ecgd-frame"
        assert report["source"]["sample_end"] - report["source"]["sample_start"] == 5000
    starts = sorted((r["source"]["segment"], r["source"]["sample_start"]) for r in reports)
    first_segment = [s for seg, s in starts if seg == starts[0][0]]
    # Windows tile the segment on a 5000-sample grid; a loaded machine may drop whole windows
    # (counted, never cut differently), so a gap is a whole number of windows.
    assert all(b > a and (b - a) % 5000 == 0 for a, b in zip(first_segment, first_segment[1:]))
    pseudonyms = {r["patient"]["pseudonym"] for r in reports} - {None}
    assert len(pseudonyms) == 1
    assert "BEDSIDE-PATIENT-0815" not in daemon.log_text()
    assert "BEDSIDE-PATIENT-0815" not in json.dumps(reports)


def test_slow_model_drops_whole_windows_and_counts_them(tmp_path, reference_manifest,
                                                        simulator) -> None:
    """Inference slower than real time: oldest windows dropped, counted in STATUS and reports."""
    from slow_model import write_slow_model

    slow = write_slow_model(reference_manifest, tmp_path / "slow", iterations=400_000)
    sim = simulator(speed=10)  # one 10-s window per second of wall time
    appliance = Appliance(tmp_path / "appliance", slow, _serial_toml(sim.link, queue_windows=1))
    daemon = DaemonProcess(appliance.config, tmp_path)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(appliance.report_files()) >= 4, 120, "4 live reports")
        status = daemon.notify.last("STATUS") or ""
        dropped = int(re.search(r"dropped (\d+)", status).group(1))
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    reports = appliance.decrypted_reports()
    assert dropped >= 1
    assert sum(r["source"]["dropped_windows"] for r in reports) >= 1
    # Whole windows are dropped: every report still covers exactly one 10-s window.
    assert all(r["source"]["sample_end"] - r["source"]["sample_start"] == 5000 for r in reports)


def test_unreadable_patient_file_costs_no_window(tmp_path, reference_manifest, simulator) -> None:
    """A patient file the daemon refuses (group-readable) is logged once; windows go on."""
    sim = simulator(speed=10)
    appliance = Appliance(tmp_path / "appliance", reference_manifest, _serial_toml(sim.link))
    daemon = DaemonProcess(appliance.config, tmp_path)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(appliance.report_files()) >= 1, 60, "a live report")
        patient_file = appliance.root / "patient" / "current"
        patient_file.write_text("LEAKY-PATIENT-42\n")
        patient_file.chmod(0o644)
        wait_for(lambda: "patient_file_unreadable" in daemon.log_text(), 60, "the error line")
        count = len(appliance.report_files())
        wait_for(lambda: len(appliance.report_files()) >= count + 2, 60, "2 more reports")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    log = daemon.log_text()
    assert log.count("patient_file_unreadable") == 1
    assert "LEAKY-PATIENT-42" not in log
    assert all(r["patient"]["pseudonym"] is None for r in appliance.decrypted_reports())
