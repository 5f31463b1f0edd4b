"""R-peak detection and the rhythm measurements derived from it.

The detector combines all leads it is given (12, or the 1-2 of a Holter record): each lead is
band-passed to the QRS band (zero-phase, so no delay), differentiated and squared; every lead's
energy is scaled by its own 99th percentile so one large lead does not drown the others; the
leads are averaged and integrated over 150 ms (Pan-Tompkins style). Peaks of that envelope
above an adaptive threshold (a fraction of the median of 2-s block maxima around each sample)
and at least 200 ms apart are beats; a long gap is searched again at a lower threshold. Each
beat is placed at the largest slope energy within 80 ms of the envelope peak.
"""
from __future__ import annotations

import functools
from typing import Any, Dict

import numpy as np
from scipy import ndimage, signal

from ecgd.signal.preprocess import ZeroPhaseFilter, row_means, row_percentiles

QRS_BAND_HZ = (5.0, 20.0)
_INTEGRATION_S = 0.15
_REFRACTORY_S = 0.2
_BLOCK_S = 2.0
_LEVEL_BLOCKS = 5           # median over this many 2-s blocks centred on each block
_THRESHOLD_FRACTION = 0.3   # of the local level
_SEARCHBACK_FRACTION = 0.12
_SEARCHBACK_RR_FACTOR = 1.66  # Pan-Tompkins: search again after 166% of the median RR
_REFINE_S = 0.08
_LEAD_SCALE_PERCENTILE = 99.0
_LEAD_PEAKINESS_FRACTION = 0.3


@functools.lru_cache(maxsize=16)
def _qrs_filter(fs_hz: float) -> ZeroPhaseFilter:
    """Zero-phase QRS band-pass at ``fs_hz`` (designed once per rate)."""
    high_hz = min(QRS_BAND_HZ[1], 0.45 * fs_hz)
    return ZeroPhaseFilter(signal.butter(2, [QRS_BAND_HZ[0], high_hz], btype="bandpass",
                                         fs=fs_hz, output="sos"))


def _slope_energy(window_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """Per-lead squared slope of the QRS band, scaled per lead, averaged: shape ``[n]``."""
    x = np.asarray(window_mv, dtype=np.float64)
    # Shifted by the first sample first, so a constant lead centres to exact zeros.
    x = x - x[:, :1]
    x -= row_means(x)
    energy = np.gradient(_qrs_filter(float(fs_hz))(x), axis=-1)
    np.square(energy, out=energy)
    floor, peak = row_percentiles(energy, (50.0, _LEAD_SCALE_PERCENTILE))
    usable = floor > 0
    if not usable.any():
        return np.zeros(x.shape[-1])
    peakiness = np.zeros_like(floor)
    peakiness[usable] = peak[usable] / floor[usable]
    chosen = peakiness >= _LEAD_PEAKINESS_FRACTION * peakiness.max()
    # The mean of the chosen leads, each divided by its peak, as one matrix-vector product.
    weights = np.where(chosen, 1.0 / np.where(chosen, peak, 1.0), 0.0) / np.count_nonzero(chosen)
    return weights @ energy


def _local_level(envelope: np.ndarray, block: int) -> np.ndarray:
    """Median of the block maxima around each sample: the typical QRS height nearby."""
    n = envelope.size
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = envelope
    block_max = padded.reshape(n_blocks, block).max(axis=1)
    size = min(_LEVEL_BLOCKS, n_blocks)
    level = ndimage.median_filter(block_max, size=size, mode="nearest")
    return np.repeat(level, block)[:n]


def detect_r_peaks(window_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """Return the sample indices (int64, sorted, unique) of the R peaks in ``window_mv``.

    ``window_mv`` is ``[leads, n]`` (or ``[n]``) raw millivolts at ``fs_hz``; any number of
    leads. A flat or empty window gives no peaks.
    """
    x = np.atleast_2d(np.asarray(window_mv))
    n = x.shape[-1]
    refractory = max(1, int(round(_REFRACTORY_S * fs_hz)))
    # The band-pass pads 3 * (2 * sections + 1) samples; shorter input has no beat to find anyway.
    if n <= 3 * refractory:
        return np.zeros(0, dtype=np.int64)
    energy = _slope_energy(x, fs_hz)
    width = max(1, int(round(_INTEGRATION_S * fs_hz)))
    envelope = ndimage.uniform_filter1d(energy, size=width, mode="constant")
    level = _local_level(envelope, max(1, int(round(_BLOCK_S * fs_hz))))
    if not np.any(level > 0):
        return np.zeros(0, dtype=np.int64)
    peaks, _ = signal.find_peaks(envelope, height=_THRESHOLD_FRACTION * level,
                                 distance=refractory)
    peaks = _search_back(envelope, level, peaks, refractory)
    return _refine(energy, peaks, max(1, int(round(_REFINE_S * fs_hz))))


def _search_back(envelope: np.ndarray, level: np.ndarray, peaks: np.ndarray,
                 refractory: int) -> np.ndarray:
    """Look again, at a lower threshold, inside RR gaps much longer than the median RR."""
    if peaks.size < 3:
        return peaks
    rr = np.diff(peaks)
    limit = _SEARCHBACK_RR_FACTOR * np.median(rr)
    found = []
    for start, stop in zip(peaks[:-1][rr > limit], peaks[1:][rr > limit]):
        lo, hi = start + refractory, stop - refractory
        if hi <= lo:
            continue
        segment = envelope[lo:hi]
        best = int(np.argmax(segment))
        if segment[best] > _SEARCHBACK_FRACTION * level[lo + best]:
            found.append(lo + best)
    if not found:
        return peaks
    return np.sort(np.concatenate([peaks, np.asarray(found, dtype=peaks.dtype)]))


def _refine(energy: np.ndarray, peaks: np.ndarray, radius: int) -> np.ndarray:
    """Move each envelope peak to the largest slope energy within ``radius`` samples."""
    if peaks.size == 0:
        return np.zeros(0, dtype=np.int64)
    padded = np.concatenate([np.full(radius, -np.inf), energy, np.full(radius, -np.inf)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1)[peaks]
    refined = peaks + np.argmax(windows, axis=1) - radius
    return np.unique(refined).astype(np.int64)


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
