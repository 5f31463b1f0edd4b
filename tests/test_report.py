"""Report assembly: deterministic ids, findings order, validity and warnings."""
from __future__ import annotations

import json
import uuid

import pytest

from ecgd.report import (ModelInfo, build_report, dumps_report, findings_from_probabilities,
                         make_report_id)

TRAINED = ModelInfo("m", "0" * 64, "fp32", True, "ecgfounder")
UNTRAINED = ModelInfo("m", "0" * 64, "fp32", False, "ecgfounder")


def _report(model: ModelInfo, status: str, reasons=(), model_not_run=None) -> dict:
    if model_not_run is None:
        model_not_run = ("qc_rejected",) if status == "rejected" else ()
    return build_report(
        report_id=make_report_id("file:abc", 0), source={"kind": "file"}, pseudonym=None,
        window={"index": 0},
        qc={"status": status, "score": 0.99, "reasons": list(reasons),
            "saturation_rule": "clipped_run"},
        measurements={}, model=model, model_not_run=model_not_run,
        findings=findings_from_probabilities(["a", "b"], [0.2, 0.9], [0.5, 0.5]),
        timing_ms={"read": 1.0})


def test_report_ids_depend_on_input_and_window_only() -> None:
    """Same seed and window -> same UUIDv5; another window or input -> another id."""
    first = make_report_id("file:abc", 0)
    assert first == make_report_id("file:abc", 0)
    assert first != make_report_id("file:abc", 1) != make_report_id("file:abd", 0)
    assert uuid.UUID(first).version == 5


def test_findings_sorted_with_thresholds() -> None:
    """Findings come most probable first, each marked against its own threshold."""
    findings = findings_from_probabilities(["a", "b", "c"], [0.2, 0.9, 0.6], [0.5, 0.95, 0.5])
    assert [f["label"] for f in findings] == ["b", "c", "a"]
    assert [f["above_threshold"] for f in findings] == [False, True, False]


@pytest.mark.parametrize("model, status, reasons, valid", [
    (TRAINED, "accepted", (), True),
    (UNTRAINED, "accepted", (), False),
    (TRAINED, "rejected", ("flatline:V3",), False),
])
def test_interpretation_valid_only_for_trained_model_and_accepted_window(
        model, status, reasons, valid) -> None:
    """interpretation_valid needs both; otherwise a warning says why; rejected = no findings."""
    report = _report(model, status, reasons)
    assert report["interpretation_valid"] is valid
    assert ("warning" in report) is (not valid)
    if status == "rejected":
        assert report["findings"] == [] and "flatline:V3" in report["warning"]
    if not model.trained:
        assert "untrained" in report["warning"]


def test_report_serializes_to_one_json_line() -> None:
    """A report is one line of strict JSON (no NaN) ending nowhere mid-line."""
    line = dumps_report(_report(TRAINED, "accepted"))
    assert "\n" not in line
    assert json.loads(line)["created_at"].endswith("Z")


def test_missing_leads_withhold_findings_and_say_why() -> None:
    """A window the network did not see (missing leads) has no findings and a warning that
    names the missing leads, even when its QC accepted the leads it has."""
    report = _report(TRAINED, "accepted", model_not_run=("missing_lead:V1", "missing_lead:V2"))
    assert report["findings"] == []
    assert report["interpretation_valid"] is False
    assert report["model_not_run"] == ["missing_lead:V1", "missing_lead:V2"]
    assert "missing_lead:V1, missing_lead:V2" in report["warning"]
