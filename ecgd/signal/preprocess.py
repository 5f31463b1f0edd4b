"""Preprocessing profiles: what the model saw in training, applied to each batch of windows.

The profile name and its parameters come from the model manifest, because upstream
ECGFounder code is not consistent about preprocessing (see docs/ECGFOUNDER.md): it is part of
a model's contract. A :class:`Preprocessor` designs its filters once (second-order sections)
in ``__init__``; calling it only applies them, vectorized along the sample axis of every lead
and window at once.

Profiles:

``ecgfounder``
    Upstream ``util.filter_bandpass``: zero-phase IIR notch at mains (Q ``notch_q``), then a
    zero-phase Butterworth band-pass (``bandpass_hz``, ``bandpass_order``), then subtract a
    running median baseline (``scipy.signal.medfilt``, kernel ``int(baseline_median_s * fs) + 1``
    made odd, zero-padded at the edges as medfilt does), then z-score.
``edge-cds``
    The deployment write-up's chain: the mains notch only on leads whose mains SNR exceeds
    ``notch_min_snr_db`` (see :func:`mains_snr_db`), then a zero-phase Butterworth band-pass,
    then z-score.

``zscore`` is ``"global"`` (one mean and standard deviation over all leads of a window) or
``"per_lead"``; the denominator is ``std + zscore_eps``.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
from scipy import signal

from ecgd.errors import ModelError
from ecgd.signal.profiles import PROFILE_DEFAULTS

_ZSCORE_MODES = ("global", "per_lead")
_MAX_BANDPASS_ORDER = 8

# Mains SNR bands: the line itself is mains +- 1 Hz; its local floor is the spectrum from 2 to
# 6 Hz away on both sides, where neither the ECG's harmonics nor the line dominate.
_MAINS_HALF_WIDTH_HZ = 1.0
_FLOOR_INNER_HZ = 2.0
_FLOOR_OUTER_HZ = 6.0


def _number(profile: str, key: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not np.isfinite(float(value))):
        raise ModelError(f"preprocessing profile {profile!r}: {key} must be a finite number, "
                         f"got {value!r}")
    return float(value)


def _check(condition: bool, profile: str, key: str, reason: str) -> None:
    if not condition:
        raise ModelError(f"preprocessing profile {profile!r}: {key} {reason}")


def mains_snr_db(windows_mv: np.ndarray, fs_hz: float, mains_hz: float) -> np.ndarray:
    """Return the mains SNR in dB of every lead of ``windows_mv`` (``[..., n]``).

    Defined as ten times the log10 of the mean power spectral density within mains +- 1 Hz
    over the mean power spectral density 2-6 Hz away from mains on both sides: how far the
    powerline line stands above the local spectrum. A clean ECG gives about 0 dB; a visible
    50 Hz hum gives tens of dB. Shape ``[...]`` (the sample axis removed).
    """
    x = windows_mv - windows_mv.mean(axis=-1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    freqs_hz = np.fft.rfftfreq(x.shape[-1], d=1.0 / fs_hz)
    offset_hz = np.abs(freqs_hz - mains_hz)
    line = offset_hz <= _MAINS_HALF_WIDTH_HZ
    floor = (offset_hz >= _FLOOR_INNER_HZ) & (offset_hz <= _FLOOR_OUTER_HZ)
    tiny = np.finfo(np.float64).tiny
    line_power = spectrum[..., line].mean(axis=-1) + tiny
    floor_power = spectrum[..., floor].mean(axis=-1) + tiny
    return 10.0 * np.log10(line_power / floor_power)


class ZeroPhaseFilter:
    """scipy.signal.sosfiltfilt with its defaults (odd padding), designed once, applied often.

    sosfiltfilt recomputes the steady-state initial conditions (``sosfilt_zi``, ~0.1 ms) and
    validates its arguments on every call; here they are computed once, and a call only pads
    and runs the two passes. The result is identical to ``sosfiltfilt(sos, x, axis=-1)``.
    """

    def __init__(self, sos: np.ndarray) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        n_sections = self.sos.shape[0]
        # sosfiltfilt's default pad length: 3 x the taps, less trailing zero coefficients.
        n_taps = 2 * n_sections + 1
        n_taps -= min(int((self.sos[:, 2] == 0).sum()), int((self.sos[:, 5] == 0).sum()))
        self.padlen = 3 * n_taps
        # Shape [sections, 1, 2]: broadcast against one starting sample per row.
        self.zi = signal.sosfilt_zi(self.sos)[:, np.newaxis, :]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Filter float64 ``[rows, n]`` forward and backward along the last axis.

        ``n`` must exceed :attr:`padlen`. Returns ``[rows, n]`` float64 (possibly a view).
        """
        pad = self.padlen
        extended = np.concatenate((2.0 * rows[:, :1] - rows[:, pad:0:-1], rows,
                                   2.0 * rows[:, -1:] - rows[:, -2:-(pad + 2):-1]), axis=1)
        forward, _ = signal.sosfilt(self.sos, extended, axis=-1,
                                    zi=self.zi * extended[np.newaxis, :, :1])
        backward, _ = signal.sosfilt(self.sos, forward[:, ::-1], axis=-1,
                                     zi=self.zi * forward[np.newaxis, :, -1:])
        return backward[:, -pad - 1:pad - 1:-1]


