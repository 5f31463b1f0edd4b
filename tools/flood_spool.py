#!/usr/bin/env python3
"""Issue 15 defect 7, long form: a flood of tiny files, then one real recording.

The real daemon (tests/daemon_harness.py, FP32 reference model) is started, --flood tiny
unreadable files are renamed into incoming/ at once, and a real 10-s recording (CinC
HR06004) is dropped once the flood has started failing. Printed: seconds from the
recording's drop to its input in done/, how many flood files still waited then, and
seconds until the whole flood was failed. With the fair spool the recording is done
within a few inputs' time, not after the flood. Needs ../shared/data. The suite runs the
same thing with 1500 files (tests/test_daemon.py).

    python3 tools/flood_spool.py [--flood 100000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import SHARED_DATA  # noqa: E402
from daemon_harness import DaemonProcess, wait_for  # noqa: E402
from test_daemon import Appliance  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=100_000, help="tiny files dropped")
    args = parser.parse_args(argv)
    from ecgd.model.build import build_reference

    with tempfile.TemporaryDirectory(prefix="ecgd-flood-") as work:
        root = Path(work)
        manifest = build_reference(root / "model",
                                   labels_path=SHARED_DATA / "ecgfounder" / "tasks.txt", seed=0)
        appliance = Appliance(root / "appliance", manifest)
        staging = root / "staging"
        staging.mkdir()
        names = [f"flood{index:06d}.csv" for index in range(args.flood)]
        for name in names:
            (staging / name).write_bytes(b"x\n")
        daemon = DaemonProcess(appliance.config, root)
        try:
            daemon.wait_ready()
            flood_started = time.monotonic()
            for name in names:
                os.rename(staging / name, appliance.incoming / name)
            wait_for(lambda: len(os.listdir(appliance.failed)) >= 20, 600, "the flood failing")
            dropped = time.monotonic()
            appliance.drop(SHARED_DATA / "cinc2021" / "HR06004.mat")
            appliance.drop(SHARED_DATA / "cinc2021" / "HR06004.hea")
            wait_for(lambda: (appliance.done / "HR06004.hea").exists(), 3600, "the recording")
            recording_s = time.monotonic() - dropped
            waiting = sum(1 for name in os.listdir(appliance.incoming)
                          if name.startswith("flood"))
            wait_for(lambda: not any(name.startswith("flood")
                                     for name in os.listdir(appliance.incoming))
                     and not os.listdir(appliance.processing), 36000, "the flood failed")
            flood_s = time.monotonic() - flood_started
            daemon.terminate()
        finally:
            daemon.close()
    print(f"{args.flood} tiny files: the recording dropped behind them was done "
          f"{recording_s:.1f} s later with {waiting} flood files still waiting; the whole "
          f"flood was failed {flood_s:.0f} s after it arrived ({flood_s / args.flood * 1000:.1f}"
          f" ms a file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
