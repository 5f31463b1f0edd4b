"""Benchmark: per-lead scipy loops (baseline) vs ecgd.preprocess, both profiles, one run.

Prints medians per 12 x 5000 window and the speed-up ratio measured in the same run (these
machines are noisy; compare ratios, not absolute numbers). Usage:
    PYTHONPATH=. python tools/bench_preprocess.py [--repeats 50] [--batch 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List

import numpy as np
from scipy import signal

from ecgd.preprocess import make_preprocessor

FS_HZ = 500.0
MAINS_HZ = 50


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


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    t = np.arange(5000) / FS_HZ
    # Spiky "beats" plus noise and a little hum: the filters' cost does not depend on content.
    beats = sum(np.exp(-((t - c) / 0.01) ** 2) for c in np.arange(0.4, 10.0, 0.8))
    windows = (beats + 0.05 * rng.normal(size=(args.batch, 12, 5000))
               + 0.1 * np.sin(2 * np.pi * MAINS_HZ * t)).astype(np.float32)
    for profile, loop in (("ecgfounder", ecgfounder_loop), ("edge-cds", edge_cds_loop)):
        pre = make_preprocessor(profile, {}, FS_HZ, MAINS_HZ)
        base = median_ms(lambda: [loop(w.astype(np.float64)) for w in windows], args.repeats)
        fast = median_ms(lambda: pre(windows), args.repeats)
        print(f"{profile:11s} per-lead loop {base / args.batch:6.2f} ms/window  "
              f"vectorized {fast / args.batch:6.2f} ms/window  ratio {base / fast:4.2f}x")


if __name__ == "__main__":
    main()