def row_percentiles(rows: np.ndarray, q_percent: Sequence[float]) -> np.ndarray:
    """``np.percentile(rows, q_percent, axis=1)`` (linear method), bit for bit, but faster.

    Shape ``[len(q_percent), rows]``. np.percentile asks np.partition for all its order
    statistics at once, which numpy serves with a generic introselect (0.7 ms on 12 x 5000);
    one order statistic at a time, each partition only over what lies above the previous
    one, takes numpy's SIMD selection path (0.1 ms).
    """
    n = rows.shape[1]
    # The same arithmetic as numpy's linear method, so the values are the same to the bit.
    position = (n - 1) * (np.asarray(q_percent, dtype=np.float64) / 100.0)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    fraction = (position - below)[:, np.newaxis]
    ranked: Dict[int, np.ndarray] = {}
    rest = rows
    offset = 0
    for rank in sorted(set(below.tolist()) | set(above.tolist())):
        rest = np.partition(rest, rank - offset, axis=1)
        ranked[rank] = rest[:, rank - offset]
        rest = rest[:, rank - offset + 1:]
        offset = rank + 1
    low_values = np.stack([ranked[rank] for rank in below.tolist()])
    high_values = np.stack([ranked[rank] for rank in above.tolist()])
    step = high_values - low_values
    return np.where(fraction >= 0.5, high_values - step * (1.0 - fraction),
                    low_values + step * fraction)


def row_means(rows: np.ndarray) -> np.ndarray:
    """Mean of every row of float64 ``[rows, n]`` as ``[rows, 1]``.

    A matrix-vector product: numpy's per-axis reductions cost ~10x more on 12 x 5000.
    """
    return (rows @ np.full(rows.shape[1], 1.0 / rows.shape[1]))[:, np.newaxis]


