"""Quality control on real LUDB windows: clean accepted, injected faults rejected by reason."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from ecgd.config import MeasurementConfig, QcConfig
from ecgd.records.recording import STANDARD_LEADS, Recording
from ecgd.signal.chain import SignalChain, WindowLayout, cut_window
from ecgd.signal.preprocess import make_preprocessor
from ecgd.signal.quality import QualityVerdict, assess_window
from ecgd.signal.resample import resample_to

wfdb = pytest.importorskip("wfdb")

FS_HZ = 500.0
QC = QcConfig()
# Clean LUDB records the calibrated QC rejects (tools/eval_qc.py lists them with reasons).
LUDB_REJECTED = {"125"}


@pytest.fixture(scope="module")
def ludb(shared_data: Path) -> Dict[str, np.ndarray]:
    """All LUDB records in the shared data, [12, 5000] mV each, by record name."""
    rows = (shared_data / "ludb" / "RECORDS").read_text().split()
    names = [row.split("/")[-1] for row in rows]
    return {name: wfdb.rdrecord(str(shared_data / "ludb" / "data" / name)).p_signal.T
            for name in names}


@pytest.fixture(scope="module")
def nstdb_noise(shared_data: Path) -> Dict[str, np.ndarray]:
    """NSTDB ma and bw noise, resampled to 500 Hz, 12 different 10-s stretches each."""
    out = {}
    for kind in ("ma", "bw"):
        raw = wfdb.rdrecord(str(shared_data / "nstdb" / kind), sampto=360 * 70).p_signal.T
        noise = resample_to(raw, 360.0, FS_HZ).astype(np.float64)
        out[kind] = np.stack([noise[i % 2, 5000 * (i // 2): 5000 * (i // 2 + 1)]
                              for i in range(12)])
    return out


def _assess(window: np.ndarray, **kwargs):
    return assess_window(window.astype(np.float32), FS_HZ, STANDARD_LEADS, QC, **kwargs)


def judge(window: np.ndarray, fs_hz: float = FS_HZ,
          leads=STANDARD_LEADS) -> QualityVerdict:
    """The verdict the pipeline gives a window: cut, resampled, judged with the ecgfounder
    profile's view of it (ecgd.signal.chain)."""
    recording = Recording(np.asarray(window, dtype=np.float32), fs_hz, tuple(leads), "test")
    layout = WindowLayout.of(recording, STANDARD_LEADS)
    chain = SignalChain(QC, MeasurementConfig(), make_preprocessor("ecgfounder", {}, FS_HZ, 50),
                        50)
    n = int(round(window.shape[1] * FS_HZ / fs_hz))
    return chain.judge(cut_window(recording, layout, 0, n, FS_HZ)).verdict


