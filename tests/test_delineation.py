"""Global intervals and axes: LUDB cardiologists' marks, known-answer axes, what cannot be measured."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

from ecgd.records.recording import STANDARD_LEADS
from ecgd.signal.beats import detect_r_peaks
from ecgd.signal.delineation import measure_intervals

wfdb = pytest.importorskip("wfdb")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from eval_intervals import LUDB_LEADS, reference_intervals  # noqa: E402

FS_HZ = 500.0
# Sinus records from both the calibration and the held-out part, normal and wide QRS.
SINUS_RECORDS = ("1", "3", "9", "14", "18", "23", "27", "36")
ATRIAL_FIBRILLATION = ("8", "38")
# Per-record limits: a few times the mean +- SD the tools report over all records.
LIMITS_MS = {"pr": 30.0, "qrs": 25.0, "qt": 45.0}


def _ludb(shared_data: Path, record: str) -> Tuple[np.ndarray, Dict]:
    base = str(shared_data / "ludb" / "data" / record)
    annotations = {}
    for lead in LUDB_LEADS:
        ann = wfdb.rdann(base, lead)
        annotations[lead] = (np.asarray(ann.sample), list(ann.symbol))
    return wfdb.rdrecord(base).p_signal.T.astype(np.float64), annotations


@pytest.mark.parametrize("record", SINUS_RECORDS)
def test_ludb_intervals_match_the_cardiologists(shared_data: Path, record: str) -> None:
    """PR, QRS and QT of sinus LUDB records are within a few SD of the consensus marks."""
    signal, annotations = _ludb(shared_data, record)
    reference = reference_intervals(annotations)
    measured = measure_intervals(signal, detect_r_peaks(signal, FS_HZ), FS_HZ, STANDARD_LEADS)
    for name, limit in LIMITS_MS.items():
        value = getattr(measured, f"{name}_ms")
        assert value is not None, (name, measured.unmeasured)
        assert abs(value - reference[name]) <= limit, (name, value, reference[name])
    rr_s = float(np.median(np.diff(detect_r_peaks(signal, FS_HZ)))) / FS_HZ
    assert measured.qtc_ms == pytest.approx(measured.qt_ms / rr_s ** (1.0 / 3.0), rel=0.02)


@pytest.mark.parametrize("record", ATRIAL_FIBRILLATION)
def test_atrial_fibrillation_has_no_pr(shared_data: Path, record: str) -> None:
    """No P wave in atrial fibrillation: PR and P axis are null with reason no_p_wave."""
    signal, _ = _ludb(shared_data, record)
    measured = measure_intervals(signal, detect_r_peaks(signal, FS_HZ), FS_HZ, STANDARD_LEADS)
    assert measured.pr_ms is None and measured.p_axis_deg is None
    assert measured.unmeasured["pr_ms"] == measured.unmeasured["p_axis_deg"] == "no_p_wave"
    assert measured.qrs_ms is not None


def _dipole_ecg(axis_deg: float, rate_bpm: float = 60.0) -> Tuple[np.ndarray, np.ndarray]:
    """12 leads of a heart whose P, QRS and T all point at ``axis_deg`` in the frontal
    plane (limb leads are projections, Einthoven / Goldberger; V leads a fixed mix)."""
    n = int(10 * FS_HZ)
    t = np.arange(n) / FS_HZ
    beats = np.arange(0.5, 9.6, 60.0 / rate_bpm)
    wave = np.zeros(n)
    for r in beats:
        wave += 0.15 * np.exp(-0.5 * ((t - r + 0.16) / 0.02) ** 2)
        wave += 1.0 * np.exp(-0.5 * ((t - r) / 0.012) ** 2)
        wave += 0.3 * np.exp(-0.5 * ((t - r - 0.28) / 0.04) ** 2)
    angle = math.radians(axis_deg)
    projection = {"I": math.cos(angle), "II": math.cos(angle - math.radians(60)),
                  "III": math.cos(angle - math.radians(120)),
                  "aVR": -math.cos(angle - math.radians(30)) * math.sqrt(3) / 2,
                  "aVL": math.cos(angle + math.radians(30)) * math.sqrt(3) / 2,
                  "aVF": math.sin(angle) * math.sqrt(3) / 2}
    gains = [projection[lead] for lead in STANDARD_LEADS[:6]] + [0.5, 0.8, 1.0, 1.2, 1.0, 0.8]
    rng = np.random.default_rng(1)
    signal = np.outer(gains, wave) + rng.normal(0, 0.01, (12, n))
    return signal, np.round(beats * FS_HZ).astype(np.int64)


@pytest.mark.parametrize("axis_deg", [-60.0, -30.0, 0.0, 45.0, 75.0, 120.0, 170.0])
def test_frontal_axes_known_answer(axis_deg: float) -> None:
    """A heart vector at a known frontal angle gives that P, QRS and T axis (+-5 degrees)."""
    signal, _ = _dipole_ecg(axis_deg)
    measured = measure_intervals(signal, detect_r_peaks(signal, FS_HZ), FS_HZ, STANDARD_LEADS)
    for field in ("p_axis_deg", "qrs_axis_deg", "t_axis_deg"):
        value = getattr(measured, field)
        assert value is not None, (field, measured.unmeasured)
        assert abs((value - axis_deg + 180.0) % 360.0 - 180.0) <= 5.0, (field, value)


def test_two_leads_give_intervals_but_no_axes() -> None:
    """Without leads I and aVF the axes are null (needs_leads_I_aVF); intervals still come."""
    signal, _ = _dipole_ecg(60.0)
    two = signal[[1, 7]]
    measured = measure_intervals(two, detect_r_peaks(two, FS_HZ), FS_HZ, ("II", "V2"))
    assert measured.qrs_ms is not None and measured.qt_ms is not None
    for field in ("p_axis_deg", "qrs_axis_deg", "t_axis_deg"):
        assert getattr(measured, field) is None
        assert measured.unmeasured[field] == "needs_leads_I_aVF"


def test_bazett_and_fridericia() -> None:
    """qtc_formula picks the correction: QT / RR^(1/2) (Bazett) or QT / RR^(1/3)."""
    signal, _ = _dipole_ecg(60.0, rate_bpm=90.0)
    peaks = detect_r_peaks(signal, FS_HZ)
    rr_s = float(np.median(np.diff(peaks))) / FS_HZ
    bazett = measure_intervals(signal, peaks, FS_HZ, STANDARD_LEADS, "bazett")
    fridericia = measure_intervals(signal, peaks, FS_HZ, STANDARD_LEADS, "fridericia")
    assert bazett.qtc_ms == pytest.approx(bazett.qt_ms / math.sqrt(rr_s))
    assert fridericia.qtc_ms == pytest.approx(fridericia.qt_ms / rr_s ** (1.0 / 3.0))


@pytest.mark.parametrize("signal", [np.zeros((12, 5000)), np.full((12, 5000), 3.0),
                                    np.zeros((12, 100))], ids=["flat", "constant", "short"])
def test_nothing_to_measure_is_null_with_a_reason(signal: np.ndarray) -> None:
    """A window without beats gives every field null with reason too_few_beats, no exception."""
    measured = measure_intervals(signal, detect_r_peaks(signal, FS_HZ), FS_HZ, STANDARD_LEADS)
    assert all(getattr(measured, f) is None for f in ("pr_ms", "qrs_ms", "qt_ms", "qtc_ms"))
    assert set(measured.unmeasured.values()) == {"too_few_beats"}
