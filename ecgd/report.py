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


def readable_text(text: str) -> str:
    """``text`` as valid Unicode, for a report or an error file.

    A file name that is not UTF-8 (a device writing Latin-1, say) reaches Python with its
    undecodable bytes as lone surrogates (PEP 383), which no UTF-8 encoder accepts; those
    bytes are shown as ``\\xNN`` instead (any other lone surrogate as ``\\uNNNN``). Valid
    text is returned unchanged.
    """
    return "".join(_readable_char(char) for char in text)


def _readable_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


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
                 window: Mapping[str, Any], qc: Mapping[str, Any],
                 measurements: Mapping[str, Any], model: ModelInfo,
                 model_not_run: Sequence[str], findings: List[Dict[str, Any]],
                 timing_ms: Mapping[str, float],
                 host: Optional[Mapping[str, Any]] = None,
                 waveform: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Assemble one report; ``interpretation_valid`` and ``warning`` follow from QC, the
    reasons the model did not run (``model_not_run``, empty when it ran) and the model.

    ``waveform`` (``ecgd.report_waveform.encode_waveform``) comes last, so the readable
    fields lead a JSON line.
    """
    warnings = []
    if qc["status"] != "accepted":
        warnings.append("quality control rejected this window (" + ", ".join(qc["reasons"])
                        + "): not interpreted")
    missing = [reason for reason in model_not_run if reason.startswith("missing_lead:")]
    if missing:
        warnings.append("the network did not run: the recording lacks leads it needs ("
                        + ", ".join(missing) + ")")
    if not model.trained:
        warnings.append(UNTRAINED_WARNING)
    report: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "report_id": report_id,
        "created_at": utc_timestamp(),
        "source": dict(source),
        "patient": {"pseudonym": pseudonym},
        "window": dict(window),
        "qc": dict(qc),
        "measurements": dict(measurements),
        "model": model.as_dict(),
        "model_not_run": list(model_not_run),
        "findings": [] if model_not_run else findings,
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
