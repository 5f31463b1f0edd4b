"""``ecgd decrypt --key IDENTITY --appliances DIR FILE...``: verified reports as JSON lines."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ecgd.errors import TamperedError
from ecgd.security.keys import load_enrolled_appliances, load_identity
from ecgd.security.unseal import open_sealed_report, read_sealed

EXIT_UNREADABLE = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "decrypt",
        help="verify and decrypt sealed reports; print them as JSON, one per line",
        description=(
            "Check each FILE's appliance signature against the enrolled appliances, decrypt "
            "it with the station's age identity and print one JSON line "
            '{"signer": {"appliance": NAME, "key_id": ID}, "report": {...}}. A file that '
            "fails a check (unsigned, unknown signer, signature mismatch, modified, truncated, "
            "not sealed to this identity) is named on stderr with the check, the others are "
            f"still printed, and the exit code is {TamperedError.exit_code}; an unreadable "
            f"file exits {EXIT_UNREADABLE}."
        ),
    )
    parser.add_argument("--key", required=True, type=Path, metavar="IDENTITY",
                        help="the station's age identity (NAME.key from ecgd keygen)")
    parser.add_argument("--appliances", required=True, type=Path, metavar="DIR",
                        help="enrolled appliances: one NAME.pub signing key per appliance")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="sealed report files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    identity = load_identity(args.key)
    enrolled = load_enrolled_appliances(args.appliances)
    exit_code = 0
    for path in args.files:
        try:
            opened = open_sealed_report(read_sealed(path), identity, enrolled)
        except OSError as exc:
            print(f"ecgd: {path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            exit_code = max(exit_code, EXIT_UNREADABLE)
            continue
        except TamperedError as exc:
            print(f"ecgd: {path}: {exc}", file=sys.stderr)
            exit_code = max(exit_code, TamperedError.exit_code)
            continue
        signer = {"appliance": opened.origin.appliance.name,
                  "key_id": opened.origin.appliance.key_id}
        print(json.dumps({"signer": signer, "report": opened.report}, ensure_ascii=False,
                         separators=(",", ":")), flush=True)
    return exit_code
