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
from typing import Any, Dict, Mapping, Optional

import numpy as np
from scipy import signal

from ecgd.errors import ModelError

PROFILE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ecgfounder": {
        "notch_q": 30.0,
        "bandpass_hz": [0.67, 40.0],
        "bandpass_order": 4,
        "baseline_median_s": 0.4,
        "zscore": "global",
        "zscore_eps": 1e-8,
    },
    "edge-cds": {
        "bandpass_hz": [0.5, 50.0],
        "bandpass_order": 2,
        "notch_q": 30.0,
        "notch_min_snr_db": 10.0,
        "zscore": "per_lead",
        "zscore_eps": 1e-8,
    },
}

_ZSCORE_MODES = ("global", "per_lead")
_MAX_BANDPASS_ORDER = 8

# Mains SNR bands: the line itself is mains +- 1 Hz; its local floor is the spectrum from 2 to
# 6 Hz away on both sides, where neither the ECG's harmonics nor the line dominate.
_MAINS_HALF_WIDTH_HZ = 1.0
_FLOOR_INNER_HZ = 2.0
_FLOOR_OUTER_HZ = 6.0


def _number(profile: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
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

        self.bandpass_sos = signal.butter(order, [low_hz, high_hz], btype="bandpass",
                                          fs=self.fs_hz, output="sos")
        self.notch_sos = signal.tf2sos(*signal.iirnotch(self.mains_hz, notch_q, fs=self.fs_hz))

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
        if windows_mv.ndim not in (2, 3) or windows_mv.shape[-1] < 2:
            raise ModelError(f"preprocessing profile {self.profile!r}: expected [batch, leads, n]"
                             f" or [leads, n], got shape {windows_mv.shape}")
        x = np.asarray(windows_mv, dtype=np.float64)
        if self.notch_min_snr_db is None:
            x = signal.sosfiltfilt(self.notch_sos, x, axis=-1)
        else:
            # Decided on the raw input, per lead: a notch on a lead without hum only distorts.
            hum = mains_snr_db(x, self.fs_hz, self.mains_hz) > self.notch_min_snr_db
            if hum.any():
                notched = signal.sosfiltfilt(self.notch_sos, x, axis=-1)
                x = np.where(hum[..., np.newaxis], notched, x)
        x = signal.sosfiltfilt(self.bandpass_sos, x, axis=-1)
        if self.median_kernel is not None:
            x = x - self._running_median(x)
        return self._zscore(x).astype(np.float32)

    def _running_median(self, x: np.ndarray) -> np.ndarray:
        """scipy.signal.medfilt along the last axis of every lead, zero-padded at the edges.

        The leads are laid end to end in one 1-D signal with ``kernel // 2`` zeros between
        them, so one medfilt call sees exactly the zero padding a per-lead call would: same
        result, one C call. (medfilt on a 2-D array with kernel [1, k] takes ~40x longer,
        scipy.ndimage.median_filter likewise.)
        """
        kernel = int(self.median_kernel)  # set whenever this is called
        half = kernel // 2
        n = x.shape[-1]
        rows = x.reshape(-1, n)
        padded = np.zeros((rows.shape[0], n + half), dtype=np.float64)
        padded[:, half:] = rows
        flat = np.concatenate([padded.ravel(), np.zeros(half)])
        median = signal.medfilt(flat, kernel)[: padded.size].reshape(padded.shape)[:, half:]
        return median.reshape(x.shape)

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
