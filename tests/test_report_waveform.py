"""The window's samples in a report: exact to 1 uV, compact, and refused when malformed."""
from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np
import pytest

from ecgd.errors import TamperedError
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS, arrange_standard_leads
from ecgd.report_waveform import decode_waveform, encode_waveform


def _window_mv(path: Path) -> np.ndarray:
    """The first 10 s of a 500-Hz recording in the 12 standard leads (derived where needed)."""
    recording = read_recording(path, 10**8)
    assert recording.fs_hz == 500.0
    standard = arrange_standard_leads(recording)
    assert standard.samples_mv is not None
    return standard.samples_mv[:, :5000]


@pytest.mark.parametrize("relative", ["cinc2021/JS20003.hea", "ge-muse-xml/EGM/muse-sinus.xml"])
def test_round_trip_is_within_half_a_microvolt(shared_data: Path, relative: str) -> None:
    """Recorded (12-lead) and derived (8-lead MUSE) windows decode to the samples +-0.5 uV."""
    signal_mv = _window_mv(shared_data / relative)
    waveform = encode_waveform(signal_mv, STANDARD_LEADS, 500.0)
    assert waveform is not None
    decoded = decode_waveform(waveform)
    assert decoded.lead_names == STANDARD_LEADS and decoded.fs_hz == 500.0
    assert decoded.samples_uv.shape == signal_mv.shape
    error_uv = np.abs(decoded.samples_mv - signal_mv.astype(np.float64)) * 1000.0
    assert error_uv.max() <= 0.5 + 1e-6
    # Compact: far below the 240 KB of the int32 samples, and below zlib over them.
    raw_uv = np.rint(signal_mv.astype(np.float64) * 1000).astype("<i4").tobytes()
    assert len(waveform["data"]) < 60 * 1024
    assert len(waveform["data"]) < 0.75 * len(base64.b64encode(zlib.compress(raw_uv, 6)))


def test_leads_without_i_and_ii_round_trip_unpredicted() -> None:
    """Without I and II no limb prediction applies, and any lead order decodes exactly."""
    rng = np.random.default_rng(7)
    samples_uv = rng.integers(-40000, 40000, size=(3, 700))
    names = ("aVF", "V1", "III")
    waveform = encode_waveform(samples_uv / 1000.0, names, 250.0)
    assert waveform is not None
    decoded = decode_waveform(waveform)
    assert decoded.lead_names == names
    np.testing.assert_array_equal(decoded.samples_uv, samples_uv)


def test_extreme_steps_round_trip() -> None:
    """Full-scale jumps (+-2 kV between samples, the largest varints) decode exactly."""
    limit = 2**31 - 1
    samples_uv = np.array([[limit, -limit, limit, 0, -limit],
                           [0, 1, -1, limit, -limit]], dtype=np.int64)
    decoded = decode_waveform(encode_waveform(samples_uv / 1000.0, ("I", "II"), 500.0))
    np.testing.assert_array_equal(decoded.samples_uv, samples_uv)


def test_broken_gain_keeps_no_waveform() -> None:
    """A sample beyond 2 kV (a broken gain) gives no waveform rather than a wrong one."""
    signal_mv = np.zeros((12, 100), dtype=np.float32)
    signal_mv[3, 50] = 3e6
    assert encode_waveform(signal_mv, STANDARD_LEADS, 500.0) is None


def _valid() -> dict:
    waveform = encode_waveform(np.arange(24, dtype=np.float32).reshape(2, 12), ("I", "II"), 500.0)
    assert waveform is not None
    return waveform


def _zlib_b64(payload: bytes) -> str:
    return base64.b64encode(zlib.compress(payload)).decode("ascii")


@pytest.mark.parametrize("change, reason", [
    ({"encoding": "ecgd-wave-0"}, "encoding"),
    ({"unit": "mV"}, "unit"),
    ({"data": "not base64!"}, "malformed"),
    ({"data": base64.b64encode(b"not zlib").decode()}, "malformed"),
    ({"data": _zlib_b64(bytes(23))}, "holds 23 values, expected 24"),
    ({"data": _zlib_b64(bytes(24) + b"\x80")}, "expected 24"),
    ({"data": _zlib_b64(b"\xff" * 200)}, "malformed"),
    ({"n_samples": 0}, "no leads"),
    ({"lead_names": None}, "malformed"),
])
def test_malformed_waveform_is_refused(change: dict, reason: str) -> None:
    """Every way the object can be wrong is one TamperedError naming what is wrong."""
    with pytest.raises(TamperedError, match=reason):
        decode_waveform(dict(_valid(), **change))