class Preprocessor:
    """One profile's filters, designed for one sampling rate and mains frequency.

    Call it on float32 ``[batch, leads, n]`` or ``[leads, n]`` millivolts; it returns float32
    of the same shape. Filtering runs in float64 (the 0.67 Hz high-pass sections lose
    1e-4 of accuracy in float32).
    """

    def __init__(self, profile: str, params: Mapping[str, Any], fs_hz: float,
                 mains_hz: int) -> None:
        if profile not in PROFILE_DEFAULTS:
            raise ModelError(f"unknown preprocessing profile {profile!r}: expected one of "
                             f"{', '.join(sorted(PROFILE_DEFAULTS))}")
        if not isinstance(params, Mapping):
            raise ModelError(f"preprocessing profile {profile!r}: params must be a mapping")
        unknown = sorted(set(params) - set(PROFILE_DEFAULTS[profile]))
        if unknown:
            raise ModelError(f"preprocessing profile {profile!r}: unknown parameter {unknown[0]!r}")
        if not (fs_hz > 0):
            raise ModelError(f"preprocessing profile {profile!r}: sampling rate {fs_hz} Hz "
                             "must be positive")
        merged = dict(PROFILE_DEFAULTS[profile])
        merged.update(params)
        self.profile = profile
        self.params: Dict[str, Any] = merged
        self.fs_hz = float(fs_hz)
        self.mains_hz = int(mains_hz)
        nyquist_hz = self.fs_hz / 2.0
        _check(0 < self.mains_hz < nyquist_hz, profile, "mains_hz",
               f"{mains_hz} must be below the Nyquist frequency {nyquist_hz:g} Hz")

        band = merged["bandpass_hz"]
        _check(isinstance(band, (list, tuple)) and len(band) == 2, profile, "bandpass_hz",
               "must be [low_hz, high_hz]")
        low_hz = _number(profile, "bandpass_hz[0]", band[0])
        high_hz = _number(profile, "bandpass_hz[1]", band[1])
        _check(0 < low_hz < high_hz < nyquist_hz, profile, "bandpass_hz",
               f"must satisfy 0 < low < high < {nyquist_hz:g} Hz, got {list(band)}")
        order = merged["bandpass_order"]
        _check(isinstance(order, int) and not isinstance(order, bool)
               and 1 <= order <= _MAX_BANDPASS_ORDER, profile, "bandpass_order",
               f"must be an integer from 1 to {_MAX_BANDPASS_ORDER}, got {order!r}")
        notch_q = _number(profile, "notch_q", merged["notch_q"])
        _check(notch_q > 0, profile, "notch_q", "must be positive")
        _check(merged["zscore"] in _ZSCORE_MODES, profile, "zscore",
               f"must be one of {', '.join(_ZSCORE_MODES)}, got {merged['zscore']!r}")
        self.zscore_eps = _number(profile, "zscore_eps", merged["zscore_eps"])
        _check(self.zscore_eps > 0, profile, "zscore_eps", "must be positive")
        self.zscore_per_lead = merged["zscore"] == "per_lead"

        self.bandpass = ZeroPhaseFilter(signal.butter(order, [low_hz, high_hz], btype="bandpass",
                                                      fs=self.fs_hz, output="sos"))
        self.notch = ZeroPhaseFilter(
            signal.tf2sos(*signal.iirnotch(self.mains_hz, notch_q, fs=self.fs_hz)))

        self.median_kernel: Optional[int] = None
        if "baseline_median_s" in merged:
            median_s = _number(profile, "baseline_median_s", merged["baseline_median_s"])
            _check(median_s > 0, profile, "baseline_median_s", "must be positive")
            kernel = int(median_s * self.fs_hz) + 1
            self.median_kernel = kernel if kernel % 2 == 1 else kernel + 1
        self.notch_min_snr_db: Optional[float] = None
        if "notch_min_snr_db" in merged:
            self.notch_min_snr_db = _number(profile, "notch_min_snr_db", merged["notch_min_snr_db"])

    def __call__(self, windows_mv: np.ndarray) -> np.ndarray:
        """Preprocess ``[batch, leads, n]`` or ``[leads, n]``; float32 of the same shape."""
        min_samples = max(self.notch.padlen, self.bandpass.padlen) + 1
        if windows_mv.ndim not in (2, 3) or windows_mv.shape[-1] < min_samples:
            raise ModelError(f"preprocessing profile {self.profile!r}: expected [batch, leads, n]"
                             f" or [leads, n] with n >= {min_samples}, got shape "
                             f"{windows_mv.shape}")
        shape = windows_mv.shape
        rows = np.asarray(windows_mv, dtype=np.float64).reshape(-1, shape[-1])
        if self.notch_min_snr_db is None:
            rows = self.notch(rows)
        else:
            # Decided on the raw input, per lead: a notch on a lead without hum only distorts.
            hum = mains_snr_db(rows, self.fs_hz, self.mains_hz) > self.notch_min_snr_db
            if hum.any():
                rows = rows.copy()
                rows[hum] = self.notch(rows[hum])
        rows = self.bandpass(rows)
        if self.median_kernel is not None:
            rows = self._subtract_running_median(rows, self.median_kernel)
        return self._zscore(rows.reshape(shape)).astype(np.float32)

    @staticmethod
    def _subtract_running_median(rows: np.ndarray, kernel: int) -> np.ndarray:
        """Subtract scipy.signal.medfilt of every row, zero-padded at the edges as medfilt is.

        The rows are laid end to end in one 1-D signal with ``kernel // 2`` zeros between
        them, so one medfilt call sees exactly the zero padding a per-row call would: same
        result, one C call. medfilt's 1-D path (a sliding double heap, ~30 ns per sample) is
        the fastest exact running median found: medfilt on a 2-D array with kernel [1, k],
        scipy.ndimage.median_filter on 2-D, medfilt2d and np.partition over a sliding window
        view are 10-40x slower; bottleneck.move_median is no faster.
        """
        half = kernel // 2
        n_rows, n = rows.shape
        flat = np.zeros(n_rows * (n + half) + half)
        laid_out = flat[: n_rows * (n + half)].reshape(n_rows, n + half)[:, half:]
        laid_out[...] = rows
        median = signal.medfilt(flat, kernel)[: n_rows * (n + half)]
        laid_out -= median.reshape(n_rows, n + half)[:, half:]
        return laid_out

    def _zscore(self, x: np.ndarray) -> np.ndarray:
        axes = (-1,) if self.zscore_per_lead else (-2, -1)
        mean = x.mean(axis=axes, keepdims=True)
        std = x.std(axis=axes, keepdims=True)
        return (x - mean) / (std + self.zscore_eps)


def make_preprocessor(profile: str, params: Mapping[str, Any], fs_hz: float,
                      mains_hz: int) -> Preprocessor:
    """Build the preprocessor for ``profile`` (from the model manifest) at ``fs_hz``.

    ``params`` overrides :data:`PROFILE_DEFAULTS` key by key; a key the profile does not have,
    a bad value, an unknown profile or a mains frequency above Nyquist raise ModelError.
    """
    return Preprocessor(profile, params, fs_hz, mains_hz)
