"""``ecgd export --key PRIVATE_KEY --format fhir|dicom --out DIR REPORT...``: reports for the
hospital's systems, one file per report named by its report id."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

from ecgd.commands.station_keys import add_station_key_arguments
from ecgd.errors import ExportError, TamperedError

if TYPE_CHECKING:
    from ecgd.station.view import ReportView

# --format -> (file suffix, what it makes)
FORMATS: Dict[str, Tuple[str, str]] = {
    "fhir": (".json", "an HL7 FHIR R4 Bundle: DiagnosticReport, LOINC-coded measurements, "
                      "findings, the waveform as SampledData per lead"),
    "dicom": (".dcm", "a DICOM 12-lead ECG Waveform Storage instance"),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export sealed reports as FHIR R4 Bundles or DICOM 12-lead ECG files",
        description=(
            "Decrypt each REPORT and write DIR/REPORT_ID.json (--format fhir: "
            f"{FORMATS['fhir'][1]}) or DIR/REPORT_ID.dcm (--format dicom: "
            f"{FORMATS['dicom'][1]}), naming the patient by pseudonym only. Each written "
            "file is printed. A report that cannot be opened or exported is named on stderr "
            f"(exit 1; {TamperedError.exit_code} when it fails a check) and the others are still "
            "exported."
        ),
    )
    add_station_key_arguments(parser)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS),
                        help="fhir (.json Bundle) or dicom (.dcm)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (created 0700 if missing)")
    parser.add_argument("files", nargs="+", type=Path, metavar="REPORT",
                        help="sealed report files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the appliance imports every command module.
    from ecgd.station.opener import ReportOpener
    from ecgd.station.output import ensure_output_dir, write_output
    from ecgd.station.view import open_views

    suffix = FORMATS[args.format][0]
    export = _exporter(args.format)
    opener = ReportOpener(args.key, args.appliances)
    out_dir = ensure_output_dir(args.out)
    for view in open_views(opener, args.files):
        try:
            data = export(view)
        except ExportError as exc:
            opener.refuse(view.path, str(exc), exc.exit_code)
            continue
        print(write_output(out_dir / f"{view.report_id}{suffix}", data), flush=True)
    return opener.exit_code


def _exporter(fmt: str) -> Callable[["ReportView"], bytes]:
    """The function turning a report view into the file's bytes."""
    if fmt == "dicom":
        from ecgd.station.dicom import dicom_bytes
        return dicom_bytes
    from ecgd.station.fhir import fhir_bundle

    def fhir_json(view: "ReportView") -> bytes:
        return json.dumps(fhir_bundle(view), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
    return fhir_json
