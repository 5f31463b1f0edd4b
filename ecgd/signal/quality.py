"""Signal quality control of one window, on the raw millivolt signal, before preprocessing.

A verdict is a value, not an exception: a rejected window still gets a report that says why.
Every check runs on all leads at once (``[leads, n]`` arrays, no per-lead Python loop).

Per lead (reason code ``<check>:<lead>``):

- ``saturation``: more than ``saturation_fraction_max`` of the samples at the digital range
  the format declares (``Recording.rails_mv``, passed in as ``at_rails``), as the deployment
  guide defines it. Where no range is declared, the samples in clipped runs stand in: runs of
  ``clip_run_min_samples`` or more consecutive samples within 0.5% of the lead's peak-to-peak
  range from its own maximum or minimum (a clipped front end pins the signal there, a real ECG
  only touches its extremes for a sample or two per beat). The verdict says which rule applied.
- ``flatline``: the variance of some ``flatline_window_s`` stretch (sliding by one sample) is
  below ``flatline_variance_min_mv2``.
- ``lead_off``: the lead's RMS about its mean is below ``lead_off_rms_min_mv``, or the front
  end's lead-off bit is set.
- ``amplitude``: peak-to-peak above ``amplitude_max_mv`` (wrong units or gain, or artefact).
- ``powerline``: power within mains +- 1 Hz over power at or above 0.5 Hz, above
  ``powerline_ratio_max``.

Noise, on the published signal-quality indices, each judged on its median over the measurable
leads (one odd lead does not reject a clean window); the reasons name the leads below the
limit:

- ``noise``: pSQI (Li & Clifford 2008: power 5-15 Hz over 5-40 Hz) below ``psqi_min``, or kSQI
  (kurtosis of the preprocessed window the model sees, scaled to 60 bpm) below ``ksqi_min``;
- ``electrode_motion``: bSQI (Li & Clifford 2008; Behar 2013: the beats the lead shows on its
  own against the all-lead detector's) below ``bsqi_min``;
- ``baseline_wander``: basSQI (Zhao & Zhang 2018: 1 - power 0-1 Hz over 0-40 Hz) of the raw
  window below ``bassqi_min`` (on the preprocessed window it does not separate NSTDB ``bw``:
  what survives the filters of that wander lies above 1 Hz).

The indices are skipped on leads flagged ``lead_off`` (their ratios divide noise by noise).
Per window: ``no_beats`` when fewer than ``min_beats`` R peaks are found. The quality score is
QS = 1 - (saturated or flat samples) / (leads x samples); a window is accepted only when
QS > ``quality_score_min`` and there is no reason at all. The thresholds' calibration:
tools/eval_qc.py and the README.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import signal

from ecgd.config import QcConfig
from ecgd.errors import RecordError
from ecgd.signal.beats import REFRACTORY_S, detect_beats
from ecgd.signal.preprocess import row_means

CLIP_TOLERANCE_FRACTION = 0.005   # of the lead's peak-to-peak range
PSQI_QRS_BAND_HZ = (5.0, 15.0)   # Li & Clifford 2008: QRS power over ECG power
PSQI_ECG_HIGH_HZ = 40.0
BASSQI_LOW_HZ = 1.0              # Zhao & Zhang 2018: baseline power below 1 Hz
BSQI_TOLERANCE_S = 0.15
BSQI_LEAD_PEAK_LEVEL = 0.2       # of the lead's own local QRS energy level: a beat of 45 %
                                 # of the typical amplitude still counts
SIGNAL_BAND_LOW_HZ = 0.5          # below this is baseline wander
MAINS_HALF_WIDTH_HZ = 1.0
_FLAT_BLOCKS_PER_WINDOW = 10
_RAIL_TOLERANCE_FRACTION = 1e-5  # of the declared range: under 1 LSB of a 16-bit converter
_FLAT_BOUND_MARGIN = 1e-6


@dataclasses.dataclass(frozen=True)
class QualityVerdict:
    """The quality-control result of one window.

    ``ok``: accept the window for interpretation. ``score``: QS in [0, 1]. ``reasons``: reason
    codes such as ``flatline:V3`` or ``no_beats``, empty when ``ok``. ``per_lead``: by lead
    name, the measured values behind the checks (``rms_mv``, ``ptp_mv``, ``saturated_fraction``,
    ``flat_fraction``, ``powerline_ratio``, ``bsqi``, ``ksqi``, ``psqi``, ``bassqi``; ratios and
    indices are None on leads too weak to measure). ``n_beats``: R peaks counted for
    ``no_beats``. ``saturation_rule``: ``declared_range`` or ``clipped_run``.
    """

    ok: bool
    score: float
    reasons: Tuple[str, ...]
    per_lead: Dict[str, Dict[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    n_beats: int = 0
    saturation_rule: str = "clipped_run"

    def as_report(self) -> Dict[str, object]:
        """The report's ``qc`` object: status, score, reasons, the saturation rule used."""
        return {"status": "accepted" if self.ok else "rejected",
                "score": round(float(self.score), 4), "reasons": list(self.reasons),
                "saturation_rule": self.saturation_rule}


