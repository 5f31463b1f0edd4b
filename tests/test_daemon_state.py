"""The daemon's state file as `ecgd status` judges it: absent, unreadable, gone, stale, fresh."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ecgd.daemon_state import FORMAT_VERSION, read_verdict, write_state


def _state(pid: int, updated_unix_s: float, state: str = "ready") -> dict:
    return {"format_version": FORMAT_VERSION, "state": state, "pid": pid,
            "updated_at": "2026-01-01T00:00:00.000Z", "updated_unix_s": updated_unix_s,
            "interval_s": 2.0}


def test_missing_and_foreign_files_say_why(tmp_path: Path) -> None:
    """No file means not running; a file that is not a state file is named as such."""
    absent = read_verdict(tmp_path / "status.json")
    assert (absent.running, absent.condition) == (False, "absent")
    assert absent.message.startswith(f"{tmp_path / 'status.json'}: no state file")
    (tmp_path / "status.json").write_text("{not json")
    foreign = read_verdict(tmp_path / "status.json")
    assert (foreign.running, foreign.condition) == (False, "unreadable")
    assert "not an ecgd state file" in foreign.message


def test_state_of_a_process_that_is_gone_is_not_running(tmp_path: Path) -> None:
    """A state file left by a process that no longer exists (SIGKILL) says so."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    pid = int(finished.stdout)
    write_state(tmp_path / "status.json", _state(pid, time.time()))
    verdict = read_verdict(tmp_path / "status.json")
    assert (verdict.running, verdict.condition) == (False, "gone")
    assert verdict.message.startswith(f"not running: pid {pid} ended without stopping")


def test_fresh_and_stale_states_of_a_live_process(tmp_path: Path) -> None:
    """A live process's state is running while fresh, stale after three intervals."""
    path = tmp_path / "status.json"
    now = time.time()
    write_state(path, _state(os.getpid(), now))
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert read_verdict(path, now_unix_s=now + 1).condition == "running"
    stale = read_verdict(path, now_unix_s=now + 7)
    assert (stale.running, stale.condition) == (False, "stale")
    assert json.loads(path.read_text())["pid"] == os.getpid()
