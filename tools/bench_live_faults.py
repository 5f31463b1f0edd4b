"""A lossy serial link against a clean one: how many 10-s windows survive (run by hand).

Issue 13's check: ecgd-frame at 500 Hz through ``ecgd simulate --drop-rate 0.01
--garbage-rate 0.01`` for 5 minutes gives at least 90 % of the windows the same stream gives
without faults, each with its bridged-sample count, none across a gap longer than
``[serial] max_bridge_ms``.

Each stream is the real ``ecgd simulate`` command (a subprocess behind its own
``--pty-link``, ``--loop --disconnect-after SECONDS``), read by the daemon's own
``SerialSource``; the clean stream and one faulty stream per seed run at the same time, so
they see the same machine. Window counts are exact (the simulator's faults are seeded), so
the machine's load changes nothing but the wall time.

    python tools/bench_live_faults.py [--seconds 300] [--speed 1] [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import structlog

from ecgd.config import SerialConfig, WindowConfig
from ecgd.logs import configure_logging
from ecgd.signal.bridged import BridgedStretches
from ecgd.sources.serial_source import SerialSource
from ecgd.sources.windowing import LiveWindow, WindowQueue

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORD = REPO_ROOT.parent / "shared/data/cinc2021/HR06004.hea"
FS_HZ = 500


class Stream:
    """One ``ecgd simulate`` subprocess and the SerialSource reading it."""

    def __init__(self, folder: Path, name: str, record: Path, seconds: float, speed: float,
                 faults: List[str], config: SerialConfig) -> None:
        link = folder / name
        self.name = name
        self.simulator = subprocess.Popen(
            [sys.executable, "-m", "ecgd", "simulate", "--pty-link", str(link), "--format",
             "ecgd-frame", "--record", str(record), "--loop", "--speed", str(speed),
             "--disconnect-after", str(seconds), *faults],
            stdout=subprocess.PIPE, text=True, cwd=str(REPO_ROOT))
        while not link.exists():
            time.sleep(0.01)
        self.queue = WindowQueue(10 ** 6)
        self.source = SerialSource(
            SerialConfig(**{**config.__dict__, "port": str(link)}), WindowConfig(),
            self.queue, structlog.get_logger(stream=name))
        self.source.start()

    def finish(self) -> List[LiveWindow]:
        self.summary = self.simulator.communicate()[0].strip().splitlines()[-1]
        while self.source.stats()["state"] not in ("disconnected", "stalled"):
            time.sleep(0.1)
        self.stats = self.source.stats()
        self.source.stop()
        windows = []
        while True:
            window = self.queue.get(0)
            if window is None:
                return windows
            windows.append(window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD)
    parser.add_argument("--seconds", type=float, default=300.0, help="signal per stream")
    parser.add_argument("--speed", type=float, default=1.0, help="simulator pace factor")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--drop-rate", default="0.01")
    parser.add_argument("--garbage-rate", default="0.01")
    args = parser.parse_args()
    configure_logging("console", "warning")
    config = SerialConfig(port="unused", format="ecgd-frame", stall_s=2.0)
    max_bridge_n = int(config.max_bridge_ms * FS_HZ / 1000)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        streams = [Stream(Path(tmp), "clean", args.record, args.seconds, args.speed, [], config)]
        streams += [Stream(Path(tmp), f"seed-{seed}", args.record, args.seconds, args.speed,
                           ["--drop-rate", args.drop_rate, "--garbage-rate", args.garbage_rate,
                            "--seed", str(seed)], config) for seed in args.seeds]
        results: Dict[str, List[LiveWindow]] = {s.name: s.finish() for s in streams}
    wall_s = time.monotonic() - started
    clean = len(results["clean"])
    print(f"{args.seconds:g} s of ecgd-frame at {FS_HZ} Hz per stream, simulator --speed "
          f"{args.speed:g}, drop {args.drop_rate}, garbage {args.garbage_rate}; "
          f"max_bridge_ms {config.max_bridge_ms:g}, max_bridged_fraction "
          f"{config.max_bridged_fraction:g}; {wall_s:.0f} s wall\n")
    print("| stream | windows | vs clean | bridged samples per window (median / max) | "
          "longest bridged gap | windows QC would reject as `bridged` | segments cut | "
          "frames lost | garbage bytes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stream in streams:
        windows = results[stream.name]
        bridged = [w.bridged_samples for w in windows] or [0]
        longest = max((end - start for w in windows for start, end in w.bridged_gaps),
                      default=0)
        if longest > max_bridge_n:
            raise SystemExit(f"{stream.name}: a window spans a gap of {longest} samples")
        over = sum(bool(BridgedStretches(tuple((a - w.sample_start, b - w.sample_start)
                                               for a, b in w.bridged_gaps),
                                         config.max_bridged_fraction).reasons(0, 5000))
                   for w in windows)
        stats = stream.stats
        print(f"| {stream.name} | {len(windows)} | {100 * len(windows) / clean:.0f} % | "
              f"{statistics.median(bridged):g} / {max(bridged)} | "
              f"{1000 * longest / FS_HZ:g} ms | {over} | {stats['segments_closed']} | "
              f"{stats['dropped_frames']} | {stats['garbage_bytes']} |")
    for stream in streams:
        print(f"{stream.name}: ecgd simulate said: {stream.summary}")


if __name__ == "__main__":
    main()
