#!/usr/bin/env python3
"""Make the README's reading-station image: one shared recording, analysed as ``ecgd run``
does, drawn by ``ecgd render``'s code at 100 dpi.

The recording is CinC 2021 HR06004 (PTB-XL, normal sinus rhythm); the model is the
reference Net1D (so the page shows "NOT A VALID INTERPRETATION", as every report of an
untrained model must); the patient is a made-up demonstration identifier under a fixed
demonstration key, so the header shows what a pseudonym looks like. The report is sealed
and signed by a throwaway appliance key ("demo-appliance") and opened as the station opens
it.
tests/test_station_render.py draws the same page and compares it with the committed image.

    PYTHONPATH=. python tools/readme_page.py --model MANIFEST [--out docs/reading-station-page.png]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ecgd.config import Config  # noqa: E402
from ecgd.model.session import ModelSession  # noqa: E402
from ecgd.pipeline import Analyzer, SourceInfo  # noqa: E402
from ecgd.records.companions import content_sha256, recording_files  # noqa: E402
from ecgd.records.reader import read_recording  # noqa: E402
from ecgd.report_store import report_file_name  # noqa: E402
from ecgd.security.keys import (generate_keys, generate_signing_key, load_recipients,  # noqa: E402
                                load_signing_key)
from ecgd.security.pseudonym import pseudonymize  # noqa: E402
from ecgd.security.seal import seal_report  # noqa: E402
from ecgd.station.opener import ReportOpener  # noqa: E402
from ecgd.station.render import render  # noqa: E402
from ecgd.station.view import view_report  # noqa: E402

RECORDING = Path("cinc2021") / "HR06004.hea"
DPI = 100
DEMO_PATIENT = "DEMO-0001"
DEMO_KEY = bytes(range(32))
DEFAULT_OUT = REPO / "docs" / "reading-station-page.png"
DEFAULT_DATA = REPO.parent / "shared" / "data"


def readme_page_png(manifest: Path, data_dir: Path) -> bytes:
    """The README page: the recording's first window, analysed and rendered as PNG."""
    config = Config()
    analyzer = Analyzer(ModelSession.open(manifest, threads=1), config.window, config.qc,
                        config.preprocess.mains_hz)
    path = data_dir / RECORDING
    digest = content_sha256(recording_files(path))
    source = SourceInfo({"kind": "file", "file": path.name, "format": "wfdb",
                         "content_sha256": digest}, f"file:{digest}")
    report = analyzer.analyze(read_recording(path, config.limits.max_input_bytes), source,
                              pseudonymize(DEMO_PATIENT, DEMO_KEY))[0]
    with tempfile.TemporaryDirectory() as tmp:
        station = generate_keys(Path(tmp) / "station")
        appliance = generate_signing_key(Path(tmp) / "enrolled", name="demo-appliance")
        sealed = Path(tmp) / report_file_name(report["report_id"])
        sealed.write_bytes(seal_report(report, load_recipients([station["public"]]),
                                       load_signing_key(appliance["private"])))
        (opened,) = ReportOpener(station["private"], Path(tmp) / "enrolled").open_each([sealed])
    return render([view_report(opened)], "png", dpi=DPI)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, metavar="MANIFEST",
                        help="the reference model (ecgd model build-reference --seed 0)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(readme_page_png(args.model, args.data))
    print(f"{args.out}: {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
