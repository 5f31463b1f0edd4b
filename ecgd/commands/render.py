"""``ecgd render --key PRIVATE_KEY --out FILE REPORT...``: the 12-lead printout of reports."""
from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any

from ecgd.commands.station_keys import add_station_key_arguments
from ecgd.errors import ConfigError, TamperedError, UsageError



def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help="draw sealed reports as the standard 12-lead printout (PDF, PNG, SVG)",
        description=(
            "Decrypt each REPORT and draw the page cardiologists read: 3 x 4 leads of 2.5 s "
            "and a 10-s lead II rhythm strip at 25 mm/s and 10 mm/mV, calibration pulses, a "
            "millimetre grid, and a header with the pseudonym, acquisition time, QC verdict, "
            "measurements and top findings. The format follows the suffix of --out: .pdf "
            "holds one page per report, .png and .svg one report. A report that cannot be "
            "opened is named on stderr (exit 1 unreadable, "
            f"{TamperedError.exit_code} when it fails a check: unsigned, unknown signer, "
            "modified, not sealed to this identity) and the others are still drawn. Needs "
            "pip install 'ecgd[station]'."
        ),
    )
    add_station_key_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the page file: .pdf, .png or .svg")
    parser.add_argument("--dpi", type=int, metavar="N",
                        help="pixels per inch of a .png (default 150; 300 to print it)")
    parser.add_argument("files", nargs="+", type=Path, metavar="REPORT",
                        help="sealed report files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    station_render = _station_render()
    # Imported here, not at the top: the appliance imports every command module.
    from ecgd.station.opener import ReportOpener
    from ecgd.station.output import write_output
    from ecgd.station.view import open_views

    fmt = args.out.suffix.lower().lstrip(".")
    if fmt not in station_render.FORMATS:
        raise UsageError(f"--out {args.out}: the suffix must be one of "
                         + ", ".join(f".{name}" for name in station_render.FORMATS))
    if fmt != "pdf" and len(args.files) > 1:
        raise UsageError(f"--out {args.out}: a .{fmt} file holds one page; give one REPORT "
                         "or write a .pdf")
    dpi = station_render.DEFAULT_DPI if args.dpi is None else args.dpi
    if not 20 <= dpi <= 1200:
        raise UsageError(f"--dpi {dpi}: must be between 20 and 1200")
    opener = ReportOpener(args.key, args.appliances)
    views = list(open_views(opener, args.files))
    if views:
        write_output(args.out, station_render.render(views, fmt, dpi))
        print(args.out)
    return opener.exit_code


def _station_render() -> ModuleType:
    """The ``ecgd.station.render`` module, or ConfigError saying what to install."""
    try:
        from ecgd.station import render
    except ImportError as exc:
        raise ConfigError(f"ecgd render needs the reading-station extra: pip install "
                          f"'ecgd[station]' ({exc})") from exc
    return render
