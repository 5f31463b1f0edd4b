"""The installed daemon end to end, as the Pi runs it: READY=1, spool drops sealed, SIGTERM drain.

Run by tools/arm64_check.sh inside the arm64 root filesystem, with the Python of the venv
that the README's Pi install made (so ``ecgd`` is the installed package, not the checkout).
It drives only the CLI: ``ecgd keygen``, ``ecgd run`` under a real NOTIFY_SOCKET (the test
suite's datagram listener), ``ecgd decrypt``.

1. Start ``ecgd run``; wait for READY=1.
2. If given, drop ``--idle-drop`` (renamed into ``incoming/``); wait until it is in ``done/``.
3. Drop ``--drain-drop``, wait until the daemon has claimed it (no file of it left in
   ``incoming/``), send SIGTERM at once: the daemon must send STOPPING=1, finish that
   input into ``done/``, seal its reports and exit 0.
4. Decrypt every report with the private key: the report ids must be those that
   ``ecgd analyze`` gave for the same files on x86 (``--expected``, JSON Lines), with the
   same QC verdicts.

Timeouts are generous because emulation is slow; nothing here is timed as a measure.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from daemon_harness import NotifySocket, wait_for  # noqa: E402

from ecgd.report_store import list_reports  # noqa: E402

CONFIG_TEMPLATE = """\
[model]
manifest = "{manifest}"
threads = 2

[limits]
# Emulation runs 10-100x slower than a Pi: the default budget (60 s to prepare one input)
# would fail a 3-window recording for being slow under emulation, not for being hostile.
input_time_budget_s = 3600.0

[spool]
dir = "spool/incoming"
processing_dir = "spool/processing"
done_dir = "spool/done"
failed_dir = "spool/failed"
settle_s = 0.5

[reports]
dir = "reports"
recipients = ["keys/reading-station.pub"]
signing_key_file = "appliance-keys/appliance-signing.key"

[privacy]
pseudonym_key_file = "keys/pseudonym.key"
patient_file = "patient/current"

