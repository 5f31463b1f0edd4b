"""Preprocessing profiles: parity with a plain per-lead scipy chain, shapes, bad params."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from ecgd.errors import ModelError
from ecgd.signal.preprocess import (PROFILE_DEFAULTS, ZeroPhaseFilter, make_preprocessor, mains_snr_db,
                             row_percentiles)

wfdb = pytest.importorskip("wfdb")

FS_HZ = 500.0


def upstream_reference(window_mv: np.ndarray, fs_hz: float, mains_hz: float,
                       bandpass_form: str = "ba", nudge_ulp: bool = False) -> np.ndarray:
    """The ecgfounder chain written literally, one lead at a time, as described upstream.

    Upstream runs the band-pass in ba form (``bandpass_form="ba"``). That form of this
    8th-order filter, with poles within 0.01 of z = 1, turns a one-ulp change of one
    denominator coefficient into 4e-5 of output, and numpy's np.poly rounds one coefficient
    one ulp differently on arm64; ``"sos"`` runs the same design in second-order sections,
    which do not amplify it. ``nudge_ulp`` moves the sections' largest denominator
    coefficient by one ulp, to show a check against them does not hang on that last bit.
    """
    b_notch, a_notch = signal.iirnotch(mains_hz, 30.0, fs=fs_hz)
    design = signal.butter(4, [0.67, 40.0], btype="bandpass", fs=fs_hz, output=bandpass_form)
    if bandpass_form == "ba":
        def bandpass(lead: np.ndarray) -> np.ndarray:
            return signal.filtfilt(*design, lead)
    else:
        if nudge_ulp:
            denominators = design[:, 4:]
            largest = np.unravel_index(np.argmax(np.abs(denominators)), denominators.shape)
            denominators[largest] = np.nextafter(denominators[largest], np.inf)

        def bandpass(lead: np.ndarray) -> np.ndarray:
            return signal.sosfiltfilt(design, lead)
    kernel = int(0.4 * fs_hz) + 1
    kernel = kernel if kernel % 2 == 1 else kernel + 1
    leads = []
    for lead in window_mv.astype(np.float64):
        lead = signal.filtfilt(b_notch, a_notch, lead)
        lead = bandpass(lead)
        lead = lead - signal.medfilt(lead, kernel)
        leads.append(lead)
    x = np.stack(leads)
    return (x - x.mean()) / (x.std() + 1e-8)


@pytest.fixture(scope="module")
def real_windows(shared_data: Path) -> np.ndarray:
    """Six real 12-lead 10-s windows at 500 Hz (LUDB and CinC 2021), [6, 12, 5000] mV."""
    bases = [shared_data / "ludb" / "data" / n for n in ("1", "20", "91")]
    bases += [shared_data / "cinc2021" / n for n in ("E07500", "HR06000", "JS20003")]
    return np.stack([wfdb.rdrecord(str(b)).p_signal.T for b in bases]).astype(np.float32)


@pytest.mark.parametrize("nudge_ulp", [False, True])
@pytest.mark.parametrize("mains_hz", [50, 60])
def test_ecgfounder_parity_with_per_lead_reference(real_windows: np.ndarray,
                                                   mains_hz: int, nudge_ulp: bool) -> None:
    """Vectorized batch output equals the per-lead scipy chain on real records: to float32
    rounding (1e-6 for |z| < 32) with the band-pass in sections, whichever way the last bit
    of a coefficient rounds, and within 1e-4 of upstream's literal ba form."""
    pre = make_preprocessor("ecgfounder", PROFILE_DEFAULTS["ecgfounder"], FS_HZ, mains_hz)
    out = pre(real_windows)
    assert out.dtype == np.float32 and out.shape == real_windows.shape
    for window, got in zip(real_windows, out):
        in_sections = upstream_reference(window, FS_HZ, mains_hz, "sos", nudge_ulp)
        assert np.max(np.abs(got - in_sections)) <= 1e-6
        literal = upstream_reference(window, FS_HZ, mains_hz, "ba")
        assert np.max(np.abs(got - literal)) <= 1e-4
    single = pre(real_windows[0])
    assert single.shape == (12, 5000)
    np.testing.assert_array_equal(single, out[0])


def test_median_kernel_is_odd_at_other_rates() -> None:
    """int(0.4 * fs) + 1 made odd: 201 at 500 Hz, 145 at 360 Hz."""
    assert make_preprocessor("ecgfounder", {}, 500.0, 50).median_kernel == 201
    assert make_preprocessor("ecgfounder", {}, 360.0, 60).median_kernel == 145


