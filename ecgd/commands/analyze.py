"""``ecgd analyze``: interpret recording files, one JSON report per window on stdout."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from ecgd.config import Config, load_config
from ecgd.errors import ModelError, RecordError
from ecgd.model.session import ModelSession
from ecgd.pipeline import Analyzer, file_source
from ecgd.progress import ProgressLine
from ecgd.security.pseudonym import load_pseudonym_key, pseudonymize
from ecgd.records.companions import content_sha256, recording_files
from ecgd.records.reader import read_recording
from ecgd.report import dumps_report

DESCRIPTION = """Interpret ECG recording files and print one JSON report per 10-second window,
one per line (JSON Lines), on stdout. Formats: WFDB (.hea with .dat/.mat), CSV, NumPy .npz,
DICOM 12-lead waveform, HL7 aECG, GE MUSE, GE CardioSoft and Philips XML, EDF.
A file that cannot be read gets one line on stderr (its path and the reason) and the exit
code is 1; the other files are still analyzed. On a terminal, stderr also shows the files
and windows done and the rate."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, metavar="MANIFEST",
                        help="model manifest (NAME.json); default: [model] manifest of the config")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="ecgd TOML config (thresholds, mains, window stride, threads, "
                             "pseudonym key); default: built-in defaults, no pseudonym key")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.set_defaults(handler=run)


def configured_pseudonym_key(config: Config, explicit_config: bool) -> Optional[bytes]:
    """The configured key; without a config file there is none (pseudonyms are then null)."""
    if not explicit_config:
        return None
    return load_pseudonym_key(config.privacy)


def _about(path: Path, exc: RecordError) -> str:
    """The error as one line naming ``path`` as the user gave it (readers name the file by
    its base name, which is all a quarantined spool input may show)."""
    reason = str(exc)
    if reason.startswith(f"{path.name}: "):
        reason = reason[len(path.name) + 2:]
    return f"ecgd: {path}: {reason}"


def _open_analyzer(config: Config, manifest_path: Path) -> Analyzer:
    try:
        session = ModelSession.open(manifest_path, threads=config.model.threads)
    except ModelError as exc:
        raise ModelError(f"{exc} (use --model to choose another)") from exc
    return Analyzer(session, config.window, config.qc, config.preprocess.mains_hz,
                    config.model.batch_max, measurement=config.measurements,
                    keep_waveform=config.reports.waveform)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else Config()
    key = configured_pseudonym_key(config, args.config is not None)
    analyzer = _open_analyzer(config, args.model or config.model.manifest)
    progress = ProgressLine(sys.stderr, total_files=len(args.files))
    status = 0
    for path in args.files:
        t0 = time.perf_counter()
        try:
            recording = read_recording(path, config.limits.max_input_bytes,
                                       config.limits.max_input_samples)
            digest = content_sha256(recording_files(path))
        except RecordError as exc:
            progress.message(_about(path, exc))
            progress.advance(files=1)
            status = 1
            continue
        read_ms = (time.perf_counter() - t0) * 1000.0
        pseudonym = None
        if recording.patient_id:
            if key is not None:
                pseudonym = pseudonymize(recording.patient_id, key)
            else:
                progress.message(f"ecgd: warning: {path}: carries a patient identifier, but "
                                 f"no pseudonym key is configured (--config): its reports "
                                 f"carry no pseudonym")
        source = file_source(path.name, recording.format, digest)
        reports = analyzer.analyze(recording, source, pseudonym, read_ms)
        for report in reports:
            sys.stdout.write(dumps_report(report) + "\n")
        sys.stdout.flush()
        progress.advance(files=1, windows=len(reports))
    progress.finish()
    return status