def _row_extremes(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(maximum, minimum) of every row of C-contiguous ``[leads, n]``, each ``[leads, 1]``.

    reduceat over the flat array: x.max(axis=1) takes 5x longer on 12 x 5000.
    """
    starts = np.arange(0, x.size, x.shape[1])
    flat = x.reshape(-1)
    return (np.maximum.reduceat(flat, starts)[:, np.newaxis],
            np.minimum.reduceat(flat, starts)[:, np.newaxis])


def _runs_at_least(mask: np.ndarray, run: int) -> np.ndarray:
    """True where a sample is inside a run of ``run`` or more consecutive True in its row."""
    n = mask.shape[1]
    if n < run:
        return np.zeros_like(mask)
    # full[:, j]: the ``run`` samples from j on are all True. ANDing shifted copies whose
    # lengths double reaches any run length in log2(run) steps, without a cumulative sum.
    full = mask
    length = 1
    while 2 * length <= run:
        full = full[:, :-length] & full[:, length:]
        length *= 2
    if length < run:
        full = full[:, : n - run + 1] & full[:, run - length:]
    return _cover(full, run, n)


def _cover(starts: np.ndarray, length: int, n: int) -> np.ndarray:
    """Mark the ``length`` samples after every True start (rows of ``starts``), as a mask."""
    covered = np.zeros((starts.shape[0], n), dtype=bool)
    if not starts.any():  # the usual, clean case
        return covered
    covered[:, : starts.shape[1]] = starts
    # Spread every start to the right, doubling the covered span each step (log2(length)
    # boolean ORs instead of a cumulative sum over integers).
    span = 1
    while span < length:
        step = min(span, length - span)
        covered[:, step:] |= covered[:, :-step].copy()
        span += step
    return covered


def samples_at_rails(samples_mv: np.ndarray, rails_mv: np.ndarray) -> np.ndarray:
    """Per sample of ``[leads, n]``: at (within 1e-5 of the range of) its lead's declared
    lowest or highest value (``rails_mv`` ``[leads, 2]``, as ``Recording.rails_mv``)."""
    low = rails_mv[:, :1]
    high = rails_mv[:, 1:]
    tolerance = _RAIL_TOLERANCE_FRACTION * (high - low)
    return (samples_mv <= low + tolerance) | (samples_mv >= high - tolerance)


def _clipped_samples(x: np.ndarray, high: np.ndarray, low: np.ndarray, run: int) -> np.ndarray:
    """Samples in clipped runs at the lead's maximum ``high`` or minimum ``low`` ([leads, 1])."""
    tolerance = CLIP_TOLERANCE_FRACTION * (high - low)
    # A constant lead has no extremes to clip at: that is a flatline, not saturation.
    varying = (high - low) > 0
    at_rail = ((x >= high - tolerance) | (x <= low + tolerance)) & varying
    return _runs_at_least(at_rail, run)


def _flat_samples(centered: np.ndarray, window: int, variance_min_mv2: float) -> np.ndarray:
    """Samples inside some ``window``-sample stretch whose variance is below the minimum."""
    n_leads, n = centered.shape
    window = min(window, n)
    flat = np.zeros((n_leads, n), dtype=bool)
    suspects = np.flatnonzero(_may_be_flat(centered, window, variance_min_mv2))
    if suspects.size == 0:
        return flat
    rows = centered[suspects]
    sums = np.zeros((rows.shape[0], n + 1))
    squares = np.zeros((rows.shape[0], n + 1))
    np.cumsum(rows, axis=1, out=sums[:, 1:])
    np.cumsum(rows * rows, axis=1, out=squares[:, 1:])
    mean = (sums[:, window:] - sums[:, :-window]) / window
    variance = (squares[:, window:] - squares[:, :-window]) / window - mean * mean
    flat[suspects] = _cover(variance < variance_min_mv2, window, n)
    return flat


def _may_be_flat(centered: np.ndarray, window: int, variance_min_mv2: float) -> np.ndarray:
    """Per lead: False when no ``window``-sample stretch can have a variance below the minimum.

    A stretch of ``window`` samples holds at least ``m = window // block - 1`` whole blocks of
    ``block`` samples, in a row, and its variance is at least ``block / window`` times the sum
    of their variances (the sum of squares about the stretch's mean is at least the sum about
    each block's own mean). So when every ``m`` consecutive block variances add up to more than
    ``variance_min_mv2 * window / block``, the lead has no flat stretch, and the sliding
    variance (two cumulative sums over the whole lead) need not be computed for it.
    """
    n_leads, n = centered.shape
    block = max(1, window // _FLAT_BLOCKS_PER_WINDOW)
    m = window // block - 1
    n_blocks = n // block
    if m < 1 or n_blocks < m:
        return np.ones(n_leads, dtype=bool)
    blocks = centered[:, : n_blocks * block].reshape(n_leads * n_blocks, block)
    block_mean = row_means(blocks)[:, 0]
    block_variance = (np.einsum("ij,ij->i", blocks, blocks) / block
                      - block_mean * block_mean).reshape(n_leads, n_blocks)
    running = np.cumsum(block_variance, axis=1)
    lowest = np.min(running[:, m - 1:] - np.hstack([np.zeros((n_leads, 1)), running[:, :-m]]),
                    axis=1)
    # The margin keeps leads whose bound is within rounding of the threshold on the exact path.
    return lowest * block <= variance_min_mv2 * window * (1.0 + _FLAT_BOUND_MARGIN)


def _sample_fractions(saturated: np.ndarray,
                      flat: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """(QS, saturated fraction per lead, flat fraction per lead) from the two sample masks."""
    n_leads, n = saturated.shape
    if not (saturated.any() or flat.any()):  # the usual, clean case: skip the counting
        return 1.0, np.zeros(n_leads), np.zeros(n_leads)
    score = 1.0 - float(np.count_nonzero(saturated | flat)) / saturated.size
    return score, np.count_nonzero(saturated, axis=1) / n, np.count_nonzero(flat, axis=1) / n


@functools.lru_cache(maxsize=16)
def _spectral_weights(n: int, fs_hz: float, mains_hz: int) -> np.ndarray:
    """Indicator columns ``[bins, 7]`` over the rfft bins of ``n`` samples at ``fs_hz``.

    Columns: every bin but DC, f >= 0.5 Hz, mains +- 1 Hz, 0 < f < 0.5 Hz, the pSQI bands
    5-15 Hz and 5-40 Hz, and the basSQI band 0-1 Hz (DC excluded).
    """
    freqs_hz = np.fft.rfftfreq(n, d=1.0 / fs_hz)
    signal_band = freqs_hz >= SIGNAL_BAND_LOW_HZ
    columns = [freqs_hz > 0, signal_band, np.abs(freqs_hz - mains_hz) <= MAINS_HALF_WIDTH_HZ,
               (freqs_hz > 0) & ~signal_band,
               (freqs_hz >= PSQI_QRS_BAND_HZ[0]) & (freqs_hz <= PSQI_QRS_BAND_HZ[1]),
               (freqs_hz >= PSQI_QRS_BAND_HZ[0]) & (freqs_hz <= PSQI_ECG_HIGH_HZ),
               (freqs_hz > 0) & (freqs_hz <= BASSQI_LOW_HZ),
               (freqs_hz > 0) & (freqs_hz <= PSQI_ECG_HIGH_HZ)]
    return np.stack(columns, axis=1).astype(np.float64)


def _band_powers(rows: np.ndarray, fs_hz: float, mains_hz: int) -> np.ndarray:
    """Per lead, the power in each :func:`_spectral_weights` column: ``[8, leads]``."""
    spectrum = np.fft.rfft(rows, axis=1)
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    # Every band power of every lead in one matrix product (per-axis sums cost more).
    return (power @ _spectral_weights(rows.shape[1], float(fs_hz), int(mains_hz))).T


def _kurtosis(centered: np.ndarray) -> np.ndarray:
    """Per lead, Pearson's kurtosis (3 for Gaussian noise; an ECG's peaky beats give > 5)."""
    squared = centered * centered
    m2 = row_means(squared)[:, 0]
    m4 = np.einsum("ij,ij->i", squared, squared) / centered.shape[1]
    return m4 / np.maximum(m2 * m2, np.finfo(np.float64).tiny)


def _rate_factor(r_peaks: np.ndarray, fs_hz: float) -> float:
    """Beats per second (from the median RR), at least 1."""
    if r_peaks.size < 3:
        return 1.0
    return max(1.0, fs_hz / float(statistics.median(np.diff(r_peaks).tolist())))


def _median_of_leads(values: np.ndarray) -> float:
    """``np.median`` of one value per lead, the same to the bit (NaN when one is NaN): for a
    dozen values, a Python sort costs a tenth of np.median's call."""
    listed = values.tolist()
    return math.nan if any(math.isnan(value) for value in listed) else \
        float(statistics.median(listed))


def _beat_agreement(lead_envelopes: np.ndarray, r_peaks: np.ndarray,
                    fs_hz: float) -> np.ndarray:
    """Per lead, bSQI: the beats the lead shows on its own that the all-lead detector also
    found, over all beats either found (matched / (lead + all - matched), within 150 ms).

    Every lead's peaks come from one find_peaks call (a Python call per lead cost more than
    the search itself): the leads are laid end to end with ``distance`` NaN samples between
    them. A NaN neighbour is never below a sample (comparisons with NaN are false), so a
    lead's first and last samples stay non-peaks exactly as at the ends of its own array,
    and peaks of different leads lie at least ``distance`` apart, so the distance rule never
    weighs one lead's peak against another's: the same peaks as a call per lead.
    """
    n_leads, n = lead_envelopes.shape
    agreement = np.zeros(n_leads)
    if r_peaks.size == 0:
        return agreement
    distance = max(1, int(round(REFRACTORY_S * fs_hz)))
    stride = n + distance
    laid_out = np.full(n_leads * stride, np.nan)
    laid_out.reshape(n_leads, stride)[:, :n] = lead_envelopes
    peaks, _ = signal.find_peaks(laid_out, height=BSQI_LEAD_PEAK_LEVEL, distance=distance)
    lead_of_peak = peaks // stride
    nearest = np.abs((peaks % stride)[:, np.newaxis] - r_peaks[np.newaxis, :]).min(axis=1)
    own = np.bincount(lead_of_peak, minlength=n_leads)
    matched = np.bincount(lead_of_peak, weights=nearest <= BSQI_TOLERANCE_S * fs_hz,
                          minlength=n_leads)
    found = own > 0
    agreement[found] = matched[found] / (own[found] + r_peaks.size - matched[found])
    return agreement


def assess_window(window_mv: np.ndarray, fs_hz: float, lead_names: Sequence[str],
                  thresholds: QcConfig, mains_hz: int = 50,
                  lead_off: Optional[Sequence[bool]] = None,
                  r_peaks: Optional[np.ndarray] = None, *,
                  raw_mv: Optional[np.ndarray] = None, raw_fs_hz: Optional[float] = None,
                  at_rails: Optional[np.ndarray] = None,
                  model_view: Optional[np.ndarray] = None,
                  lead_envelopes: Optional[np.ndarray] = None) -> QualityVerdict:
    """Assess one window ``[leads, n]`` in millivolts at ``fs_hz`` (see module docstring).

    ``raw_mv`` is the same window at the source rate ``raw_fs_hz`` (saturation and flatline
    are judged there, before resampling smooths them; default: ``window_mv``), ``at_rails``
    its samples at the declared digital range (None: the clipped-run rule), ``model_view``
    the preprocessed window the model would see (kSQI is judged there; default:
    ``window_mv``). ``lead_off`` is the front end's per-lead electrode-off bit where a
    source has one; ``r_peaks`` and ``lead_envelopes`` come from
    :func:`ecgd.signal.beats.detect_beats` (run here when None).
    Raises RecordError when the shape does not match ``lead_names``.
    """
    x = np.ascontiguousarray(window_mv, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(lead_names) or x.shape[1] < 2:
        raise RecordError(f"quality control: window of shape {x.shape} does not match "
                          f"{len(lead_names)} leads of at least 2 samples")
    if lead_off is not None and len(lead_off) != len(lead_names):
        raise RecordError(f"quality control: {len(lead_off)} lead-off bits for "
                          f"{len(lead_names)} leads")
    raw = x if raw_mv is None else np.ascontiguousarray(raw_mv, dtype=np.float64)
    raw_rate = fs_hz if raw_fs_hz is None else raw_fs_hz
    if r_peaks is None or lead_envelopes is None:
        beats = detect_beats(x, fs_hz)
        r_peaks = beats.r_peaks if r_peaks is None else r_peaks
        lead_envelopes = beats.lead_envelopes

    # Shifted by the first sample first, so a constant lead centres to exact zeros.
    shifted = x - x[:, :1]
    centered = shifted - row_means(shifted)
    rms_mv = np.sqrt(np.einsum("ij,ij->i", centered, centered) / x.shape[1])
    raw_centered = raw - raw[:, :1]
    raw_centered -= row_means(raw_centered)
    high, low = _row_extremes(raw)
    ptp_mv = (high - low)[:, 0]
    if at_rails is not None:
        saturated = np.asarray(at_rails, dtype=bool)
        saturation_rule = "declared_range"
    else:
        saturated = _clipped_samples(raw, high, low, thresholds.clip_run_min_samples)
        saturation_rule = "clipped_run"
    flat = _flat_samples(raw_centered,
                         max(2, int(round(thresholds.flatline_window_s * raw_rate))),
                         thresholds.flatline_variance_min_mv2)
    score, saturated_fraction, flat_fraction = _sample_fractions(saturated, flat)
    off = rms_mv < thresholds.lead_off_rms_min_mv
    if lead_off is not None:
        off = off | np.asarray(lead_off, dtype=bool)
    measurable = ~off

    tiny = np.finfo(np.float64).tiny
    _, in_band, line, _, qrs_band, ecg_band, low, ecg = _band_powers(centered, fs_hz, mains_hz)
    powerline = line / (in_band + tiny)
    psqi = qrs_band / (ecg_band + tiny)
    bassqi = 1.0 - low / (ecg + tiny)
    seen = x if model_view is None else np.asarray(model_view, dtype=np.float64)
    seen = seen - row_means(seen)
    # Kurtosis falls as beats crowd the window (a pulse train's kurtosis goes as RR / QRS
    # width): above 60 bpm it is scaled back to what the same beats would give at 60 bpm,
    # so a tachycardia is not taken for noise.
    ksqi = _kurtosis(seen) * _rate_factor(np.asarray(r_peaks), fs_hz)
    bsqi = _beat_agreement(lead_envelopes, np.asarray(r_peaks), fs_hz)

    # Noise is judged on the window as a whole (the median over the measurable leads), so
    # one quiet or odd lead of a clean window does not reject it; the reasons then name the
    # leads whose own index fails.
    noise_reasons: List[str] = []
    if measurable.any():
        indices = {"noise": (psqi, thresholds.psqi_min), "electrode_motion":
                   (bsqi, thresholds.bsqi_min), "kurtosis": (ksqi, thresholds.ksqi_min),
                   "baseline_wander": (bassqi, thresholds.bassqi_min)}
        failing = {code: _median_of_leads(values[measurable]) < limit
                   for code, (values, limit) in indices.items()}
        for code, (values, limit) in indices.items():
            if failing[code]:
                worst = measurable & (values < limit)
                leads = np.flatnonzero(worst).tolist() if worst.any() else \
                    [int(np.argmin(np.where(measurable, values, np.inf)))]
                # Kurtosis that low means noise of any kind: reported as noise.
                label = "noise" if code == "kurtosis" else code
                noise_reasons += [f"{label}:{lead_names[i]}" for i in leads]
        noise_reasons = list(dict.fromkeys(noise_reasons))
    checks: List[Tuple[str, np.ndarray]] = [
        ("saturation", saturated_fraction > thresholds.saturation_fraction_max),
        ("flatline", flat_fraction > 0),
        ("lead_off", off),
        ("amplitude", ptp_mv > thresholds.amplitude_max_mv),
        ("powerline", measurable & (powerline > thresholds.powerline_ratio_max)),
    ]
    reasons = [f"{code}:{lead_names[i]}" for code, failed in checks
               for i in np.flatnonzero(failed).tolist()]
    reasons += noise_reasons
    n_beats = int(len(r_peaks))
    if n_beats < thresholds.min_beats:
        reasons.append("no_beats")

    per_lead: Dict[str, Dict[str, Optional[float]]] = {}
    columns = zip(lead_names, rms_mv.tolist(), ptp_mv.tolist(), saturated_fraction.tolist(),
                  flat_fraction.tolist(), powerline.tolist(), bsqi.tolist(), ksqi.tolist(),
                  psqi.tolist(), bassqi.tolist(), measurable.tolist())
    for name, rms, ptp, sat, flat_part, powerline_i, b, k, p, bas, usable in columns:
        per_lead[name] = {
            "rms_mv": rms,
            "ptp_mv": ptp,
            "saturated_fraction": sat,
            "flat_fraction": flat_part,
            "powerline_ratio": powerline_i if usable else None,
            "bsqi": b if usable else None,
            "ksqi": k if usable else None,
            "psqi": p if usable else None,
            "bassqi": bas if usable else None,
        }
    ok = not reasons and score > thresholds.quality_score_min
    return QualityVerdict(ok=ok, score=score, reasons=tuple(reasons), per_lead=per_lead,
                          n_beats=n_beats, saturation_rule=saturation_rule)
