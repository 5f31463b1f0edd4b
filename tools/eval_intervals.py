"""Global PR, QRS and QT against the LUDB cardiologists' marks; heart rate; QRS axis.

LUDB marks P, QRS and T onsets and offsets in every lead. The reference for one beat is the
consensus of the 12 leads: the median over the leads of each onset and of each offset (the
earliest onset / latest offset of 12 independent marks is biased long by the marking
scatter itself: +25 ms for QRS on these records). The record's reference is the median over
its annotated beats. ``--extremes`` prints the earliest/latest comparison as well.

ecgd measures each whole 10-s record as the pipeline does (``ecgd.signal.chain``); the best
delineator installable here, neurokit2's ``ecg_delineate`` (``dwt``, lead II, per-beat
boundaries, medians), gets the same comparison with ``--neurokit``.

Records whose number is divisible by 3 were never looked at while calibrating; both parts
are reported. Also: heart rate against the rate from the lead II QRS marks (mean RR), and
the QRS axis against LUDB's axis class (ludb.csv).

``--cost`` times ``measure_intervals`` on every record against the plain per-lead
``ecgfounder_loop`` preprocessing of ``tools/bench_preprocess.py`` (a baseline that never
changes), call by call in the same run, and prints the ratio of the medians: the machine is
shared, compare ratios. Run it with ``MALLOC_MMAP_THRESHOLD_=16777216
MALLOC_TRIM_THRESHOLD_=67108864`` as bench_preprocess.py says.

Usage: PYTHONPATH=. python tools/eval_intervals.py [--data DIR] [--neurokit] [--extremes]
           [--markdown FILE] [--plot FILE.png] [--cost]
"""
from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import wfdb

from ecgd.config import MeasurementConfig
from ecgd.records.recording import STANDARD_LEADS
from ecgd.signal.beats import detect_r_peaks, rhythm_measurements
from ecgd.signal.delineation import measure_intervals
from eval_qc import held_out

FS_HZ = 500.0
LUDB_LEADS = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")
INTERVALS = ("pr", "qrs", "qt")
TARGETS = {"pr": (10.0, 15.0), "qrs": (10.0, 15.0), "qt": (15.0, 25.0)}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# LUDB's axis classes (Russian convention) as frontal-plane ranges in degrees.
AXIS_CLASSES = {"normal": (30, 70), "vertical": (70, 90), "horizontal": (0, 30),
                "left axis deviation": (-90, 0), "right axis deviation": (90, 180)}


def _waves(samples: np.ndarray, symbols: List[str]) -> List[Tuple[str, int, int, int]]:
    """(kind, onset, peak, offset) of every complete wave in one lead's annotation."""
    return [(symbols[k], int(samples[k - 1]), int(samples[k]), int(samples[k + 1]))
            for k in range(1, len(symbols) - 1)
            if symbols[k] in "pNt" and symbols[k - 1] == "(" and symbols[k + 1] == ")"]


def reference_intervals(annotations: Dict[str, Tuple[np.ndarray, List[str]]],
                        extremes: bool = False) -> Dict[str, Optional[float]]:
    """Record-level PR, QRS, QT (ms) from the per-lead marks (see module docstring)."""
    waves = {lead: _waves(*annotations[lead]) for lead in LUDB_LEADS}
    qrs = sorted((peak, on, off) for lead in LUDB_LEADS for kind, on, peak, off in waves[lead]
                 if kind == "N")
    groups: List[List[Tuple[int, int, int]]] = []
    for mark in qrs:
        if groups and mark[0] - groups[-1][-1][0] < 100:
            groups[-1].append(mark)
        else:
            groups.append([mark])
    centres = [int(np.median([m[0] for m in g])) for g in groups]
    first = np.min if extremes else np.median
    last = np.max if extremes else np.median
    values: Dict[str, List[float]] = {name: [] for name in INTERVALS}
    for k, group in enumerate(groups):
        if len(group) < 6:
            continue
        previous = centres[k - 1] if k else -10 ** 9
        following = centres[k + 1] if k + 1 < len(centres) else 10 ** 9
        p_on, t_off = [], []
        for lead in LUDB_LEADS:
            ps = [w for w in waves[lead] if w[0] == "p" and previous < w[2] < centres[k]]
            ts = [w for w in waves[lead] if w[0] == "t" and centres[k] < w[2] < following]
            if ps:
                p_on.append(ps[-1][1])
            if ts:
                t_off.append(ts[0][3])
        onset = float(first([m[1] for m in group]))
        values["qrs"].append(float(last([m[2] for m in group])) - onset)
        if len(p_on) >= 3:
            values["pr"].append(onset - float(first(p_on)))
        if len(t_off) >= 3:
            values["qt"].append(float(last(t_off)) - onset)
    return {name: float(np.median(v)) * 1000.0 / FS_HZ if v else None
            for name, v in values.items()}


