"""The rendered page, measured from the produced files as a reader would with a ruler."""
from __future__ import annotations

import io
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from ecgd.records.recording import STANDARD_LEADS
from ecgd.station.render import render
from report_helpers import UNTRAINED, make_report, view_of, window_mv

REPO_ROOT = Path(__file__).resolve().parents[1]
README_IMAGE = REPO_ROOT / "docs" / "reading-station-page.png"
README_DPI = 100
MM_PER_PT = 25.4 / 72.0
PAGE_HEIGHT_MM = 210.0
SVG = "{http://www.w3.org/2000/svg}"
# The standard 12-lead layout: rows top to bottom, 2.5-s columns left to right.
LAYOUT = [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]]


@pytest.fixture(scope="module")
def signal_mv(shared_data: Path) -> np.ndarray:
    return window_mv(shared_data / "cinc2021" / "HR06004.hea")


@pytest.fixture(scope="module")
def svg(signal_mv: np.ndarray) -> ElementTree.Element:
    return ElementTree.fromstring(render([view_of(make_report(signal_mv))], "svg"))


def _groups(root: ElementTree.Element) -> Dict[str, ElementTree.Element]:
    return {g.get("id", ""): g for g in root.iter(f"{SVG}g")}


def _paths_mm(group: ElementTree.Element) -> List[np.ndarray]:
    """Each path of a group as ``[n, 2]`` page millimetres, y upwards from the bottom edge."""
    paths = []
    for path in group.iter(f"{SVG}path"):
        numbers = [float(token) for token in path.get("d", "").replace("M", " ").replace(
            "L", " ").replace("z", " ").split()]
        points_pt = np.array(numbers).reshape(-1, 2)
        paths.append(np.column_stack([points_pt[:, 0] * MM_PER_PT,
                                      PAGE_HEIGHT_MM - points_pt[:, 1] * MM_PER_PT]))
    return paths


def _text_position_mm(group: ElementTree.Element) -> np.ndarray:
    text = next(group.iter(f"{SVG}text"))
    return np.array([float(text.get("x", "nan")) * MM_PER_PT,
                     PAGE_HEIGHT_MM - float(text.get("y", "nan")) * MM_PER_PT])


def test_page_is_a4_landscape_in_millimetres(svg) -> None:
    """The SVG is 297 x 210 mm, so its points convert to paper millimetres."""
    assert float(svg.get("width", "").removesuffix("pt")) * MM_PER_PT == pytest.approx(297.0)
    assert float(svg.get("height", "").removesuffix("pt")) * MM_PER_PT == pytest.approx(210.0)


def test_grid_lines_every_millimetre_darker_every_five(svg) -> None:
    """Minor and major lines together fall every 1 mm; major ones every 5 mm, both ways."""
    groups = _groups(svg)
    minor, major = _paths_mm(groups["grid-minor"]), _paths_mm(groups["grid-major"])
    for axis in (0, 1):  # vertical lines have one x, horizontal lines one y
        def positions(paths: List[np.ndarray]) -> np.ndarray:
            return np.unique(np.round([p[0, axis] for p in paths if p[0, axis] == p[1, axis]], 4))
        all_lines, majors = positions(minor + major), positions(major)
        assert np.diff(all_lines) == pytest.approx(np.ones(len(all_lines) - 1), abs=1e-3)
        assert np.diff(majors) == pytest.approx(np.full(len(majors) - 1, 5.0), abs=1e-3)
        assert len(majors) >= 30


def test_calibration_pulse_is_ten_millimetres_by_five(svg) -> None:
    """Each of the four rows starts with a 1-mV pulse: 10 mm tall, 0.2 s = 5 mm wide."""
    groups = _groups(svg)
    pulses = [_paths_mm(groups[f"calibration-{row}"])[0] for row in range(4)]
    for pulse in pulses:
        baseline, top = pulse[:, 1].min(), pulse[:, 1].max()
        assert top - baseline == pytest.approx(10.0, abs=1e-3)
        on_top = pulse[np.isclose(pulse[:, 1], top)]
        assert on_top[:, 0].max() - on_top[:, 0].min() == pytest.approx(5.0, abs=1e-3)
    baselines = [p[:, 1].min() for p in pulses]
    assert np.diff(baselines) == pytest.approx([-40.0, -40.0, -40.0], abs=1e-3)


