"""The appliance install (no extras) in a fresh virtualenv: no pandas, matplotlib, aiohttp or
soundfile, and the installed ecgd reads every WFDB record of ../shared/data with the samples
ecgd read through the wfdb package before (issue 16)."""
from __future__ import annotations

import collections
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from ecgd.records.reader import read_recording

REPO_ROOT = Path(__file__).resolve().parents[1]

NOT_ON_THE_APPLIANCE = {"pandas", "matplotlib", "aiohttp", "soundfile", "wfdb"}
_READ_EVERY_RECORD = """
import hashlib, json, sys
from pathlib import Path
from ecgd.records.reader import read_recording
digests = {}
for header in sorted(Path(sys.argv[1]).rglob("*.hea")):
    samples = read_recording(header, 1 << 26).samples_mv
    digests[str(header)] = hashlib.sha256(samples.tobytes()).hexdigest()
print(json.dumps({"digests": digests, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def appliance_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install ecgd`` (no extras), from a copy of the source (so the
    build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("appliance")
    source = root / "src"
    source.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "ecgd", source / "ecgd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                    "--disable-pip-version-check", str(source)],
                   check=True, timeout=1200)
    return venv


def test_appliance_install_brings_no_plotting_web_or_audio_stack(appliance_venv: Path) -> None:
    """pip install ecgd (no extras) installs none of pandas, matplotlib, aiohttp, soundfile
    or wfdb."""
    listed = subprocess.run([str(appliance_venv / "bin" / "python"), "-m", "pip", "list",
                             "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True)
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "ecgd" in installed
    assert installed & NOT_ON_THE_APPLIANCE == set()


def _in_tree_digest(header: Path) -> str:
    """sha256 of the float32 mV samples the checkout's reader gives (test_records_wfdb.py
    pins those to the wfdb package's, bit for bit)."""
    samples = read_recording(header, 1 << 26).samples_mv
    return hashlib.sha256(samples.tobytes()).hexdigest()


def test_installed_appliance_reads_every_wfdb_record_as_before(appliance_venv: Path,
                                                               shared_data: Path) -> None:
    """In the lean venv, every WFDB record of the shared data reads (read_recording, what
    analyze and the daemon call) to exactly the samples the wfdb-based reader gave (same
    bytes, so within 1e-6 mV), without importing wfdb or pandas."""
    result = subprocess.run([str(appliance_venv / "bin" / "python"), "-c", _READ_EVERY_RECORD,
                             str(shared_data)], capture_output=True, text=True, check=True,
                            cwd=appliance_venv)
    output = json.loads(result.stdout)
    digests: Dict[str, str] = output["digests"]
    assert len(digests) == 147
    assert {name: _in_tree_digest(Path(name)) for name in digests} == digests
    assert not {"wfdb", "pandas"} & set(output["modules"])


def test_installed_ecgd_analyze_reports_on_each_kind_of_wfdb_record(
        appliance_venv: Path, shared_data: Path, reference_manifest: Path) -> None:
    """The lean venv's ``ecgd analyze`` reports on each kind of WFDB record (exit 0), one
    report per 10-s window of each."""
    headers = [shared_data / relative for relative in (
        "cinc2021/E07500.hea",            # format 16 in a MATLAB .mat signal file
        "ludb/data/1.hea",                # format 16 with per-lead gains and baselines
        "ptbdb/s0010_re.hea",             # two signal files, no unit field
        "ge-muse-xml/EGM/muse-af.hea",    # tab-separated, base date and time, an MRN
    )]
    result = subprocess.run([str(appliance_venv / "bin" / "ecgd"), "analyze", "--model",
                             str(reference_manifest), *map(str, headers)],
                            capture_output=True, text=True, cwd=appliance_venv, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    windows = collections.Counter()
    for line in result.stdout.splitlines():
        report = json.loads(line)
        assert report["source"]["format"] == "wfdb"
        windows[report["source"]["file"]] += 1
    assert windows == {header.name: int(read_recording(header, 1 << 26).duration_s // 10)
                       for header in headers}
