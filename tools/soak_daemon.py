#!/usr/bin/env python3
"""The issue 15 probe, long: rounds of the scenario in tests/test_daemon_probe.py.

Each round is a fresh appliance: good inputs (distinct LUDB records and a CSV with a Latin-1
file name), unreadable ones (garbage XML and DICOM, a WFDB header naming itself as its data
file, a CSV without a sampling rate, a folder), and a poison input (the daemon is SIGKILLed
whenever it is in hand), dropped in a random order, with random SIGKILLs on top and the
daemon restarted the way systemd restarts it. Every round asserts that each good input is
done once with one report per window, each bad one failed with its reason, the poison failed
as "crashed the daemon 2 times", and that the last daemon stays up. Needs ../shared/data.

    python3 tools/soak_daemon.py [--rounds 5] [--good 40] [--kills 5] [--seed 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import SHARED_DATA  # noqa: E402
from test_daemon_probe import run_probe  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh appliances, one a round")
    parser.add_argument("--good", type=int, default=40, help="good inputs per round")
    parser.add_argument("--kills", type=int, default=5, help="random SIGKILLs per round")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first round")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.kills > args.good - 3:
        print("soak_daemon: --kills must be at most --good - 3 (kills come after 3 inputs)",
              file=sys.stderr)
        return 2
    if not (SHARED_DATA / "SOURCES.md").is_file():
        print(f"soak_daemon: real recordings not found at {SHARED_DATA}", file=sys.stderr)
        return 2
    from ecgd.model.build import build_reference

    durations_s: List[float] = []
    with tempfile.TemporaryDirectory(prefix="ecgd-soak-") as work:
        manifest = build_reference(Path(work) / "model",
                                   labels_path=SHARED_DATA / "ecgfounder" / "tasks.txt", seed=0)
        for round_index in range(args.rounds):
            root = Path(work) / f"round-{round_index}"
            root.mkdir()
            outcome = run_probe(root, manifest, SHARED_DATA, good_count=args.good,
                                random_kills=args.kills, seed=args.seed + round_index,
                                timeout_s=60.0 + 10.0 * args.good)
            durations_s.append(outcome["duration_s"])
            print(f"round {round_index + 1}/{args.rounds}: {outcome['good']:.0f} good done once,"
                  f" {outcome['bad']:.0f} bad failed with their reason,"
                  f" {outcome['random_kills']:.0f} random + {outcome['poison_kills']:.0f} poison"
                  f" SIGKILLs, {outcome['starts']:.0f} starts, {outcome['duration_s']:.0f} s",
                  flush=True)
    print(f"{args.rounds} rounds passed; median round {statistics.median(durations_s):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
