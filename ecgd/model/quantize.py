"""Static QDQ INT8 quantization, calibrated on real ECG windows, with an agreement report.

ONNX Runtime's ``quantize_static`` in QDQ format with per-channel int8 weights and uint8
activations (min-max calibration). Calibration windows are cut from real recordings at the
model's rate and preprocessed with the model's own profile, exactly as inference will see
them. Windows are split by recording into calibration and held-out sets, and the new model
is compared with FP32 on the held-out windows only.

``quantize_dynamic`` is deliberately not offered: on x86 it turns every convolution into
ConvInteger, which made this network about 2x slower than FP32 (tools/bench_model.py).
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import onnxruntime as ort

from ecgd.errors import EcgdError, ModelError, RecordError
from ecgd.model.build import write_model
from ecgd.model.manifest import Manifest, load_manifest, write_atomic
from ecgd.model.net1d import INPUT_NAME
from ecgd.model.session import start_session

HELD_OUT_EVERY = 4  # every 4th recording (by sorted name) is held out from calibration
TOP_K = 5
_LATENCY_RUNS = 10


def collect_windows(folder: Path, manifest: Manifest, mains_hz: int, max_windows: int,
                    max_input_bytes: int) -> Tuple[List[np.ndarray], List[str]]:
    """Preprocessed model-input windows from every readable 12-lead recording in ``folder``.

    Returns one float32 array ``[w, leads, n_samples]`` per recording that yielded windows
    (at most ``max_windows`` in total, non-overlapping, from the start of each recording)
    and one line per file that was skipped, naming it and why.
    """
    from ecgd.signal.preprocess import make_preprocessor
    from ecgd.records.companions import find_recordings
    from ecgd.records.reader import read_recording
    from ecgd.records.recording import arrange_standard_leads
    from ecgd.signal.resample import resample_to

    preprocess = make_preprocessor(manifest.preprocessing_profile,
                                   manifest.preprocessing_params, manifest.fs_hz, mains_hz)
    n = manifest.n_samples
    per_recording: List[np.ndarray] = []
    skipped: List[str] = []
    total = 0
    for found in find_recordings([Path(folder)]):
        if total >= max_windows:
            break
        if found.refusal is not None:
            skipped.append(found.refusal)
            continue
        path = found.path
        try:
            recording = read_recording(path, max_input_bytes)
        except RecordError as exc:
            skipped.append(str(exc))
            continue
        leads = arrange_standard_leads(recording, manifest.lead_names)
        if leads.samples_mv is None:
            skipped.append(f"{path.name}: lacks leads {', '.join(leads.missing)}")
            continue
        samples = resample_to(leads.samples_mv, recording.fs_hz, manifest.fs_hz)
        count = min(samples.shape[1] // n, max_windows - total)
        if count == 0:
            skipped.append(f"{path.name}: shorter than one {n}-sample window")
            continue
        windows = samples[:, : count * n].reshape(samples.shape[0], count, n).transpose(1, 0, 2)
        per_recording.append(preprocess(np.ascontiguousarray(windows)))
        total += count
    return per_recording, skipped


def split_windows(per_recording: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Calibration and held-out windows: every ``HELD_OUT_EVERY``-th recording is held out,
    so no held-out window shares a recording with calibration (falls back to a split by
    window when there are too few recordings).
    """
    if len(per_recording) >= 2:
        held = [w for i, w in enumerate(per_recording) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
        if not held:
            held = [per_recording[-1]]
        held_ids = {id(w) for w in held}
        calibration = [w for w in per_recording if id(w) not in held_ids]
        return np.concatenate(calibration), np.concatenate(held)
    windows = np.concatenate(per_recording) if per_recording else np.empty((0,))
    if len(windows) < 2:
        raise ModelError("calibration: need at least 2 windows of real ECG "
                         f"(found {len(windows)})")
    cut = max(1, len(windows) // HELD_OUT_EVERY)
    return windows[cut:], windows[:cut]


class _WindowReader:
    """onnxruntime's CalibrationDataReader protocol over an array of windows, one at a time."""

    def __init__(self, windows: np.ndarray) -> None:
        self._windows: Iterator[np.ndarray] = iter(windows)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        window = next(self._windows, None)
        return None if window is None else {INPUT_NAME: window[np.newaxis]}


def _latency_ms(session: ort.InferenceSession, window: np.ndarray) -> float:
    feed = {INPUT_NAME: window[np.newaxis]}
    session.run(None, feed)  # first run allocates
    runs = []
    for _ in range(_LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        runs.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(runs)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def agreement(labels: Tuple[str, ...], fp32_logits: np.ndarray,
              int8_logits: np.ndarray) -> Dict[str, Any]:
    """Per-label max/mean |probability difference| and top-5 agreement of two models."""
    diff = np.abs(_sigmoid(fp32_logits) - _sigmoid(int8_logits))
    top_fp32 = np.argsort(-fp32_logits, axis=1)[:, :TOP_K]
    top_int8 = np.argsort(-int8_logits, axis=1)[:, :TOP_K]
    overlap = [len(set(a) & set(b)) / TOP_K for a, b in zip(top_fp32, top_int8)]
    return {
        "windows": int(diff.shape[0]),
        "probability_abs_diff_max": float(diff.max()),
        "probability_abs_diff_mean": float(diff.mean()),
        "per_label": [
            {"label": label, "abs_diff_max": float(diff[:, i].max()),
             "abs_diff_mean": float(diff[:, i].mean())}
            for i, label in enumerate(labels)
        ],
        "top5_overlap_mean": float(np.mean(overlap)),
        "top5_same_set_fraction": float(np.mean([o == 1.0 for o in overlap])),
        "top1_agreement_fraction": float(np.mean(top_fp32[:, 0] == top_int8[:, 0])),
    }


def quantize_static_int8(manifest_path: Path, calibration: np.ndarray, held_out: np.ndarray,
                         out_dir: Path, *, name: Optional[str] = None,
                         threads: int = 1) -> Tuple[Path, Dict[str, Any]]:
    """Quantize the FP32 model of ``manifest_path`` to static QDQ INT8.

    ``calibration`` and ``held_out`` are preprocessed windows float32 ``[w, leads, n]``.
    Writes ``NAME.onnx``, ``NAME.json`` (precision int8) and ``NAME.agreement.json`` into
    ``out_dir`` only after quantization and the agreement check succeeded. Returns the new
    manifest path and the agreement report.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    manifest = load_manifest(manifest_path)
    if manifest.precision != "fp32":
        raise ModelError(f"{manifest.path}: is {manifest.precision}; quantize an fp32 model")
    expected = (len(manifest.lead_names), manifest.n_samples)
    for what, windows in (("calibration", calibration), ("held-out", held_out)):
        if windows.ndim != 3 or windows.shape[1:] != expected or len(windows) == 0:
            raise ModelError(f"{what} windows have shape {windows.shape}, expected "
                             f"[w>0, {expected[0]}, {expected[1]}]")
    name = name or f"{manifest.name}-int8"
    with tempfile.TemporaryDirectory(prefix="ecgd-quantize-") as tmp:
        int8_path = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(manifest.onnx_path), str(int8_path),
                _WindowReader(calibration.astype(np.float32)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
            )
            int8_bytes = int8_path.read_bytes()
        except EcgdError:
            raise
        except Exception as exc:  # onnxruntime.quantization raises plain Exceptions
            raise ModelError(f"{manifest.path}: static quantization failed "
                             f"({str(exc).splitlines()[0][:200]})") from exc

    fp32 = start_session(str(manifest.onnx_path), threads, "fp32")
    int8 = start_session(int8_bytes, threads, "int8")
    held_out = held_out.astype(np.float32)
    fp32_logits = fp32.run(None, {INPUT_NAME: held_out})[0]
    int8_logits = int8.run(None, {INPUT_NAME: held_out})[0]
    report = agreement(manifest.labels, fp32_logits, int8_logits)
    report.update({
        "fp32_manifest": manifest.path.name,
        "calibration_windows": int(len(calibration)),
        "threads": threads,
        "latency_ms_median_batch1": {"fp32": _latency_ms(fp32, held_out[0]),
                                     "int8": _latency_ms(int8, held_out[0])},
    })

    provenance = dict(manifest.provenance)
    provenance.update({
        "quantized_from": manifest.path.name,
        "quantized_from_onnx_sha256": manifest.onnx_sha256,
        "quantization": {"method": "onnxruntime.quantization.quantize_static",
                         "format": "QDQ", "per_channel": True, "weights": "int8",
                         "activations": "uint8", "calibration": "minmax",
                         "calibration_windows": int(len(calibration)),
                         "held_out_windows": int(len(held_out)),
                         "onnxruntime_version": ort.__version__},
    })
    new_manifest = write_model(
        out_dir, name, int8_bytes, spec=manifest.spec, labels=manifest.labels,
        trained=manifest.trained, precision="int8", provenance=provenance,
        preprocessing_profile=manifest.preprocessing_profile,
        preprocessing_params=manifest.preprocessing_params, thresholds=manifest.thresholds)
    report_path = new_manifest.with_name(f"{name}.agreement.json")
    write_atomic(report_path, (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    return new_manifest, report