[logging]
format = "json"
"""


def drop(recording_files: Sequence[Path], incoming: Path) -> None:
    """Copy under hidden names, then rename into ``incoming/`` (the vendor rule)."""
    for source in recording_files:
        hidden = incoming / f".{source.name}.part"
        shutil.copyfile(source, hidden)
        os.rename(hidden, incoming / source.name)


def spool_state(spool: Path, recording_files: Sequence[Path]) -> str:
    """Where each file of a recording is now, and the reason of any error file (the check's
    own recordings: their names may be printed)."""
    places = [f"{path.relative_to(spool)}" for source in recording_files
              for path in sorted(spool.rglob(source.name))]
    reasons = [json.loads(path.read_text(encoding="utf-8"))["reason"]
               for path in sorted((spool / "failed").rglob("*.error.json"))]
    return (f"its files: {', '.join(places) or 'none in the spool'}"
            + "".join(f"; failed: {reason}" for reason in reasons))


def run_cli(ecgd: List[str], args: List[str], cwd: Path) -> str:
    completed = subprocess.run([*ecgd, *args], cwd=cwd, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"ecgd {args[0]} exited {completed.returncode}: {completed.stderr.strip()}")
    return completed.stdout


def expected_verdicts(expected_path: Path) -> Dict[str, str]:
    """report id -> QC status, from the x86 ``ecgd analyze`` run of the dropped files."""
    verdicts = {}
    for line in expected_path.read_text(encoding="utf-8").splitlines():
        report = json.loads(line)
        verdicts[report["report_id"]] = report["qc"]["status"]
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecgd", required=True, type=shlex.split,
                        help="the installed ecgd command (e.g. 'VENV/bin/python -m ecgd')")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--idle-drop", type=Path, nargs="+", default=[],
                        help="files of a recording dropped and finished while idle")
    parser.add_argument("--drain-drop", required=True, type=Path, nargs="+",
                        help="files of the recording in hand at SIGTERM")
    parser.add_argument("--expected", required=True, type=Path,
                        help="x86 `ecgd analyze` reports of the dropped recordings (JSON Lines)")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ecgd-roundtrip-"))
    for folder in ("spool/incoming", "spool/processing", "spool/done", "spool/failed",
                   "reports", "patient"):
        (workdir / folder).mkdir(parents=True)
    run_cli(args.ecgd, ["keygen", "--out", "keys"], workdir)
    # The appliance's signing key; its public half is enrolled at the "station" (keys/enrolled).
    run_cli(args.ecgd, ["keygen", "--appliance", "--out", "appliance-keys"], workdir)
    (workdir / "keys/enrolled").mkdir()
    shutil.copy(workdir / "appliance-keys/appliance-signing.pub",
                workdir / "keys/enrolled/bedside.pub")
    config = workdir / "ecgd.toml"
    config.write_text(CONFIG_TEMPLATE.format(manifest=args.manifest.resolve()), encoding="utf-8")

    notify = NotifySocket(workdir / "notify.sock")
    log_path = workdir / "daemon.log"
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen([*args.ecgd, "run", "--config", str(config)], cwd=workdir,
                                  stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: notify.has("READY", "1") or daemon.poll() is not None,
                 args.timeout_s, "READY=1")
        if not notify.has("READY", "1"):
            raise SystemExit(f"daemon exited {daemon.returncode} before READY=1:\n"
                             + log_path.read_text(errors="replace"))
        print("daemon: READY=1")
        done = workdir / "spool/done"
        incoming = workdir / "spool/incoming"
        if args.idle_drop:
            drop(args.idle_drop, incoming)
            wait_for(lambda: all((done / f.name).exists() for f in args.idle_drop),
                     args.timeout_s, "the idle drop in done/")
            print(f"daemon: idle drop sealed, {len(list_reports(workdir / 'reports'))} reports")

        drop(args.drain_drop, incoming)
        # Claimed = no file of it left in incoming/ (the claim moves them all, in the
        # daemon's prepare thread, which finishes a claim it has begun even after SIGTERM).
        # Not "processing/ is not empty": the idle drop's claim folder is removed only
        # after its files reached done/, so that would also hold before this one is taken.
        wait_for(lambda: not any((incoming / f.name).exists() for f in args.drain_drop),
                 args.timeout_s, "the drain drop claimed")
        in_hand = not all((done / f.name).exists() for f in args.drain_drop)
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(args.timeout_s)
        if exit_code != 0 or not notify.has("STOPPING", "1"):
            raise SystemExit(f"daemon after SIGTERM: exit {exit_code}, STOPPING=1 "
                             f"{notify.has('STOPPING', '1')}:\n" + log_path.read_text(errors="replace"))
        processing = workdir / "spool/processing"
        if not all((done / f.name).exists() for f in args.drain_drop) or any(processing.iterdir()):
            raise SystemExit("SIGTERM: the input in hand was not finished into done/; "
                             + spool_state(workdir / "spool", args.drain_drop)
                             + "\ndaemon log:\n" + log_path.read_text(errors="replace"))
        print(f"daemon: SIGTERM -> STOPPING=1, exit 0; input in hand at SIGTERM: "
              f"{'yes, drained' if in_hand else 'no (finished before the signal)'}")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()

    sealed = list_reports(workdir / "reports")
    decrypted = run_cli(args.ecgd, ["decrypt", "--key", "keys/reading-station.key",
                                    "--appliances", "keys/enrolled", *map(str, sealed)], workdir)
    reports = [line["report"] for line in map(json.loads, decrypted.splitlines())]
    verdicts = {r["report_id"]: r["qc"]["status"] for r in reports}
    expected = expected_verdicts(args.expected)
    if verdicts != expected:
        for report_id in sorted(set(verdicts) | set(expected)):
            if verdicts.get(report_id) != expected.get(report_id):
                print(f"daemon DIFFERENCE {report_id}: x86 analyze {expected.get(report_id)}, "
                      f"arm64 daemon {verdicts.get(report_id)}")
        return 1
    print(f"daemon: {len(sealed)} reports sealed, signature-verified, decrypted, ids and QC verdicts equal to x86 "
          f"ecgd analyze")
    shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
