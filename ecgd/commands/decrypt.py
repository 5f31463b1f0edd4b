"""``ecgd decrypt --key IDENTITY --appliances DIR [--summary | --pretty] FILE...``: verified
reports as JSON lines, one summary line each, or indented JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ecgd.commands.station_keys import add_station_key_arguments
from ecgd.errors import TamperedError

EXIT_UNREADABLE = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decrypt",
        help="verify and decrypt sealed reports: JSON lines, a summary line each, or "
             "indented JSON",
        description=(
            "Check each FILE's appliance signature against the enrolled appliances, decrypt "
            "it with the station's age identity and print one JSON line "
            '{"signer": {"appliance": NAME, "key_id": ID}, "report": {...}} (--summary: one '
            "readable line per report; --pretty: the same object as indented JSON). A file "
            "that fails a check (unsigned, unknown signer, signature mismatch, modified, "
            "truncated, not sealed to this identity, not a report) is named on stderr with the "
            "check, the others are still printed, and the exit code is "
            f"{TamperedError.exit_code}; an unreadable file exits {EXIT_UNREADABLE}."
        ),
    )
    add_station_key_arguments(parser)
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--summary", action="store_true",
                      help="one line per report: time, pseudonym prefix, QC verdict, rate, "
                           "top finding, report id, signer")
    form.add_argument("--pretty", action="store_true", help="indented JSON")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="sealed report files")
    parser.set_defaults(handler=run, summary=False, pretty=False)


def run(args: argparse.Namespace) -> int:
    # The reading-station package is imported here, not at the top: the appliance imports
    # every command module and must not load the station.
    from ecgd.station.opener import ReportOpener
    from ecgd.station.terminal import summary_line
    from ecgd.station.view import open_views

    opener = ReportOpener(args.key, args.appliances)
    if args.summary:
        for view in open_views(opener, args.files, with_waveform=False):
            print(summary_line(view), flush=True)
        return opener.exit_code
    indent = 2 if args.pretty else None
    separators = None if args.pretty else (",", ":")
    for opened in opener.open_each(args.files):
        print(json.dumps({"signer": opened.signer_fields(), "report": opened.report},
                         ensure_ascii=False, indent=indent, separators=separators), flush=True)
    return opener.exit_code
