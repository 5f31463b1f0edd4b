#!/usr/bin/env python3
"""The archive benchmark (issue 12): ``ecgd batch`` against the model alone and against the
plain per-file script, on the same single-window recordings, in one run.

Measured, all on the cores this process may use, windows per second of wall time:

* inference only: the reference FP32 model in ``workers`` processes of ``threads`` ORT
  threads each, on already preprocessed windows, at each batch size (the yardstick's best
  split and batch is the target's denominator);
* the per-file script: ``tools/baseline.py``'s pipeline, one file after another, as a whole
  process (start, model load, every file);
* ``ecgd batch`` (local engine, Parquet) as a whole process, at each split;
* ``ecgd batch --engine ray`` on a local Ray cluster of ``--ray-nodes`` node processes
  (cluster start-up excluded: a cluster outlives one batch; one small batch runs first,
  unmeasured, so Ray Data's per-cluster helper actors are already up, as on a cluster in
  use).

``--stages N`` first prints where a batch window's CPU time goes, stage by stage, on the first
N inputs in this process (the same calls a worker makes, each timed on its own; core-ms per
window), then exits.

Absolute numbers on a shared machine are noise; the ratios measured in the same run are the
finding. Each ``ecgd batch`` run reports its workers' peak RSS (the ``batch_finished`` line).

Besides windows/s of wall time, every configuration reports the CPU time it cost, in core-ms
per window: every process it ran (``ecgd batch`` and its workers, the script, Ray's own
processes and actors) counted from /proc and the reaped children's rusage. On a machine
others load, wall time measures the share of the cores a run got; CPU time still measures
the work, so the core-ms ratios are the ones to compare between runs. Inference only counts
its steady state (session start excluded), ``ecgd batch`` and the script the whole process.

    python3 tools/bench_batch.py [--count 1000] [--workdir /tmp/ecgd-bench-batch]
        [--plot FILE.png]
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(REPO))

from bench_inputs import (accepted_windows, machine_description, run_ecgd,  # noqa: E402
                          write_inputs)

MODEL_NAME = "ecgfounder-reference"


def _infer_worker(manifest: str, windows: np.ndarray, threads: int, batch: int,
                  start: Any, done: Any) -> None:
    from ecgd.model.session import ModelSession

    session = ModelSession.open(Path(manifest), threads)
    session.predict_logits(windows[:batch])  # the first run allocates
    start.wait()
    began_cpu_s = time.process_time()
    for first in range(0, len(windows), batch):
        session.predict_logits(windows[first:first + batch])
    done.put((len(windows), time.process_time() - began_cpu_s))


def tree_cpu_s() -> float:
    """CPU seconds used so far by every process this one started: the reaped ones (rusage)
    and the live descendants, with what they reaped (Ray's raylet reaps its workers)."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_s = reaped.ru_utime + reaped.ru_stime
    parents: Dict[int, List[int]] = {}
    ticks: Dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        parents.setdefault(int(fields[1]), []).append(pid)
        ticks[pid] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    hz = os.sysconf("SC_CLK_TCK")
    pending = list(parents.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        total_s += ticks.get(pid, 0) / hz
        pending += parents.get(pid, [])
    return total_s


def inference_only(manifest: Path, windows: np.ndarray, workers: int, threads: int,
                   batch: int) -> Dict[str, float]:
    """Windows/s of ``workers`` processes each inferring its share of ``windows``, and
    their CPU core-ms per window."""
    context = multiprocessing.get_context("spawn")
    start, done = context.Barrier(workers + 1), context.Queue()
    shares = np.array_split(windows, workers)
    processes = [context.Process(target=_infer_worker,
                                 args=(str(manifest), share, threads, batch, start, done))
                 for share in shares]
    for process in processes:
        process.start()
    start.wait()
    began = time.perf_counter()
    shares_done = [done.get() for _ in processes]
    elapsed_s = time.perf_counter() - began
    for process in processes:
        process.join()
    total = sum(count for count, _ in shares_done)
    return {"windows_per_s": total / elapsed_s,
            "core_ms_per_window": 1000.0 * sum(cpu_s for _, cpu_s in shares_done) / total}


def preprocessed(inputs: Sequence[Path], manifest: Path) -> np.ndarray:
    """The model inputs ``ecgd batch`` makes of ``inputs`` (its own prepare step)."""
    from ecgd.batch.work import CommittedKeys, PreparedInput, WorkSettings, prepare_input
    from ecgd.config import Config
    from ecgd.model.manifest import load_manifest

    config = Config()
    settings = WorkSettings(config.window, config.qc, config.measurements,
                            config.preprocess.mains_hz,
                            config.limits.max_input_bytes, config.limits.max_input_samples,
                            8, None)
    analyzer = settings.analyzer(None, load_manifest(manifest))
    windows: List[np.ndarray] = []
    for path in inputs:
        outcome = prepare_input(path, analyzer, settings, CommittedKeys([]))
        assert isinstance(outcome, PreparedInput), outcome
        windows += outcome.prepared.model_inputs()
    return np.stack(windows)


def stage_costs(inputs: Sequence[Path], manifest: Path, batch: int) -> Dict[str, float]:
    """Core-ms per window of each stage a batch worker runs, on one thread, in this process:
    keying (content hash), reading, the signal chain's stages one by one, the whole prepare
    step as the worker runs it, batched inference, reports and rows."""
    from ecgd.batch.table import window_row
    from ecgd.batch.work import WorkSettings, input_name_hash, readable_digest
    from ecgd.config import Config
    from ecgd.model.session import ModelSession
    from ecgd.pipeline import file_source
    from ecgd.records.reader import read_recording
    from ecgd.signal.beats import detect_beats
    from ecgd.signal.chain import WindowLayout, cut_window
    from ecgd.signal.quality import assess_window

    config = Config()
    settings = WorkSettings(config.window, config.qc, config.measurements,
                            config.preprocess.mains_hz, config.limits.max_input_bytes,
                            config.limits.max_input_samples, batch, None)
    analyzer = settings.analyzer(ModelSession.open(manifest, 1))
    chain = analyzer.chain
    cpu_s: Dict[str, float] = collections.defaultdict(float)

    def timed(stage: str, call: Any) -> Any:
        began_s = time.process_time()
        result = call()
        cpu_s[stage] += time.process_time() - began_s
        return result

    prepared = []
    for path in inputs:
        name_hash = timed("key (content hash)", lambda: input_name_hash(path, settings))
        digest = timed("key (content hash)",
                       lambda: readable_digest(path, settings.max_input_bytes))
        recording = timed("read", lambda: read_recording(path, settings.max_input_bytes,
                                                         settings.max_input_samples))
        layout = WindowLayout.of(recording, analyzer.manifest.lead_names)
        cut = timed("cut + resample", lambda: cut_window(recording, layout, 0,
                                                        analyzer.window_samples,
                                                        analyzer.manifest.fs_hz))
        beats = timed("beats", lambda: detect_beats(cut.context_mv, cut.fs_hz))
        inside = (beats.r_peaks >= cut.offset) & (beats.r_peaks < cut.offset + cut.n)
        r_peaks = beats.r_peaks[inside] - cut.offset
        model_view = timed("preprocessing", lambda: chain.preprocess(cut.window_mv))
        timed("qc", lambda: assess_window(
            cut.window_mv, cut.fs_hz, cut.names, chain.qc, mains_hz=chain.mains_hz,
            r_peaks=r_peaks, raw_mv=cut.raw_mv, raw_fs_hz=cut.raw_fs_hz, at_rails=cut.at_rails,
            model_view=model_view,
            lead_envelopes=beats.lead_envelopes[:, cut.offset:cut.offset + cut.n]))
        timed("intervals", lambda: chain.measure(cut.window_mv, r_peaks, cut.names, cut.fs_hz))
        prepared.append((name_hash, timed("prepare, as the worker runs it", lambda: (
            analyzer.prepare(recording, file_source(path.name, recording.format,
                                                    digest or ""), None)))))
    for first in range(0, len(prepared), batch):
        group = prepared[first:first + batch]
        inferred = timed("inference", lambda: analyzer.infer_recordings(
            [item for _, item in group]))
        for (name_hash, item), (logits, inference_ms) in zip(group, inferred):
            timed("reports + rows", lambda: [
                window_row(report, name_hash, analyzer.manifest.labels)
                for report in analyzer.finish(item, logits, inference_ms)])
    return {stage: 1000.0 * seconds / len(inputs) for stage, seconds in cpu_s.items()}


def per_file_script(conv1d: Path, labels: Sequence[str], inputs: Path,
                    out: Path) -> Dict[str, float]:
    """Windows/s of the per-file script as a whole process, and its core-ms per window."""
    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
              "from baseline import BaselinePipeline\n"
              "labels = Path(sys.argv[3]).read_text().splitlines()\n"
              "pipeline = BaselinePipeline(Path(sys.argv[2]), labels)\n"
              "out = Path(sys.argv[5]); out.mkdir()\n"
              "for path in sorted(Path(sys.argv[4]).glob('*.npz')):\n"
              "    pipeline.process(path, out)\n")
    label_file = out.parent / "labels.txt"
    label_file.write_text("\n".join(labels) + "\n")
    shutil.rmtree(out, ignore_errors=True)  # a run before this one in the same --workdir
    began, began_cpu_s = time.perf_counter(), tree_cpu_s()
    subprocess.run([sys.executable, "-c", script, str(TOOLS), str(conv1d), str(label_file),
                    str(inputs), str(out)], check=True)
    elapsed_s, cpu_s = time.perf_counter() - began, tree_cpu_s() - began_cpu_s
    windows = len(list(out.iterdir()))
    return {"windows_per_s": windows / elapsed_s, "core_ms_per_window": 1000.0 * cpu_s / windows}


def ecgd_batch(inputs: Path, out: Path, manifest: Path, extra: Sequence[str]) -> Dict[str, Any]:
    """One whole ``ecgd batch`` process: windows/s and its ``batch_finished`` line."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "ecgd", "batch", str(inputs), "--out", str(out),
               "--model", str(manifest), *extra]
    began, began_cpu_s = time.perf_counter(), tree_cpu_s()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    elapsed_s, cpu_s = time.perf_counter() - began, tree_cpu_s() - began_cpu_s
    if result.returncode != 0:
        raise SystemExit(f"ecgd batch {' '.join(extra)} failed:\n{result.stderr}")
    finished = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"batch_finished"' in line][-1]
    return {"windows_per_s": finished["windows"] / elapsed_s, "elapsed_s": elapsed_s,
            "core_ms_per_window": 1000.0 * cpu_s / finished["windows"], "finished": finished}


def warm_up_cluster(paths: Sequence[Path], workdir: Path, manifest: Path, address: str) -> None:
    """One small batch first, not measured: a cluster outlives one batch, and the first Ray
    Data job on it starts Ray Data's detached helper actors (stats, usage collection,
    autoscaling coordinator, actor location tracker), which stay for every later job. Cold,
    they cost about 6 core-s here, which would be charged to the measured batch."""
    folder = workdir / "ray-warm-up"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "in").mkdir(parents=True)
    for path in paths:
        shutil.copy(path, folder / "in" / path.name)
    ecgd_batch(folder / "in", folder / "out", manifest,
               ["--engine", "ray", "--address", address, "--batch", "8"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="single-window recordings")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ecgd-bench-batch"))
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--ray-nodes", type=int, nargs="*", default=[1, 2],
                        help="local Ray cluster sizes to run (none: skip Ray)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="windows/s of every configuration against the targets")
    parser.add_argument("--stages", type=int, metavar="N",
                        help="only print each stage's core-ms per window on N inputs")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    splits: List[Tuple[int, int]] = sorted({(cores, 1), (1, cores)})

    models = args.workdir / "models"
    manifest = models / f"{MODEL_NAME}.json"
    if not manifest.exists():
        run_ecgd(["model", "build-reference", "--out", str(models), "--labels",
                  str(args.shared / "ecgfounder" / "tasks.txt"), "--seed", "0"], args.workdir)
    from baseline import write_conv1d_model
    from ecgd.model.manifest import load_manifest

    conv1d = models / "baseline-conv1d.onnx"
    if not conv1d.exists():
        write_conv1d_model(conv1d, seed=0)
    inputs = args.workdir / f"inputs-{args.count}"
    write_inputs(accepted_windows(args.shared), inputs, args.count)
    input_paths = sorted(inputs.glob("*.npz"))
    if args.stages:
        costs = stage_costs(input_paths[:args.stages], manifest, max(args.batches))
        print(f"machine: {json.dumps(machine_description())}; {args.stages} recordings")
        for stage, core_ms in costs.items():
            print(f"{stage:32} {core_ms:8.2f} core-ms per window")
        return 0
    results: Dict[str, Any] = {"machine": machine_description(), "count": args.count}

    windows = preprocessed(input_paths, manifest)
    for workers, threads in splits:
        for batch in args.batches:
            _record(results, f"inference_only {workers}x{threads} batch {batch}",
                    inference_only(manifest, windows, workers, threads, batch))
    _record(results, "per_file_script", per_file_script(
        conv1d, load_manifest(manifest).labels, inputs, args.workdir / "script-out"))
    for workers, threads in splits:
        _record(results, f"ecgd_batch {workers}x{threads}", ecgd_batch(
            inputs, args.workdir / "batch-out", manifest,
            ["--workers", str(workers), "--threads", str(threads), "--batch", "8"]))
    for nodes in args.ray_nodes:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": cores // nodes or 1, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cores // nodes or 1)
        cluster.wait_for_nodes()
        try:
            warm_up_cluster(input_paths[:16], args.workdir, manifest, cluster.address)
            _record(results, f"ecgd_batch ray {nodes} nodes", ecgd_batch(
                inputs, args.workdir / "ray-out", manifest,
                ["--engine", "ray", "--address", cluster.address, "--batch", "8"]))
        finally:
            cluster.shutdown()
    _print(results)
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)
    return 0


def plot(results: Dict[str, Any], path: Path) -> None:
    """Windows/s of every configuration as bars, with issue 12's targets as lines: 0.85 x the
    best inference only, 2.5 x the per-file script, 0.8 x the best local engine (Ray)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: value for name, value in results.items() if name not in ("machine", "count")}
    names = list(runs)[::-1]  # the first configuration on top
    rate = [runs[name]["windows_per_s"] for name in names]
    best_inference = max(runs[k]["windows_per_s"] for k in runs if k.startswith("inference"))
    best_local = max(runs[k]["windows_per_s"] for k in runs
                     if k.startswith("ecgd_batch ") and "ray" not in k)
    colours = ["grey" if name.startswith(("inference", "per_file")) else
               "tab:purple" if "ray" in name else "tab:blue" for name in names]
    figure, ax = plt.subplots(figsize=(9, 3.8))
    ax.barh(names, rate, color=colours)
    for y, value in enumerate(rate):
        ax.text(value + 0.5, y, f"{value:.1f}", va="center", fontsize=8)
    targets = (("0.85 x inference only", 0.85 * best_inference, "tab:red"),
               ("2.5 x per-file script", 2.5 * runs["per_file_script"]["windows_per_s"],
                "tab:orange"),
               ("Ray: 0.8 x local engine", 0.8 * best_local, "tab:purple"))
    for label, value, colour in targets:
        ax.axvline(value, color=colour, linestyle="--", linewidth=1,
                   label=f"{label} ({value:.1f})")
    machine = results["machine"]
    ax.set_xlabel("windows per second (wall time)")
    ax.set_title(f"{results['count']} recordings on {machine['cores']} cores "
                 f"({machine['cpu_model']}), commit {machine['commit']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def _record(results: Dict[str, Any], name: str, value: Any) -> None:
    """Keep a measurement and show it at once (a long run's partial results stay useful)."""
    results[name] = value
    print(f"{name}: {json.dumps(value)}", file=sys.stderr, flush=True)


def _print(results: Dict[str, Any]) -> None:
    runs = {name: value for name, value in results.items() if name not in ("machine", "count")}
    rate = {name: value["windows_per_s"] for name, value in runs.items()}
    cost = {name: value["core_ms_per_window"] for name, value in runs.items()}
    best_inference = max(v for k, v in rate.items() if k.startswith("inference_only"))
    cheapest_inference = min(v for k, v in cost.items() if k.startswith("inference_only"))
    local = [k for k in rate if k.startswith("ecgd_batch ") and "ray" not in k]
    best_local = max(rate[k] for k in local)
    cheapest_local = min(cost[k] for k in local)
    print(f"machine: {json.dumps(results['machine'])}; {results['count']} recordings")
    print(f"{'configuration':32} {'windows/s':>9} {'x infer':>8} {'x script':>9} "
          f"{'x local':>8} {'core-ms/w':>10} {'infer/cost':>10} {'local/cost':>10} "
          f"{'worker peak RSS MB':>19}")
    for name in runs:
        rss = "-"
        if "finished" in runs[name]:
            rss = str(runs[name]["finished"].get("worker_peak_rss_mb"))
        print(f"{name:32} {rate[name]:9.2f} {rate[name] / best_inference:8.2f} "
              f"{rate[name] / rate['per_file_script']:9.2f} {rate[name] / best_local:8.2f} "
              f"{cost[name]:10.1f} {cheapest_inference / cost[name]:10.2f} "
              f"{cheapest_local / cost[name]:10.2f} {rss:>19}")


if __name__ == "__main__":
    sys.exit(main())
