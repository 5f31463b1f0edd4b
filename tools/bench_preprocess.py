"""Benchmark the per-window signal path: per-lead scipy loops (baseline) vs ecgd, one run.

First, QC + beats + intervals together (what ``ecgd.signal.chain`` adds to preprocessing) as
a ratio to the ecgfounder preprocessing of the same windows in the same run. Then, for
R-peak detection, quality control and both preprocessing profiles, prints the median and
p95 per 12 x 5000 window at 500 Hz and the baseline / ecgd ratio measured in the same run
(these machines are noisy and shared: compare ratios, not absolute numbers). Baseline and
ecgd alternate call by call over real CinC 2021 windows, so load changes hit both alike.

The baselines are the same computations written the plain way, one lead at a time with scipy
defaults (sosfiltfilt / filtfilt, np.percentile, per-lead FFTs, medfilt per lead). Usage:
    PYTHONPATH=. python tools/bench_preprocess.py [--repeats 60] [--batch 1] [--data DIR]

Run-to-run swings of up to 2x in the ecgd column come from glibc serving the ~0.5 MB
temporaries with mmap (page faults on every call) or from its heap, depending on its dynamic
threshold; ``MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=67108864`` pins the fast
case.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
from scipy import ndimage, signal

from ecgd.config import QcConfig
from ecgd.signal.preprocess import make_preprocessor
from ecgd.signal.quality import assess_window
from ecgd.records.recording import STANDARD_LEADS
from ecgd.signal.beats import detect_beats, detect_r_peaks
from ecgd.signal.delineation import measure_intervals

FS_HZ = 500.0
MAINS_HZ = 50
N_SAMPLES = 5000
RECORDS = ("HR06004", "HR06000", "E07500", "JS20003")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def ecgfounder_loop(window: np.ndarray) -> np.ndarray:
    """The upstream chain, one lead at a time with filtfilt(b, a) and medfilt."""
    b_notch, a_notch = signal.iirnotch(MAINS_HZ, 30.0, fs=FS_HZ)
    b_band, a_band = signal.butter(4, [0.67, 40.0], btype="bandpass", fs=FS_HZ)
    leads = []
    for lead in window:
        lead = signal.filtfilt(b_notch, a_notch, lead)
        lead = signal.filtfilt(b_band, a_band, lead)
        leads.append(lead - signal.medfilt(lead, 201))
    x = np.stack(leads)
    return (x - x.mean()) / (x.std() + 1e-8)


def edge_cds_loop(window: np.ndarray) -> np.ndarray:
    """The deployment write-up's chain, one lead at a time (notch decided per lead)."""
    b_notch, a_notch = signal.iirnotch(MAINS_HZ, 30.0, fs=FS_HZ)
    b_band, a_band = signal.butter(2, [0.5, 50.0], btype="bandpass", fs=FS_HZ)
    freqs = np.fft.rfftfreq(window.shape[1], 1.0 / FS_HZ)
    offset = np.abs(freqs - MAINS_HZ)
    leads = []
    for lead in window:
        power = np.abs(np.fft.rfft(lead - lead.mean())) ** 2
        floor = power[(offset >= 2) & (offset <= 6)].mean()
        snr_db = 10 * np.log10(power[offset <= 1].mean() / floor)
        if snr_db > 10.0:
            lead = signal.filtfilt(b_notch, a_notch, lead)
        lead = signal.filtfilt(b_band, a_band, lead)
        leads.append((lead - lead.mean()) / (lead.std() + 1e-8))
    return np.stack(leads)


def r_peaks_loop(window: np.ndarray) -> np.ndarray:
    """ecgd's detector with its slope energy computed lead by lead (sosfiltfilt, percentile)."""
    sos = signal.butter(2, [5.0, 20.0], btype="bandpass", fs=FS_HZ, output="sos")
    scaled, peakiness = [], []
    for lead in window:
        energy = np.gradient(signal.sosfiltfilt(sos, lead - lead.mean())) ** 2
        floor, peak = np.percentile(energy, [50.0, 99.0])
        scaled.append(energy / peak)
        peakiness.append(peak / floor)
    chosen = np.asarray(peakiness) >= 0.3 * max(peakiness)
    energy = np.mean([s for s, keep in zip(scaled, chosen) if keep], axis=0)
    envelope = ndimage.uniform_filter1d(energy, size=75, mode="constant")
    block_max = envelope.reshape(-1, 1000).max(axis=1)
    level = np.repeat(ndimage.median_filter(block_max, size=5, mode="nearest"), 1000)
    peaks, _ = signal.find_peaks(envelope, height=0.3 * level, distance=100)
    return peaks


def qc_loop(window: np.ndarray, thresholds: QcConfig) -> List[Dict[str, float]]:
    """ecgd's per-lead QC measurements written lead by lead with numpy/scipy defaults."""
    noise_sos = signal.butter(2, [10.0, 45.0], btype="bandpass", fs=FS_HZ, output="sos")
    freqs = np.fft.rfftfreq(window.shape[1], 1.0 / FS_HZ)
    flat_window = int(thresholds.flatline_window_s * FS_HZ)
    out = []
    for lead in window:
        centered = lead - lead.mean()
        high, low = lead.max(), lead.min()
        tolerance = 0.005 * (high - low)
        at_rail = ((lead >= high - tolerance) | (lead <= low + tolerance)).astype(np.int64)
        runs = np.convolve(at_rail, np.ones(thresholds.clip_run_min_samples), "valid")
        sums = np.concatenate([[0.0], np.cumsum(centered)])
        squares = np.concatenate([[0.0], np.cumsum(centered ** 2)])
        mean = (sums[flat_window:] - sums[:-flat_window]) / flat_window
        variance = (squares[flat_window:] - squares[:-flat_window]) / flat_window - mean ** 2
        power = np.abs(np.fft.rfft(centered)) ** 2
        energy = signal.sosfilt(noise_sos, centered) ** 2
        median, p99 = np.percentile(energy, [50.0, 99.0])
        out.append({
            "rms_mv": float(np.sqrt(np.mean(centered ** 2))),
            "ptp_mv": float(high - low),
            "clipped_runs": float(np.sum(runs >= thresholds.clip_run_min_samples)),
            "min_variance_mv2": float(variance.min()),
            "powerline_ratio": float(power[np.abs(freqs - MAINS_HZ) <= 1.0].sum()
                                     / power[freqs >= 0.5].sum()),
            "wander_ratio": float(power[(freqs > 0) & (freqs < 0.5)].sum() / power[1:].sum()),
            "noise_index": float(median / p99),
        })
    return out


