"""R-peak detection and the rhythm measurements derived from it.

The detector combines all leads it is given (12, or the 1-2 of a Holter record):

1. Per lead, the signal is brought near ``FEATURE_FS_HZ`` (125 Hz) by the mean of each
   group of samples without its extremes, which also drops pacemaker spikes; the QRS
   band (5-20 Hz, zero-phase) is differentiated, squared and integrated over
   150 ms (Pan-Tompkins), then divided by its local QRS level (the median of 2-s block maxima
   over 10 s) and capped at twice that level, so one large lead or one artefact does not
   drown the others.
2. The leads are averaged, each weighted by its local peakiness (QRS level over the median of
   the envelope): a lead counts for little while it is noisy, and fully again when it is
   clean. The square root of that average, a normalised RMS slope, is the QRS feature.
3. Peaks of the feature at least ``REFRACTORY_S`` apart are classified one by one, as in
   Hamilton & Tompkins' detector: a peak is a QRS when it rises ``_THRESHOLD_FRACTION`` of
   the way from the recent noise level to the recent QRS level (medians of the last 8 of
   each); a peak within 360 ms of a beat whose slope is under half that beat's is a T wave;
   when no beat came for 1.5 recent RR intervals (at most 1.5 x ``_SEARCHBACK_MAX_RR_S``),
   the highest peak in the gap above half the threshold is taken (search-back). A peak the
   feature does not fall below ``_VALLEY_FRACTION`` of the lower of it and the last beat to
   reach is the same complex as that beat (a wide ventricular beat's tail, its T wave, a
   noise burst riding on it): only the higher of the two stays a beat. Two QRS complexes are
   always parted by an ST segment where the QRS band is quiet; without this rule search-back
   took the shoulder after a wide beat in its compensatory pause. The pass runs twice: the
   second starts from the levels and the RR interval the first learnt, so the first seconds
   of a lone window are judged like the rest and one premature beat does not trigger a
   search-back.
4. Each beat is placed at the largest squared QRS-band amplitude within 80 ms, between
   feature samples by a parabola, and mapped back to the input rate.

The detector is pure: any context around a window (its neighbours in a file) is the caller's
choice; peaks in a context margin are the caller's to drop.
"""
from __future__ import annotations

import dataclasses
import functools
import statistics
from typing import Any, Dict, List, Tuple

import numpy as np
from scipy import ndimage, signal

from ecgd.signal.preprocess import ZeroPhaseFilter, row_means

QRS_BAND_HZ = (5.0, 20.0)
REFRACTORY_S = 0.2
FEATURE_FS_HZ = 125.0        # the QRS feature's rate: Pan-Tompkins ran at 200 Hz
_INTEGRATION_S = 0.15
_BLOCK_S = 2.0
_LEVEL_BLOCKS = 5            # median over this many 2-s blocks centred on each block
_ENVELOPE_CAP = 2.0          # a lead's normalised envelope is capped at twice its QRS level
_HISTORY_BEATS = 8
_THRESHOLD_FRACTION = 0.5    # of the way from the noise level to the QRS level
_SEARCHBACK_RR_FACTOR = 1.5
# The RR that search-back assumes is at most 1.2 s (50 bpm): when only the tall ectopic beats
# of a bigeminal stretch pass the threshold, their long RR would otherwise keep search-back
# from ever looking for the normal beats between them.
_SEARCHBACK_MAX_RR_S = 1.2
# The starting QRS level is the lower quartile of the 2-s block maxima: every block holds a
# beat above 30 bpm, and the quartile is the smaller beats' height where tall ectopic beats
# fill most blocks (the median then set a threshold above every normal beat: MIT-BIH 106).
_INITIAL_QRS_QUANTILE = 0.25
_SEARCHBACK_FRACTION = 0.5   # of the threshold
_T_WAVE_WINDOW_S = 0.36
_T_WAVE_SLOPE_FRACTION = 0.5
_REFINE_S = 0.08
_VALLEY_FRACTION = 0.65     # of the lower peak: the dip that parts two complexes


