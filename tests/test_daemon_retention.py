"""``ecgd run`` on a real small filesystem that fills up: retention, the free-space floor,
live windows going on, a SIGKILL, and nothing lost."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from daemon_harness import DaemonProcess, small_filesystem, wait_for
from ecgd.report_store import delivered_dir, report_file_name
from ecgd.security.unseal import open_sealed_report
from test_daemon import Appliance, _status
from test_daemon_serial import Simulator

MIB = 1024 * 1024
RECORDS = ("E07501", "E07502", "HR06001", "HR06002", "HR06003")


def _events(daemon: DaemonProcess):
    return [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]


def _fill_until_free(folder: Path, free_bytes: int) -> Path:
    """A file that leaves about ``free_bytes`` available on ``folder``'s filesystem."""
    info = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * (info.f_bavail * info.f_frsize - free_bytes))
    return filler


@pytest.fixture
def small_fs(tmp_path: Path):
    """A real 16 MiB tmpfs for the spool, the reports and the keys."""
    with small_filesystem(tmp_path / "disk", "16m") as folder:
        yield folder


def test_full_disk_pauses_intake_keeps_live_and_retention_loses_nothing(
        tmp_path, small_fs, reference_manifest, shared_data) -> None:
    """Below the floor spool inputs wait unharmed in incoming/ (also across a SIGKILL) while
    live windows are still analysed; with space back every input is processed. Retention
    deletes only the oldest delivered reports and done inputs beyond their size limits;
    no undelivered report is ever deleted and nothing is refused."""
    sim = Simulator(tmp_path / "ttyECG", shared_data / "cinc2021" / "HR06004.hea", speed=20)
    mat_bytes = (shared_data / "cinc2021" / "E07501.mat").stat().st_size
    # Room in done/ for the five new inputs (a .hea and a .mat each) and one old input.
    new_bytes = sum((shared_data / "cinc2021" / f"{r}{s}").stat().st_size
                    for r in RECORDS for s in (".hea", ".mat"))
    appliance = Appliance(small_fs / "appliance", reference_manifest, f"""
[retention]
min_free_mib = 4.0
done_max_mib = {(new_bytes + mat_bytes) / MIB!r}
delivered_max_mib = {2.5 * 2000 / MIB!r}
interval_s = 0.2
[serial]
port = "{sim.link}"
stall_s = 3.0
""")
    done, reports = appliance.done, appliance.reports
    delivered = delivered_dir(reports)
    for folder in (done, delivered):
        folder.mkdir(parents=True)
    old_inputs = []
    for k in range(4):
        old_inputs.append(done / f"old{k}.mat")
        shutil.copyfile(shared_data / "cinc2021" / "E07501.mat", old_inputs[-1])
    # Retention goes by name (report_store), never by content: stand-ins of a report's size.
    sealed = os.urandom(2040)
    # Written oldest first, in name order: two files stored in one clock tick tie on their
    # time, and retention then takes them in name order.
    delivered_reports = [delivered / report_file_name(report_id)
                         for report_id in sorted(str(uuid.uuid4()) for _ in range(5))]
    for path in delivered_reports:
        path.write_bytes(sealed)
    undelivered = [reports / report_file_name(str(uuid.uuid4())) for _ in range(3)]
    for path in undelivered:
        path.write_bytes(sealed)
    filler = _fill_until_free(small_fs, 3 * MIB)

    daemon = DaemonProcess(appliance.config, tmp_path)
    try:
        daemon.wait_ready()
        wait_for(lambda: "spool intake paused" in (daemon.notify.last("STATUS") or ""), 30,
                 "STATUS= saying intake is paused")
        wait_for(lambda: "spool intake paused" in _status(appliance).stdout, 30,
                 "ecgd status saying intake is paused")
        state = json.loads(_status(appliance, "--json").stdout)["state"]
        assert state["intake_paused"].startswith("spool intake paused: ")
        assert state["live_link"].startswith("link ")
        for record in RECORDS:
            appliance.drop(shared_data / "cinc2021" / f"{record}.mat")
            appliance.drop(shared_data / "cinc2021" / f"{record}.hea")
        live_before = len(appliance.report_files())
        wait_for(lambda: len(appliance.report_files()) >= live_before + 2, 60,
                 "live reports while intake is paused")
        assert len(appliance.names_in(appliance.incoming)) == 2 * len(RECORDS)
        daemon.kill()
        assert daemon.process.returncode == -9
        first_events = _events(daemon)
    finally:
        daemon.close()

    daemon = DaemonProcess(appliance.config, tmp_path)
    try:
        daemon.wait_ready()
        wait_for(lambda: "intake_paused" in daemon.log_text(), 30, "intake_paused again")
        assert len(appliance.names_in(appliance.incoming)) == 2 * len(RECORDS)
        filler.unlink()
        wait_for(lambda: appliance.names_in(appliance.incoming) == [], 60, "inputs taken")
        wait_for(lambda: not any(p.is_file() for p in appliance.processing.rglob("*")), 60,
                 "inputs done")
        wait_for(lambda: len(delivered_reports) - sum(p.exists() for p in delivered_reports) == 3,
                 30, "retention of delivered reports")
        wait_for(lambda: sum(not p.exists() for p in old_inputs) >= 3, 30,
                 "retention of done inputs after the last input is done")
        assert daemon.terminate() == 0
        second_events = _events(daemon)
    finally:
        daemon.close()
        sim.close()

    for events in (first_events, second_events):
        assert [e["event"] for e in events].count("intake_paused") == 1
    assert [e["event"] for e in second_events].count("intake_resumed") == 1
    assert appliance.names_in(appliance.failed) == []
    assert all(path.exists() for path in undelivered)
    assert [p.exists() for p in delivered_reports] == [False] * 3 + [True] * 2
    assert [p.exists() for p in old_inputs] == [False] * 3 + [True]
    assert sorted(appliance.names_in(done)) == sorted(
        ["old3.mat"] + [f"{r}{s}" for r in RECORDS for s in (".hea", ".mat")])
    new_reports = [open_sealed_report(path.read_bytes(), appliance.identity,
                                      appliance.enrolled).report
                   for path in appliance.report_files() if path not in undelivered]
    files = sorted(r["source"]["file"] for r in new_reports if r["source"]["kind"] == "file")
    assert files == sorted(f"{r}.hea" for r in RECORDS)
    assert sum(r["source"]["kind"] == "serial" for r in new_reports) >= 2
