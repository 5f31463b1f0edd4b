"""``ecgd analyze``: interpret recording files, one JSON report per window on stdout."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from ecgd.config import Config, load_config
from ecgd.errors import RecordError
from ecgd.model.session import ModelSession
from ecgd.pipeline import Analyzer, SourceInfo
from ecgd.security.pseudonym import load_pseudonym_key, pseudonymize
from ecgd.records.companions import content_sha256, recording_files
from ecgd.records.reader import read_recording
from ecgd.report import dumps_report

DESCRIPTION = """Interpret ECG recording files and print one JSON report per 10-second window,
one per line (JSON Lines), on stdout. Formats: WFDB (.hea with .dat/.mat), CSV, NumPy .npz,
DICOM 12-lead waveform, HL7 aECG, GE MUSE, GE CardioSoft and Philips XML, EDF.
A file that cannot be read gets one line on stderr (its name and the reason) and the exit
code is 1; the other files are still analyzed."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("analyze", help="interpret recording files (JSON Lines)",
                                   description=DESCRIPTION)
    parser.add_argument("--model", type=Path, metavar="MANIFEST",
                        help="model manifest (NAME.json); default: [model] manifest of the config")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="ecgd TOML config (thresholds, mains, window stride, threads, "
                             "pseudonym key); default: built-in defaults, no pseudonym key")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.set_defaults(handler=run)


def _pseudonym_key(config: Config, explicit_config: bool) -> Optional[bytes]:
    """The configured key; without a config file there is none (pseudonyms are then null)."""
    if not explicit_config:
        return None
    return load_pseudonym_key(config.privacy)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else Config()
    manifest_path = args.model or config.model.manifest
    key = _pseudonym_key(config, args.config is not None)
    session = ModelSession.open(manifest_path, threads=config.model.threads)
    analyzer = Analyzer(session, config.window, config.qc, config.preprocess.mains_hz,
                        config.model.batch_max, keep_waveform=config.reports.waveform)
    status = 0
    warned_no_key = False
    for path in args.files:
        t0 = time.perf_counter()
        try:
            recording = read_recording(path, config.limits.max_input_bytes)
            digest = content_sha256(recording_files(path))
        except RecordError as exc:
            print(f"ecgd: {exc}", file=sys.stderr)
            status = 1
            continue
        read_ms = (time.perf_counter() - t0) * 1000.0
        pseudonym = None
        if recording.patient_id:
            if key is not None:
                pseudonym = pseudonymize(recording.patient_id, key)
            elif not warned_no_key:
                print("ecgd: a file carries a patient identifier but no pseudonym key is "
                      "configured (--config): reports carry no pseudonym", file=sys.stderr)
                warned_no_key = True
        source = SourceInfo(
            fields={"kind": "file", "file": path.name, "format": recording.format,
                    "content_sha256": digest},
            id_seed=f"file:{digest}",
        )
        for report in analyzer.analyze(recording, source, pseudonym, read_ms):
            sys.stdout.write(dumps_report(report) + "\n")
        sys.stdout.flush()
    return status


