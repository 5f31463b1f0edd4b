"""Sampling-rate conversion with an anti-aliasing polyphase filter.

Recordings arrive at 100, 128, 250, 360, 500, 800 or 1000 Hz; the model wants its own rate
(500 Hz for ECGFounder). Upstream resampled by linear interpolation, which aliases everything
above the new Nyquist frequency into the ECG band when downsampling; a polyphase FIR
(``scipy.signal.resample_poly``, Kaiser window) low-passes first.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal

from ecgd.errors import RecordError

# Largest denominator accepted when turning fs_out / fs_in into up / down. Every rate in the
# data gives a small exact ratio (360 -> 500 is 25/18, 128 -> 500 is 125/32); an odd rate such
# as 257.3 Hz is approximated to within 1e-6 relative, and the filter length grows with
# max(up, down), so the bound also caps the cost.
MAX_RATIO_DENOMINATOR = 1000


def resample_to(samples_mv: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Resample ``samples_mv`` (``[leads, n]``, mV) from ``fs_in_hz`` to ``fs_out_hz``.

    Returns float32 ``[leads, m]`` with ``m = round(n * fs_out_hz / fs_in_hz)``; a copy of the
    input as float32 when the rates are equal. The edges are padded with the line through the
    first/last samples so a DC offset or slow baseline does not ring at the window borders.
    Raises RecordError for a non-positive rate or an input that is not 2-D.
    """
    if not (fs_in_hz > 0 and fs_out_hz > 0):
        raise RecordError(f"cannot resample from {fs_in_hz} Hz to {fs_out_hz} Hz: "
                          "rates must be positive")
    if samples_mv.ndim != 2:
        raise RecordError(f"cannot resample samples of shape {samples_mv.shape}: "
                          "expected [leads, n]")
    if fs_in_hz == fs_out_hz:
        return np.array(samples_mv, dtype=np.float32, copy=True)
    n_in = samples_mv.shape[1]
    n_out = int(round(n_in * fs_out_hz / fs_in_hz))
    ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(MAX_RATIO_DENOMINATOR)
    if n_out == 0 or n_in == 0:
        return np.zeros((samples_mv.shape[0], n_out), dtype=np.float32)
    resampled = signal.resample_poly(samples_mv.astype(np.float64), ratio.numerator,
                                     ratio.denominator, axis=1, padtype="line")
    # resample_poly yields ceil(n * up / down) samples, which is >= round(...): trim the tail.
    out = np.empty((samples_mv.shape[0], n_out), dtype=np.float32)
    n_keep = min(n_out, resampled.shape[1])
    out[:, :n_keep] = resampled[:, :n_keep]
    if n_keep < n_out:  # only when the ratio was approximated; repeat the last sample
        out[:, n_keep:] = resampled[:, -1:]
    return out