def neurokit_intervals(signal: np.ndarray) -> Dict[str, Optional[float]]:
    """neurokit2 dwt delineation of lead II: medians of per-beat PR, QRS, QT (ms)."""
    import neurokit2 as nk

    lead = signal[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cleaned = nk.ecg_clean(lead, sampling_rate=int(FS_HZ))
            _, peaks = nk.ecg_peaks(cleaned, sampling_rate=int(FS_HZ))
            _, waves = nk.ecg_delineate(cleaned, peaks, sampling_rate=int(FS_HZ), method="dwt")
        except (ValueError, IndexError, KeyError):
            return {name: None for name in INTERVALS}

    def median_ms(stop: str, start: str) -> Optional[float]:
        a = np.asarray(waves.get(start, []), dtype=float)
        b = np.asarray(waves.get(stop, []), dtype=float)
        n = min(a.size, b.size)
        d = (b[:n] - a[:n])[np.isfinite(b[:n] - a[:n])]
        d = d[d > 0]
        return float(np.median(d)) * 1000.0 / FS_HZ if d.size else None

    return {"pr": median_ms("ECG_R_Onsets", "ECG_P_Onsets"),
            "qrs": median_ms("ECG_R_Offsets", "ECG_R_Onsets"),
            "qt": median_ms("ECG_T_Offsets", "ECG_R_Onsets")}


def ecgd_intervals(signal: np.ndarray, qtc_formula: str) -> Tuple[Dict[str, Optional[float]],
                                                                  Optional[float],
                                                                  Optional[float]]:
    """ecgd's PR, QRS, QT (ms), heart rate (bpm) and QRS axis (degrees) of one record."""
    peaks = detect_r_peaks(signal, FS_HZ)
    measured = measure_intervals(signal, peaks, FS_HZ, STANDARD_LEADS, qtc_formula)
    rate = rhythm_measurements(peaks, FS_HZ)["heart_rate_bpm"]
    return ({"pr": measured.pr_ms, "qrs": measured.qrs_ms, "qt": measured.qt_ms}, rate,
            measured.qrs_axis_deg)


def cost_lines(signals: List[np.ndarray], repeats: int = 5) -> List[str]:
    """Median ms per window of measure_intervals and of the per-lead ecgfounder_loop
    baseline, timed alternately on the same records in this run, and their ratio."""
    from bench_preprocess import ecgfounder_loop

    peaks = [detect_r_peaks(signal, FS_HZ) for signal in signals]
    ours: List[float] = []
    baseline: List[float] = []
    for _ in range(repeats):
        for signal, r_peaks in zip(signals, peaks):
            started = time.perf_counter()
            measure_intervals(signal, r_peaks, FS_HZ, STANDARD_LEADS)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            ecgfounder_loop(signal)
            baseline.append(time.perf_counter() - started)
    ours_ms, baseline_ms = 1000.0 * float(np.median(ours)), 1000.0 * float(np.median(baseline))
    return [f"measure_intervals: median {ours_ms:.2f} ms per 12 x 5000 window, "
            f"{ours_ms / baseline_ms:.3f} x the per-lead ecgfounder_loop ({baseline_ms:.2f} ms) "
            f"in the same run ({len(ours)} calls each)."]


def summary(errors: Dict[str, List[float]], missed: Dict[str, int]) -> List[str]:
    cells = []
    for name in INTERVALS:
        e = np.asarray(errors[name])
        mean_limit, sd_limit = TARGETS[name]
        met = e.size and abs(e.mean()) <= mean_limit and e.std() <= sd_limit
        cells.append(f"{e.mean():+.1f} +- {e.std():.1f} ms (n={e.size}, not measured "
                     f"{missed[name]}){'' if met else ' NOT MET'}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--neurokit", action="store_true")
    parser.add_argument("--extremes", action="store_true")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path, help="error distributions (matplotlib)")
    parser.add_argument("--cost", action="store_true",
                        help="time measure_intervals against bench_preprocess's baseline")
    args = parser.parse_args()
    started = time.perf_counter()
    names = [row.split("/")[-1] for row in (args.data / "ludb" / "RECORDS").read_text().split()]
    with open(args.data / "ludb" / "ludb.csv", newline="") as handle:
        axis_class = {row["ID"]: row["Electric axis of the heart"].split(":")[-1].strip().lower()
                      for row in csv.DictReader(handle)}
    methods: Dict[str, Callable[[np.ndarray], Dict[str, Optional[float]]]] = {
        "ecgd": lambda x: ecgd_intervals(x, MeasurementConfig().qtc_formula)[0]}
    if args.neurokit:
        methods["neurokit2 dwt (lead II)"] = neurokit_intervals
    rules = [("consensus (median of leads)", False)] + (
        [("earliest onset / latest offset", True)] if args.extremes else [])
    errors = {(m, rule, part): {name: [] for name in INTERVALS} for m in methods
              for rule, _ in rules for part in ("calibration", "held_out")}
    missed = {key: {name: 0 for name in INTERVALS} for key in errors}
    rate_errors: List[float] = []
    axis_hits: List[bool] = []
    signals: List[np.ndarray] = []
    for record in names:
        base = str(args.data / "ludb" / "data" / record)
        signal = wfdb.rdrecord(base).p_signal.T.astype(np.float64)
        signals.append(signal)
        annotations = {}
        for lead in LUDB_LEADS:
            ann = wfdb.rdann(base, lead)
            annotations[lead] = (np.asarray(ann.sample), list(ann.symbol))
        part = "held_out" if held_out(record) else "calibration"
        measured = {m: method(signal) for m, method in methods.items()}
        for rule, extremes in rules:
            reference = reference_intervals(annotations, extremes)
            for m in methods:
                for name in INTERVALS:
                    if reference[name] is None:
                        continue
                    value = measured[m][name]
                    if value is None:
                        missed[(m, rule, part)][name] += 1
                    else:
                        errors[(m, rule, part)][name].append(value - reference[name])
        _, rate, axis = ecgd_intervals(signal, "fridericia")
        samples, symbols = annotations["ii"]
        qrs_marks = np.array([s for s, sym in zip(samples, symbols) if sym == "N"])
        rate_errors.append(abs((rate or 0.0) - 60.0 * FS_HZ / float(np.diff(qrs_marks).mean())))
        expected = AXIS_CLASSES.get(axis_class.get(record, ""))
        if expected is not None and axis is not None:
            axis_hits.append(expected[0] - 15 <= axis <= expected[1] + 15)
    lines = ["| method | reference | part | PR | QRS | QT |", "|---|---|---|---|---|---|"]
    for (m, rule, part), e in errors.items():
        lines.append(f"| {m} | {rule} | {part} | " + " | ".join(summary(e, missed[(m, rule, part)]))
                     + " |")
    worst = max(rate_errors)
    lines += ["", f"Heart rate (60000 / mean RR) vs lead II QRS marks: within 5 bpm on "
                  f"{sum(e <= 5.0 for e in rate_errors)} of {len(rate_errors)} records "
                  f"(worst {worst:.1f} bpm).",
              f"QRS axis within LUDB's class (+-15 degrees): {sum(axis_hits)} of "
              f"{len(axis_hits)} records with a class and an axis."]
    if args.cost:
        lines += [""] + cost_lines(signals)
    lines.append(f"\n({time.perf_counter() - started:.0f} s)")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        figure, axes = plt.subplots(1, 3, figsize=(12, 3.5))
        for ax, name in zip(axes, INTERVALS):
            for m in methods:
                values = errors[(m, rules[0][0], "calibration")][name] + \
                    errors[(m, rules[0][0], "held_out")][name]
                ax.hist(values, bins=np.arange(-100, 101, 5), alpha=0.6, label=m)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_title(f"{name.upper()} error (ms), LUDB")
        axes[0].legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(args.plot, dpi=90)


if __name__ == "__main__":
    main()
