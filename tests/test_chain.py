"""One window from a recording: cut with context, saturation rules, bad input, 2-lead records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgd.config import MeasurementConfig, QcConfig
from ecgd.records.recording import STANDARD_LEADS, Recording
from ecgd.signal.chain import CONTEXT_S, SignalChain, WindowLayout, cut_window
from ecgd.signal.preprocess import make_preprocessor
from ecgd.signal.resample import resample_to

wfdb = pytest.importorskip("wfdb")

FS_HZ = 500.0
WINDOW = 5000
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def _chain() -> SignalChain:
    return SignalChain(QcConfig(), MeasurementConfig(),
                       make_preprocessor("ecgfounder", {}, FS_HZ, 50), 50)


def _judge(recording: Recording, start: int = 0):
    layout = WindowLayout.of(recording, STANDARD_LEADS)
    return _chain().judge(cut_window(recording, layout, start, WINDOW, FS_HZ))


@pytest.fixture(scope="module")
def ludb_1(shared_data: Path) -> np.ndarray:
    return wfdb.rdrecord(str(shared_data / "ludb" / "data" / "1")).p_signal.T.astype(np.float32)


def test_window_cut_with_context_equals_the_whole_recording_resampled(shared_data: Path) -> None:
    """A window cut with context and resampled alone has the samples a resampling of the
    whole recording gives (MIT-BIH 360 Hz -> 500 Hz), and no more context than 2 x 2 s."""
    signal = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=360 * 60).p_signal.T
    recording = Recording(signal.astype(np.float32), 360.0, ("ch1", "ch2"), "test")
    layout = WindowLayout.of(recording, STANDARD_LEADS)
    whole = resample_to(recording.samples_mv, 360.0, FS_HZ)
    for start in (0, 5000, 15000, whole.shape[1] - WINDOW):
        cut = cut_window(recording, layout, start, WINDOW, FS_HZ)
        assert cut.context_mv.shape[1] <= WINDOW + 2 * CONTEXT_S * FS_HZ + 50
        inner = slice(50, WINDOW - 50) if 0 < start < whole.shape[1] - WINDOW else \
            slice(0, WINDOW)
        np.testing.assert_allclose(cut.window_mv[:, inner],
                                   whole[:, start:start + WINDOW][:, inner], atol=2e-3)
        assert cut.raw_mv.shape[1] == 3600


def _with_rails(samples: np.ndarray, names, rails: np.ndarray) -> Recording:
    return Recording(samples.astype(np.float32), FS_HZ, tuple(names), "test", rails_mv=rails)


def test_saturation_by_the_declared_range(ludb_1: np.ndarray) -> None:
    """With a declared digital range, a lead more than 5 % at its rails is saturation and
    the report says declared_range; 3 % at the rails is not."""
    rails = np.tile([-5.0, 5.0], (12, 1))
    for fraction, saturated in ((0.06, True), (0.03, False)):
        samples = ludb_1.copy()
        samples[1, :int(fraction * WINDOW)] = 5.0
        verdict = _judge(_with_rails(samples, STANDARD_LEADS, rails)).verdict
        assert verdict.saturation_rule == "declared_range"
        assert ("saturation:II" in verdict.reasons) is saturated
    assert _judge(Recording(ludb_1, FS_HZ, STANDARD_LEADS, "test")).verdict.saturation_rule \
        == "clipped_run"


def test_derived_leads_saturate_with_their_source(ludb_1: np.ndarray) -> None:
    """8 stored leads: when lead I sits at its rail, the leads derived from it do too."""
    samples = ludb_1[[0, 1, 6, 7, 8, 9, 10, 11]].copy()
    samples[0, 1000:1400] = -5.0
    verdict = _judge(_with_rails(samples, EIGHT_LEADS, np.tile([-5.0, 5.0], (8, 1)))).verdict
    assert {"saturation:I", "saturation:III", "saturation:aVR", "saturation:aVL",
            "saturation:aVF"} <= set(verdict.reasons)
    assert "saturation:II" not in verdict.reasons


@pytest.mark.parametrize("make", [
    lambda x: np.zeros_like(x),
    lambda x: np.full_like(x, 2.5),
    lambda x: np.clip(x, -0.05, 0.05),
    lambda x: x * 1000.0,
], ids=["flat", "constant", "clipped", "wildly-scaled"])
def test_bad_windows_get_a_verdict_and_a_reason(ludb_1: np.ndarray, make) -> None:
    """Flat, constant, clipped and 1000x scaled windows are rejected with reasons, never an
    exception; nothing is measured on them."""
    result = _judge(Recording(make(ludb_1), FS_HZ, STANDARD_LEADS, "test"))
    assert not result.verdict.ok and result.verdict.reasons
    assert result.measurements["heart_rate_bpm"] is None
    assert set(result.measurements["unmeasured"].values()) == {"qc_rejected"}


def test_two_lead_holter_record_is_measured(shared_data: Path) -> None:
    """MIT-BIH 100 (MLII, V1; 360 Hz): QC, beats, rate and intervals from its two leads,
    named by position or standard name only; no axes without limb leads."""
    signal = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=3600 * 2).p_signal.T
    recording = Recording(signal.astype(np.float32), 360.0, ("MLII", "V1"), "test")
    layout = WindowLayout.of(recording, STANDARD_LEADS)
    assert layout.names == ("V1", "ch1") and not layout.complete
    result = _chain().judge(cut_window(recording, layout, 0, WINDOW, FS_HZ))
    assert result.verdict.ok, result.verdict.reasons
    fields = result.measurements
    assert 60 < fields["heart_rate_bpm"] < 90
    assert len(fields["r_peaks_ms"]) == len(fields["rr_ms"]) + 1 >= 10
    assert fields["qrs_ms"] is not None and fields["qrs_axis_deg"] is None
    assert fields["unmeasured"]["qrs_axis_deg"] == "needs_leads_I_aVF"


def test_one_lead_window_is_judged_on_its_lead(ludb_1: np.ndarray) -> None:
    """A 1-lead recording is judged and measured on that lead; the 11 others are missing
    (the pipeline's model_not_run names them), and no axis is made up."""
    recording = Recording(ludb_1[1:2], FS_HZ, ("II",), "test")
    layout = WindowLayout.of(recording, STANDARD_LEADS)
    assert layout.names == ("II",) and len(layout.missing) == 11
    result = _judge(recording)
    assert result.verdict.ok
    assert result.measurements["heart_rate_bpm"] is not None
    assert result.measurements["qrs_axis_deg"] is None