def test_edge_cds_notch_only_on_humming_leads(real_windows: np.ndarray) -> None:
    """edge-cds notches a lead with 50 Hz hum (SNR > 10 dB) and leaves clean leads alone."""
    window = real_windows[0].astype(np.float64)
    t = np.arange(window.shape[1]) / FS_HZ
    humming = window.copy()
    humming[2] += 0.3 * np.sin(2 * np.pi * 50.0 * t)
    snr = mains_snr_db(humming, FS_HZ, 50.0)
    assert snr[2] > 10.0 and np.all(np.delete(snr, 2) < 10.0)

    pre = make_preprocessor("edge-cds", {}, FS_HZ, 50)
    out = pre(humming.astype(np.float32))
    band = signal.butter(2, [0.5, 50.0], btype="bandpass", fs=FS_HZ, output="sos")
    notch = signal.tf2sos(*signal.iirnotch(50.0, 30.0, fs=FS_HZ))

    def per_lead_z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-8)

    clean_expected = per_lead_z(signal.sosfiltfilt(band, humming[0]))
    hum_expected = per_lead_z(signal.sosfiltfilt(band, signal.sosfiltfilt(notch, humming[2])))
    np.testing.assert_allclose(out[0], clean_expected, atol=1e-5)
    np.testing.assert_allclose(out[2], hum_expected, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("profile, params", [
    ("ecgfounder-v2", {}),
    ("ecgfounder", {"notch_hz": 50}),
    ("ecgfounder", {"bandpass_hz": [40.0, 0.67]}),
    ("ecgfounder", {"bandpass_hz": [0.67, 300.0]}),
    ("ecgfounder", {"bandpass_order": 4.5}),
    ("ecgfounder", {"zscore": "per_window"}),
    ("ecgfounder", {"notch_q": "thirty"}),
    ("edge-cds", {"baseline_median_s": 0.4}),
])
def test_unknown_profile_or_bad_params_are_model_errors(profile: str, params: dict) -> None:
    """A profile or parameter the manifest got wrong refuses to build, naming it."""
    with pytest.raises(ModelError, match="preprocessing profile"):
        make_preprocessor(profile, params, FS_HZ, 50)


def test_profile_defaults_are_pinned() -> None:
    """PROFILE_DEFAULTS holds exactly the parameters agreed with the model manifest."""
    assert PROFILE_DEFAULTS["ecgfounder"] == {
        "notch_q": 30.0, "bandpass_hz": [0.67, 40.0], "bandpass_order": 4,
        "baseline_median_s": 0.4, "zscore": "global", "zscore_eps": 1e-8}
    assert PROFILE_DEFAULTS["edge-cds"] == {
        "bandpass_hz": [0.5, 50.0], "bandpass_order": 2, "notch_q": 30.0,
        "notch_min_snr_db": 10.0, "zscore": "per_lead", "zscore_eps": 1e-8}


def test_zero_phase_filter_equals_sosfiltfilt(real_windows: np.ndarray) -> None:
    """ZeroPhaseFilter (zi designed once) gives sosfiltfilt's output on real leads."""
    rows = real_windows.reshape(-1, real_windows.shape[-1]).astype(np.float64)
    for sos in (signal.butter(4, [0.67, 40.0], btype="bandpass", fs=FS_HZ, output="sos"),
                signal.tf2sos(*signal.iirnotch(60.0, 30.0, fs=FS_HZ)),
                signal.butter(2, [5.0, 20.0], btype="bandpass", fs=FS_HZ, output="sos")):
        got = ZeroPhaseFilter(sos)(rows)
        expected = signal.sosfiltfilt(sos, rows, axis=-1)
        np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-12)


@pytest.mark.parametrize("q_percent", [(50.0, 99.0), (99.0, 50.0), (0.0, 100.0), (37.5,),
                                       (25.0, 25.0, 75.0)])
def test_row_percentiles_equal_numpy(real_windows: np.ndarray, q_percent: tuple) -> None:
    """row_percentiles returns np.percentile's values to the bit, for odd and even lengths."""
    rows = real_windows[0].astype(np.float64) ** 2
    for n in (rows.shape[1], 4999, 2, 1):
        part = rows[:, :n]
        expected = np.percentile(part, list(q_percent), axis=1)
        np.testing.assert_array_equal(row_percentiles(part, q_percent), expected)


def test_window_shorter_than_filter_padding_is_model_error() -> None:
    """A window no longer than the band-pass padding is refused with a ModelError."""
    pre = make_preprocessor("ecgfounder", {}, FS_HZ, 50)
    with pytest.raises(ModelError, match="preprocessing profile"):
        pre(np.zeros((12, pre.bandpass.padlen), dtype=np.float32))
