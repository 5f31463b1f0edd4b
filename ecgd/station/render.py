"""The printout cardiologists read: 3 x 4 leads of 2.5 s and a 10-s lead II rhythm strip,
25 mm/s and 10 mm/mV with the calibration pulse, on a millimetre grid, under a header with
the pseudonym, acquisition time, QC verdict, measurements and the top findings.

The page is A4 landscape and every coordinate here is in millimetres from its lower left
corner: one matplotlib Axes spans the page with millimetres as data units, so a millimetre
in the code is a millimetre on paper in every format. Artists carry ids (``gid``: the grid,
each calibration pulse, each lead's trace and label) that an SVG keeps, so the tests measure
the produced file the way a reader would use a ruler.
"""
from __future__ import annotations

import io
import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ecgd.station.view import ReportView

FORMATS = ("pdf", "png", "svg")
DEFAULT_DPI = 150
MM_PER_INCH = 25.4

PAGE_WIDTH_MM = 297.0
PAGE_HEIGHT_MM = 210.0
PAPER_SPEED_MM_PER_S = 25.0
GAIN_MM_PER_MV = 10.0

GRID_LEFT_MM = 16.0
GRID_BOTTOM_MM = 6.0
GRID_WIDTH_MM = 265.0
GRID_HEIGHT_MM = 160.0
MAJOR_EVERY_MM = 5
# The calibration pulse sits in the first 10 mm of each row; time 0 starts after it.
CALIBRATION_MM = 10.0
TRACE_LEFT_MM = GRID_LEFT_MM + CALIBRATION_MM
CALIBRATION_WIDTH_S = 0.2
CALIBRATION_MV = 1.0

COLUMN_S = 2.5
RHYTHM_S = 10.0
RHYTHM_LEAD = "II"
LEAD_ROWS: Tuple[Tuple[str, ...], ...] = (("I", "aVR", "V1", "V4"),
                                          ("II", "aVL", "V2", "V5"),
                                          ("III", "aVF", "V3", "V6"))
# Baselines 40 mm apart, on major grid lines: three lead rows, then the rhythm strip.
ROW_BASELINES_MM: Tuple[float, ...] = (146.0, 106.0, 66.0)
RHYTHM_BASELINE_MM = 26.0

HEADER_TOP_MM = 203.0
FINDINGS_LEFT_MM = 176.0
LINE_MM = 4.4

MINOR_COLOUR = "#f4cccc"
MAJOR_COLOUR = "#e06666"
TRACE_COLOUR = "#000000"
ALERT_COLOUR = "#c00000"
TRACE_WIDTH_PT = 0.8

_METADATA: Dict[str, Dict[str, Optional[str]]] = {
    "pdf": {"Creator": "ecgd render", "Producer": None, "CreationDate": None},
    "svg": {"Creator": "ecgd render", "Date": None},
    "png": {"Software": "ecgd render"},
}


def render(views: Sequence[ReportView], fmt: str, dpi: int = DEFAULT_DPI) -> bytes:
    """The file holding one page per view: a multi-page ``pdf``, or a one-page ``png``/``svg``.

    ``dpi`` sets the pixel density of a PNG (the millimetres stay millimetres).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "pdf" and len(views) != 1:
        raise ValueError(f"a .{fmt} file holds one page, not {len(views)}")
    out = io.BytesIO()
    # Text stays text in an SVG (searchable, small); no path simplification: every sample
    # is drawn as it was analysed; fixed SVG ids and no dates make equal reports equal files.
    with matplotlib.rc_context({"svg.fonttype": "none", "path.simplify": False,
                                "svg.hashsalt": "ecgd", "font.family": "DejaVu Sans"}):
        if fmt == "pdf":
            with PdfPages(out, metadata=_METADATA["pdf"]) as pdf:
                for view in views:
                    pdf.savefig(draw_page(view))
        else:
            draw_page(views[0]).savefig(out, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return out.getvalue()


def draw_page(view: ReportView) -> Figure:
    """One report's page as a matplotlib Figure (no pyplot: no global figure state)."""
    figure = Figure(figsize=(PAGE_WIDTH_MM / MM_PER_INCH, PAGE_HEIGHT_MM / MM_PER_INCH))
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_xlim(0.0, PAGE_WIDTH_MM)
    axes.set_ylim(0.0, PAGE_HEIGHT_MM)
    axes.set_axis_off()
    _draw_header(axes, view)
    _draw_findings(axes, view)
    if view.waveform is None:
        _draw_no_tracing(axes, view)
    else:
        _draw_grid(axes)
        _draw_tracings(axes, view)
    fs_text = "" if view.waveform is None else f"{view.waveform.fs_hz:g} Hz "
    axes.text(GRID_LEFT_MM, 2.0,
              f"{PAPER_SPEED_MM_PER_S:g} mm/s   {GAIN_MM_PER_MV:g} mm/mV   {fs_text}as analysed: "
              "not filtered; each trace drawn about its median   "
              f"ecgd {view.ecgd_version}", fontsize=6.5, va="center")
    return figure


