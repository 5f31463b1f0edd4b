"""Reports at the terminal: one summary line each."""
from __future__ import annotations

from ecgd.station.view import ReportView

PSEUDONYM_PREFIX_CHARS = 8


def summary_line(view: ReportView) -> str:
    """Time, pseudonym prefix, QC verdict, rate, top finding, report id and signing
    appliance on one line.

    The time is the acquisition time when the source stated it, else the analysis time,
    marked so. A window that is not a valid interpretation says so before its finding.
    """
    time = view.acquired_at or f"analysed {view.created_at}"
    pseudonym = (view.pseudonym or "-" * PSEUDONYM_PREFIX_CHARS)[:PSEUDONYM_PREFIX_CHARS]
    verdict = view.qc_status
    if view.qc_reasons:
        verdict += " (" + ", ".join(view.qc_reasons) + ")"
    rate = "- bpm" if view.heart_rate_bpm is None else f"{view.heart_rate_bpm:.0f} bpm"
    return "  ".join([time, pseudonym, verdict, rate, _top_finding(view),
                      f"id {view.report_id[:8]}", f"from {view.appliance}"])


def _top_finding(view: ReportView) -> str:
    if view.qc_status != "accepted":
        return "not interpreted"
    present = view.above_threshold()
    finding = (f"{present[0]['label']} {present[0]['probability']:.2f}" if present
               else "no finding above its threshold")
    return finding if view.interpretation_valid else f"NOT VALID: {finding}"
