"""``ecgd batch``: reprocess an archive of recordings into queryable tables, exactly once."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from ecgd.config import Config, load_config
from ecgd.errors import BatchError

DESCRIPTION = """Analyse every recording under the SOURCE folders with the same QC,
preprocessing and model as the appliance, and write one row per 10-second window (the
report's fields, the probabilities of all labels as columns) to DIR/run-ID/windows/, and one
row per input that could not be analysed (with the reason `ecgd analyze` gives) to
DIR/run-ID/errors/. Killed at any point and started again with the same arguments, it
finishes the rest: each input is committed exactly once, keyed by its content digest.
Exit code 0: every input has window rows; 1: some are in the errors table; 2: refused."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive integer")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                        help="folder of recordings (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="results folder: new, empty, or this batch's own")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet",
                        help="table format (parquet needs the archive extra; default parquet)")
    parser.add_argument("--model", type=Path, metavar="MANIFEST",
                        help="model manifest; default: [model] manifest of the config")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="ecgd TOML config (QC, windows, mains, input limit, pseudonym "
                             "key); default: built-in defaults, no pseudonym key")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: worker processes on this machine (default); ray: a "
                             "Ray Data pipeline on the cluster at --address (cluster extra)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address (e.g. auto, HOST:6379, ray://HOST:10001); "
                             "default: RAY_ADDRESS, else a Ray instance started here")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="model sessions: local worker processes (default: one per "
                             "usable core) or Ray actors (default: the cluster's CPUs / "
                             "--threads)")
    parser.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                        help="ONNX Runtime threads per session (default 1)")
    parser.add_argument("--batch", type=_positive_int, default=8, metavar="N",
                        help="windows per inference call (default 8)")
    parser.add_argument("--shard-windows", type=_positive_int, default=4096, metavar="N",
                        help="rows per committed shard (default 4096; a shard is also "
                             "committed after 30 s of work)")
    parser.add_argument("--new-run", action="store_true",
                        help="the model or config changed: start a new run beside the old "
                             "one in DIR (its results are kept)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ecgd.batch.local import LocalEngine, peak_rss_mb
    from ecgd.batch.progress import Progress
    from ecgd.batch.run import Committer, describe_run, open_run, run_identity
    from ecgd.batch.table import require_format
    from ecgd.batch.work import WorkSettings
    from ecgd.commands.analyze import configured_pseudonym_key
    from ecgd.logs import configure_logging, get_logger
    from ecgd.model.session import VerifiedModel
    from ecgd.records.companions import find_recordings

    if args.address is not None and args.engine != "ray":
        raise BatchError("--address is for --engine ray")
    configure_logging("auto", stream=sys.stderr)
    log = get_logger(component="batch")
    sources = [_source_folder(path) for path in args.sources]
    require_format(args.format)
    config = load_config(args.config) if args.config else Config()
    settings = WorkSettings(config.window, config.qc, config.measurements,
                            config.preprocess.mains_hz,
                            config.limits.max_input_bytes, config.limits.max_input_samples,
                            args.batch,
                            configured_pseudonym_key(config, args.config is not None))
    verified = VerifiedModel.verify(args.model or config.model.manifest)
    manifest = verified.manifest
    settings.analyzer(None, manifest)  # refuses a window/model mismatch before any work
    run_folder = open_run(args.out, run_identity(sources, args.format, manifest, settings),
                          manifest.labels, args.new_run)
    try:
        committed = run_folder.committed_keys()
        log.info("batch_started", run=str(run_folder.path), engine=args.engine,
                 committed_before=len(committed))
        committer = Committer(run_folder, args.shard_windows)
        progress = Progress(sys.stderr, log)
        exclude = [args.out]
        try:
            if args.engine == "ray":
                from ecgd.batch.ray_engine import RayEngine

                stats: Any = RayEngine(verified, settings, committed, args.address,
                                       args.workers, args.threads).run(
                    find_recordings(sources, exclude), committer, progress)
            else:
                workers = args.workers or len(os.sched_getaffinity(0))
                stats = LocalEngine(verified, settings, committed, workers, args.threads).run(
                    find_recordings(sources, exclude), find_recordings(sources, exclude),
                    committer, progress)
        except KeyboardInterrupt:
            committer.commit()  # whatever finished is kept; the rest waits for the next start
            raise
        progress.update(committer.counts, force=True)
        elapsed_s = progress.finish()
        _summarise(log, committer, stats, elapsed_s, peak_rss_mb())
        print(f"ecgd batch: {describe_run(run_folder)}", file=sys.stderr)
        _, _, error_rows = run_folder.ledger.totals()
    finally:
        run_folder.close()
    return 1 if error_rows else 0


def _source_folder(path: Path) -> Path:
    if not path.is_dir():
        raise BatchError(f"{path}: not a folder (SOURCE must be a folder of recordings)")
    return path.resolve()


def _summarise(log: Any, committer: Any, stats: Any, elapsed_s: float,
               coordinator_rss_mb: float) -> None:
    counts = committer.counts
    rss = stats.worker_peak_rss_mb
    log.info("batch_finished", **dataclasses.asdict(counts), elapsed_s=round(elapsed_s, 2),
             windows_per_s=round(counts.windows / max(elapsed_s, 1e-9), 2),
             workers=stats.workers, threads=stats.threads, worker_deaths=stats.worker_deaths,
             worker_peak_rss_mb=round(max(rss), 1) if rss else None,
             coordinator_peak_rss_mb=round(coordinator_rss_mb, 1))
    if counts.unpseudonymized:
        print(f"ecgd batch: {counts.unpseudonymized} inputs carry a patient identifier but no "
              f"pseudonym key is configured (--config): their rows carry no pseudonym",
              file=sys.stderr)
