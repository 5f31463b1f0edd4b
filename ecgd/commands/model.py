"""``ecgd model``: build, convert, verify and quantize ECGFounder models."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List

import numpy as np

from ecgd.config import Config, load_config
from ecgd.errors import ModelError, RecordError

DESCRIPTION = """Manage the ONNX model ecgd runs. A model is NAME.onnx plus its manifest
NAME.json (architecture, lead order, labels, preprocessing, sha256 of every file).
PyTorch is never needed: checkpoints are read without executing their pickle code."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="build, convert, verify or quantize a model",
                                   description=DESCRIPTION)
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION")
    commands.required = True

    build = commands.add_parser(
        "build-reference", help="build the Net1D with seeded random weights (untrained)",
        description="Build ECGFounder's exact architecture with seeded random weights "
                    "(manifest says trained: false). For tests, benchmarks and a first run "
                    "before the real checkpoint is supplied: its findings are meaningless.")
    build.add_argument("--out", type=Path, required=True, metavar="DIR")
    build.add_argument("--labels", type=Path, metavar="FILE",
                       help="150-line labels file (default: placeholder labels)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--name", default="ecgfounder-reference")
    build.set_defaults(handler=run_build_reference)

    convert = commands.add_parser(
        "convert", help="convert 12_lead_ECGFounder.pth (no PyTorch needed)",
        description="Convert a PyTorch Net1D checkpoint (upstream layout, optional "
                    "'module.' prefix) into NAME.onnx + NAME.json. The checkpoint's pickle "
                    "is never executed; unused batch-norm entries are reported and ignored.")
    convert.add_argument("--checkpoint", type=Path, required=True, metavar="PTH")
    convert.add_argument("--labels", type=Path, required=True, metavar="TXT",
                         help="the model's labels, exactly 150 lines in output order "
                              "(ECGFounder: tasks.txt)")
    convert.add_argument("--out", type=Path, required=True, metavar="DIR")
    convert.add_argument("--name", default="ecgfounder")
    convert.set_defaults(handler=run_convert)

    verify = commands.add_parser(
        "verify", help="re-hash a model, check its graph, optionally run it on files",
        description="Re-hash everything the manifest pins, check the graph's input/output "
                    "shapes, and run inference on the given recordings. Exit 0 when all "
                    "checks pass, 1 when a file could not be analyzed, 65 for a bad model.")
    verify.add_argument("manifest", type=Path, metavar="MANIFEST")
    verify.add_argument("files", nargs="*", type=Path, metavar="FILE")
    verify.add_argument("--config", type=Path, metavar="FILE",
                        help="ecgd TOML config for mains_hz, threads and input limits")
    verify.set_defaults(handler=run_verify)

    quantize = commands.add_parser(
        "quantize", help="static INT8 (QDQ) model calibrated on real ECGs",
        description="Quantize an fp32 model to static QDQ INT8 (per-channel weights), "
                    "calibrated on windows of the recordings in --calibration, preprocessed "
                    "with the model's own profile. Writes the new model, its manifest and "
                    "NAME.agreement.json (comparison with fp32 on held-out recordings).")
    quantize.add_argument("manifest", type=Path, metavar="MANIFEST")
    quantize.add_argument("--calibration", type=Path, required=True, metavar="DIR")
    quantize.add_argument("--out", type=Path, required=True, metavar="DIR")
    quantize.add_argument("--max-windows", type=int, default=200, metavar="N",
                          help="use at most N windows in total (default 200)")
    quantize.add_argument("--name", help="model name (default: <fp32 name>-int8)")
    quantize.add_argument("--config", type=Path, metavar="FILE",
                          help="ecgd TOML config for mains_hz, threads and input limits")
    quantize.set_defaults(handler=run_quantize)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config) if args.config else Config()


