"""Delivery under crashes, at full size: 500 reports (default) forwarded over real TLS to a
real `ecgd receive` while the forwarder is SIGKILLed and the receiver stopped at random
points. Checks that the station ends with every report exactly once, byte-identical, and
that the appliance moved every report to delivered/. The test suite runs the same scenario
with 120 reports and 4 interruptions (tests/test_forwarder.py).

    python tools/delivery_soak.py [--reports 500] [--interruptions 12] [--seed N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from station_helpers import Site, run_crash_scenario  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=500)
    parser.add_argument("--interruptions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecgd-soak-") as folder:
        site = Site(Path(folder))
        sealed = {path.name: path.read_bytes() for path in site.seal_reports(args.reports)}
        started = time.perf_counter()
        counts = run_crash_scenario(site, Path(folder), args.interruptions, args.seed)
        elapsed_s = time.perf_counter() - started
        stored = sorted(path.name for path in site.inbox.rglob("*")
                        if path.is_file() and not path.name.startswith("."))
        exactly_once = stored == sorted(sealed)
        identical = site.station_files() == sealed
        delivered = sorted(path.name for path in (site.reports / "delivered").iterdir())
        print(f"{args.reports} reports, forwarder SIGKILLed {counts['forwarder_killed']}x, "
              f"receiver stopped {counts['receiver_stopped']}x, {elapsed_s:.1f} s")
        print(f"station: {len(stored)} files, exactly once: {exactly_once}, "
              f"byte-identical: {identical}; appliance delivered/: {len(delivered)}")
        return 0 if exactly_once and identical and delivered == sorted(sealed) else 1


if __name__ == "__main__":
    sys.exit(main())
