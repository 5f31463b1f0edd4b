"""The README's "Try it" on a fresh copy of the repository, with no ../shared beside it."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from daemon_harness import REPO_ROOT, wait_for
from ecgd.model.build import ECGFOUNDER_LABELS

# The steps of the first command that set up Python; the test runs in its own environment.
_SETUP_STEPS = ["python3 -m venv .venv", ". .venv/bin/activate",
                "pip install -e '.[station]'"]


def _readme_commands() -> List[str]:
    """The lines of the README's "Try it" code blocks, in order."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("**Try it**", 1)[1].split("**Run the tests.**", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def _fresh_copy(destination: Path) -> Path:
    """The files git tracks, copied into a new git repository (a clone of the working
    tree), so that what is not committed cannot help and what is ignored shows."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    subprocess.run(["git", "add", "-A"], cwd=destination, check=True)
    return destination


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout (.ci/run installs git)")
    return _fresh_copy(tmp_path / "ecgd")


def test_first_command_gives_a_sealed_report_that_decrypts(clone: Path, tmp_path: Path) -> None:
    """The README's first command, run as written after its Python setup steps, on a copy
    of the repository without ../shared: the shipped sample becomes a sealed report that
    the second block's command decrypts, with ECGFounder's label names; nothing it made
    is left for git to add."""
    assert not (clone.parent / "shared").exists()
    first, decrypt, status = _readme_commands()
    steps = first.split(" && ")
    assert steps[:3] == _SETUP_STEPS and steps[-1] == "ecgd run --config etc/ecgd-dev.toml"
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "ecgd").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ecgd "$@"\n')
    (shims / "ecgd").chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # `python -m ecgd` in the copy imports the copy's ecgd
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(["bash", "-c", " && ".join(steps[3:])], cwd=clone, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        reports = clone / "var" / "reports"
        wait_for(lambda: (clone / "var" / "spool" / "done" / "1.dat").exists()
                 or daemon.poll() is not None, 180, "the sample in var/spool/done")
        assert daemon.poll() is None, log_path.read_text()
        running = subprocess.run(["bash", "-c", status], cwd=clone, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert running.returncode == 0 and running.stdout.startswith("ecgd: ready")
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)
    assert daemon.returncode in (0, -signal.SIGTERM), log_path.read_text()
    assert len(list(reports.glob("*.ecgr"))) == 1
    decrypted = subprocess.run(["bash", "-c", decrypt.replace(". .venv/bin/activate && ", "")],
                               cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert decrypted.returncode == 0, decrypted.stderr
    (opened,) = [json.loads(line) for line in decrypted.stdout.splitlines()]
    assert opened["signer"]["appliance"] == "appliance-signing"
    report = opened["report"]
    assert report["source"]["file"] == "1.hea" and report["qc"]["status"] == "accepted"
    labels = set(ECGFOUNDER_LABELS.read_text().splitlines())
    assert len(report["findings"]) == 150
    assert {finding["label"] for finding in report["findings"]} == labels
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                               cwd=clone, capture_output=True, text=True, check=True).stdout
    assert [line for line in untracked.splitlines() if line.startswith("??")] == []
