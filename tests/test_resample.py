"""Polyphase resampling: lengths, amplitude and frequency kept, aliasing suppressed."""
from __future__ import annotations

import numpy as np
import pytest

from ecgd.errors import RecordError
from ecgd.signal.resample import resample_to

RATES_HZ = [100.0, 128.0, 250.0, 360.0, 500.0, 800.0, 1000.0]


def _sine(freq_hz: float, fs_hz: float, duration_s: float, amplitude_mv: float = 1.0) -> np.ndarray:
    t = np.arange(int(round(duration_s * fs_hz))) / fs_hz
    return amplitude_mv * np.sin(2 * np.pi * freq_hz * t)[np.newaxis]


def _tone(x: np.ndarray, fs_hz: float):
    """(frequency of the strongest bin in Hz, its amplitude) of a 1-row signal."""
    spectrum = np.abs(np.fft.rfft(x[0] * np.hanning(x.shape[1])))
    k = int(np.argmax(spectrum))
    amplitude = 2 * spectrum[k] / np.hanning(x.shape[1]).sum()
    return k * fs_hz / x.shape[1], amplitude


@pytest.mark.parametrize("fs_in_hz", RATES_HZ)
def test_length_dtype_and_sine_kept(fs_in_hz: float) -> None:
    """Any seen rate to 500 Hz: round(n * 500 / fs) float32 samples; a 10 Hz sine keeps 1 mV."""
    x = np.vstack([_sine(10.0, fs_in_hz, 10.3), _sine(10.0, fs_in_hz, 10.3, 0.5)])
    y = resample_to(x, fs_in_hz, 500.0)
    assert y.dtype == np.float32
    assert y.shape == (2, int(round(x.shape[1] * 500.0 / fs_in_hz)))
    freq_hz, amplitude = _tone(y[:1, 100:-100], 500.0)
    assert freq_hz == pytest.approx(10.0, abs=0.15)
    assert amplitude == pytest.approx(1.0, abs=0.02)
    reference = _sine(10.0, 500.0, y.shape[1] / 500.0)
    np.testing.assert_allclose(y[0, 200:-200], reference[0, 200:-200], atol=1e-2)


def test_identity_when_rates_equal() -> None:
    """Equal rates return an equal float32 copy, not the caller's array."""
    x = np.random.default_rng(1).normal(size=(12, 5000)).astype(np.float32)
    y = resample_to(x, 500.0, 500.0)
    assert y is not x and np.array_equal(x, y)


def test_aliasing_suppressed_when_downsampling() -> None:
    """A 300 Hz tone at 1000 Hz (above the new 250 Hz Nyquist) is removed, not aliased to 200 Hz."""
    y = resample_to(_sine(300.0, 1000.0, 10.0), 1000.0, 500.0)
    # Linear interpolation would fold it to 200 Hz at full amplitude.
    assert np.sqrt(np.mean(y[0, 50:-50] ** 2)) < 0.01


def test_bad_rates_refused() -> None:
    """Non-positive rates and a 1-D array are RecordErrors."""
    with pytest.raises(RecordError):
        resample_to(np.zeros((1, 10)), 0.0, 500.0)
    with pytest.raises(RecordError):
        resample_to(np.zeros(10), 360.0, 500.0)