def run_build_reference(args: argparse.Namespace) -> int:
    from ecgd.model.build import build_reference

    start = time.perf_counter()
    manifest_path = build_reference(args.out, labels_path=args.labels, seed=args.seed,
                                    name=args.name)
    print(f"built {manifest_path} (untrained, seed {args.seed}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ecgd.model.build import convert

    manifest_path, checkpoint = convert(args.checkpoint, args.labels, args.out, name=args.name)
    prefix = f", stripped prefix {checkpoint.stripped_prefix!r}" if checkpoint.stripped_prefix \
        else ""
    print(f"converted {args.checkpoint.name} -> {manifest_path}: {len(checkpoint.weights)} "
          f"tensors used, {len(checkpoint.ignored)} unused batch-norm entries ignored{prefix}")
    return 0


def _check_graph(manifest_path: Path) -> str:
    """Load the graph itself and compare it with the manifest's architecture."""
    import onnx

    from ecgd.model.manifest import load_manifest
    from ecgd.model.onnx_graph import float_parameter_count

    manifest = load_manifest(manifest_path)
    try:
        model = onnx.load(str(manifest.onnx_path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{manifest.path.name}: {manifest.onnx_path.name} is not an ONNX "
                         f"model ({exc})") from exc
    expected = manifest.architecture["n_parameters"]
    if manifest.precision == "fp32":
        found = float_parameter_count(model)
        if found != expected:
            raise ModelError(f"{manifest.path.name}: graph holds {found} float weights, a "
                             f"Net1D of this architecture has {expected}")
    return (f"{manifest.name}: {manifest.precision}, "
            f"{'trained' if manifest.trained else 'UNTRAINED (findings meaningless)'}, "
            f"{expected} parameters, sha256 of model and labels verified")


def _windows(path: Path, config: Config, manifest, preprocess) -> np.ndarray:
    from ecgd.records.reader import read_recording
    from ecgd.records.recording import arrange_standard_leads
    from ecgd.signal.resample import resample_to

    recording = read_recording(path, config.limits.max_input_bytes,
                               config.limits.max_input_samples)
    leads = arrange_standard_leads(recording, manifest.lead_names)
    if leads.samples_mv is None:
        raise RecordError(f"{path.name}: lacks leads {', '.join(leads.missing)}")
    samples = resample_to(leads.samples_mv, recording.fs_hz, manifest.fs_hz)
    n = manifest.n_samples
    count = samples.shape[1] // n
    if count == 0:
        raise RecordError(f"{path.name}: shorter than one {n / manifest.fs_hz:g}-s window")
    windows = samples[:, : count * n].reshape(samples.shape[0], count, n).transpose(1, 0, 2)
    return preprocess(np.ascontiguousarray(windows))


def run_verify(args: argparse.Namespace) -> int:
    from ecgd.model.session import ModelSession
    from ecgd.signal.preprocess import make_preprocessor

    config = _config(args)
    print(_check_graph(args.manifest))
    start = time.perf_counter()
    session = ModelSession.open(args.manifest, threads=config.model.threads)
    manifest = session.manifest
    print(f"graph input [batch, {len(manifest.lead_names)}, {manifest.n_samples}], output "
          f"[batch, {manifest.n_classes}]: OK (session ready in "
          f"{time.perf_counter() - start:.2f} s)")
    preprocess = make_preprocessor(manifest.preprocessing_profile,
                                   manifest.preprocessing_params, manifest.fs_hz,
                                   config.preprocess.mains_hz)
    status = 0
    for path in args.files:
        try:
            windows = _windows(path, config, manifest, preprocess)
        except RecordError as exc:
            print(f"ecgd: {exc}", file=sys.stderr)
            status = 1
            continue
        start = time.perf_counter()
        logits = session.predict_logits(windows)
        elapsed_ms = (time.perf_counter() - start) * 1000.0 / len(windows)
        probability = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).mean(axis=0)
        top = np.argsort(-probability)[:3]
        findings = "; ".join(f"{manifest.labels[i]} {probability[i]:.2f}" for i in top)
        print(f"{path.name}: {len(windows)} windows, {elapsed_ms:.1f} ms/window; "
              f"top: {findings}")
    return status


def run_quantize(args: argparse.Namespace) -> int:
    from ecgd.model.manifest import load_manifest
    from ecgd.model.quantize import collect_windows, quantize_static_int8, split_windows

    if args.max_windows < 2:
        raise ModelError(f"--max-windows {args.max_windows}: need at least 2")
    if not args.calibration.is_dir():
        raise ModelError(f"{args.calibration}: calibration folder not found")
    config = _config(args)
    manifest = load_manifest(args.manifest)
    per_recording, skipped = collect_windows(args.calibration, manifest,
                                             config.preprocess.mains_hz, args.max_windows,
                                             config.limits.max_input_bytes)
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    calibration, held_out = split_windows(per_recording)
    print(f"calibrating on {len(calibration)} windows, comparing on {len(held_out)} held-out "
          f"windows ({len(per_recording)} recordings)")
    new_manifest, report = quantize_static_int8(args.manifest, calibration, held_out,
                                                args.out, name=args.name,
                                                threads=config.model.threads)
    latency = report["latency_ms_median_batch1"]
    print(f"wrote {new_manifest} and {new_manifest.stem}.agreement.json")
    print(f"held-out {report['windows']} windows: |p_int8 - p_fp32| max "
          f"{report['probability_abs_diff_max']:.4f}, mean "
          f"{report['probability_abs_diff_mean']:.5f}; top-5 overlap "
          f"{report['top5_overlap_mean']:.3f}; latency fp32 {latency['fp32']:.1f} ms, "
          f"int8 {latency['int8']:.1f} ms ({report['threads']} threads)")
    worst: List[dict] = sorted(report["per_label"], key=lambda r: -r["abs_diff_max"])[:3]
    print("largest per-label differences: " + "; ".join(
        f"{r['label']} {r['abs_diff_max']:.4f}" for r in worst))
    return 0
