#!/usr/bin/env python3
"""The deployment write-up's single-window pipeline, in process: the benchmark's yardstick.

What ecgfounder-edge-cds did for each 10-s window (docs/ECGFOUNDER.md): read the file;
preprocess one lead at a time with scipy (a 50 Hz notch only on leads whose powerline SNR
exceeds 10 dB, a 2nd-order Butterworth 0.5-50 Hz band-pass applied with ``filtfilt``, a
per-lead z-score); run ONNX Runtime FP32 on the Conv1d graph as torch.onnx exports it, with
1 thread and otherwise default session options, one window per call; write the result as
a plain JSON file (no encryption, no fsync). It lives in tools/, not in ecgd/, because the
appliance never runs it: ``tools/bench_appliance.py`` measures ecgd against it in one run.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from scipy import signal

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FS_HZ = 500.0
MAINS_HZ = 50.0
NOTCH_Q = 30.0
NOTCH_MIN_SNR_DB = 10.0
BANDPASS_HZ = (0.5, 50.0)
BANDPASS_ORDER = 2
ZSCORE_EPS = 1e-8
# Powerline SNR: mean power within mains +- 1 Hz over the mean power 2-6 Hz away from it.
_LINE_HALF_WIDTH_HZ = 1.0
_FLOOR_HZ = (2.0, 6.0)


def write_conv1d_model(path: Path, seed: int = 0) -> Path:
    """Write the Net1D as a plain Conv1d graph with the reference model's seeded weights
    (``ecgd model build-reference --seed SEED`` uses the same ones); returns ``path``."""
    from ecgd.model.net1d import ECGFOUNDER_12LEAD
    from ecgd.model.onnx_graph import build_graph, random_weights

    graph = build_graph(ECGFOUNDER_12LEAD, random_weights(ECGFOUNDER_12LEAD, seed),
                        layout="conv1d", doc=f"ECGFounder Net1D, Conv1d layout, seed {seed}")
    Path(path).write_bytes(graph.SerializeToString())
    return Path(path)


def powerline_snr_db(lead_mv: np.ndarray, fs_hz: float, mains_hz: float) -> float:
    """Powerline SNR of one lead in dB: mains +- 1 Hz power over the 2-6 Hz-away floor."""
    power = np.abs(np.fft.rfft(lead_mv - lead_mv.mean())) ** 2
    offset_hz = np.abs(np.fft.rfftfreq(lead_mv.shape[-1], 1.0 / fs_hz) - mains_hz)
    line = power[offset_hz <= _LINE_HALF_WIDTH_HZ].mean()
    floor = power[(offset_hz >= _FLOOR_HZ[0]) & (offset_hz <= _FLOOR_HZ[1])].mean()
    tiny = np.finfo(np.float64).tiny
    return float(10.0 * np.log10((line + tiny) / (floor + tiny)))


class BaselinePipeline:
    """Read -> per-lead scipy preprocessing -> ORT FP32 (1 thread) -> plain JSON file."""

    def __init__(self, conv1d_model: Path, labels: Sequence[str], fs_hz: float = FS_HZ,
                 mains_hz: float = MAINS_HZ) -> None:
        self.labels = tuple(labels)
        self.fs_hz = fs_hz
        self.mains_hz = mains_hz
        self.notch_ba = signal.iirnotch(mains_hz, NOTCH_Q, fs=fs_hz)
        self.bandpass_ba = signal.butter(BANDPASS_ORDER, BANDPASS_HZ, btype="bandpass",
                                         fs=fs_hz)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(conv1d_model), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, window_mv: np.ndarray) -> np.ndarray:
        """``[12, n]`` millivolts -> float32 ``[12, n]``, one lead at a time."""
        leads = []
        for lead in np.asarray(window_mv, dtype=np.float64):
            if powerline_snr_db(lead, self.fs_hz, self.mains_hz) > NOTCH_MIN_SNR_DB:
                lead = signal.filtfilt(*self.notch_ba, lead)
            lead = signal.filtfilt(*self.bandpass_ba, lead)
            leads.append((lead - lead.mean()) / (lead.std() + ZSCORE_EPS))
        return np.stack(leads).astype(np.float32)

    def process(self, input_path: Path, out_dir: Path) -> Path:
        """One window from an ``.npz`` (``signal`` [12, 5000] mV, standard lead order) to
        ``out_dir/STEM.json`` holding every label's probability; returns that path."""
        with np.load(input_path) as archive:
            window_mv = archive["signal"]
        model_input = self.preprocess(window_mv)[np.newaxis]
        (logits,) = self.session.run(None, {self.input_name: model_input})
        probabilities = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64)))
        report = {"file": Path(input_path).name,
                  "findings": [{"label": label, "probability": round(float(p), 6)}
                               for label, p in zip(self.labels, probabilities)]}
        out_path = Path(out_dir) / f"{Path(input_path).stem}.json"
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle)
        return out_path
