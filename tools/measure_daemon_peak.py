#!/usr/bin/env python3
"""What the unit's MemoryMax= and TasksMax= are sized from: the daemon's peak memory (VmHWM,
and the cgroup-relevant RSS+swap is at most that) and peak thread count, under the two
heaviest loads it accepts: a backlog of single-window inputs, and the longest recording the
default limits let in: [limits] max_input_samples (8 million) admits 22 minutes of 12 leads
at 500 Hz.

The daemon is the real ``python -m ecgd run`` (tests/daemon_harness.py), FP32 full-size
reference model, the config the tests use (threads = 1) and threads = 2. Sampled every 50 ms
from /proc/PID/status. Needs ../shared/data.

    python3 tools/measure_daemon_peak.py [--backlog 200] [--long-minutes 22]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import SHARED_DATA  # noqa: E402
from daemon_harness import DaemonProcess, wait_for  # noqa: E402
from test_daemon import Appliance, _distinct_ludb_inputs  # noqa: E402


class PeakSampler(threading.Thread):
    """Largest VmHWM (MiB) and Threads seen in /proc/PID/status until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss_mib = 0.0
        self.peak_threads = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            try:
                fields = dict(line.split(":", 1) for line in
                              Path(f"/proc/{self.pid}/status").read_text().splitlines())
            except (FileNotFoundError, ProcessLookupError):
                return
            self.peak_rss_mib = max(self.peak_rss_mib, int(fields["VmHWM"].split()[0]) / 1024)
            self.peak_threads = max(self.peak_threads, int(fields["Threads"]))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure(root: Path, manifest: Path, threads: int, backlog: int,
            long_minutes: float) -> Dict[str, float]:
    appliance = Appliance(root, manifest)
    appliance.config.write_text(appliance.config.read_text().replace(
        "threads = 1\n", f"threads = {threads}\n", 1))
    staging = root / "staging"
    staging.mkdir()
    inputs = _distinct_ludb_inputs(SHARED_DATA, staging, backlog)
    one = np.load(inputs[0])
    repeats = int(long_minutes * 6)
    long_path = staging / "long.npz"
    signal_uv = np.round(np.tile(one["signal"], (1, repeats)) * 1000.0).astype(np.int16)
    np.savez(long_path, signal=signal_uv, fs_hz=one["fs_hz"], lead_names=one["lead_names"],
             units="uV")
    daemon = DaemonProcess(appliance.config, root)
    try:
        daemon.wait_ready()
        sampler = PeakSampler(daemon.process.pid)
        sampler.start()
        time.sleep(0.2)
        ready_rss_mib = sampler.peak_rss_mib
        for path in inputs:
            appliance.drop(path)
        wait_for(lambda: len(appliance.names_in(appliance.done)) >= backlog, 1800, "backlog")
        appliance.drop(long_path)
        wait_for(lambda: "long.npz" in appliance.names_in(appliance.done)
                 or "long.npz" in appliance.names_in(appliance.failed), 1800, "long input")
        long_done = "long.npz" in appliance.names_in(appliance.done)
        sampler.stop()
        daemon.terminate()
    finally:
        daemon.close()
    return {"ready_rss_mib": ready_rss_mib, "peak_rss_mib": sampler.peak_rss_mib,
            "peak_threads": sampler.peak_threads, "long_done": float(long_done)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--long-minutes", type=float, default=22.0)
    args = parser.parse_args(argv)
    from ecgd.model.build import build_reference

    with tempfile.TemporaryDirectory(prefix="ecgd-peak-") as work:
        manifest = build_reference(Path(work) / "model",
                                   labels_path=SHARED_DATA / "ecgfounder" / "tasks.txt", seed=0)
        for threads in (1, 2):
            result = measure(Path(work) / f"threads-{threads}", manifest, threads,
                             args.backlog, args.long_minutes)
            print(f"threads = {threads}: READY=1 {result['ready_rss_mib']:.0f} MiB, peak "
                  f"{result['peak_rss_mib']:.0f} MiB, peak {result['peak_threads']} threads; "
                  f"{args.long_minutes:g}-minute input "
                  f"{'done' if result['long_done'] else 'failed'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