def _with_noise(window: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` scaled per lead to the given RMS signal-to-noise ratio."""
    signal_power = window.var(axis=1)
    noise_power = noise.var(axis=1)
    scale = np.sqrt(signal_power / noise_power / 10.0 ** (snr_db / 10.0))
    return window + (noise - noise.mean(axis=1, keepdims=True)) * scale[:, np.newaxis]


def test_clean_ludb_records_are_accepted(ludb: Dict[str, np.ndarray]) -> None:
    """The clean LUDB records pass as the pipeline judges them, but for the few listed."""
    rejected = {name for name, x in ludb.items() if not judge(x).ok}
    assert rejected == LUDB_REJECTED


def test_flat_lead_is_flatline(ludb: Dict[str, np.ndarray]) -> None:
    """A lead stuck at a constant value is rejected as flatline for that lead only."""
    window = ludb["1"].copy()
    window[8] = 0.37
    verdict = _assess(window)
    assert not verdict.ok
    assert "flatline:V3" in verdict.reasons
    assert {r.split(":")[1] for r in verdict.reasons if ":" in r} == {"V3"}
    # One lead of twelve is entirely flat; other leads add a few clipped samples at most.
    assert 0.9 < verdict.score <= 11 / 12


def test_clipped_lead_is_saturation(ludb: Dict[str, np.ndarray]) -> None:
    """A lead clipped at 40% of its range on both sides is rejected as saturation."""
    window = ludb["3"].copy()
    lead = window[1]
    low, high = np.percentile(lead, [5, 95])
    window[1] = np.clip(lead, low, high)
    verdict = _assess(window)
    assert "saturation:II" in verdict.reasons and not verdict.ok
    assert verdict.per_lead["II"]["saturated_fraction"] > 0.05


def test_electrode_off_amplitude_is_lead_off(ludb: Dict[str, np.ndarray]) -> None:
    """A lead reduced to 10 uV of noise is lead_off; the front-end bit alone also rejects."""
    window = ludb["20"].copy()
    window[4] = np.random.default_rng(0).normal(0.0, 0.01, window.shape[1])
    verdict = _assess(window)
    assert verdict.reasons == ("lead_off:aVL",)
    bit = [False] * 12
    bit[11] = True
    assert _assess(ludb["20"], lead_off=bit).reasons == ("lead_off:V6",)


def test_implausible_amplitude(ludb: Dict[str, np.ndarray]) -> None:
    """A lead 20 times too large (a wrong gain) is rejected as amplitude."""
    window = ludb["1"].copy()
    window[7] *= 20.0
    assert "amplitude:V2" in _assess(window).reasons


def test_powerline_hum(ludb: Dict[str, np.ndarray]) -> None:
    """0.2 mV of 50 Hz on lead I is powerline at 50 Hz mains, not when mains is 60 Hz."""
    window = ludb["1"].copy()
    window[0] += 0.2 * np.sin(2 * np.pi * 50.0 * np.arange(window.shape[1]) / FS_HZ)
    assert "powerline:I" in _assess(window).reasons
    assert "powerline:I" not in _assess(window, mains_hz=60).reasons


@pytest.fixture(scope="module")
def stress_set(shared_data: Path):
    """tools/eval_qc.py (the one implementation of the stress set), every 8th LUDB record
    with its QRS marks, and the NSTDB noise pools."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import eval_qc

    names = sorted(eval_qc.ludb_records(shared_data), key=int)[::8]
    return eval_qc, eval_qc.load_ludb(shared_data, names), eval_qc.load_noise(shared_data)


@pytest.mark.parametrize("kind", ["em", "ma", "bw"])
def test_stress_set_at_0_db_is_rejected(stress_set, kind: str) -> None:
    """LUDB + NSTDB noise at 0 dB (nst's SNR, each lead its own held-out noise segment, as
    tools/eval_qc.py builds it): at least 90 % of a 13-record subset is rejected."""
    stress, records, pools = stress_set
    pool = pools[kind].held_out
    rejected = [not judge(stress.stressed(*records[name],
                                          stress.pick_segments(pool, name, kind, 0), 0)).ok
                for name in records]
    assert np.mean(rejected) >= 0.9


def test_baseline_wander_noise(ludb: Dict[str, np.ndarray],
                               nstdb_noise: Dict[str, np.ndarray]) -> None:
    """NSTDB baseline wander at -12 dB RMS SNR is rejected as baseline_wander."""
    for name in ("1", "3", "20"):
        verdict = judge(_with_noise(ludb[name], nstdb_noise["bw"], -12.0))
        assert any(r.startswith("baseline_wander:") for r in verdict.reasons)


def test_nstdb_118e00_electrode_motion(shared_data: Path) -> None:
    """118e00 windows in its 0 dB noise bursts are rejected; its clean first minutes pass."""
    base = str(shared_data / "nstdb" / "118e00")
    raw = wfdb.rdrecord(base, sampfrom=0, sampto=360 * 60 * 8).p_signal.T
    leads = ("II", "V1")  # MLII: a modified lead II

    def verdicts(start_s: float, stop_s: float):
        out = []
        for s in np.arange(start_s, stop_s, 10.0):
            part = raw[:, int(s * 360): int((s + 10) * 360)]
            out.append(judge(part, 360.0, leads))
        return out

    clean = verdicts(0.0, 240.0)
    noisy = verdicts(330.0, 410.0)
    assert np.mean([v.ok for v in clean]) >= 0.9
    assert np.mean([not v.ok for v in noisy]) >= 0.9


def test_no_beats_and_shape_errors() -> None:
    """Pure hum has no beats; a window that does not match its lead names is an error."""
    from ecgd.errors import RecordError

    t = np.arange(5000) / FS_HZ
    hum = np.tile(0.5 * np.sin(2 * np.pi * 1.0 * t), (12, 1))
    verdict = _assess(hum, r_peaks=np.array([], dtype=np.int64))
    assert "no_beats" in verdict.reasons
    with pytest.raises(RecordError):
        assess_window(np.zeros((11, 5000)), FS_HZ, STANDARD_LEADS, QC)


def test_flat_stretch_inside_a_lead(ludb: Dict[str, np.ndarray]) -> None:
    """A 3-s stuck stretch in one lead is flatline for that lead, covering the stretch."""
    window = ludb["20"].copy()
    window[10, 2000:3500] = window[10, 2000]
    verdict = _assess(window)
    assert verdict.reasons == ("flatline:V5",) and not verdict.ok
    # The flat samples are the union of every 2-s stretch whose variance is below the limit:
    # the 1500 stuck samples and the few real ones next to them that keep it below.
    window_samples = int(QC.flatline_window_s * FS_HZ)
    variances = np.lib.stride_tricks.sliding_window_view(window[10], window_samples).var(axis=1)
    flat = np.zeros(window.shape[1], dtype=bool)
    for start in np.flatnonzero(variances < QC.flatline_variance_min_mv2):
        flat[start:start + window_samples] = True
    assert flat[2000:3500].all()
    assert verdict.per_lead["V5"]["flat_fraction"] == pytest.approx(flat.mean())
    assert all(verdict.per_lead[lead]["flat_fraction"] == 0.0 for lead in STANDARD_LEADS
               if lead != "V5")


def test_flat_bound_agrees_with_exact_sliding_variance(ludb: Dict[str, np.ndarray]) -> None:
    """With the threshold just above / below a lead's lowest 1-s variance, it is / is not flat."""
    from ecgd.signal.quality import _flat_samples

    window_samples = 500
    for name in ("1", "20", "91"):
        leads = ludb[name] - ludb[name].mean(axis=1, keepdims=True)
        for lead in leads[:4]:
            stretches = np.lib.stride_tricks.sliding_window_view(lead, window_samples)
            lowest_mv2 = float(stretches.var(axis=1).min())
            above = _flat_samples(lead[np.newaxis], window_samples, lowest_mv2 * 1.001)
            below = _flat_samples(lead[np.newaxis], window_samples, lowest_mv2 * 0.999)
            assert above.any() and not below.any()


@pytest.mark.parametrize("run", [2, 3, 4, 5, 7, 8, 13])
def test_clipped_runs_of_any_length(run: int) -> None:
    """Samples are marked exactly when they sit in a run of at least ``run`` True samples."""
    from ecgd.signal.quality import _runs_at_least

    mask = np.random.default_rng(run).random((3, 400)) < 0.7
    expected = np.zeros_like(mask)
    for row, bits in enumerate(mask):
        start = 0
        while start < bits.size:
            stop = start
            while stop < bits.size and bits[stop]:
                stop += 1
            if stop - start >= run:
                expected[row, start:stop] = True
            start = stop + 1
    np.testing.assert_array_equal(_runs_at_least(mask, run), expected)


def test_bsqi_peak_search_over_all_leads_equals_a_search_per_lead(ludb) -> None:
    """bSQI's one find_peaks call over the leads laid end to end finds exactly the peaks a
    call per lead finds: edge samples stay non-peaks, no lead's peak suppresses another's."""
    from scipy import signal

    from ecgd.signal.beats import REFRACTORY_S, detect_beats
    from ecgd.signal.quality import (BSQI_LEAD_PEAK_LEVEL, BSQI_TOLERANCE_S,
                                     _beat_agreement)

    def per_lead(envelopes: np.ndarray, r_peaks: np.ndarray) -> np.ndarray:
        agreement = np.zeros(envelopes.shape[0])
        for lead, envelope in enumerate(envelopes):
            own, _ = signal.find_peaks(envelope, height=BSQI_LEAD_PEAK_LEVEL,
                                       distance=int(round(REFRACTORY_S * FS_HZ)))
            if own.size and r_peaks.size:
                nearest = np.abs(own[:, np.newaxis] - r_peaks[np.newaxis, :]).min(axis=1)
                matched = int(np.count_nonzero(nearest <= BSQI_TOLERANCE_S * FS_HZ))
                agreement[lead] = matched / (own.size + r_peaks.size - matched)
        return agreement

    cases = []
    for window in list(ludb.values())[:6]:
        beats = detect_beats(window, FS_HZ)
        cases.append((beats.lead_envelopes, beats.r_peaks))
    # Peaks on the first and last samples and a lead's peak one refractory period from the
    # next lead's start: where laying the leads end to end could go wrong.
    edges = cases[0][0].copy()
    edges[:, 0] = edges[:, -1] = 5.0
    edges[:, 1] = edges[:, -2] = 4.0
    edges[:, -3] = 6.0
    edges[:, 2] = 6.0
    cases.append((edges, cases[0][1]))
    cases.append((cases[0][0], np.array([], dtype=np.int64)))
    for envelopes, r_peaks in cases:
        np.testing.assert_array_equal(_beat_agreement(envelopes, r_peaks, FS_HZ),
                                      per_lead(envelopes, r_peaks))
    assert any(_beat_agreement(e, r, FS_HZ).any() for e, r in cases)