def test_paper_speed_and_gain_follow_the_samples(svg, signal_mv) -> None:
    """Rhythm strip: every lead II sample, 1 s = 25 mm, 1 mV = 10 mm about the row's line."""
    groups = _groups(svg)
    (strip,) = _paths_mm(groups["trace-rhythm-II"])
    lead_ii = signal_mv[STANDARD_LEADS.index("II")].astype(np.float64)
    assert len(strip) == 5000
    assert strip[500, 0] - strip[0, 0] == pytest.approx(25.0, abs=1e-3)
    assert strip[-1, 0] - strip[0, 0] == pytest.approx(4999 / 500 * 25.0, abs=1e-3)
    # The tallest R wave is where lead II peaks, 10 mm above the line per mV.
    peak = int(np.argmax(lead_ii))
    assert int(np.argmax(strip[:, 1])) == peak
    (calibration,) = _paths_mm(groups["calibration-3"])
    baseline = calibration[:, 1].min()
    expected_mm = baseline + 10.0 * (lead_ii - np.median(lead_ii))
    np.testing.assert_allclose(strip[:, 1], expected_mm, atol=2e-3)


def test_twelve_leads_sit_in_the_standard_layout(svg, signal_mv) -> None:
    """3 x 4 cells of 2.5 s (62.5 mm): each lead in its row and column, showing its own
    2.5 s of the window, labelled in its cell; rows 40 mm apart above the rhythm strip."""
    groups = _groups(svg)
    origin = _paths_mm(groups["trace-I"])[0][0]
    (strip,) = _paths_mm(groups["trace-rhythm-II"])
    assert strip[0, 0] == pytest.approx(origin[0], abs=1e-3)
    for row, leads in enumerate(LAYOUT):
        baseline = _paths_mm(groups[f"calibration-{row}"])[0][:, 1].min()
        for column, lead in enumerate(leads):
            (trace,) = _paths_mm(groups[f"trace-{lead}"])
            samples = signal_mv[STANDARD_LEADS.index(lead), column * 1250:(column + 1) * 1250]
            assert len(trace) == 1250
            assert trace[0, 0] == pytest.approx(origin[0] + 62.5 * column, abs=1e-3)
            expected = baseline + 10.0 * (samples - np.median(samples))
            np.testing.assert_allclose(trace[:, 1], expected, atol=2e-3)
            label = _text_position_mm(groups[f"label-{lead}"])
            assert trace[0, 0] <= label[0] < trace[0, 0] + 10.0
            assert baseline < label[1] < baseline + 20.0
    assert _paths_mm(groups["calibration-3"])[0][:, 1].min() == pytest.approx(
        _paths_mm(groups["calibration-2"])[0][:, 1].min() - 40.0, abs=1e-3)


def _texts(root: ElementTree.Element) -> str:
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def test_header_shows_pseudonym_time_verdict_and_measurements(svg) -> None:
    """The header names the pseudonym, acquisition time, QC verdict, rate and intervals."""
    texts = _texts(svg)
    for expected in ("5e" * 32, "2024-03-05T08:09:10.000Z", "Quality control: accepted",
                     "Rate 62 bpm", "PR 162 ms", "QRS 94 ms", "QT 398 ms", "QTc 401 ms (Bazett)",
                     "P axis 48 deg", "QRS axis 31 deg", "T axis 40 deg",
                     "SINUS RHYTHM   93 %", "25 mm/s   10 mm/mV"):
        assert expected in texts
    assert "NOT A VALID INTERPRETATION" not in texts
    assert "invalid-banner" not in _groups(svg)


def test_invalid_interpretation_is_stated_across_the_findings(signal_mv) -> None:
    """interpretation_valid false: a large red statement and frame over the findings list."""
    root = ElementTree.fromstring(render([view_of(make_report(signal_mv, UNTRAINED))], "svg"))
    groups = _groups(root)
    title = _text_position_mm(groups["invalid-title"])
    assert "NOT A VALID INTERPRETATION" in "".join(groups["invalid-title"].itertext())
    assert "untrained" in "".join(groups["invalid-reason"].itertext())
    frame = next(groups["invalid-banner"].iter(f"{SVG}path"))
    assert "c00000" in frame.get("style", "")
    (frame_mm,) = _paths_mm(groups["invalid-banner"])
    findings = [_text_position_mm(groups[f"finding-{row}"]) for row in range(1, 6)]
    low, high = frame_mm.min(axis=0), frame_mm.max(axis=0)
    for point in findings + [title]:
        assert np.all(low <= point) and np.all(point <= high)


