"""The Recording type: lead-name normalization and the 12-lead arrangement the model needs."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ecgd.errors import RecordError
from ecgd.records.reader import read_recording
from ecgd.records.recording import (STANDARD_LEADS, Recording, arrange_standard_leads,
                                    lead_label, normalize_lead_name, validate_recording)


@pytest.mark.parametrize("raw, expected", [
    ("I", "I"), ("ii", "II"), ("III", "III"), ("AVR", "aVR"), ("avl", "aVL"), ("aVF", "aVF"),
    ("MDC_ECG_LEAD_AVR", "aVR"), ("MDC_ECG_LEAD_I", "I"), ("Lead I (Einthoven)", "I"),
    ("Lead aVR", "aVR"), ("v1", "V1"), (" V6 ", "V6"), ("MLII", "MLII"), ("noise1", "noise1"),
])
def test_lead_names_normalize_whatever_their_spelling(raw: str, expected: str) -> None:
    """Every spelling seen in the shared data maps to the standard name; others are kept."""
    assert normalize_lead_name(raw) == expected


def test_limb_leads_derived_from_i_and_ii_match_stored_ones(shared_data) -> None:
    """III, aVR, aVL, aVF derived from I and II equal the leads a 12-lead record stores."""
    full = read_recording(shared_data / "cinc2021" / "HR06004.hea", 1 << 26)
    keep = [full.lead_names.index(name) for name in ("I", "II", "V1", "V2", "V3", "V4",
                                                       "V5", "V6")]
    eight = Recording(full.samples_mv[keep], full.fs_hz,
                      tuple(full.lead_names[i] for i in keep), "test")
    derived = arrange_standard_leads(eight)
    stored = arrange_standard_leads(full)
    assert sorted(derived.derived) == ["III", "aVF", "aVL", "aVR"]
    assert stored.derived == ()
    # PTB-XL stores limb leads computed from I and II at 1 uV resolution.
    assert np.max(np.abs(derived.samples_mv - stored.samples_mv)) < 0.01


def test_missing_lead_is_named_never_zero_filled() -> None:
    """Without V3 the arrangement has no samples at all and names the missing lead."""
    names = tuple(name for name in STANDARD_LEADS if name != "V3")
    recording = Recording(np.ones((11, 100), np.float32), 500.0, names, "test")
    arranged = arrange_standard_leads(recording)
    assert arranged.samples_mv is None
    assert arranged.missing == ("V3",)


def test_arrangement_follows_any_input_order() -> None:
    """Leads in any order come out in model order, each with its own samples."""
    order = tuple(reversed(STANDARD_LEADS))
    samples = np.arange(12, dtype=np.float32)[:, None] * np.ones((12, 10), np.float32)
    arranged = arrange_standard_leads(Recording(samples, 500.0, order, "test"))
    assert arranged.samples_mv is not None
    assert [row[0] for row in arranged.samples_mv] == list(range(11, -1, -1))


@pytest.mark.parametrize("samples, fs_hz, names, reason", [
    (np.full((2, 10), np.nan, np.float32), 500.0, ("I", "II"), "NaN or Inf"),
    (np.ones((2, 10), np.float32), 0.0, ("I", "II"), "sampling rate outside 100-10000 Hz"),
    (np.ones((2, 10), np.float32), 1e6, ("I", "II"), "sampling rate outside 100-10000 Hz"),
    (np.ones((3, 10), np.float32), 500.0, ("I", "II"), "does not match"),
    (np.ones((2, 0), np.float32), 500.0, ("I", "II"), "no samples"),
    (np.ones((2, 10), np.float32), 500.0, ("I", "I"), "lead I appears more than once"),
    (np.ones((2, 10), np.float32), 500.0, ("Q7Z3", "Q7Z3"), "a channel name appears more"),
])
def test_unusable_recordings_are_refused(samples, fs_hz, names, reason) -> None:
    """A reader's output with NaN, a bad rate, a shape mismatch or duplicates is refused."""
    with pytest.raises(RecordError, match=reason):
        validate_recording(Recording(samples, fs_hz, names, "test"), "x.npz")


@pytest.mark.parametrize("fs_hz, accepted", [
    (1.0, False), (2.0, False), (22.0, False), (99.9, False), (1 / 0.01, True),
    (128.0, True), (360.0, True), (1000.0, True), (10000.0, True), (10001.0, False),
])
def test_sampling_rate_limits(fs_hz: float, accepted: bool) -> None:
    """100 Hz (the slowest real export, 1/0.01 s included) to 10 kHz pass; the 1-22 Hz
    poison rates and anything above 10 kHz are refused without the value in the line."""
    recording = Recording(np.ones((2, 100), np.float32), fs_hz, ("I", "II"), "test")
    if accepted:
        assert validate_recording(recording, "x.npz") is recording
    else:
        with pytest.raises(RecordError, match=r"^x\.npz: sampling rate outside 100-10000 Hz, "
                                              r"the rates an ECG is read at; refused$"):
            validate_recording(recording, "x.npz")


def test_sample_limit_counts_leads_times_samples() -> None:
    """12 x 1000 samples pass a limit of 12000 and are refused by a limit of 11999."""
    recording = Recording(np.zeros((12, 1000), np.float32), 500.0, STANDARD_LEADS, "test")
    assert validate_recording(recording, "x.npz", max_samples=12000) is recording
    with pytest.raises(RecordError, match=r"^x\.npz: decodes to more than 11999 samples "
                                          r"\(leads x samples, \[limits\] max_input_samples\)"):
        validate_recording(recording, "x.npz", max_samples=11999)


def test_start_time_past_year_9999_is_dropped_and_noted() -> None:
    """A start time whose last sample would fall past 9999-12-31 is dropped with a note; one
    that fits is kept."""
    late = dt.datetime(9999, 12, 31, 23, 59, 55, tzinfo=dt.timezone.utc)
    samples = np.zeros((2, 5000), np.float32)
    validated = validate_recording(Recording(samples, 500.0, ("I", "II"), "test",
                                             start_time=late), "x.xml")
    assert validated.start_time is None
    assert "passes year 9999" in validated.metadata["start_time_error"]
    short = Recording(samples[:, :2000], 500.0, ("I", "II"), "test", start_time=late)
    assert validate_recording(short, "x.xml").start_time == late


@pytest.mark.parametrize("raw, index, label", [
    ("ii", 1, "II"), ("MDC_ECG_LEAD_V3", 8, "V3"), ("Patient Q7Z3", 4, "channel 5"),
])
def test_errors_name_leads_by_standard_name_or_position(raw: str, index: int,
                                                        label: str) -> None:
    """Error lines name a standard lead by its name and anything else by its position."""
    assert lead_label(raw, index) == label
