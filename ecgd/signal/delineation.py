"""Global 12-lead intervals and frontal axes from a median beat.

What every resting-ECG program prints (GE 12SL, Philips DXL, Glasgow): PR, QRS duration, QT,
QTc and the P, QRS and T axes, measured once per window on a representative beat:

1. The dominant beats (RR within 20 % of the median, not cut by the window's edges) are
   aligned on their R peaks. Baseline wander is taken out as resting-ECG programs do: a
   line through the isoelectric PR segment of consecutive beats (knots) is subtracted.
   The median of each lead over the beats, low-passed at 40 Hz, is the median beat;
   ectopic beats and noise spikes drop out.
2. Boundaries are global, from all leads at once, as the IEC 60601-2-25 measurement rules
   define them (earliest onset, latest offset in any lead): the spatial velocity
   ``sqrt(sum over leads of (dx/dt)^2)`` rises above its isoelectric level at an onset and
   falls back to it at an offset. QRS onset and offset are where it crosses
   ``_QRS_EDGE_FRACTION`` of the QRS peak velocity, searched outward from the R peak.
3. The T wave is the largest spatial amplitude between the QRS end and the next beat, about
   an isoelectric level that moves in a line from the PR to the TP segment; its end is found
   by the trapezium-area method on the descent after the T peak. A T wave rising less than
   ``_T_MIN_MV`` is flat: QT is null.
4. The P wave is the largest spatial amplitude in the 300 ms before the QRS. It is taken as
   a P wave only when it is at least ``_P_MIN_MV`` and every beat shows the same wave there
   (``_P_MIN_CONSISTENCY``), so atrial fibrillation and flutter give no PR. Its onset is
   the end of the last stretch of ``_P_QUIET_S`` before the steepest rise where the spatial
   velocity, smoothed over ``_P_SMOOTH_S`` so that noise does not carry a small P's onset
   away, stays under ``_P_EDGE_FRACTION`` of that rise: the velocity of a notched or bifid
   P wave dips between its humps, and the first dip is not the onset.
5. Axes are the angle of the net area of the wave in leads I and aVF (hexaxial system,
   aVF = (sqrt(3)/2) E sin(angle)), over the wave's global boundaries.

Every value that cannot be measured is None with a reason code, never a guess.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage, signal

from ecgd.signal.preprocess import ZeroPhaseFilter

QTC_FORMULAS = ("fridericia", "bazett")

_LOWPASS_HZ = 40.0
_BEFORE_R_S = 0.40       # median beat from 400 ms before the R peak ...
_AFTER_R_S = 0.70        # ... to 700 ms after it (cut earlier at fast rates)
_DOMINANT_RR_TOLERANCE = 0.2
_MIN_BEATS = 2
_QRS_SEARCH_S = 0.12     # QRS boundaries searched within 120 ms either side of the R peak
_QRS_EDGE_FRACTION = 0.08
_T_SEARCH_START_S = 0.06  # the T wave starts at least 60 ms after the QRS offset
_T_SMOOTH_S = 0.02
_T_END_REACH_S = 0.12     # trapezium's far side: 120 ms after the steepest descent
_T_PEAK_RR_FRACTION = 0.6  # the T peak lies within 60 % of the RR interval after the R peak
_T_PEAK_MAX_S = 0.5
_T_END_SEARCH_S = 0.3      # and the T wave ends within 300 ms of its peak
_TP_S = 0.06              # the TP segment's level: 60 ms before the next P wave
_TP_MIN_AFTER_QRS_S = 0.3  # ... and at least 300 ms after the QRS
_T_MIN_MV = 0.05           # spatial amplitude of the T wave above the level after it
_P_WINDOW_S = 0.30
_P_GAP_S = 0.02          # the P peak is at least 20 ms before the QRS onset
_P_EDGE_FRACTION = 0.42
_P_QUIET_S = 0.04        # the isoelectric stretch before a P wave lasts at least 40 ms
_P_SMOOTH_S = 0.02       # P onset on the velocity of a 20-ms moving average
_P_MIN_MV = 0.05         # spatial amplitude of the median beat's P wave
_P_MIN_CONSISTENCY = 0.3  # 1 - RMS(beat - median, less a ramp) / RMS(median), P window
_ISOELECTRIC_S = 0.03


@dataclasses.dataclass(frozen=True)
class Intervals:
    """Global measurements of one window, in ms and degrees; None with a reason in
    ``unmeasured`` (field name -> reason code) when a value cannot be measured."""

    pr_ms: Optional[float] = None
    qrs_ms: Optional[float] = None
    qt_ms: Optional[float] = None
    qtc_ms: Optional[float] = None
    p_axis_deg: Optional[float] = None
    qrs_axis_deg: Optional[float] = None
    t_axis_deg: Optional[float] = None
    unmeasured: Dict[str, str] = dataclasses.field(default_factory=dict)

    def as_fields(self) -> Dict[str, object]:
        """The report's interval and axis fields (rounded to 1 ms / 1 degree)."""
        fields: Dict[str, object] = {}
        for name in ("pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "p_axis_deg", "qrs_axis_deg",
                     "t_axis_deg"):
            value = getattr(self, name)
            fields[name] = None if value is None else float(round(value))
        return fields


