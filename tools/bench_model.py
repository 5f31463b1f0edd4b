#!/usr/bin/env python3
"""Benchmark the full ECGFounder Net1D: FP32 Conv2d graph (shipped), FP32 Conv1d graph,
static QDQ INT8 (shipped by ``ecgd model quantize``), dynamic INT8 (not shipped), and
PyTorch eager when torch is installed.

Each configuration runs in its own subprocess (so peak RSS is its own) at 1 and 2 threads:
session load time, median and p95 latency of one 10-s window. Printed as a table and as
ratios against the FP32 Conv1d graph at 1 thread measured in the same run: absolute
numbers on a shared machine are noise, ratios are the finding.

    python3 tools/bench_model.py [--runs 30] [--calibration ../shared/data/cinc2021]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _windows(calibration: Path, count: int) -> np.ndarray:
    """Real preprocessed windows when the folder is there, seeded noise otherwise."""
    if calibration.is_dir():
        from ecgd.signal.preprocess import PROFILE_DEFAULTS
        from ecgd.signal.preprocess import make_preprocessor
        from ecgd.records.reader import read_recording

        pre = make_preprocessor("ecgfounder", PROFILE_DEFAULTS["ecgfounder"], 500.0, 50)
        out = [read_recording(h, 1 << 26).samples_mv[:, :5000]
               for h in sorted(calibration.glob("*.hea"))[:count]]
        return pre(np.stack(out))
    return np.random.default_rng(0).standard_normal((count, 12, 5000)).astype(np.float32)


def prepare(folder: Path, calibration: Path) -> dict:
    """Write every ONNX variant into ``folder``; returns {config name: path}."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from ecgd.model.build import build_reference
    from ecgd.model.net1d import ECGFOUNDER_12LEAD
    from ecgd.model.onnx_graph import build_graph, random_weights
    from ecgd.model.quantize import _WindowReader

    start = time.perf_counter()
    manifest = build_reference(folder, seed=0)
    build_s = time.perf_counter() - start
    conv2d = manifest.with_suffix(".onnx")
    conv1d = folder / "conv1d.onnx"
    conv1d.write_bytes(build_graph(ECGFOUNDER_12LEAD, random_weights(ECGFOUNDER_12LEAD, 0),
                                   layout="conv1d").SerializeToString())
    windows = _windows(calibration, 16)
    quantize_static(str(conv2d), str(folder / "qdq.onnx"), _WindowReader(windows),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    quantize_dynamic(str(conv2d), str(folder / "dynamic.onnx"), weight_type=QuantType.QInt8)
    np.save(folder / "window.npy", windows[:1])
    return {"build_s": build_s, "configs": {
        "fp32 conv1d graph": str(conv1d),
        "fp32 conv2d graph (shipped)": str(conv2d),
        "int8 static QDQ (shipped)": str(folder / "qdq.onnx"),
        "int8 dynamic (not shipped)": str(folder / "dynamic.onnx"),
    }}


def measure_one(path: str, window_path: str, precision: str, runs: int) -> dict:
    """In this (fresh) process: load + latency at 1 and 2 threads, then peak RSS; ONNX
    graphs run with the session options ecgd uses for ``precision``."""
    window = np.load(window_path)
    results = {}
    for threads in (1, 2):
        if path == "torch":
            import torch

            sys.path.insert(0, str(REPO / "tests"))
            from torch_net1d import Net1D

            torch.set_num_threads(threads)
            start = time.perf_counter()
            model = Net1D().eval()
            load_s = time.perf_counter() - start
            x = torch.from_numpy(window)

            def infer() -> None:
                with torch.no_grad():
                    model(x)
        else:
            from ecgd.model.session import start_session

            start = time.perf_counter()
            session = start_session(path, threads, precision)
            load_s = time.perf_counter() - start

            def infer() -> None:
                session.run(None, {"ecg": window})
        infer()
        infer()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            infer()
            times.append((time.perf_counter() - start) * 1000.0)
        times.sort()
        results[threads] = {"load_s": load_s, "median_ms": statistics.median(times),
                            "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))]}
    results["peak_rss_mb"] = _peak_rss_mb()
    return results


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across the
    parent's fork + exec, which would charge the parent's memory to every child."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calibration", type=Path,
                        default=REPO.parent / "shared" / "data" / "cinc2021")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "WINDOW", "PRECISION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one, runs=args.runs)))
        return 0

    with tempfile.TemporaryDirectory(prefix="ecgd-bench-") as tmp:
        prepared = prepare(Path(tmp), args.calibration)
        configs = dict(prepared["configs"])
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            configs["pytorch eager fp32"] = "torch"
        rows = {}
        for name, path in configs.items():
            proc = subprocess.run([sys.executable, __file__, "--runs", str(args.runs),
                                   "--one", path, str(Path(tmp) / "window.npy"),
                                   "int8" if name.startswith("int8") else "fp32"],
                                  capture_output=True, text=True, check=True)
            rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"full Net1D built (numpy + onnx) in {prepared['build_s']:.2f} s; "
          f"batch 1, {args.runs} runs per cell")
    header = (f"{'configuration':30s} {'1 thr med':>9s} {'p95':>7s} {'2 thr med':>9s} "
              f"{'p95':>7s} {'load s':>7s} {'RSS MB':>7s}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:30s} {r['1']['median_ms']:9.1f} {r['1']['p95_ms']:7.1f} "
              f"{r['2']['median_ms']:9.1f} {r['2']['p95_ms']:7.1f} {r['1']['load_s']:7.2f} "
              f"{r['peak_rss_mb']:7.0f}")
    base = rows["fp32 conv1d graph"]["1"]["median_ms"]
    print(f"\nspeed-up vs fp32 conv1d graph at 1 thread ({base:.1f} ms), same run:")
    for name, r in rows.items():
        print(f"{name:30s} 1 thread x{base / r['1']['median_ms']:.2f}   "
              f"2 threads x{base / r['2']['median_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
