"""The Recording type: lead-name normalization and the 12-lead arrangement the model needs."""
from __future__ import annotations

import numpy as np
import pytest

from ecgd.errors import RecordError
from ecgd.records.reader import read_recording
from ecgd.records.recording import (STANDARD_LEADS, Recording, arrange_standard_leads,
                                    normalize_lead_name, validate_recording)


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
    (np.ones((2, 10), np.float32), 0.0, ("I", "II"), "implausible sampling rate"),
    (np.ones((2, 10), np.float32), 1e6, ("I", "II"), "implausible sampling rate"),
    (np.ones((3, 10), np.float32), 500.0, ("I", "II"), "does not match"),
    (np.ones((2, 0), np.float32), 500.0, ("I", "II"), "no samples"),
    (np.ones((2, 10), np.float32), 500.0, ("I", "I"), "duplicate leads"),
])
def test_unusable_recordings_are_refused(samples, fs_hz, names, reason) -> None:
    """A reader's output with NaN, a bad rate, a shape mismatch or duplicates is refused."""
    with pytest.raises(RecordError, match=reason):
        validate_recording(Recording(samples, fs_hz, names, "test"), "x.npz")
