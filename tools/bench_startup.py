"""Benchmark how long each ``ecgd`` command takes, whole process, against ``python -c pass``.

Issues 12 and 16 ask that ``ecgd --help``, ``check``, ``decrypt`` and ``patient`` answer
within 0.3 s on the development machine. Each command runs as a user runs it (the
``ecgd`` console script beside this interpreter, a fresh process each time) on a small
installation made in a temporary folder: the reference model, keys, a config, one sealed
report. Commands alternate round by round, so that a burst of load on this shared
machine hits all of them alike; the median and the slowest of ``--rounds`` runs are
printed, with the interpreter's own start (``python -c pass``, measured in the same
rounds) as the baseline. Wall time is what a user waits; on a loaded machine it is mostly
waiting for a core, so the CPU time the process used (user + system, from wait4) is
printed too: it barely depends on the load. Usage:
    python tools/bench_startup.py [--rounds 15] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from ecgd.model.build import build_reference  # noqa: E402
from ecgd.security.keys import load_recipients, load_signing_key  # noqa: E402
from ecgd.security.seal import seal_report, write_durable  # noqa: E402
from test_daemon import Appliance  # noqa: E402

TARGET_S = 0.3
SAMPLE = REPO / "ecgd" / "samples" / "ludb" / "1.hea"


def _ecgd() -> List[str]:
    """The console script installed beside this interpreter, else ``python -m ecgd``."""
    script = Path(sys.executable).parent / "ecgd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ecgd"]


def _installation(root: Path) -> Tuple[Path, Path, Path, Path]:
    """(config, manifest, station identity, sealed report) of a local installation in
    ``root`` (the tests' Appliance: config, keys, folders) with the reference model; the
    appliance's signing key is enrolled in ``root/appliance``."""
    manifest = build_reference(root / "models")
    appliance = Appliance(root, manifest)
    report_id = "0b6a3c1e-4f5d-5a6b-8c7d-9e0f1a2b3c4d"
    sealed = seal_report({"report_id": report_id}, load_recipients([appliance.keys["public"]]),
                         load_signing_key(appliance.signing_keys["private"]))
    report = write_durable(root, f"{report_id}.ecgr", sealed)
    return appliance.config, manifest, appliance.keys["private"], report


def _commands(config: Path, manifest: Path, identity: Path,
              report: Path) -> Dict[str, Sequence[str]]:
    ecgd = _ecgd()
    return {
        "baseline: python -c pass": [sys.executable, "-c", "pass"],
        "ecgd --help": [*ecgd, "--help"],
        "ecgd check": [*ecgd, "check", "--config", str(config)],
        "ecgd decrypt (1 report)": [*ecgd, "decrypt", "--key", str(identity), "--appliances",
                                    str(report.parent / "appliance"), str(report)],
        "ecgd patient show": [*ecgd, "patient", "--config", str(config), "show"],
        "ecgd status (not running)": [*ecgd, "status", "--config", str(config)],
        "ecgd check --full": [*ecgd, "check", "--full", "--config", str(config)],
        "ecgd analyze (1 record)": [*ecgd, "analyze", "--model", str(manifest), str(SAMPLE)],
    }


def _run_s(argv: Sequence[str]) -> Tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv``, from fork to reaped."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - start
    process.returncode = 0  # reaped by wait4; keep Popen from waiting again
    return wall_s, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--markdown", type=Path, help="also write the table to FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecgd-bench-startup-") as tmp:
        commands = _commands(*_installation(Path(tmp)))
        for argv in commands.values():  # warm the page cache (model file, site-packages)
            _run_s(argv)
        times: Dict[str, List[Tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                times[name].append(_run_s(argv))
    baseline = times["baseline: python -c pass"]
    baseline_s = statistics.median(wall for wall, _ in baseline)
    baseline_cpu_s = statistics.median(cpu for _, cpu in baseline)
    lines = ["| command | wall, median | wall, slowest | CPU, median | wall minus "
             "`python -c pass` | CPU minus `python -c pass` | target (wall) | met |",
             "|---|---|---|---|---|---|---|---|"]
    targeted = ("ecgd --help", "ecgd check", "ecgd decrypt (1 report)", "ecgd patient show")
    for name, samples in times.items():
        median_s = statistics.median(wall for wall, _ in samples)
        cpu_s = statistics.median(cpu for _, cpu in samples)
        target = f"<= {TARGET_S:g} s" if name in targeted else ""
        met = ("yes" if median_s <= TARGET_S else "NO") if target else ""
        lines.append(f"| {name} | {median_s:.3f} s | {max(wall for wall, _ in samples):.3f} s"
                     f" | {cpu_s:.3f} s | {median_s - baseline_s:+.3f} s | "
                     f"{cpu_s - baseline_cpu_s:+.3f} s | {target} | {met} |")
    table = "\n".join(lines)
    print(table)
    print(f"\n{args.rounds} rounds; load average {os.getloadavg()[0]:.1f} at the end; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
