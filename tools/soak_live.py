#!/usr/bin/env python3
"""A day at the bedside compressed into minutes: memory, file descriptors and disk stay flat.

The real daemon (``python -m ecgd run``, full-size reference Net1D) reads a lossy live stream
(``ecgd simulate --format ecgd-frame --loop --drop-rate 0.01 --garbage-rate 0.01`` at
``--speed`` times real time, ``--hours`` of signal) while a spool input arrives every
``--drop-every-min`` minutes of signal, and retention runs with small limits. Standing in
for the forwarder, this tool marks every sealed report delivered (``mark_delivered``), so
retention deletes delivered reports and done inputs throughout.

Every ``--sample-s`` seconds it records the daemon's RSS, peak RSS, threads and open file
descriptors (/proc/PID), the windows analysed so far, and the bytes held in the reports and
done folders; it prints them as a Markdown table per ``--row-hours`` of signal and, with
``--plot FILE`` and matplotlib, draws RSS and descriptors against hours of signal.

    python tools/soak_live.py [--hours 24] [--speed 120] [--plot soak.png]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from bench_appliance import Appliance  # noqa: E402
from ecgd.report_store import delivered_dir, list_reports, mark_delivered  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
LIVE_RECORD = SHARED_DATA / "cinc2021" / "HR06004.hea"
SPOOL_RECORDS = ("E07501", "E07502", "HR06001", "HR06002", "HR06003")
MIB = 1024 * 1024


def proc_status(pid: int) -> Dict[str, float]:
    """RSS and peak RSS (MiB), threads and open descriptors of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024.0
        elif key == "Threads":
            fields[key] = int(value)
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def drop(appliance: Appliance, record: str, copy: int) -> None:
    """A spool input the way vendors drop them: a hidden name, then a rename (distinct names,
    so that done/ keeps each)."""
    for suffix in (".mat", ".hea"):
        source = SHARED_DATA / "cinc2021" / f"{record}{suffix}"
        text = source.read_bytes()
        if suffix == ".hea":  # the header names its data file: keep them paired
            text = text.replace(record.encode(), f"{record}c{copy}".encode())
        temp = appliance.incoming / f".{record}c{copy}{suffix}.part"
        temp.write_bytes(text)
        os.rename(temp, appliance.incoming / f"{record}c{copy}{suffix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of signal")
    parser.add_argument("--speed", type=float, default=120.0, help="signal pace factor")
    parser.add_argument("--sample-s", type=float, default=10.0, help="wall seconds per sample")
    parser.add_argument("--row-hours", type=float, default=2.0, help="signal hours per row")
    parser.add_argument("--drop-every-min", type=float, default=10.0)
    parser.add_argument("--plot", type=Path, help="PNG of RSS and descriptors (matplotlib)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecgd-soak-"))
    models = root / "models"
    subprocess.run([sys.executable, "-m", "ecgd", "model", "build-reference", "--out",
                    str(models), "--labels", str(SHARED_DATA / "ecgfounder" / "tasks.txt")],
                   check=True, capture_output=True, cwd=str(REPO))
    link = root / "ttyECG"
    appliance = Appliance(root / "appliance", models / "ecgfounder-reference.json", f"""
[retention]
done_max_mib = 4.0
delivered_max_mib = 16.0
interval_s = 5.0
[serial]
port = "{link}"
""")
    simulator = subprocess.Popen(
        [sys.executable, "-m", "ecgd", "simulate", "--pty-link", str(link), "--format",
         "ecgd-frame", "--record", str(LIVE_RECORD), "--loop", "--speed", str(args.speed),
         "--drop-rate", "0.01", "--garbage-rate", "0.01",
         "--disconnect-after", str(args.hours * 3600)],
        stdout=subprocess.DEVNULL, cwd=str(REPO))
    while not link.exists():
        time.sleep(0.05)
    daemon = appliance.start()
    daemon.wait_ready()
    started = time.monotonic()
    samples: List[Dict[str, float]] = []
    drops = log_offset = windows = 0
    live_cut = 0  # live windows the daemon cut (its window index), dropped ones included
    try:
        while simulator.poll() is None:
            time.sleep(args.sample_s)
            with open(daemon.log_path, "rb") as log:
                log.seek(log_offset)
                lines = log.read().split(b"\n")
            log_offset += sum(len(line) + 1 for line in lines[:-1])  # whole lines only
            for line in lines[:-1]:
                if b"window_analyzed" in line:
                    event = json.loads(line)
                    windows += 1
                    if event["source"] == "serial":
                        live_cut = max(live_cut, event["window"] + 1)
            signal_h = live_cut * 10 / 3600
            while drops < signal_h * 60 / args.drop_every_min:
                drop(appliance, SPOOL_RECORDS[drops % len(SPOOL_RECORDS)], drops)
                drops += 1
            mark_delivered(list_reports(appliance.reports), appliance.reports)
            samples.append({"signal_h": signal_h, "windows": windows, "drops": drops,
                            "reports_mib": folder_bytes(appliance.reports) / MIB,
                            "done_mib": folder_bytes(appliance.done) / MIB,
                            **proc_status(daemon.process.pid)})
    finally:
        exit_code = daemon.stop()
        simulator.kill()
    failed = len(os.listdir(appliance.failed)) if appliance.failed.exists() else 0
    events = [json.loads(line) for line in daemon.log_path.read_text().splitlines()
              if line.startswith("{")]
    kinds = collections.Counter(e["event"] for e in events)
    by_source = collections.Counter(e["source"] for e in events
                                    if e["event"] == "window_analyzed")
    print(f"{args.hours:g} h of signal at {args.speed:g}x in "
          f"{(time.monotonic() - started) / 60:.1f} min; daemon exit {exit_code}\n"
          f"- live windows: the signal holds {int(args.hours * 360)}; the daemon cut "
          f"{live_cut} (the rest lost to link faults) and analysed {by_source['serial']} "
          f"(the rest dropped by the live queue: inference behind the {args.speed:g}x "
          f"stream)\n"
          f"- spool inputs: {drops} dropped, {by_source['file']} analysed, {failed} failed\n"
          f"- log lines: {len(events)} ({kinds['link_degraded']} link_degraded, "
          f"{kinds['link_faults']} link_faults, {kinds['retention_deleted']} retention_deleted)"
          f"\n- kept at the end: {len(list_reports(delivered_dir(appliance.reports)))} "
          f"delivered reports, {len(os.listdir(appliance.done))} done files\n")
    print("| hours of signal | windows | RSS MiB | peak RSS MiB | threads | open fds | "
          "reports MiB | done MiB |")
    print("|---|---|---|---|---|---|---|---|")
    next_row_h = 0.0
    for sample in samples:
        if sample["signal_h"] >= next_row_h or sample is samples[-1]:
            print(f"| {sample['signal_h']:.1f} | {sample['windows']:.0f} | "
                  f"{sample['VmRSS']:.0f} | {sample['VmHWM']:.0f} | {sample['Threads']:.0f} | "
                  f"{sample['fds']:.0f} | {sample['reports_mib']:.1f} | "
                  f"{sample['done_mib']:.1f} |")
            next_row_h += args.row_hours
    later = [sample for sample in samples if sample["signal_h"] >= args.hours / 4]
    if later:
        def spread(key: str) -> str:
            return (f"{min(sample[key] for sample in later):.0f}-"
                    f"{max(sample[key] for sample in later):.0f}")

        print(f"\nafter the first quarter of the signal: RSS {spread('VmRSS')} MiB, open fds "
              f"{spread('fds')}, threads {spread('Threads')}")
    if args.plot:
        plot(samples, args.plot)
    shutil.rmtree(root, ignore_errors=True)


def plot(samples: List[Dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [s["signal_h"] for s in samples]
    figure, (rss_axis, fd_axis) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    rss_axis.plot(hours, [s["VmRSS"] for s in samples], label="RSS")
    rss_axis.plot(hours, [s["VmHWM"] for s in samples], label="peak RSS", linestyle="--")
    rss_axis.set_ylabel("MiB")
    rss_axis.set_ylim(bottom=0)
    rss_axis.legend()
    fd_axis.plot(hours, [s["fds"] for s in samples], label="open fds")
    fd_axis.plot(hours, [s["Threads"] for s in samples], label="threads")
    fd_axis.set_ylim(bottom=0)
    fd_axis.set_xlabel("hours of signal")
    fd_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
