"""``ecgd collect --into DIR``: copy undelivered reports out, then mark them delivered.

At a site without the forwarder (``ecgd forward``), an administrator collects reports by
hand (a USB stick, a share mounted for the purpose). Retention may delete a report once it is in the reports
folder's ``delivered/``; moving files there by hand risks marking a report that was never
copied. This command does both steps in the safe order, report by report: write the copy
into DIR durably (temporary name, fsync, rename, fsync DIR), read it back and compare,
and only then move the original into ``delivered/``. A copy that fails stops the command
(exit 74); every report not copied stays undelivered, untouched.

Reports stay sealed: DIR receives the same ``<report id>.ecgr`` files, which only the
reading station's private key opens. Run it as root or as the service user.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ecgd.commands.run import DEFAULT_CONFIG
from ecgd.config import load_config
from ecgd.durable import write_durable
from ecgd.errors import ConfigError, SealError
from ecgd.report_store import list_reports, mark_delivered


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collect", help="copy undelivered reports into a folder, then mark them delivered",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"ecgd TOML config (default {DEFAULT_CONFIG})")
    parser.add_argument("--into", type=Path, required=True, metavar="DIR",
                        help="an existing folder on other media (a USB stick, a share)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reports_dir = load_config(args.config).reports.dir
    into = Path(args.into)
    if not into.is_dir():
        raise ConfigError(f"--into {into}: not an existing folder")
    if Path(os.path.realpath(into)).is_relative_to(os.path.realpath(reports_dir)):
        raise ConfigError(f"--into {into}: inside the reports folder {reports_dir}; "
                          f"collect onto other media")
    collected = 0
    try:
        for report in list_reports(reports_dir):
            data = report.read_bytes()
            copy = write_durable(into, report.name, data)
            if copy.read_bytes() != data:
                raise OSError(f"{copy}: read back differs from what was written")
            mark_delivered([report], reports_dir)
            collected += 1
    except OSError as exc:
        print(f"collected {collected} reports into {into} before the error")
        raise SealError(f"collect: {exc.strerror or exc}; the remaining reports stay "
                        f"undelivered") from exc
    print(f"collected {collected} reports into {into}; they are now in "
          f"{reports_dir}/delivered/ (retention may delete them there)")
    return 0