FIELDS = ("pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "p_axis_deg", "qrs_axis_deg", "t_axis_deg")


def unmeasurable(reason: str) -> Intervals:
    """Every field None for the same ``reason``."""
    return Intervals(unmeasured={name: reason for name in FIELDS})


@functools.lru_cache(maxsize=16)
def _lowpass(fs_hz: float) -> ZeroPhaseFilter:
    high_hz = min(_LOWPASS_HZ, 0.45 * fs_hz)
    return ZeroPhaseFilter(signal.butter(2, high_hz, btype="lowpass", fs=fs_hz, output="sos"))


def median_beat(window_mv: np.ndarray, r_peaks: np.ndarray, fs_hz: float
                ) -> Optional[Tuple[np.ndarray, int, float, np.ndarray]]:
    """(median beat ``[leads, m]`` mV, index of its R peak, median RR in samples, the
    baseline-corrected dominant beats it is the median of ``[leads, beats, m]``), or None
    with fewer than ``_MIN_BEATS`` dominant beats.

    Baseline wander is removed as resting-ECG programs do, by a line through the
    isoelectric PR segment of consecutive beats (knots), not by filtering the whole window:
    a 0.5 Hz high-pass over 12 x 5000 samples cost more than the rest of the measurement
    and tilts the ST segment. Only the median beat is low-passed (40 Hz).
    """
    if r_peaks.size < _MIN_BEATS + 1:
        return None
    rr = np.diff(r_peaks).astype(np.float64)
    rr_median = float(statistics.median(rr.tolist()))
    before = int(round(_BEFORE_R_S * fs_hz))
    after = int(round(min(_AFTER_R_S * fs_hz, 0.9 * rr_median)))
    n = window_mv.shape[1]
    # A beat is dominant when the RR before it is typical (not premature, not after a pause).
    typical = np.abs(rr - rr_median) <= _DOMINANT_RR_TOLERANCE * rr_median
    candidates = r_peaks[1:][typical]
    inside = candidates[(candidates - before >= 0) & (candidates + after <= n)]
    if inside.size < _MIN_BEATS:
        return None
    x = np.asarray(window_mv, dtype=np.float64)
    offsets = np.arange(-before, after)
    beats = x[:, inside[:, np.newaxis] + offsets[np.newaxis, :]]  # [leads, beats, m]
    # The PR segment: just before the QRS onset of the (wander-blurred) mean beat.
    bounds = _qrs_bounds(_spatial_velocity(beats.mean(axis=1)), before, fs_hz)
    knot_width = max(1, int(round(_ISOELECTRIC_S * fs_hz)))
    knot_end = (bounds[0] if bounds is not None else before - knot_width) - before
    knot_starts = r_peaks + knot_end - knot_width
    knot_starts = knot_starts[(knot_starts >= 0) & (knot_starts + knot_width <= n)]
    if knot_starts.size:
        knots = x[:, knot_starts[:, np.newaxis] + np.arange(knot_width)].mean(axis=2)
        where = (inside[:, np.newaxis] + offsets[np.newaxis, :]).ravel().astype(np.float64)
        centres = knot_starts + 0.5 * (knot_width - 1)
        beats -= _interpolate_rows(knots, centres, where).reshape(beats.shape)
    template = _lowpass(float(fs_hz))(_median_of_beats(beats))
    return template, before, rr_median, beats


def _median_of_beats(beats: np.ndarray) -> np.ndarray:
    """``np.median(beats, axis=1)`` of ``[leads, beats, m]``, equal to it: sorting the few
    beats costs a quarter of np.median's partition on this shape."""
    ordered = np.sort(beats, axis=1)
    k = beats.shape[1]
    return 0.5 * (ordered[:, (k - 1) // 2] + ordered[:, k // 2])


def _interpolate_rows(values: np.ndarray, at: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``np.interp(where, at, row)`` for every row of ``values`` ``[rows, k]`` at once
    (constant beyond the first and last point), as ``[rows, len(where)]``."""
    if at.size == 1:
        return np.repeat(values, where.size, axis=1)
    right = np.clip(np.searchsorted(at, where), 1, at.size - 1)
    fraction = np.clip((where - at[right - 1]) / (at[right] - at[right - 1]), 0.0, 1.0)
    interpolated = values[:, right - 1]
    interpolated *= 1.0 - fraction
    high = values[:, right]
    high *= fraction
    interpolated += high
    return interpolated


def _first_below(values: np.ndarray, start: int, stop: int, level: float) -> Optional[int]:
    """First index from ``start`` stepping towards ``stop`` (exclusive, may be -1) whose
    value is below ``level``; None when there is none."""
    indices = np.arange(start, stop, 1 if stop > start else -1)
    hits = indices[values[indices] < level]
    return int(hits[0]) if hits.size else None


def _spatial_velocity(template: np.ndarray) -> np.ndarray:
    """``sqrt(sum over leads of (dx/dt)^2)`` per sample of ``[leads, m]``."""
    return np.sqrt(np.sum(np.gradient(template, axis=1) ** 2, axis=0))


def _qrs_bounds(velocity: np.ndarray, r_index: int, fs_hz: float) -> Optional[Tuple[int, int]]:
    """(onset, offset) of the QRS of a beat whose spatial ``velocity`` and R peak index are
    given: where the velocity falls below ``_QRS_EDGE_FRACTION`` of its QRS peak, searched
    outward from the first and last velocity peak; None when flat or not found."""
    search = int(round(_QRS_SEARCH_S * fs_hz))
    qrs_lo, qrs_hi = max(0, r_index - search), min(velocity.size, r_index + search)
    peak_velocity = float(velocity[qrs_lo:qrs_hi].max())
    if peak_velocity <= 0:
        return None
    edge = _QRS_EDGE_FRACTION * peak_velocity
    first_peak = qrs_lo + int(np.argmax(velocity[qrs_lo:r_index + 1]))
    last_peak = r_index + int(np.argmax(velocity[r_index:qrs_hi]))
    onset = _first_below(velocity, first_peak, qrs_lo - 1, edge)
    offset = _first_below(velocity, last_peak, qrs_hi, edge)
    if onset is None or offset is None:
        return None
    return onset, offset


def measure_intervals(window_mv: np.ndarray, r_peaks: np.ndarray, fs_hz: float,
                      lead_names: Sequence[str], qtc_formula: str = "fridericia") -> Intervals:
    """Global PR, QRS, QT, QTc and the P/QRS/T axes of one window (see module docstring).

    ``window_mv`` is ``[leads, n]`` mV at ``fs_hz`` with ``lead_names``; ``r_peaks`` are
    sample indices in it. Any number of leads: intervals from what there is, axes only with
    leads I and aVF.
    """
    if qtc_formula not in QTC_FORMULAS:
        raise ValueError(f"unknown QTc formula {qtc_formula!r}")
    beat = median_beat(window_mv, np.asarray(r_peaks, dtype=np.int64), fs_hz)
    if beat is None:
        return unmeasurable("too_few_beats")
    template, r_index, rr_samples, beats = beat
    ms = 1000.0 / fs_hz
    velocity = _spatial_velocity(template)
    unmeasured: Dict[str, str] = {}
    if not velocity.any():
        return unmeasurable("flat_median_beat")
    bounds = _qrs_bounds(velocity, r_index, fs_hz)
    if bounds is None:
        return unmeasurable("qrs_boundaries_not_found")
    onset, offset = bounds
    qrs_ms = (offset - onset) * ms

    # Isoelectric level of every lead: the flattest 30 ms just before the QRS onset.
    iso = max(1, int(round(_ISOELECTRIC_S * fs_hz)))
    baseline = template[:, max(0, onset - iso):onset + 1].mean(axis=1, keepdims=True)
    leveled = template - baseline
    amplitude = np.sqrt(np.sum(leveled ** 2, axis=0))

    p_onset, p_reason = _p_onset(template, beats, amplitude, onset, fs_hz)
    t_amplitude = _t_wave_amplitude(leveled, onset, offset, p_onset, rr_samples, fs_hz)
    t_end, t_reason = _t_end(t_amplitude, offset, r_index, rr_samples, fs_hz)
    qt_ms = None if t_end is None else (t_end - onset) * ms
    if qt_ms is None:
        unmeasured["qt_ms"] = unmeasured["qtc_ms"] = t_reason

    pr_ms = None if p_onset is None else (onset - p_onset) * ms
    if pr_ms is None:
        unmeasured["pr_ms"] = unmeasured["p_axis_deg"] = p_reason

    qtc_ms = None
    if qt_ms is not None:
        rr_s = rr_samples / fs_hz
        qtc_ms = qt_ms / (rr_s ** (1.0 / 3.0) if qtc_formula == "fridericia" else math.sqrt(rr_s))

    axes: Dict[str, Optional[float]] = {"p_axis_deg": None, "qrs_axis_deg": None,
                                        "t_axis_deg": None}
    names = list(lead_names)
    if "I" in names and "aVF" in names:
        lead_i, lead_avf = leveled[names.index("I")], leveled[names.index("aVF")]
        spans = {"qrs_axis_deg": (onset, offset + 1)}
        if t_end is not None:
            spans["t_axis_deg"] = (offset, t_end + 1)
        if p_onset is not None:
            spans["p_axis_deg"] = (p_onset, onset)
        for field, (lo, hi) in spans.items():
            axes[field] = _frontal_axis_deg(float(lead_i[lo:hi].sum()),
                                            float(lead_avf[lo:hi].sum()))
    else:
        for field in axes:
            unmeasured.setdefault(field, "needs_leads_I_aVF")
    if t_end is None:
        unmeasured.setdefault("t_axis_deg", t_reason)
    return Intervals(pr_ms=pr_ms, qrs_ms=qrs_ms, qt_ms=qt_ms, qtc_ms=qtc_ms,
                     unmeasured=unmeasured, **axes)


def _t_wave_amplitude(leveled: np.ndarray, qrs_onset: int, qrs_offset: int,
                      p_onset: Optional[int], rr_samples: float, fs_hz: float) -> np.ndarray:
    """Spatial amplitude of the median beat for finding its T wave, about an isoelectric
    level that moves in a straight line from the PR segment (``leveled`` is zero there) to
    the TP segment: the last ``_TP_S`` before the next beat's P wave, or before the end of
    the median beat.

    A level that differs between the PR and the TP segment (an atrial repolarisation wave,
    wander the knots did not follow) otherwise adds a slow ramp to every lead, and the T
    peak is taken on it, far after the real one (LUDB 130: QT 654 ms for 486 ms). With
    less than ``_TP_MIN_AFTER_QRS_S`` between the QRS and the TP segment (fast rates, where
    the next P sits on the T wave) the PR level alone is used.
    """
    stop = leveled.shape[1]
    if p_onset is not None:
        stop = min(stop, int(p_onset + rr_samples) - int(round(_P_GAP_S * fs_hz)))
    tp = int(round(_TP_S * fs_hz))
    if stop - tp <= qrs_offset + int(round(_TP_MIN_AFTER_QRS_S * fs_hz)):
        return np.sqrt(np.sum(leveled ** 2, axis=0))
    tp_level = leveled[:, stop - tp:stop].mean(axis=1, keepdims=True)
    position = np.clip((np.arange(leveled.shape[1]) - qrs_onset) / (stop - tp / 2 - qrs_onset),
                       0.0, 1.0)
    return np.sqrt(np.sum((leveled - tp_level * position) ** 2, axis=0))


def _t_end(amplitude: np.ndarray, qrs_offset: int, r_index: int, rr_samples: float,
           fs_hz: float) -> Tuple[Optional[int], str]:
    """End of the T wave of the median beat's spatial amplitude, or None with the reason.

    A T wave that rises less than ``_T_MIN_MV`` above the lowest level after it is flat:
    its end would be wherever noise puts the steepest descent, so QT is not measured.
    """
    m = amplitude.size
    iso = max(1, int(round(_ISOELECTRIC_S * fs_hz)))
    t_start = qrs_offset + int(round(_T_SEARCH_START_S * fs_hz))
    t_peak_stop = min(m, r_index + int(round(min(_T_PEAK_RR_FRACTION * rr_samples,
                                                  _T_PEAK_MAX_S * fs_hz))))
    if t_peak_stop - t_start <= iso:
        return None, "t_end_not_found"
    t_peak = t_start + int(np.argmax(amplitude[t_start:t_peak_stop]))
    t_stop = min(m, int(round(r_index + 0.9 * rr_samples)),
                 t_peak + int(round(_T_END_SEARCH_S * fs_hz)))
    if amplitude[t_peak] - float(amplitude[t_peak:t_stop].min()) < _T_MIN_MV:
        return None, "flat_t_wave"
    t_end = _trapezium_end(amplitude, t_peak, t_stop, fs_hz)
    return (None, "t_end_not_found") if t_end is None else (t_end, "")


def _p_onset(template: np.ndarray, beats: np.ndarray, amplitude: np.ndarray, qrs_onset: int,
             fs_hz: float) -> Tuple[Optional[int], str]:
    """P-wave onset of the median beat, or None with the reason: ``no_p_wave`` when nothing
    in the 300 ms before the QRS is large enough or the same in every beat (atrial
    fibrillation, flutter), ``p_onset_not_found`` when the wave never falls back to its
    isoelectric level inside the search window."""
    iso = max(1, int(round(_ISOELECTRIC_S * fs_hz)))
    p_stop = qrs_onset - int(round(_P_GAP_S * fs_hz))
    p_start = max(0, qrs_onset - int(round(_P_WINDOW_S * fs_hz)))
    if p_stop - p_start <= iso:
        return None, "no_p_wave"
    p_peak = p_start + int(np.argmax(amplitude[p_start:p_stop]))
    if amplitude[p_peak] < _P_MIN_MV:
        return None, "no_p_wave"
    # P waves are slow: smoothed over 20 ms, the velocity of a small P stands clear of the
    # noise that would otherwise carry its onset to the start of the search window.
    width = max(1, int(round(_P_SMOOTH_S * fs_hz)))
    stretch = slice(p_start, p_stop)
    smooth_beats = ndimage.uniform_filter1d(beats[:, :, stretch], width, axis=2)
    smooth = ndimage.uniform_filter1d(template[:, :p_stop], width, axis=1)
    if _consistency(smooth_beats, smooth[:, stretch]) < _P_MIN_CONSISTENCY:
        return None, "no_p_wave"
    velocity = _spatial_velocity(smooth)
    rise = velocity[p_start:p_peak + 1]
    if rise.size < 2:
        return None, "no_p_wave"
    steepest = p_start + int(np.argmax(rise))
    onset = _end_of_quiet_stretch(velocity, steepest, p_start,
                                  _P_EDGE_FRACTION * float(velocity[steepest]),
                                  max(1, int(round(_P_QUIET_S * fs_hz))))
    if onset is None:
        return None, "p_onset_not_found"
    return onset, ""


def _end_of_quiet_stretch(values: np.ndarray, start: int, lowest: int, level: float,
                          width: int) -> Optional[int]:
    """The last index at or before ``start`` and at or after ``lowest`` that ends ``width``
    consecutive values below ``level`` (values before ``lowest`` count towards the stretch);
    None when there is none."""
    indices = np.arange(values.size)
    last_above = np.maximum.accumulate(np.where(values < level, -1, indices))
    quiet = np.flatnonzero(indices[lowest:start + 1] - last_above[lowest:start + 1] >= width)
    return lowest + int(quiet[-1]) if quiet.size else None


def _consistency(beats: np.ndarray, template: np.ndarray) -> float:
    """1 - RMS of every beat's deviation from the median over the RMS of the median (about
    its own mean), on one stretch ``[leads, beats, k]`` vs ``[leads, k]``: near 1 when each
    beat shows the same wave (a sinus P), near 0 or below when the beats differ (AF). The
    straight line that best fits each beat's deviation is taken out first: what is left of
    baseline wander between the PR knots is a slow ramp, not a different P wave."""
    centred = template - template.mean(axis=1, keepdims=True)
    scale = float(np.sqrt(np.mean(centred ** 2)))
    if scale == 0.0:
        return 0.0
    deviation = beats - template[:, np.newaxis, :]
    ramp = np.arange(deviation.shape[2]) - 0.5 * (deviation.shape[2] - 1)
    slope = (deviation @ ramp) / float(ramp @ ramp)
    deviation = (deviation - deviation.mean(axis=2, keepdims=True)
                 - slope[:, :, np.newaxis] * ramp)
    return 1.0 - float(np.sqrt(np.mean(deviation ** 2))) / scale


def _trapezium_end(amplitude: np.ndarray, peak: int, stop: int, fs_hz: float) -> Optional[int]:
    """End of a wave on its spatial amplitude by the trapezium-area method (Vazquez-Seisdedos
    et al., IEEE TBME 2011): from the steepest descent ``xm`` after ``peak``, the end is the
    point ``xi`` that maximises the area of the trapezium (xm, y(xm)), (xi, y(xi)), (xr, y(xi)),
    (xr, y(xm)), with ``xr`` ``_T_END_REACH_S`` after ``xm`` (or ``stop``).

    Unlike the tangent method, the answer depends on the whole descent rather than on one
    slope and one floor level: on LUDB's calibration records the tangent ended the T wave
    10 ms before the cardiologists on average; a flat or noisy descent does not throw it far.
    """
    if stop - peak < 3:
        return None
    width = max(1, int(round(_T_SMOOTH_S * fs_hz)))
    smooth = np.convolve(amplitude[peak:stop], np.full(width, 1.0 / width), mode="same")
    slope = np.gradient(smooth)
    steepest = int(np.argmin(slope[: max(1, slope.size - width)]))
    if slope[steepest] >= 0:
        return None
    reach = min(smooth.size - 1, steepest + int(round(_T_END_REACH_S * fs_hz)))
    candidates = np.arange(steepest, reach)
    if candidates.size == 0:
        return None
    area = (smooth[steepest] - smooth[candidates]) * (2 * reach - candidates - steepest)
    return peak + int(candidates[int(np.argmax(area))])


def _frontal_axis_deg(area_i: float, area_avf: float) -> Optional[float]:
    """Frontal-plane angle in degrees (-180, 180] of a wave with net areas in I and aVF."""
    if area_i == 0.0 and area_avf == 0.0:
        return None
    return math.degrees(math.atan2(area_avf * 2.0 / math.sqrt(3.0), area_i))
