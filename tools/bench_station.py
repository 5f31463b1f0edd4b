#!/usr/bin/env python3
"""What the reading station and the report waveform cost: sizes, then time per window.

Real 10-s windows from ../shared/data (CinC 2021 and LUDB) are analysed with the reference
model, as ``ecgd analyze`` does, and measured, each against a baseline in the same run:

- the waveform in the report: its size (median, p95, max) and the appliance's encoding
  time, against zlib level 6 over the int32 microvolt samples (the obvious encoding);
  decoding at the station;
- opening a sealed report for display (verify, decrypt, JSON, view with the decoded
  waveform), against verifying, decrypting and parsing alone (what ``ecgd decrypt`` does);
- ``render`` of one window as PDF, PNG (150 dpi) and SVG (target: <= 1 s), against a plain
  matplotlib figure of the same 12 x 5000 samples saved as PNG at 150 dpi;
- FHIR export of one window (target: <= 50 ms), against ``json.dumps`` of the finished
  Bundle alone; DICOM export, against pydicom reading the exported file back;
- ``ecgd render`` of one report as a fresh process (imports included).

Medians of ``--repeats`` runs, wall time and, in brackets, this process's CPU time (less
disturbed when other work shares the cores). The machine is shared: compare the ratios,
not the milliseconds. Usage:
    PYTHONPATH=. python tools/bench_station.py [--repeats 10] [--windows 60] [--data DIR]
"""
from __future__ import annotations

import argparse
import base64
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ecgd.config import Config  # noqa: E402
from ecgd.model.build import build_reference  # noqa: E402
from ecgd.model.session import ModelSession  # noqa: E402
from ecgd.pipeline import Analyzer, SourceInfo  # noqa: E402
from ecgd.records.reader import read_recording  # noqa: E402
from ecgd.report import dumps_report  # noqa: E402
from ecgd.report_waveform import decode_waveform, encode_waveform  # noqa: E402
from ecgd.report_store import report_file_name  # noqa: E402
from ecgd.security.keys import (generate_keys, generate_signing_key, load_recipients,  # noqa: E402
                                load_signing_key)
from ecgd.security.seal import seal_report  # noqa: E402
from ecgd.station.dicom import dicom_bytes  # noqa: E402
from ecgd.station.fhir import fhir_bundle  # noqa: E402
from ecgd.station.opener import ReportOpener  # noqa: E402
from ecgd.station.render import DEFAULT_DPI, render  # noqa: E402
from ecgd.station.view import view_report  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"


class Timing:
    """Median wall and CPU milliseconds of repeated calls."""

    def __init__(self, function: Callable[[], Any], repeats: int) -> None:
        wall, cpu = [], []
        for _ in range(repeats):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            function()
            wall.append((time.perf_counter() - wall_start) * 1000.0)
            cpu.append((time.process_time() - cpu_start) * 1000.0)
        self.wall_ms = statistics.median(wall)
        self.cpu_ms = statistics.median(cpu)

    def __str__(self) -> str:
        digits = 0 if self.wall_ms >= 100 else 1 if self.wall_ms >= 10 else 2
        return f"{self.wall_ms:.{digits}f} ms ({self.cpu_ms:.{digits}f})"

    def __truediv__(self, other: "Timing") -> str:
        return f"{self.wall_ms / other.wall_ms:.2f}x ({self.cpu_ms / other.cpu_ms:.2f}x)"


def analysed_windows(data: Path, model_dir: Path, limit: int) -> List[Dict[str, Any]]:
    """Reports with waveforms for the first ``limit`` windows of CinC 2021 and LUDB."""
    manifest = build_reference(model_dir, labels_path=data / "ecgfounder" / "tasks.txt", seed=0)
    config = Config()
    analyzer = Analyzer(ModelSession.open(manifest, threads=1), config.window, config.qc,
                        config.preprocess.mains_hz)
    headers = (sorted((data / "cinc2021").glob("*.hea"))
               + sorted((data / "ludb" / "data").glob("*.hea")))
    reports: List[Dict[str, Any]] = []
    for header in headers:
        source = SourceInfo({"kind": "file", "file": header.name, "format": "wfdb",
                             "content_sha256": "0" * 64}, f"file:{header.name}")
        reports += [r for r in analyzer.analyze(read_recording(header, 10**8), source, None)
                    if "waveform" in r]
        if len(reports) >= limit:
            break
    return reports[:limit]