def _draw_header(axes: "matplotlib.axes.Axes", view: ReportView) -> None:
    lines: List[Tuple[str, Dict[str, Any]]] = []
    title = f"12-lead ECG, window {view.window_index} (from {view.window_start_s:g} s)"
    lines.append((title, {"fontsize": 11, "fontweight": "bold"}))
    acquired = (f"Acquired {view.acquired_at}" if view.acquired_at else
                f"Acquisition time not stated by the source (analysed {view.created_at})")
    lines.append((acquired, {}))
    pseudonym = view.pseudonym or "none (the source named no patient)"
    lines.append((f"Patient pseudonym {pseudonym}", {"family": "DejaVu Sans Mono",
                                                      "fontsize": 6.8}))
    if view.qc_status == "accepted":
        lines.append(("Quality control: accepted", {}))
    else:
        lines.append(("Quality control: REJECTED (" + ", ".join(view.qc_reasons) + ")",
                      {"color": ALERT_COLOUR, "fontweight": "bold"}))
    lines.extend((text, {}) for text in _measure_lines(view))
    lines.append((f"Report {view.report_id}   model {view.model_name}", {"fontsize": 6.5}))
    lines.append((f"Signed by {view.signer}, signature verified", {"fontsize": 6.5}))
    for row, (text, style) in enumerate(lines):
        options: Dict[str, Any] = {"fontsize": 8, "va": "top"}
        options.update(style)
        axes.text(GRID_LEFT_MM, HEADER_TOP_MM - row * LINE_MM, text, gid=f"header-{row}",
                  **options)


def _measure_lines(view: ReportView) -> List[str]:
    """Rate and every interval and axis the report holds, at most four to a line."""
    items = []
    for measure, value in view.present_measures():
        text = f"{measure.label} {value:.0f} {measure.unit}"
        if measure.key == "qtc_ms" and view.qtc_formula:
            text += f" ({view.qtc_formula.capitalize()})"
        items.append(text)
    if not items:
        return ["Rate not measured"]
    return ["   ".join(items[start:start + 4]) for start in range(0, len(items), 4)]


def _draw_findings(axes: "matplotlib.axes.Axes", view: ReportView) -> None:
    """The top findings; when they are not a valid interpretation, a red frame around them
    that says so first, in large letters, with the report's reason."""
    top = y = HEADER_TOP_MM
    colour = TRACE_COLOUR if view.interpretation_valid else ALERT_COLOUR
    if not view.interpretation_valid:
        axes.text(FINDINGS_LEFT_MM, y, "NOT A VALID INTERPRETATION", fontsize=15,
                  fontweight="bold", color=ALERT_COLOUR, va="top", gid="invalid-title")
        y -= 6.5
        reason = textwrap.fill(view.warning or "", 92)
        axes.text(FINDINGS_LEFT_MM, y, reason, fontsize=6.3, color=ALERT_COLOUR, va="top",
                  gid="invalid-reason")
        y -= 2.7 * (reason.count("\n") + 1) + 1.0
    axes.text(FINDINGS_LEFT_MM, y, "Findings (most probable first)", fontsize=8,
              fontweight="bold", va="top", color=colour)
    lines = [f"{finding['label']}   {finding['probability'] * 100:.0f} %   "
             f"({'above' if finding['above_threshold'] else 'below'} threshold "
             f"{finding['threshold'] * 100:.0f} %)" for finding in view.top_findings()]
    if view.qc_status != "accepted":
        lines = ["Not interpreted: quality control rejected this window."]
    for row, text in enumerate(lines, start=1):
        axes.text(FINDINGS_LEFT_MM, y - row * 3.9, text, fontsize=7.5, va="top", color=colour,
                  gid=f"finding-{row}")
    if not view.interpretation_valid:
        bottom = y - (len(lines) + 1) * 3.9
        axes.add_patch(Rectangle((FINDINGS_LEFT_MM - 2.0, bottom), PAGE_WIDTH_MM - 8.0
                                 - FINDINGS_LEFT_MM, top + 2.0 - bottom, facecolor=ALERT_COLOUR,
                                 alpha=0.08, edgecolor=ALERT_COLOUR, linewidth=2.5,
                                 gid="invalid-banner"))


def _draw_grid(axes: "matplotlib.axes.Axes") -> None:
    """Lines every millimetre, darker every 5 mm, over the whole tracing area."""
    right = GRID_LEFT_MM + GRID_WIDTH_MM
    top = GRID_BOTTOM_MM + GRID_HEIGHT_MM
    minor: List[List[Tuple[float, float]]] = []
    major: List[List[Tuple[float, float]]] = []
    for step in range(int(GRID_WIDTH_MM) + 1):
        x = GRID_LEFT_MM + step
        (major if step % MAJOR_EVERY_MM == 0 else minor).append([(x, GRID_BOTTOM_MM), (x, top)])
    for step in range(int(GRID_HEIGHT_MM) + 1):
        y = GRID_BOTTOM_MM + step
        (major if step % MAJOR_EVERY_MM == 0 else minor).append([(GRID_LEFT_MM, y), (right, y)])
    axes.add_collection(LineCollection(minor, colors=MINOR_COLOUR, linewidths=0.3,
                                       gid="grid-minor", zorder=0))
    axes.add_collection(LineCollection(major, colors=MAJOR_COLOUR, linewidths=0.6,
                                       gid="grid-major", zorder=0.5))


