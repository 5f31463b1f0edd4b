"""Long mutation-fuzzing runs of every reader and of what ``ecgd analyze`` does with a file.

    python tools/fuzz_readers.py --cases 10000 [--seed 1] [--model MANIFEST] [--out FILE]

Cases are mutated real recordings of every format (tests/fuzz_harness.py), spread evenly
over the seeds. One worker process (``--jobs`` for more) loads the model once and, per
case, builds the files, reads them (``read_recording``), and for a readable case hashes
it and runs the analyzer as ``ecgd analyze`` does, checking every report for NaN/Inf and
out-of-range values. Per case it records the outcome, the time and the peak RSS (VmHWM,
reset before each case). A case that runs past ``--timeout-s`` is a hang: its worker is
killed and replaced. The contract is: 0 exit-70 outcomes (anything but reports or one
RecordError line), 0 hangs, 0 cases over ``--memory-mb``. Failing recipes go to
``--out`` (JSON lines) to be kept in tests/fuzz_regressions.json.

The summary is printed as a Markdown table; the run exits 1 if the contract was broken.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import select
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import fuzz_harness  # noqa: E402  (tests/ holds the shared fuzz engine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, help="model manifest (default: a reference "
                                                   "model built into a temp folder)")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    parser.add_argument("--memory-mb", type=float, default=1024.0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="failing recipes, one JSON line each")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.data, args.model)
    with tempfile.TemporaryDirectory(prefix="ecgd-fuzz-model-") as model_dir:
        model = args.model or _reference_model(Path(model_dir))
        return _run(args, model)


def _reference_model(folder: Path) -> Path:
    from ecgd.model.build import build_reference

    return build_reference(folder, seed=0)


# --- the parent: recipes out, results in, hangs killed -------------------------------------

class _Worker:
    """One worker process fed one recipe at a time."""

    def __init__(self, data: Path, model: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--data", str(data), "--model", str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.case: Optional[Dict[str, Any]] = None
        self.started_s = 0.0

    def send(self, case: Dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.case = case
        self.started_s = time.monotonic()
        self.process.stdin.write(json.dumps(case["recipe"]) + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _run(args: argparse.Namespace, model: Path) -> int:
    seeds = fuzz_harness.SeedCache(args.data)
    chooser = fuzz_harness.RandomChooser(random.Random(args.seed))
    names = sorted(fuzz_harness.SEEDS)
    pending = collections.deque(
        {"index": i, "seed": names[i % len(names)],
         "recipe": fuzz_harness.mutate(names[i % len(names)], seeds, chooser).to_json()}
        for i in range(args.cases))
    results: List[Dict[str, Any]] = []
    workers = [_Worker(args.data, model) for _ in range(args.jobs)]
    started = time.monotonic()
    progress = 0
    while pending or any(w.case is not None for w in workers):
        for worker in workers:
            if worker.case is None and pending:
                worker.send(pending.popleft())
        busy = [w for w in workers if w.case is not None]
        ready, _, _ = select.select([w.process.stdout for w in busy
                                     if w.process.stdout is not None], [], [], 0.2)
        for worker in busy:
            assert worker.case is not None and worker.process.stdout is not None
            if worker.process.stdout in ready:
                line = worker.process.stdout.readline()
                if line:
                    results.append({**worker.case, **json.loads(line)})
                else:  # the worker died under this case (a segfault, the OOM killer)
                    results.append({**worker.case, "outcome": "crash", "seconds": None,
                                    "peak_rss_mb": None, "detail": "worker process died"})
                    workers[workers.index(worker)] = _replace(worker, args, model)
                    continue
                worker.case = None
            elif time.monotonic() - worker.started_s > args.timeout_s:
                results.append({**worker.case, "outcome": "hang", "seconds": args.timeout_s,
                                "peak_rss_mb": None, "detail": "killed after the timeout"})
                workers[workers.index(worker)] = _replace(worker, args, model)
        if len(results) // 500 > progress:
            progress = len(results) // 500
            print(f"{len(results)} of {args.cases} cases", file=sys.stderr, flush=True)
    for worker in workers:
        worker.kill()
    elapsed_s = time.monotonic() - started
    return _summarize(results, args, elapsed_s)


def _replace(worker: _Worker, args: argparse.Namespace, model: Path) -> _Worker:
    worker.kill()
    return _Worker(args.data, model)


def _summarize(results: List[Dict[str, Any]], args: argparse.Namespace,
               elapsed_s: float) -> int:
    by_seed: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for result in results:
        by_seed[result["seed"]][result["outcome"]] += 1
    times = [r["seconds"] for r in results if r["seconds"] is not None]
    rss = [r["peak_rss_mb"] for r in results if r["peak_rss_mb"] is not None]
    crashes = [r for r in results if r["outcome"] == "crash"]
    hangs = [r for r in results if r["outcome"] == "hang"]
    over_memory = [r for r in results if (r["peak_rss_mb"] or 0) > args.memory_mb]
    print(f"{len(results)} cases in {elapsed_s:.0f} s (seed {args.seed}, {args.jobs} worker(s))")
    print()
    print("| seed | cases | reports | refused (one line) | exit 70 | hangs |")
    print("|---|---|---|---|---|---|")
    for seed in sorted(by_seed):
        counts = by_seed[seed]
        print(f"| {seed} | {sum(counts.values())} | {counts['reports']} | {counts['refused']} "
              f"| {counts['crash']} | {counts['hang']} |")
    print()
    if times:
        print(f"time per case: median {statistics.median(times) * 1000:.0f} ms, "
              f"max {max(times):.2f} s; peak RSS: median {statistics.median(rss):.0f} MB, "
              f"max {max(rss):.0f} MB")
    print(f"exit 70: {len(crashes)}; hangs over {args.timeout_s:g} s: {len(hangs)}; "
          f"over {args.memory_mb:g} MB: {len(over_memory)}")
    failures = crashes + hangs + over_memory
    for failure in failures[:10]:
        print(f"- {failure['outcome']} {failure['seed']}: "
              f"{(failure.get('detail') or '').strip().splitlines()[-1][:160]}")
    if args.out:
        with open(args.out, "w") as out:
            for failure in failures:
                out.write(json.dumps({"outcome": failure["outcome"],
                                      "recipe": failure["recipe"]}) + "\n")
    return 1 if failures else 0


# --- the worker: what `ecgd analyze` does, per recipe --------------------------------------

def _worker(data: Path, model: Path) -> int:
    from ecgd.config import Config
    from ecgd.model.session import ModelSession
    from ecgd.pipeline import Analyzer

    config = Config()
    session = ModelSession.open(model, threads=1)
    analyzer = Analyzer(session, config.window, config.qc, config.preprocess.mains_hz,
                        config.model.batch_max)
    seeds = fuzz_harness.SeedCache(data)
    for line in sys.stdin:
        recipe = fuzz_harness.Recipe.from_json(json.loads(line))
        with tempfile.TemporaryDirectory(prefix="ecgd-fuzz-") as folder:
            path = fuzz_harness.build(recipe, seeds, Path(folder))
            _reset_peak_rss()
            started = time.perf_counter()
            outcome, detail = _analyze(path, analyzer, config)
            seconds = time.perf_counter() - started
        print(json.dumps({"outcome": outcome, "detail": detail, "seconds": seconds,
                          "peak_rss_mb": _peak_rss_mb()}), flush=True)
    return 0


def _analyze(path: Path, analyzer: Any, config: Any) -> "tuple[str, str]":
    """What ``ecgd analyze`` would make of one file: ('reports' | 'refused' | 'crash', why)."""
    from ecgd.errors import RecordError
    from ecgd.pipeline import SourceInfo
    from ecgd.records.companions import content_sha256, recording_files
    from ecgd.records.reader import read_recording
    from ecgd.report import dumps_report

    try:
        try:
            recording = read_recording(path, config.limits.max_input_bytes,
                                       config.limits.max_input_samples)
            digest = content_sha256(recording_files(path))
        except RecordError as exc:
            message = str(exc)
            if "\n" in message or not message.startswith(f"{path.name}: "):
                return "crash", f"refusal is not one line naming the file: {message!r}"
            return "refused", message
        source = SourceInfo(fields={"kind": "file", "file": path.name,
                                    "format": recording.format, "content_sha256": digest},
                            id_seed=f"file:{digest}")
        for report in analyzer.analyze(recording, source, None, 0.0):
            problem = fuzz_harness.report_problems(dumps_report(report))
            if problem:
                return "crash", problem
        return "reports", ""
    except Exception:  # exit 70 in `ecgd analyze`: the contract says never
        return "crash", traceback.format_exc()


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so each case's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.exit(main())
