"""What a reader is shown of one report, taken from its JSON once for every output.

The summary line, the rendered page, the FHIR Bundle and the DICOM instance all read a
report through :func:`view_report`, so each shows the same time, verdict, measurements and
findings, and a report that lacks what they need is refused once, here.
"""
from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from ecgd.errors import TamperedError
from ecgd.report_waveform import Waveform, decode_waveform
from ecgd.station.codes import MEASURES, Measure
from ecgd.station.opener import ReportFile, ReportOpener

TOP_FINDINGS = 5


@dataclasses.dataclass(frozen=True)
class ReportView:
    """One report as the reading station shows it (times are the report's UTC strings)."""

    path: Path
    report_id: str
    schema_version: str
    created_at: str
    acquired_at: Optional[str]        # the window's start, when the source stated it
    window_index: int
    window_start_s: float
    leads_missing: Tuple[str, ...]
    input_key: str                    # opaque: the same for every window of one input
    pseudonym: Optional[str]
    qc_status: str
    qc_reasons: Tuple[str, ...]
    measurements: Mapping[str, Any]
    findings: Tuple[Mapping[str, Any], ...]
    interpretation_valid: bool
    warning: Optional[str]
    model_name: str
    ecgd_version: str
    appliance: str                    # the enrolled name of the appliance that signed it
    signer: str                       # the same, with its signing key id
    waveform: Optional[Waveform]

    @property
    def heart_rate_bpm(self) -> Optional[float]:
        value = self.measurements.get("heart_rate_bpm")
        return None if value is None else float(value)

    @property
    def qtc_formula(self) -> Optional[str]:
        value = self.measurements.get("qtc_formula")
        return None if value is None else str(value)

    def present_measures(self) -> List[Tuple[Measure, float]]:
        """The measures this report holds a number for, in ``MEASURES`` order."""
        present = []
        for measure in MEASURES:
            value = self.measurements.get(measure.key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                present.append((measure, float(value)))
        return present

    def tracing_absent_reason(self) -> str:
        """Why a report holds no waveform, as far as the report can tell."""
        if self.schema_version.split(".")[0] in ("0", "1"):
            return f"a report of schema {self.schema_version}, older than 2.0"
        if self.leads_missing or "too_short" in self.qc_reasons:
            return "the window had no complete 12-lead signal"
        return ("the appliance keeps no samples ([reports] waveform = false, or an ecgd "
                "that did not yet keep them), or a sample was beyond 2 kV")

    def top_findings(self, count: int = TOP_FINDINGS) -> Tuple[Mapping[str, Any], ...]:
        """The most probable findings (the report lists them most probable first)."""
        return self.findings[:count]

    def above_threshold(self) -> Tuple[Mapping[str, Any], ...]:
        """The findings the model's own thresholds call present."""
        return tuple(f for f in self.findings if f.get("above_threshold"))


def open_views(opener: ReportOpener, paths: Iterable[Path],
               with_waveform: bool = True) -> Iterator[ReportView]:
    """The view of each report that opens; a report lacking a field is refused like a
    tampered one (named on stderr, exit 65), and the others still come."""
    for opened in opener.open_each(paths):
        try:
            yield view_report(opened, with_waveform)
        except TamperedError as exc:
            opener.refuse(opened.path, str(exc), exc.exit_code)


def view_report(opened: ReportFile, with_waveform: bool = True) -> ReportView:
    """The view of an opened report; TamperedError naming the field a report lacks."""
    report = opened.report
    try:
        report_id = str(uuid.UUID(str(report["report_id"])))
        window = report["window"]
        qc = report["qc"]
        findings = tuple(_finding(f) for f in report["findings"])
        view = ReportView(
            path=opened.path,
            report_id=report_id,
            schema_version=str(report["schema_version"]),
            created_at=str(report["created_at"]),
            acquired_at=None if window.get("start_time") is None else str(window["start_time"]),
            window_index=int(window["index"]),
            window_start_s=float(window["start_s"]),
            leads_missing=tuple(str(lead) for lead in window.get("leads_missing", ())),
            input_key=_input_key(report["source"], report_id),
            pseudonym=_pseudonym(report["patient"]),
            qc_status=str(qc["status"]),
            qc_reasons=tuple(str(reason) for reason in qc["reasons"]),
            measurements=dict(report["measurements"]),
            findings=findings,
            interpretation_valid=report["interpretation_valid"] is True,
            warning=None if report.get("warning") is None else str(report["warning"]),
            model_name=str(report["model"]["name"]),
            ecgd_version=str(report.get("ecgd_version", "")),
            appliance=opened.origin.appliance.name,
            signer=opened.signer,
            waveform=None,
        )
    except KeyError as exc:
        raise TamperedError(f"decrypted, but the report has no {exc.args[0]}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise TamperedError(f"decrypted, but the report is malformed: {exc}") from exc
    if with_waveform and "waveform" in report:
        view = dataclasses.replace(view, waveform=decode_waveform(report["waveform"]))
    return view


def _input_key(source: Mapping[str, Any], report_id: str) -> str:
    """What names the input a window came from: the file's digest, or the live device and
    segment (never shown: it only groups windows, e.g. into one DICOM study)."""
    if source.get("content_sha256"):
        return f"file:{source['content_sha256']}"
    if source.get("device") is not None:
        return f"serial:{source['device']}#{source.get('segment')}"
    return f"report:{report_id}"


def _pseudonym(patient: Mapping[str, Any]) -> Optional[str]:
    value = patient["pseudonym"]
    return None if value is None else str(value)


def _finding(finding: Mapping[str, Any]) -> Dict[str, Any]:
    return {"label": str(finding["label"]), "probability": float(finding["probability"]),
            "threshold": float(finding["threshold"]),
            "above_threshold": finding["above_threshold"] is True}
