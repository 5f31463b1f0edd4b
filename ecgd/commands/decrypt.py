"""``ecgd decrypt --key PRIVATE_KEY [--summary | --pretty] FILE...``: sealed reports, readable."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ecgd.errors import TamperedError

EXIT_UNREADABLE = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decrypt",
        help="decrypt sealed reports: JSON lines, one summary line each, or indented JSON",
        description=(
            "Decrypt each FILE with the private key and print its JSON report on one line of "
            "stdout (--summary: one readable line per report; --pretty: indented JSON). A "
            "file that fails authentication (modified, truncated, not sealed to this key) is "
            "named on stderr with the reason, the others are still printed, and the exit code "
            f"is {TamperedError.exit_code}; an unreadable file exits {EXIT_UNREADABLE}."
        ),
    )
    parser.add_argument("--key", required=True, type=Path, metavar="PRIVATE_KEY",
                        help="the recipient private key (NAME.key from ecgd keygen)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--summary", action="store_true",
                      help="one line per report: time, pseudonym prefix, QC verdict, rate, "
                           "top finding, report id")
    form.add_argument("--pretty", action="store_true", help="indented JSON")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="sealed report files")
    parser.set_defaults(handler=run, summary=False, pretty=False)


def run(args: argparse.Namespace) -> int:
    # The reading-station package is imported here, not at the top: the appliance imports
    # every command module and must not load the station.
    from ecgd.station.opener import ReportOpener
    from ecgd.station.terminal import pretty_json, summary_line
    from ecgd.station.view import open_views

    opener = ReportOpener(args.key)
    if args.summary:
        lines = (summary_line(view) for view in open_views(opener, args.files,
                                                            with_waveform=False))
    elif args.pretty:
        lines = (pretty_json(opened.report) for opened in opener.open_each(args.files))
    else:
        lines = (json.dumps(opened.report, ensure_ascii=False, separators=(",", ":"))
                 for opened in opener.open_each(args.files))
    for line in lines:
        print(line, flush=True)
    return opener.exit_code