@dataclasses.dataclass(frozen=True)
class BeatDetection:
    """R peaks of a stretch of signal and the per-lead evidence behind them.

    ``r_peaks``: sample indices (int64, sorted, unique). ``lead_envelopes``: ``[leads, n]``
    each lead's QRS envelope divided by its local QRS level (about 1 at a beat the lead
    shows, capped at ``_ENVELOPE_CAP``); quality control compares each lead's own peaks
    with ``r_peaks`` (bSQI).
    """

    r_peaks: np.ndarray
    lead_envelopes: np.ndarray


@functools.lru_cache(maxsize=16)
def _qrs_filter(fs_hz: float) -> ZeroPhaseFilter:
    """Zero-phase QRS band-pass at ``fs_hz`` (designed once per rate)."""
    high_hz = min(QRS_BAND_HZ[1], 0.45 * fs_hz)
    return ZeroPhaseFilter(signal.butter(2, [QRS_BAND_HZ[0], high_hz], btype="bandpass",
                                         fs=fs_hz, output="sos"))


def _block_values(rows: np.ndarray, block: int) -> np.ndarray:
    """``rows`` ``[leads, n]`` zero-padded to whole blocks: ``[leads, n_blocks, block]``."""
    n_leads, n = rows.shape
    n_blocks = -(-n // block)
    padded = np.zeros((n_leads, n_blocks * block))
    padded[:, :n] = rows
    return padded.reshape(n_leads, n_blocks, block)


def _per_sample(values: np.ndarray, block: int, n: int) -> np.ndarray:
    """Block values ``[leads, n_blocks]`` interpolated linearly between block centres."""
    return values @ _interpolation_matrix(values.shape[1], block, n)


@functools.lru_cache(maxsize=16)
def _interpolation_matrix(n_blocks: int, block: int, n: int) -> np.ndarray:
    """``[n_blocks, n]``: row b weighs block b's value at every sample (one matrix product
    interpolates every lead; fancy indexing of ``[leads, n]`` costs 10x more)."""
    matrix = np.zeros((n_blocks, n))
    if n_blocks == 1:
        matrix[0] = 1.0
        return matrix
    position = np.clip((np.arange(n) + 0.5) / block - 0.5, 0.0, n_blocks - 1.0)
    left = np.minimum(position.astype(np.intp), n_blocks - 2)
    fraction = position - left
    columns = np.arange(n)
    matrix[left, columns] = 1.0 - fraction
    matrix[left + 1, columns] += fraction
    return matrix


def _spike_free_decimation(x: np.ndarray, group: int, stride: int) -> np.ndarray:
    """``x`` ``[leads, n]`` reduced to one value per ``stride`` samples: the mean of the
    ``group`` (>= 3) samples from there without their highest and their lowest.

    Dropping the extremes removes any excursion one sample wide (a pacemaker spike is
    0.5-2 ms, at most one sample up to 500 Hz, and would otherwise count as a beat), the mean
    is the anti-alias low-pass, and every later stage works on ``stride`` times fewer samples.
    A QRS (>= 40 ms) spans several groups and keeps its shape.
    """
    n_groups = (x.shape[1] - group) // stride + 1
    span = (n_groups - 1) * stride + 1
    phases = [x[:, phase:phase + span:stride] for phase in range(group)]
    total = np.add.reduce(phases)
    total -= np.maximum.reduce(phases)
    total -= np.minimum.reduce(phases)
    total *= 1.0 / (group - 2)
    return total


def _decimation(fs_hz: float) -> Tuple[int, int]:
    """(group, stride) for :func:`_spike_free_decimation`: groups of about
    ``fs_hz / FEATURE_FS_HZ`` samples side by side; below 375 Hz, where that is under 3,
    groups of 3 at every sample (a running median of 3), keeping the rate."""
    group = int(round(fs_hz / FEATURE_FS_HZ))
    return (group, group) if group >= 3 else (3, 1)


def _lead_evidence(x: np.ndarray, fs_hz: float
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per lead ``[leads, n]`` at ``fs_hz`` (the feature rate): the normalised envelope, the
    weight, and the squared slope and squared amplitude of the QRS band divided by the
    local QRS level.

    Weights sum to 1 over the leads at every sample (0 everywhere when no lead varies).
    """
    centered = x - row_means(x)
    band = _qrs_filter(float(fs_hz))(centered)
    slope_energy = np.gradient(band, axis=-1)
    np.square(slope_energy, out=slope_energy)
    width = max(1, int(round(_INTEGRATION_S * fs_hz)))
    envelopes = ndimage.uniform_filter1d(slope_energy, size=width, axis=1, mode="constant")
    block = max(1, int(round(_BLOCK_S * fs_hz)))
    blocks = _block_values(envelopes, block)
    size = (1, min(_LEVEL_BLOCKS, blocks.shape[1]))
    level = ndimage.median_filter(blocks.max(axis=2), size=size, mode="nearest")
    floor = ndimage.median_filter(np.median(blocks, axis=2), size=size, mode="nearest")
    tiny = np.finfo(np.float64).tiny
    peakiness = np.where(floor > 0, level / np.maximum(floor, tiny), 0.0)
    share = peakiness / np.maximum(peakiness.sum(axis=0, keepdims=True), tiny)
    n = x.shape[1]
    level_per_sample = np.maximum(_per_sample(level, block, n), tiny)
    normalised = np.minimum(envelopes / level_per_sample, _ENVELOPE_CAP)
    slope_energy /= level_per_sample
    np.square(band, out=band)
    band /= level_per_sample
    return normalised, _per_sample(share, block, n), slope_energy, band


def detect_beats(window_mv: np.ndarray, fs_hz: float) -> BeatDetection:
    """Detect the R peaks of ``window_mv`` (``[leads, n]`` or ``[n]`` mV at ``fs_hz``).

    Any number of leads; a flat, empty or too short input gives no peaks.
    """
    x = np.atleast_2d(np.asarray(window_mv, dtype=np.float64))
    n = x.shape[-1]
    group, stride = _decimation(fs_hz)
    feature_fs_hz = fs_hz / stride
    refractory = max(1, int(round(REFRACTORY_S * feature_fs_hz)))
    # The band-pass pads 3 * (2 * sections + 1) samples; shorter input has no beat to find anyway.
    if (n - group) // stride < 3 * refractory:
        return BeatDetection(np.zeros(0, dtype=np.int64), np.zeros(x.shape))
    envelopes, weights, slope_energy, amplitude = _lead_evidence(
        _spike_free_decimation(x, group, stride), feature_fs_hz)
    lead_envelopes = _at_input_rate(envelopes, group, stride, n)
    feature = np.sqrt(np.einsum("ij,ij->j", weights, envelopes))
    candidates, _ = signal.find_peaks(feature, distance=refractory)
    if candidates.size == 0:
        return BeatDetection(np.zeros(0, dtype=np.int64), lead_envelopes)
    slope = np.einsum("ij,ij->j", weights, slope_energy)
    classifier = _Classifier(feature, slope, candidates, feature_fs_hz)
    beats = classifier.run(*classifier.initial_levels())
    beats = classifier.run(*classifier.learnt_levels(beats))
    combined_amplitude = np.einsum("ij,ij->j", weights, amplitude)
    peaks = _refine(combined_amplitude, beats, int(round(_REFINE_S * feature_fs_hz)))
    # Group g holds input samples g * stride .. g * stride + group - 1.
    at_input = np.clip(np.round(peaks * stride + (group - 1) / 2.0), 0, n - 1)
    return BeatDetection(np.unique(at_input.astype(np.int64)), lead_envelopes)


def _at_input_rate(rows: np.ndarray, group: int, stride: int, n: int) -> np.ndarray:
    """Feature-rate ``rows`` ``[leads, m]`` back at the input rate ``[leads, n]``: each
    value held over ``stride`` samples from its group's centre on, the first and last
    values over the samples before and after."""
    held = np.repeat(rows, stride, axis=1)
    lead_in = (group - 1) // 2
    tail = max(0, n - lead_in - held.shape[1])
    return np.concatenate([np.repeat(held[:, :1], lead_in, axis=1), held[:, :n - lead_in],
                           np.repeat(held[:, -1:], tail, axis=1)], axis=1)


def detect_r_peaks(window_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """The R-peak sample indices (int64, sorted, unique) of :func:`detect_beats`."""
    return detect_beats(window_mv, fs_hz).r_peaks


class _Classifier:
    """Hamilton-Tompkins style decision on the feature's peaks (see module docstring)."""

    def __init__(self, feature: np.ndarray, slope: np.ndarray, candidates: np.ndarray,
                 fs_hz: float) -> None:
        self.feature = feature
        self.candidates = candidates.tolist()
        self.heights = feature[candidates].tolist()
        self.position = {sample: i for i, sample in enumerate(self.candidates)}
        # The feature's minimum from each candidate to the next, so the valley between two
        # candidates is a min() over a few of these, not a numpy call per candidate (NaN,
        # which fails every comparison, becomes -inf, which fails the valley test alike).
        gap_minima = np.minimum.reduceat(feature, candidates)
        gap_minima[np.isnan(gap_minima)] = -np.inf
        self.gap_minima = gap_minima.tolist()
        radius = max(1, int(round(_REFINE_S * fs_hz)))
        padded = np.concatenate([np.zeros(radius), slope, np.zeros(radius)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1)
        self.steepness = windows[candidates].max(axis=1).tolist()
        self.refractory = max(1, int(round(REFRACTORY_S * fs_hz)))
        self.t_wave_window = int(round(_T_WAVE_WINDOW_S * fs_hz))
        self.block = max(1, int(round(_BLOCK_S * fs_hz)))
        self.max_rr = _SEARCHBACK_MAX_RR_S * fs_hz

    def initial_levels(self) -> Tuple[float, float, List[float]]:
        """(QRS level, noise level, RR history) before any beat: the lower quartile of the 2-s
        block maxima of the feature, the median of the peaks below half of that, no RR."""
        blocks = _block_values(self.feature[np.newaxis], self.block)[0]
        qrs_level = float(np.quantile(blocks.max(axis=1), _INITIAL_QRS_QUANTILE))
        below = [h for h in self.heights if h < 0.5 * qrs_level]
        return qrs_level, statistics.median(below) if below else 0.0, []

    def learnt_levels(self, beats: List[int]) -> Tuple[float, float, List[float]]:
        """(QRS level, noise level, RR history) learnt by a first pass: the medians of its
        beats' heights, of the other peaks' heights and of its RR intervals."""
        if not beats:
            return self.initial_levels()
        chosen = set(beats)
        qrs = [h for c, h in zip(self.candidates, self.heights) if c in chosen]
        noise = [h for c, h in zip(self.candidates, self.heights) if c not in chosen]
        rr = [float(statistics.median(np.diff(beats).tolist()))] * _HISTORY_BEATS \
            if len(beats) > 1 else []
        return statistics.median(qrs), statistics.median(noise) if noise else 0.0, rr

    def valley(self, start: int, stop: int) -> float:
        """The feature's minimum from candidate ``start`` up to candidate ``stop`` (excluded)."""
        return min(self.gap_minima[self.position[start]:self.position[stop]])

    def run(self, qrs_level: float, noise_level: float, rr_history: List[float]) -> List[int]:
        """One pass over the candidates in time order; the beats' sample indices."""
        qrs_heights = [qrs_level] * _HISTORY_BEATS
        noise_heights = [noise_level] * _HISTORY_BEATS
        beats: List[int] = []
        beat_steepness: List[float] = []
        beat_heights: List[float] = []
        rr: List[float] = list(rr_history)
        since_beat: List[Tuple[int, float, float]] = []  # peaks rejected since the last beat

        def accept(sample: int, height: float, steepness: float) -> None:
            if beats:
                rr.append(sample - beats[-1])
            beats.append(sample)
            beat_steepness.append(steepness)
            beat_heights.append(height)
            qrs_heights.append(height)
            del qrs_heights[0]
            since_beat.clear()

        for sample, height, steepness in zip(self.candidates, self.heights, self.steepness):
            if beats and self.valley(beats[-1], sample) > _VALLEY_FRACTION * min(
                    height, beat_heights[-1]):
                if height <= beat_heights[-1]:
                    continue
                # This peak is the complex's main one: the last beat was its edge.
                beats.pop()
                beat_heights.pop()
                beat_steepness.pop()
                if beats:
                    rr.pop()  # the interval that ended at the dropped beat
            noise_level = statistics.median(noise_heights)
            threshold = noise_level + _THRESHOLD_FRACTION * (
                statistics.median(qrs_heights) - noise_level)
            if beats and rr and since_beat and (
                    sample - beats[-1] > _SEARCHBACK_RR_FACTOR
                    * min(statistics.fmean(rr[-_HISTORY_BEATS:]), self.max_rr)):
                missed = max(since_beat, key=lambda peak: peak[1])
                if (missed[1] > _SEARCHBACK_FRACTION * threshold
                        and missed[0] - beats[-1] > self.refractory):
                    later = [peak for peak in since_beat if peak[0] > missed[0]]
                    accept(*missed)
                    since_beat.extend(later)
            is_t_wave = (bool(beats) and sample - beats[-1] < self.t_wave_window
                         and steepness < _T_WAVE_SLOPE_FRACTION * beat_steepness[-1])
            if height > threshold and not is_t_wave:
                accept(sample, height, steepness)
            else:
                noise_heights.append(height)
                del noise_heights[0]
                since_beat.append((sample, height, steepness))
        return beats


def _refine(amplitude: np.ndarray, beats: List[int], radius: int) -> np.ndarray:
    """Each beat moved to the largest ``amplitude`` within ``radius`` samples, between
    samples where a parabola through that maximum and its neighbours peaks (the feature rate
    is coarse: 8 ms at 125 Hz). Fractional sample positions, float64, sorted."""
    if not beats:
        return np.zeros(0)
    peaks = np.asarray(beats, dtype=np.intp)
    padded = np.concatenate([np.full(radius + 1, -np.inf), amplitude,
                             np.full(radius + 1, -np.inf)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1)[peaks + 1]
    best = peaks + np.argmax(windows, axis=1) - radius
    left, centre, right = (padded[best + radius + 1 + shift] for shift in (-1, 0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        curvature = left - 2.0 * centre + right
        offset = np.where(np.isfinite(curvature) & (curvature < 0),
                          0.5 * (left - right) / curvature, 0.0)
    return np.sort(best + np.clip(offset, -0.5, 0.5))


def rhythm_measurements(r_peaks: np.ndarray, fs_hz: float) -> Dict[str, Any]:
    """Heart rate, RR intervals and an RR irregularity index from R-peak sample indices.

    - ``heart_rate_bpm``: 60000 / mean RR in ms (None with fewer than 2 beats);
    - ``rr_ms``: successive RR intervals in milliseconds;
    - ``rr_irregularity``: RMSSD / mean RR, the root mean square of successive RR
      differences divided by the mean RR (dimensionless; about 0.02-0.05 in sinus rhythm,
      above 0.1 in atrial fibrillation); None with fewer than 3 beats.
    """
    beats = np.sort(np.asarray(r_peaks, dtype=np.float64))
    rr_ms = np.diff(beats) * (1000.0 / fs_hz)
    heart_rate_bpm = None
    irregularity = None
    if rr_ms.size >= 1:
        heart_rate_bpm = float(60000.0 / rr_ms.mean())
    if rr_ms.size >= 2:
        rmssd_ms = float(np.sqrt(np.mean(np.diff(rr_ms) ** 2)))
        irregularity = rmssd_ms / float(rr_ms.mean())
    return {
        "heart_rate_bpm": heart_rate_bpm,
        "rr_ms": [float(v) for v in rr_ms],
        "rr_irregularity": irregularity,
    }