def test_report_without_waveform_renders_header_and_says_so() -> None:
    """No samples (an older report, or waveform = false): the header, and why no tracing."""
    report = make_report(None)
    root = ElementTree.fromstring(render([view_of(report)], "svg"))
    texts = _texts(root)
    assert "The tracing was not kept in this report" in texts
    assert "[reports] waveform = false" in texts and "5e" * 32 in texts
    assert not any(gid.startswith(("trace-", "grid-")) for gid in _groups(root))
    report["schema_version"] = "1.0"
    assert "a report of schema 1.0, older than 2.0" in _texts(
        ElementTree.fromstring(render([view_of(report)], "svg")))


def test_pdf_has_one_page_per_report(signal_mv) -> None:
    """Three reports into a PDF give three pages; a PNG or SVG takes exactly one."""
    views = [view_of(make_report(signal_mv, seed=f"file:{n}")) for n in range(3)]
    pdf = render(views, "pdf")
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(
        b"/Type /Page ") + pdf.count(b"/Type /Page>") == 3
    with pytest.raises(ValueError, match="holds one page"):
        render(views, "png")


def _grid_and_pulse_px(png: bytes) -> Dict[str, float]:
    """From pixels alone: the dark grid lines' period (columns whose mean colour over a strip
    below the rhythm strip is the dark grid red) and the top row's calibration pulse height
    (black rows under its foot and under its top)."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    height, width = pixels.shape[:2]
    px_per_mm = width / 297.0

    def rows_from_top(low_mm: float, high_mm: float) -> slice:
        return slice(int((210 - high_mm) * px_per_mm), int((210 - low_mm) * px_per_mm))

    green = pixels[rows_from_top(8.0, 10.0), :, 1].mean(axis=0)
    major = np.flatnonzero(green < 170)
    runs = np.split(major, np.flatnonzero(np.diff(major) > 1) + 1)
    centres = np.array([run.mean() for run in runs if run.size])
    top_row = rows_from_top(136.0, 164.0)
    black = pixels[top_row].sum(axis=2) < 150
    pulse_left = int(np.flatnonzero(black.any(axis=0))[0])  # the leftmost ink in the row
    foot = np.flatnonzero(black[:, pulse_left + int(round(0.5 * px_per_mm))])
    top = np.flatnonzero(black[:, pulse_left + int(round(4.0 * px_per_mm))])
    return {"major_period_px": float(np.median(np.diff(centres))),
            "n_major": float(len(centres)), "pulse_px": float(foot.mean() - top.mean())}


@pytest.mark.parametrize("dpi", [254])
def test_png_pixels_show_five_millimetre_squares_and_a_ten_millimetre_pulse(signal_mv,
                                                                           dpi) -> None:
    """At 254 dpi (10 px/mm) the grid's dark lines repeat every 50 px, the pulse is 100 px."""
    measured = _grid_and_pulse_px(render([view_of(make_report(signal_mv))], "png", dpi=dpi))
    px_per_mm = dpi / 25.4
    assert measured["n_major"] >= 50
    assert measured["major_period_px"] == pytest.approx(5 * px_per_mm, abs=1.0)
    assert measured["pulse_px"] == pytest.approx(10 * px_per_mm, abs=1.5)


def test_readme_image_is_the_page_this_code_draws(reference_manifest, shared_data) -> None:
    """docs/reading-station-page.png measures 5-mm squares and a 10-mm pulse at its 100 dpi,
    and below the header (which holds the analysis time) it is the page drawn now."""
    from PIL import Image

    sys.path.insert(0, str(REPO_ROOT / "tools"))
    from readme_page import DPI, readme_page_png

    committed = README_IMAGE.read_bytes()
    measured = _grid_and_pulse_px(committed)
    assert DPI == README_DPI
    assert measured["major_period_px"] == pytest.approx(5 * README_DPI / 25.4, abs=1.0)
    assert measured["pulse_px"] == pytest.approx(10 * README_DPI / 25.4, abs=1.5)
    images = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
              for png in (committed, readme_page_png(reference_manifest, shared_data))]
    assert images[0].shape == images[1].shape
    grid_top = int((PAGE_HEIGHT_MM - 166.0) * README_DPI / 25.4)
    differs = np.abs(images[0][grid_top:] - images[1][grid_top:]).max(axis=2) > 16
    assert differs.mean() < 0.005
