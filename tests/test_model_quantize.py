"""Static QDQ INT8 quantization of the full network, calibrated and compared on real ECGs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ecgd.model.manifest import load_manifest
from ecgd.model.quantize import agreement, collect_windows, split_windows
from ecgd.model.session import ModelSession
from model_helpers import run_model_command


@pytest.fixture(scope="session")
def quantized(tmp_path_factory, reference_manifest, shared_data):
    """``ecgd model quantize`` on 24 CinC 2021 windows (Georgia, PTB-XL, Ningbo)."""
    out_dir = tmp_path_factory.mktemp("int8")
    code, out, err = run_model_command([
        "quantize", str(reference_manifest), "--calibration", str(shared_data / "cinc2021"),
        "--out", str(out_dir), "--max-windows", "24"])
    assert code == 0, err
    return out_dir / "ecgfounder-reference-int8.json", out


def test_quantized_model_agrees_with_fp32_on_held_out_records(quantized):
    """Held-out |p_int8 - p_fp32| stays small and top-5 findings mostly agree."""
    manifest_path, out = quantized
    report = json.loads(manifest_path.with_name(
        "ecgfounder-reference-int8.agreement.json").read_text())
    assert report["windows"] == 6 and report["calibration_windows"] == 18
    assert len(report["per_label"]) == 150
    assert report["probability_abs_diff_max"] < 0.05
    assert report["top5_overlap_mean"] >= 0.6
    assert set(report["latency_ms_median_batch1"]) == {"fp32", "int8"}
    assert "held-out 6 windows" in out


def test_quantized_manifest_loads_and_runs(quantized, reference_manifest, shared_data):
    """The int8 manifest keeps labels and preprocessing, pins its parent, and runs."""
    manifest_path, _ = quantized
    int8 = load_manifest(manifest_path)
    fp32 = load_manifest(reference_manifest)
    assert int8.precision == "int8" and int8.labels == fp32.labels
    assert int8.preprocessing_params == fp32.preprocessing_params
    assert int8.provenance["quantized_from_onnx_sha256"] == fp32.onnx_sha256
    assert int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 3
    logits = ModelSession.open(manifest_path, threads=1).predict_logits(
        np.zeros((2, 12, 5000), np.float32))
    assert logits.shape == (2, 150) and np.all(np.isfinite(logits))


def test_calibration_split_keeps_recordings_apart(reference_manifest, shared_data):
    """Every 4th recording is held out whole; non-12-lead files are skipped with a reason."""
    manifest = load_manifest(reference_manifest)
    per_recording, skipped = collect_windows(shared_data / "mitdb", manifest, 50, 4,
                                             64 * 1024 * 1024)
    assert per_recording == [] and any("lacks leads" in s for s in skipped)
    per_recording = [np.full((1, 12, 5000), i, np.float32) for i in range(8)]
    calibration, held_out = split_windows(per_recording)
    assert sorted(held_out[:, 0, 0]) == [3.0, 7.0] and len(calibration) == 6


def test_agreement_counts_top5_overlap():
    """Top-5 overlap and per-label differences are computed from the logits given."""
    labels = tuple(str(i) for i in range(10))
    a = np.arange(10, dtype=np.float32)[np.newaxis]
    b = a.copy()
    b[0, 9] = -5.0  # the top finding drops out of the top 5
    report = agreement(labels, a, b)
    assert report["top5_overlap_mean"] == pytest.approx(0.8)
    assert report["top1_agreement_fraction"] == 0.0
    assert report["per_label"][9]["abs_diff_max"] == pytest.approx(
        1 / (1 + np.exp(-9.0)) - 1 / (1 + np.exp(5.0)))
