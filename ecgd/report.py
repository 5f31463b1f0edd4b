"""The JSON report of one window, as specified by ``ecgd/schemas/report.schema.json``.

A report never holds a plain patient identifier: only the keyed pseudonym. Report ids are
UUIDv5 of the input's content digest (or live stream position) and the window index, so
processing the same input twice yields the same ids: a crash between writing reports and
moving the input can never produce a second, different report.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ecgd import __version__

SCHEMA_VERSION = "2.0"
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "report.schema.json"

# Fixed namespace for report ids: uuid5(NAMESPACE_URL, "https://ecgd.invalid/report").
REPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://ecgd.invalid/report")

UNTRAINED_WARNING = ("the model is untrained (reference weights): findings are placeholders, "
                     "not a diagnosis")


def make_report_id(id_seed: str, window_index: int) -> str:
    """Deterministic report id for window ``window_index`` of the input named by ``id_seed``."""
    return str(uuid.uuid5(REPORT_NAMESPACE, f"{id_seed}:{window_index}"))


def utc_timestamp(moment: Optional[dt.datetime] = None) -> str:
    """UTC ISO 8601 with a ``Z`` suffix, millisecond precision."""
    moment = moment or dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a report says about the model that interpreted it."""

    name: str
    sha256: str
    precision: str
    trained: bool
    preprocessing: str

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def findings_from_probabilities(labels: Sequence[str], probabilities: Sequence[float],
                                thresholds: Sequence[float]) -> List[Dict[str, Any]]:
    """Every label with its probability and threshold, most probable first."""
    findings: List[Dict[str, Any]] = [
        {"label": label, "probability": round(float(p), 6), "threshold": float(t),
         "above_threshold": bool(p >= t)}
        for label, p, t in zip(labels, probabilities, thresholds)
    ]
    findings.sort(key=lambda finding: finding["probability"], reverse=True)
    return findings


def build_report(*, report_id: str, source: Mapping[str, Any], pseudonym: Optional[str],
                 window: Mapping[str, Any], qc_status: str, qc_score: Optional[float],
                 qc_reasons: Sequence[str], measurements: Mapping[str, Any], model: ModelInfo,
                 findings: List[Dict[str, Any]], timing_ms: Mapping[str, float],
                 host: Optional[Mapping[str, Any]] = None,
                 waveform: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Assemble one report; ``interpretation_valid`` and ``warning`` follow from QC and model.

    ``waveform`` (``ecgd.report_waveform.encode_waveform``) comes last, so the readable
    fields lead a JSON line.
    """
    warnings = []
    if qc_status != "accepted":
        warnings.append("quality control rejected this window (" + ", ".join(qc_reasons)
                        + "): not interpreted")
    if not model.trained:
        warnings.append(UNTRAINED_WARNING)
    report: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "report_id": report_id,
        "created_at": utc_timestamp(),
        "source": dict(source),
        "patient": {"pseudonym": pseudonym},
        "window": dict(window),
        "qc": {"status": qc_status,
               "score": None if qc_score is None else round(float(qc_score), 4),
               "reasons": list(qc_reasons)},
        "measurements": dict(measurements),
        "model": model.as_dict(),
        "findings": findings if qc_status == "accepted" else [],
        "interpretation_valid": not warnings,
        "timing_ms": {key: round(float(value), 3) for key, value in timing_ms.items()},
        "ecgd_version": __version__,
    }
    if warnings:
        report["warning"] = "; ".join(warnings)
    if host is not None:
        report["host"] = dict(host)
    if waveform is not None:
        report["waveform"] = dict(waveform)
    return report


def dumps_report(report: Mapping[str, Any]) -> str:
    """One report as a single JSON line (keys in schema order, no NaN)."""
    return json.dumps(report, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
