"""The issue 15 probe, short: good and bad inputs mixed, a poison input among them, random
SIGKILLs, the daemon restarted the way systemd restarts it. tools/soak_daemon.py runs the
same scenario longer.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from daemon_harness import DaemonProcess, Supervisor, wait_for
from test_daemon import Appliance, _csv_from_wfdb, _distinct_ludb_inputs

POISON = "poison.csv"


def _attempts_in_hand(processing: Path) -> Dict[str, int]:
    """Input name -> attempt records in its claim folder, for every claimed input."""
    in_hand: Dict[str, int] = {}
    for folder in processing.iterdir() if processing.exists() else ():
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        attempts = sum(1 for name in names if name.startswith(".attempt-"))
        for name in names:
            if not name.startswith("."):
                in_hand[name] = attempts
    return in_hand


def _kill_unless_an_input_is_retried(daemon: DaemonProcess, processing: Path) -> bool:
    """SIGKILL ``daemon`` unless an input it holds is on its second attempt or later; whether
    it was killed. The daemon is stopped (SIGSTOP) while its claims are read, so it cannot
    begin a retry between that check and the kill: a retried input in hand at a random kill
    would reach ``max_crashes`` and be failed, as the poison is."""
    daemon.process.send_signal(signal.SIGSTOP)
    if any(n > 1 for n in _attempts_in_hand(processing).values()):
        daemon.process.send_signal(signal.SIGCONT)
        return False
    daemon.kill()
    return True


def _bad_inputs(folder: Path) -> Dict[str, str]:
    """Unreadable inputs, each with a fragment of the reason it must be failed with."""
    (folder / "garbage.xml").write_bytes(b"<not-an-ecg/>")
    (folder / "noise.dcm").write_bytes(np.random.default_rng(3).bytes(4096))
    (folder / "self.hea").write_bytes(b"self 1 500 5000\nself.hea 16 1000 16 0 0 0 0 I\n")
    (folder / "no-rate.csv").write_text("I,II\n0.1,0.2\n")
    (folder / "export").mkdir()
    (folder / "export" / "inside.xml").write_bytes(b"<x/>")
    return {"garbage.xml": "garbage.xml", "noise.dcm": "noise.dcm",
            "self.hea": "names a WFDB header as its data file", "no-rate.csv": "fs_hz",
            "export": "is a directory"}


def test_mixed_inputs_a_poison_and_random_kills_end_with_every_input_done_or_failed(
        tmp_path: Path, reference_manifest: Path, shared_data: Path) -> None:
    """Good inputs are each done once with one report per window, bad ones failed with their
    reason, the poison (the daemon dies whenever it is in hand) failed with "crashed the
    daemon 2 times" after two crashes; the restarts end, and the daemon stays up."""
    outcome = run_probe(tmp_path, reference_manifest, shared_data, good_count=8,
                        random_kills=2, seed=15)
    assert outcome["random_kills"] == 2 and outcome["poison_kills"] == 2


