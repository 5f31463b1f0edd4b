"""Helpers for the ``ecgd batch`` tests: archives of real records, runs, reading the tables."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS, arrange_standard_leads

REPO_ROOT = Path(__file__).resolve().parents[1]


def batch_command(*args: object) -> List[str]:
    return [sys.executable, "-m", "ecgd", "batch", *[str(arg) for arg in args]]


def run_batch(*args: object, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``ecgd batch ARGS`` as a subprocess (stderr not a terminal: JSON progress lines)."""
    return subprocess.run(batch_command(*args), capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO_ROOT)


def events(stderr: str, name: str) -> List[Dict[str, Any]]:
    """The structured log events called ``name`` in a batch's stderr."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def run_folder(out_dir: Path) -> Path:
    (folder,) = [p for p in out_dir.iterdir() if p.name.startswith("run-")]
    return folder


def read_table(run_dir: Path, table: str) -> List[Dict[str, Any]]:
    """Every row of ``windows`` or ``errors`` over the published shards, in shard order."""
    rows: List[Dict[str, Any]] = []
    for part in sorted((run_dir / table).iterdir()):
        if part.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(part).to_pylist()
        else:
            rows += [json.loads(line) for line in part.read_text().splitlines()]
    return rows


def committed_shards(run_dir: Path) -> int:
    """Shards the ledger has committed (0 while it does not exist yet)."""
    ledger = run_dir / "ledger.sqlite"
    if not ledger.exists():
        return 0
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM shards").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def shards_in(out_dir: Path) -> int:
    """Shards committed in the run folder of ``out_dir`` (0 while it is not there yet: it
    appears by a rename once created)."""
    runs = [p for p in out_dir.iterdir() if p.name.startswith("run-")] if out_dir.exists() else []
    return committed_shards(runs[0]) if runs else 0


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def children(pid: int) -> List[int]:
    """Direct child processes of ``pid``."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone: that is what the caller wanted


def write_window_archive(shared_data: Path, folder: Path, count: int) -> List[Path]:
    """``count`` distinct single-window .npz files cut from the CinC 2021 records (mV,
    standard leads); file ``k`` carries a DC offset of ``k`` uV, so no two have the same
    content (some CinC records begin with the same 10 s)."""
    records = []
    for header in sorted((shared_data / "cinc2021").glob("*.hea")):
        leads = arrange_standard_leads(read_recording(header, 1 << 26), STANDARD_LEADS)
        if leads.samples_mv is not None:
            records.append(np.ascontiguousarray(leads.samples_mv[:, :5000], dtype=np.float32))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"w{k:04d}.npz"
        samples = records[k % len(records)] + np.float32(0.001 * k)
        np.savez(path, signal=samples, fs_hz=500.0, lead_names=np.array(STANDARD_LEADS),
                 units="mV")
        paths.append(path)
    return paths


def assert_exactly_once(run_dir: Path, expected_inputs: int) -> None:
    """Every committed key is in the tables once, and no staged shard is left over."""
    windows, errors = read_table(run_dir, "windows"), read_table(run_dir, "errors")
    keys = [f"sha256:{row['source_content_sha256']}" for row in windows]
    report_ids = [row["report_id"] for row in windows]
    assert len(set(report_ids)) == len(report_ids)
    by_input = {key for key in keys} | {row["input_key"] for row in errors}
    assert len(by_input) == expected_inputs
    assert len(errors) == len({row["input_key"] for row in errors})
    assert not {row["input_key"] for row in errors} & set(keys)
    assert list((run_dir / ".staging").iterdir()) == []


def config_file(folder: Path, text: str = "") -> Path:
    """An ecgd config with a pseudonym key and ``text`` appended."""
    key = folder / "pseudonym.key"
    key.write_text("ab" * 32 + "\n")
    path = folder / "ecgd.toml"
    path.write_text(f'[privacy]\npseudonym_key_file = "{key}"\n{text}')
    return path


def same_elements(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return sorted(map(str, a)) == sorted(map(str, b))
