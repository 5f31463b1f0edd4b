"""Reports for the reading-station tests, built from real recordings without a model run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS, arrange_standard_leads
from ecgd.report import ModelInfo, build_report, findings_from_probabilities, make_report_id
from ecgd.report_waveform import encode_waveform
from ecgd.signal.chain import unmeasured_fields
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ecgd.security.keys import EnrolledAppliance
from ecgd.security.origin import Origin
from ecgd.station.opener import ReportFile
from ecgd.station.view import ReportView, view_report

TRAINED = ModelInfo("ecgfounder", "0" * 64, "fp32", True, "ecgfounder")
UNTRAINED = ModelInfo("ecgfounder-reference", "0" * 64, "fp32", False, "ecgfounder")
LABELS = ["SINUS RHYTHM", "NORMAL ECG", "LEFT AXIS DEVIATION", "SINUS BRADYCARDIA",
          "ATRIAL FIBRILLATION", "RIGHT BUNDLE BRANCH BLOCK", "LOW VOLTAGE QRS"]
PROBABILITIES = [0.93, 0.81, 0.62, 0.2, 0.05, 0.04, 0.01]
MEASUREMENTS = {"heart_rate_bpm": 61.5, "rr_ms": [976.0, 980.0], "rr_irregularity": 0.01,
                "pr_ms": 162.0, "qrs_ms": 94.0, "qt_ms": 398.0, "qtc_ms": 401.0,
                "qtc_formula": "bazett", "p_axis_deg": 48.0, "qrs_axis_deg": 31.0,
                "t_axis_deg": 40.0, "r_peaks_ms": [310.0, 1286.0, 2266.0], "unmeasured": {}}
PSEUDONYM = "5e" * 32


def window_mv(path: Path) -> np.ndarray:
    """The first 10 s of a 500-Hz recording in the 12 standard leads, as analysed."""
    recording = read_recording(path, 10**8)
    standard = arrange_standard_leads(recording)
    assert recording.fs_hz == 500.0 and standard.samples_mv is not None
    return standard.samples_mv[:, :5000]


def make_report(signal_mv: Optional[np.ndarray], model: ModelInfo = TRAINED,
                qc_status: str = "accepted", qc_reasons: tuple = (),
                pseudonym: Optional[str] = PSEUDONYM, seed: str = "file:test",
                start_time: Optional[str] = "2024-03-05T08:09:10.000Z") -> Dict[str, Any]:
    """A schema-2.0 report as the appliance writes it, for ``signal_mv`` (None: no samples)."""
    waveform = None if signal_mv is None else encode_waveform(signal_mv, STANDARD_LEADS, 500.0)
    window = {"index": 0, "start_s": 0.0, "fs_hz": 500.0, "source_fs_hz": 500.0,
              "n_samples": 5000, "leads_derived": [], "start_time": start_time}
    return build_report(
        report_id=make_report_id(seed, 0),
        source={"kind": "file", "file": "input.hea", "format": "wfdb",
                "content_sha256": "ab" * 32},
        pseudonym=pseudonym, window=window,
        qc={"status": qc_status, "score": 0.99, "reasons": list(qc_reasons),
            "saturation_rule": "declared_range"},
        measurements=(MEASUREMENTS if qc_status == "accepted"
                      else unmeasured_fields("qc_rejected")),
        model=model, model_not_run=() if qc_status == "accepted" else ("qc_rejected",),
        findings=(findings_from_probabilities(LABELS, PROBABILITIES, [0.5] * len(LABELS))
                  if qc_status == "accepted" else []),
        timing_ms={"read": 1.0, "qc": 1.0, "preprocess": 1.0, "inference": 1.0},
        waveform=waveform)


APPLIANCE = EnrolledAppliance("ward3", "0123456789abcdef", Ed25519PrivateKey.generate().public_key(),
                              Path("ward3.pub"))


def opened_file(report: Dict[str, Any]) -> ReportFile:
    """``report`` as the opener hands it over: verified, signed by appliance "ward3"."""
    return ReportFile(Path(f"{report['report_id']}.ecgr"), report,
                      Origin(APPLIANCE, report["report_id"]))


def view_of(report: Dict[str, Any]) -> ReportView:
    return view_report(opened_file(report))
