"""R-peak detection on the MIT-BIH records of ../shared/data: whole records and 10-s windows.

For every record (all 30 min, every beat annotation, 150 ms matching as in ANSI/AAMI EC57)
prints sensitivity (Se) and positive predictivity (+P), and the gross totals over the
calibration records, the held-out records and all of them, of:
- ecgd on the whole record (both leads, 360 Hz);
- ecgd as the pipeline runs it: 10-s windows, each cut with 2 s of context, resampled to
  500 Hz (``ecgd.signal.chain.cut_window``), peaks inside the window kept;
- ecgd on lone 10-s windows (no context: a live window, or a file's first and last);
- neurokit2's default detector (``ecg_peaks`` after ``ecg_clean``) on lead MLII, whole
  record and lone windows (``--neurokit``; pip install neurokit2).

Usage: PYTHONPATH=. python tools/eval_beats.py [--data DIR] [--neurokit] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import wfdb

from ecgd.records.recording import Recording
from ecgd.signal.beats import detect_r_peaks
from ecgd.signal.chain import WindowLayout, cut_window

# The detector's rules and constants were calibrated on CALIBRATION only; HELD_OUT was not
# looked at until they were fixed. Hard records (noise, ventricular ectopy) are on both sides.
CALIBRATION = ("100", "101", "105", "108", "109", "111", "114", "119")
HELD_OUT = ("103", "106", "116", "118", "200")
RECORDS = tuple(sorted(CALIBRATION + HELD_OUT))
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")
FS_HZ = 360.0
MODEL_FS_HZ = 500.0
WINDOW_S = 10.0
TOLERANCE_S = 0.15
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def matched(reference: np.ndarray, detected: np.ndarray, tolerance: int) -> int:
    """Reference beats with a distinct detection within ``tolerance`` samples (nearest)."""
    used = np.zeros(detected.size, dtype=bool)
    count = 0
    for sample in reference:
        position = int(np.searchsorted(detected, sample))
        candidates = [c for c in (position - 1, position) if 0 <= c < detected.size
                      and not used[c] and abs(int(detected[c]) - int(sample)) <= tolerance]
        if candidates:
            used[min(candidates, key=lambda c: abs(int(detected[c]) - int(sample)))] = True
            count += 1
    return count


def pipeline_windows(signal: np.ndarray, context_s: float) -> np.ndarray:
    """ecgd's peaks per 10-s window as the pipeline cuts them, in source samples."""
    recording = Recording(signal.astype(np.float32), FS_HZ, ("ch1", "ch2"), "eval")
    layout = WindowLayout.of(recording, ("II",))
    window = int(WINDOW_S * MODEL_FS_HZ)
    n_model = int(signal.shape[1] * MODEL_FS_HZ / FS_HZ)
    peaks = []
    for start in range(0, n_model - window + 1, window):
        cut = cut_window(recording, layout, start, window, MODEL_FS_HZ, context_s)
        found = detect_r_peaks(cut.context_mv, MODEL_FS_HZ) - cut.offset
        inside = found[(found >= 0) & (found < window)]
        peaks.append(np.round((inside + start) * FS_HZ / MODEL_FS_HZ).astype(np.int64))
    return np.concatenate(peaks)


def lone_windows(detector: Callable[[np.ndarray], np.ndarray], signal: np.ndarray) -> np.ndarray:
    """``detector`` on every 10-s stretch alone, in source samples."""
    window = int(WINDOW_S * FS_HZ)
    return np.concatenate([detector(signal[..., s:s + window]) + s
                           for s in range(0, signal.shape[-1] - window + 1, window)])


def neurokit_detector() -> Callable[[np.ndarray], np.ndarray]:
    import neurokit2 as nk

    def detect(lead: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cleaned = nk.ecg_clean(lead, sampling_rate=int(FS_HZ))
                _, info = nk.ecg_peaks(cleaned, sampling_rate=int(FS_HZ))
            except (ValueError, IndexError):
                return np.zeros(0, dtype=np.int64)
        return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
    return detect


def evaluate(data: Path, use_neurokit: bool) -> List[str]:
    """The table's lines: one row per record, then the gross totals per part."""
    methods: Dict[str, Callable[[np.ndarray, str], np.ndarray]] = {
        "ecgd, whole record": lambda x, _: detect_r_peaks(x, FS_HZ),
        "ecgd, pipeline windows (2 s context)": lambda x, _: pipeline_windows(x, 2.0),
        "ecgd, lone 10-s windows": lambda x, _: lone_windows(
            lambda part: detect_r_peaks(part, FS_HZ), x),
    }
    if use_neurokit:
        nk_detect = neurokit_detector()
        methods["neurokit2 (MLII), whole record"] = lambda x, lead: nk_detect(x[lead])
        methods["neurokit2 (MLII), lone 10-s windows"] = lambda x, lead: lone_windows(
            nk_detect, x[lead])
    parts = {"calibration": CALIBRATION, "held out": HELD_OUT, "all": RECORDS}
    totals = {part: {name: [0, 0, 0] for name in methods} for part in parts}
    lines = ["| record | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    tolerance = int(TOLERANCE_S * FS_HZ)
    for record in RECORDS:
        base = str(data / "mitdb" / record)
        header = wfdb.rdrecord(base)
        signal = header.p_signal.T
        lead = header.sig_name.index("MLII")
        annotation = wfdb.rdann(base, "atr")
        reference = np.array([s for s, sym in zip(annotation.sample, annotation.symbol)
                              if sym in BEAT_SYMBOLS])
        cells = []
        for name, method in methods.items():
            detected = np.unique(method(signal, lead))
            windowed = "whole" not in name
            end = (signal.shape[1] // int(WINDOW_S * FS_HZ)) * int(WINDOW_S * FS_HZ)
            ref = reference[reference < end] if windowed else reference
            det = detected[detected < end] if windowed else detected
            hits = matched(ref, det, tolerance)
            for part, members in parts.items():
                if record in members:
                    counts = totals[part][name]
                    counts[0] += hits
                    counts[1] += ref.size
                    counts[2] += det.size
            cells.append(f"{100 * hits / ref.size:.2f} / {100 * hits / max(det.size, 1):.2f}")
        lines.append(f"| {record} | " + " | ".join(cells) + " |")
    for part, members in parts.items():
        label = part if part == "all" else f"{part} ({' '.join(members)})"
        lines.append(f"| **{label} (gross)** | " + " | ".join(
            f"**{100 * t[0] / t[1]:.2f} / {100 * t[0] / t[2]:.2f}**"
            for t in totals[part].values()) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--neurokit", action="store_true")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = evaluate(args.data, args.neurokit)
    text = "Se / +P in % (150 ms):\n\n" + "\n".join(lines) + \
        f"\n\n({time.perf_counter() - started:.0f} s)"
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
