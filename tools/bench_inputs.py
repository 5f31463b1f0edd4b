"""What the benchmarks share: the machine they ran on, ``ecgd`` as a subprocess, and the
single-window inputs cut from the shared LUDB and CinC 2021 records."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ecgd.config import QcConfig  # noqa: E402
from ecgd.records.reader import read_recording  # noqa: E402
from ecgd.records.recording import STANDARD_LEADS, arrange_standard_leads  # noqa: E402
from ecgd.signal.quality import assess_window  # noqa: E402

FS_HZ = 500.0
WINDOW_SAMPLES = 5000
MAINS_HZ = 50
COPY_OFFSET_MV = 0.001


def machine_description() -> Dict[str, Any]:
    """Cores, CPU model (/proc/cpuinfo), memory, library versions, the checkout measured."""
    import onnxruntime
    import scipy

    cpu_model = "unknown"
    memory_gb = float("nan")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass  # not Linux: the rest of the description still stands
    git = ["git", "-C", str(REPO)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cores": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
        "memory_gb": round(memory_gb, 1), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "commit": head + (" + uncommitted changes" if dirty else ""),
        "load_average_start": os.getloadavg(),
    }


def run_ecgd(args: Sequence[str], cwd: Path) -> str:
    """``python -m ecgd ARGS`` from this checkout; its stdout, or RuntimeError with stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "ecgd", *args], cwd=str(cwd), env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ecgd {args[0]} {args[1] if len(args) > 1 else ''} exited "
                           f"{result.returncode}: {result.stderr.strip()[-500:]}")
    return result.stdout


def accepted_windows(shared: Path) -> List[Tuple[str, np.ndarray]]:
    """First 10-s window of every LUDB and CinC 2021 record that passes ecgd's default QC,
    as float32 ``[12, 5000]`` mV in standard lead order; duplicate contents dropped."""
    headers = sorted((shared / "ludb" / "data").glob("*.hea"))
    headers += sorted((shared / "cinc2021").glob("*.hea"))
    qc = QcConfig()
    seen = set()
    pool = []
    for header in headers:
        recording = read_recording(header, 1 << 26)
        leads = arrange_standard_leads(recording, STANDARD_LEADS)
        if recording.fs_hz != FS_HZ or leads.samples_mv is None \
                or leads.samples_mv.shape[1] < WINDOW_SAMPLES:
            continue
        window = np.ascontiguousarray(leads.samples_mv[:, :WINDOW_SAMPLES], dtype=np.float32)
        digest = hashlib.sha256(window.tobytes()).hexdigest()
        if digest in seen or not assess_window(window, FS_HZ, STANDARD_LEADS, qc,
                                               mains_hz=MAINS_HZ).ok:
            continue
        seen.add(digest)
        pool.append((f"{header.parent.name}/{header.stem}", window))
    return pool


def write_inputs(pool: Sequence[Tuple[str, np.ndarray]], folder: Path,
                 count: int) -> List[Path]:
    """``count`` distinct single-window .npz files: record ``k % len(pool)`` plus a DC
    offset of ``COPY_OFFSET_MV * (k // len(pool))`` mV."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        _, window = pool[k % len(pool)]
        path = folder / f"in{k:05d}.npz"
        if not path.exists():
            samples = window + np.float32(COPY_OFFSET_MV * (k // len(pool)))
            np.savez(path, signal=samples, fs_hz=FS_HZ, lead_names=np.array(STANDARD_LEADS),
                     units="mV")
        paths.append(path)
    return paths