def paired_ms(baseline: Callable[[int], object], ecgd: Callable[[int], object], n_inputs: int,
              repeats: int) -> Tuple[List[float], List[float]]:
    """Per-call times in ms of both, alternating call by call over ``n_inputs`` inputs."""
    for i in range(n_inputs):  # warm caches and lazily designed filters
        baseline(i)
        ecgd(i)
    base_ms: List[float] = []
    ecgd_ms: List[float] = []
    for r in range(repeats):
        i = r % n_inputs
        start = time.perf_counter()
        baseline(i)
        base_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        ecgd(i)
        ecgd_ms.append((time.perf_counter() - start) * 1e3)
    return base_ms, ecgd_ms


def p95(values: List[float]) -> float:
    return float(np.percentile(values, 95.0))


def load_windows(data_dir: Path) -> List[np.ndarray]:
    """The first 10 s of each benchmark record, float32 [12, 5000] mV."""
    import wfdb

    windows = []
    for name in RECORDS:
        record = wfdb.rdrecord(str(data_dir / "cinc2021" / name))
        if record.fs != FS_HZ or record.p_signal.shape[0] < N_SAMPLES:
            raise SystemExit(f"{name}: expected >= {N_SAMPLES} samples at {FS_HZ:g} Hz")
        windows.append(record.p_signal[:N_SAMPLES].T.astype(np.float32))
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1,
                        help="windows per preprocessing call (QC and R-peaks are per window)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    windows = load_windows(args.data)
    batches = [np.stack([windows[(i + j) % len(windows)] for j in range(args.batch)])
               for i in range(len(windows))]
    qc = QcConfig()
    r_peaks = [detect_r_peaks(w, FS_HZ) for w in windows]

    stages: List[Tuple[str, int, Callable[[int], object], Callable[[int], object]]] = [
        ("r-peaks", 1,
         lambda i: r_peaks_loop(windows[i].astype(np.float64)),
         lambda i: detect_r_peaks(windows[i], FS_HZ)),
        ("qc", 1,
         lambda i: qc_loop(windows[i].astype(np.float64), qc),
         lambda i: assess_window(windows[i], FS_HZ, STANDARD_LEADS, qc, mains_hz=MAINS_HZ,
                                 r_peaks=r_peaks[i])),
    ]
    for profile, loop in (("ecgfounder", ecgfounder_loop), ("edge-cds", edge_cds_loop)):
        pre = make_preprocessor(profile, {}, FS_HZ, MAINS_HZ)
        stages.append((profile, args.batch,
                       lambda i, loop=loop: [loop(w.astype(np.float64)) for w in batches[i]],
                       lambda i, pre=pre: pre(batches[i])))

    views = [make_preprocessor("ecgfounder", {}, FS_HZ, MAINS_HZ)(w) for w in windows]
    preprocess_one = make_preprocessor("ecgfounder", {}, FS_HZ, MAINS_HZ)

    def measure(i: int) -> object:
        """What ecgd.signal.chain adds to preprocessing: beats, QC, intervals."""
        beats = detect_beats(windows[i], FS_HZ)
        verdict = assess_window(windows[i], FS_HZ, STANDARD_LEADS, qc, mains_hz=MAINS_HZ,
                                r_peaks=beats.r_peaks, model_view=views[i],
                                lead_envelopes=beats.lead_envelopes)
        return verdict, measure_intervals(windows[i], beats.r_peaks, FS_HZ, STANDARD_LEADS)

    base_ms, ecgd_ms = paired_ms(lambda i: preprocess_one(windows[i]), measure, len(windows),
                                 args.repeats)
    print(f"QC + beats + intervals: median {statistics.median(ecgd_ms):.3f} ms, p95 "
          f"{p95(ecgd_ms):.3f} ms per window = "
          f"{statistics.median(ecgd_ms) / statistics.median(base_ms):.2f}x the ecgfounder "
          f"preprocessing of the same window in the same run "
          f"({statistics.median(base_ms):.3f} ms)\n")
    print(f"ms per 12 x {N_SAMPLES} window at {FS_HZ:g} Hz, {args.repeats} paired calls, "
          f"preprocessing batch {args.batch}")
    print(f"{'stage':11s} {'baseline median':>15s} {'p95':>7s}   {'ecgd median':>11s} "
          f"{'p95':>7s}   ratio")
    for name, per_call, baseline, ecgd in stages:
        base_ms, ecgd_ms = paired_ms(baseline, ecgd, len(windows), args.repeats)
        base_median = statistics.median(base_ms) / per_call
        ecgd_median = statistics.median(ecgd_ms) / per_call
        print(f"{name:11s} {base_median:15.3f} {p95(base_ms) / per_call:7.3f}   "
              f"{ecgd_median:11.3f} {p95(ecgd_ms) / per_call:7.3f}   "
              f"{base_median / ecgd_median:5.2f}x")


if __name__ == "__main__":
    main()