def _draw_tracings(axes: "matplotlib.axes.Axes", view: ReportView) -> None:
    waveform = view.waveform
    if waveform is None:
        return
    clip = Rectangle((GRID_LEFT_MM, GRID_BOTTOM_MM), GRID_WIDTH_MM, GRID_HEIGHT_MM,
                     transform=axes.transData, visible=False)
    axes.add_patch(clip)
    baselines = ROW_BASELINES_MM + (RHYTHM_BASELINE_MM,)
    for row, baseline in enumerate(baselines):
        _draw_calibration(axes, baseline, f"calibration-{row}")
    for row, leads in enumerate(LEAD_ROWS):
        for column, lead in enumerate(leads):
            start_s = column * COLUMN_S
            x_mm = TRACE_LEFT_MM + start_s * PAPER_SPEED_MM_PER_S
            _draw_trace(axes, view, lead, start_s, COLUMN_S, ROW_BASELINES_MM[row],
                        f"trace-{lead}", clip)
            axes.text(x_mm + 1.0, ROW_BASELINES_MM[row] + 12.0, lead, fontsize=9,
                      fontweight="bold", gid=f"label-{lead}")
            if column:
                axes.plot([x_mm, x_mm], [ROW_BASELINES_MM[row] - 3, ROW_BASELINES_MM[row] + 3],
                          color=TRACE_COLOUR, linewidth=TRACE_WIDTH_PT)
    _draw_trace(axes, view, RHYTHM_LEAD, 0.0, RHYTHM_S, RHYTHM_BASELINE_MM,
                f"trace-rhythm-{RHYTHM_LEAD}", clip)
    axes.text(TRACE_LEFT_MM + 1.0, RHYTHM_BASELINE_MM + 12.0, RHYTHM_LEAD, fontsize=9,
              fontweight="bold", gid=f"label-rhythm-{RHYTHM_LEAD}")


def _draw_calibration(axes: "matplotlib.axes.Axes", baseline_mm: float, gid: str) -> None:
    """The 1-mV, 0.2-s pulse in front of a row: its height is what 1 mV looks like."""
    width_mm = CALIBRATION_WIDTH_S * PAPER_SPEED_MM_PER_S
    height_mm = CALIBRATION_MV * GAIN_MM_PER_MV
    left = GRID_LEFT_MM + 2.0
    rise = left + 1.5
    x = [left, rise, rise, rise + width_mm, rise + width_mm, TRACE_LEFT_MM - 0.5]
    y = [baseline_mm, baseline_mm, baseline_mm + height_mm, baseline_mm + height_mm,
         baseline_mm, baseline_mm]
    axes.plot(x, y, color=TRACE_COLOUR, linewidth=TRACE_WIDTH_PT, gid=gid)


def _draw_trace(axes: "matplotlib.axes.Axes", view: ReportView, lead: str, start_s: float,
                duration_s: float, baseline_mm: float, gid: str, clip: Rectangle) -> None:
    """``duration_s`` of ``lead`` from ``start_s``, drawn about its median on ``baseline_mm``."""
    waveform = view.waveform
    if waveform is None or lead not in waveform.lead_names:
        return
    first = int(round(start_s * waveform.fs_hz))
    stop = min(int(round((start_s + duration_s) * waveform.fs_hz)), waveform.n_samples)
    if stop <= first:
        return
    samples_mv = waveform.lead(lead)[first:stop] / 1000.0
    x_mm = TRACE_LEFT_MM + np.arange(first, stop) / waveform.fs_hz * PAPER_SPEED_MM_PER_S
    y_mm = baseline_mm + (samples_mv - np.median(samples_mv)) * GAIN_MM_PER_MV
    (line,) = axes.plot(x_mm, y_mm, color=TRACE_COLOUR, linewidth=TRACE_WIDTH_PT, gid=gid,
                        solid_joinstyle="round")
    line.set_clip_path(clip)


def _draw_no_tracing(axes: "matplotlib.axes.Axes", view: ReportView) -> None:
    """Where the tracing would be: a box saying it is not in this report, and why."""
    axes.add_patch(Rectangle((GRID_LEFT_MM, GRID_BOTTOM_MM), GRID_WIDTH_MM, GRID_HEIGHT_MM,
                             facecolor="none", edgecolor=MAJOR_COLOUR, linewidth=1.0))
    middle_x = GRID_LEFT_MM + GRID_WIDTH_MM / 2
    middle_y = GRID_BOTTOM_MM + GRID_HEIGHT_MM / 2
    axes.text(middle_x, middle_y + 6, "The tracing was not kept in this report", fontsize=16,
              fontweight="bold", ha="center", va="center", gid="no-tracing")
    axes.text(middle_x, middle_y - 6, f"Why: {view.tracing_absent_reason()}.", fontsize=10,
              ha="center", va="center", gid="no-tracing-reason")