def run_probe(root: Path, manifest: Path, shared_data: Path, good_count: int,
              random_kills: int, seed: int, timeout_s: float = 300.0) -> Dict[str, float]:
    """One probe round: drop ``good_count`` good inputs, the bad ones and the poison in a
    random order, SIGKILL the daemon ``random_kills`` times at random points (never twice
    while one input is in hand) and whenever the poison is in hand; restart it as systemd
    would. Asserts the outcome; returns the kills, starts and the time it took."""
    started = time.monotonic()
    appliance = Appliance(root / "appliance", manifest)
    appliance.config.write_text(appliance.config.read_text().replace(
        "rescan_s = 1.0\n", "rescan_s = 1.0\nmax_crashes = 2\n", 1))
    staging = root / "staging"
    staging.mkdir()
    good: List[Path] = _distinct_ludb_inputs(shared_data, staging, good_count)
    good.append(_csv_from_wfdb(shared_data / "cinc2021" / "HR06004.hea",
                               staging / os.fsdecode(b"M\xfcller.csv")))
    poison = _csv_from_wfdb(shared_data / "cinc2021" / "E07503.hea", staging / "tmp.csv")
    poison.write_text(poison.read_text() * 12)  # two minutes: long enough to be seen in hand
    bad = _bad_inputs(staging)
    drops = [path for path in good] + [poison] + [staging / name for name in bad]
    rng = random.Random(seed)
    rng.shuffle(drops)
    appliance.incoming.mkdir(parents=True, exist_ok=True)  # the folder may be dropped first
    for path in drops:
        if path.is_dir():
            os.rename(path, appliance.incoming / path.name)
        else:
            appliance.drop(path, POISON if path == poison else "")
    supervisor = Supervisor(appliance.config, root, watchdog_s=10.0)
    try:
        kill_after = sorted(rng.sample(range(3, len(good)), random_kills))  # inputs done
        poison_kills = kills = 0
        expected = set(_done_names(good)) | set(bad) | {POISON}
        deadline = time.monotonic() + timeout_s
        while _finished_names(appliance) != expected:
            assert time.monotonic() < deadline, f"inputs still waiting after {timeout_s} s"
            in_hand = _attempts_in_hand(appliance.processing)
            daemon = supervisor.current
            if in_hand.get(POISON, 0) > poison_kills and daemon.process.poll() is None:
                daemon.kill()  # the poison's effect: an OOM or watchdog kill, every time
                poison_kills += 1
            elif (kills < len(kill_after)
                  and len(appliance.names_in(appliance.done)) >= kill_after[kills]
                  and not any(n > 1 for n in in_hand.values())  # never twice on one input
                  and daemon.process.poll() is None and daemon.notify.has("READY", "1")):
                if _kill_unless_an_input_is_retried(daemon, appliance.processing):
                    kills += 1
            time.sleep(0.005)
        daemon = supervisor.current
        daemon.wait_ready()
        wait_for(lambda: daemon.notify.count("WATCHDOG") >= 2, 30, "pings after the last start")
        assert daemon.process.poll() is None
        assert (kills, poison_kills) == (random_kills, 2)
        assert supervisor.starts == 1 + kills + poison_kills
        assert supervisor.endings == ["signal 9"] * (kills + poison_kills)
    finally:
        supervisor.close()
    assert supervisor.endings[-1] == "exit 0"
    _check_outcome(appliance, good, poison, bad)
    assert "ller" not in supervisor.log_text()
    return {"good": len(good), "bad": len(bad) + 1, "random_kills": kills,
            "poison_kills": poison_kills, "starts": supervisor.starts,
            "duration_s": time.monotonic() - started}


def _done_names(good: List[Path]) -> List[str]:
    """The names good inputs have in done/: undecodable bytes in a name become "_"."""
    return [path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            .replace("\ufffd", "_") for path in good]


def _finished_names(appliance: Appliance) -> set:
    """Names of the inputs in done/ or failed/ (their error files left out)."""
    return set(appliance.names_in(appliance.done)) | {
        name for name in appliance.names_in(appliance.failed)
        if not name.endswith(".error.json")}


def _check_outcome(appliance: Appliance, good: List[Path], poison: Path,
                   bad: Dict[str, str]) -> None:
    assert appliance.inputs_in_processing() == []
    assert sorted(os.listdir(appliance.processing)) == []
    reports = appliance.decrypted_reports()
    by_content: Dict[str, List[dict]] = {}
    for report in reports:
        by_content.setdefault(report["source"]["content_sha256"], []).append(report)
    assert len(by_content) == len(good)
    assert all(len(items) == 1 for items in by_content.values())
    assert len({report["report_id"] for report in reports}) == len(reports)
    assert sorted(appliance.names_in(appliance.done)) == sorted(_done_names(good))
    errors = {path.name[:-len(".error.json")]: json.loads(path.read_text())["reason"]
              for path in appliance.failed.iterdir() if path.name.endswith(".error.json")}
    assert sorted(errors) == sorted(list(bad) + [POISON])
    assert errors[POISON].startswith("crashed the daemon 2 times")
    for name, fragment in bad.items():
        assert fragment in errors[name], (name, errors[name])