def plain_matplotlib_png(samples_mv: np.ndarray) -> bytes:
    """The baseline page: 12 lines on one figure of the same size, no grid, no text."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(297 / 25.4, 210 / 25.4))
    axes = figure.add_axes((0, 0, 1, 1))
    for row, lead in enumerate(samples_mv):
        axes.plot(lead - 3.0 * row, linewidth=0.8, color="black")
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DEFAULT_DPI)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--windows", type=int, default=60)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    rows: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reports = analysed_windows(args.data, root / "model", args.windows)
        sizes = np.array([len(r["waveform"]["data"]) for r in reports]) / 1024
        bare = np.array([len(dumps_report({k: v for k, v in r.items() if k != "waveform"}))
                         for r in reports]) / 1024
        samples = [decode_waveform(r["waveform"]) for r in reports]
        int32_zlib = np.array([len(base64.b64encode(zlib.compress(
            w.samples_uv.astype("<i4").tobytes(), 6))) for w in samples]) / 1024
        rows.append(f"| waveform in the report ({len(reports)} windows) | size | "
                    f"median {np.median(sizes):.1f} KiB, p95 {np.percentile(sizes, 95):.1f}, "
                    f"max {sizes.max():.1f} | zlib-6 over int32 uV: median "
                    f"{np.median(int32_zlib):.1f} KiB | {np.median(sizes / int32_zlib):.2f}x |")
        rows.append(f"| report without the waveform | size | median {np.median(bare):.1f} KiB |"
                    " | |")
        window = samples[0]
        signal_mv = window.samples_mv.astype(np.float32)
        leads = window.lead_names
        encode = Timing(lambda: encode_waveform(signal_mv, leads, 500.0), args.repeats)
        naive = Timing(lambda: zlib.compress(np.rint(signal_mv * 1000.0).astype(
            "<i4").tobytes(), 6), args.repeats)
        decode = Timing(lambda: decode_waveform(reports[0]["waveform"]), args.repeats)
        rows.append(f"| waveform encoding (appliance, per window) | time | {encode} | "
                    f"zlib-6 over int32: {naive} | {encode / naive} |")
        rows.append(f"| waveform decoding (station) | time | {decode} | | |")

        keys = generate_keys(root / "keys")
        appliance = generate_signing_key(root / "enrolled", name="bench")
        sealed = root / report_file_name(reports[0]["report_id"])
        sealed.write_bytes(seal_report(reports[0], load_recipients([keys["public"]]),
                                       load_signing_key(appliance["private"])))
        opener = ReportOpener(keys["private"], root / "enrolled")

        def open_one() -> Any:
            return next(iter(opener.open_each([sealed])))

        opening = Timing(lambda: view_report(open_one()), args.repeats)
        verifying = Timing(open_one, args.repeats)
        rows.append(f"| open a sealed report for display (view, waveform decoded) | time | "
                    f"{opening} | verify, decrypt and parse only (what decrypt does): "
                    f"{verifying} | {opening / verifying} |")

        view = view_report(open_one())
        baseline_png = Timing(lambda: plain_matplotlib_png(window.samples_mv), args.repeats)
        for fmt in ("pdf", "png", "svg"):
            spent = Timing(lambda: render([view], fmt, DEFAULT_DPI), args.repeats)
            rows.append(f"| render one window, {fmt} (target <= 1 s) | time | {spent} | plain "
                        f"matplotlib PNG of the samples: {baseline_png} | {spent / baseline_png} |")
        bundle = fhir_bundle(view)
        fhir = Timing(lambda: json.dumps(fhir_bundle(view)), args.repeats)
        serialise = Timing(lambda: json.dumps(bundle), args.repeats)
        rows.append(f"| export one window, FHIR Bundle (target <= 50 ms) | time | {fhir} | "
                    f"json.dumps of the finished Bundle: {serialise} | {fhir / serialise} |")
        exported = root / "export.dcm"
        exported.write_bytes(dicom_bytes(view))
        dicom = Timing(lambda: dicom_bytes(view), args.repeats)
        read_back = Timing(lambda: pydicom.dcmread(exported).waveform_array(0), args.repeats)
        rows.append(f"| export one window, DICOM (target <= 50 ms) | time | {dicom} | pydicom "
                    f"reading it back, samples decoded: {read_back} | {dicom / read_back} |")
        command = [sys.executable, "-m", "ecgd", "render", "--key", str(keys["private"]),
                   "--appliances", str(root / "enrolled"), "--out", str(root / "page.pdf"),
                   str(sealed)]
        runs = max(3, args.repeats // 3)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cold = Timing(lambda: subprocess.run(command, check=True, capture_output=True,
                                             cwd=REPO), runs)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cold_cpu_ms = ((children.ru_utime - children_before.ru_utime) + (
            children.ru_stime - children_before.ru_stime)) * 1000.0 / runs
        rows.append(f"| `ecgd render` of one report as a fresh process (imports included) | "
                    f"time | {cold.wall_ms:.0f} ms ({cold_cpu_ms:.0f}, mean) | | |")
    print("| what | measure | ecgd | baseline (same run) | ratio |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
