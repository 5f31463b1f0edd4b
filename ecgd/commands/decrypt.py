"""``ecgd decrypt --key IDENTITY --appliances DIR FILE...``: verified reports as JSON lines."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecgd.errors import ConfigError, TamperedError, UsageError
from ecgd.security.keys import load_enrolled_appliances, load_identity
from ecgd.security.unseal import open_sealed_report, read_sealed

EXIT_UNREADABLE = 1

DESCRIPTION = f"""Check each FILE's appliance signature against the enrolled appliances,
decrypt it with the station's age identity and print one JSON line
{{"signer": {{"appliance": NAME, "key_id": ID}}, "report": {{...}}}}. A file that fails a
check (unsigned, unknown signer, signature mismatch, modified, truncated, not sealed to
this identity, not a sealed report at all) is named on stderr with the check, the others
are still printed, and the exit code is {TamperedError.exit_code}. An unreadable file exits
{EXIT_UNREADABLE}; a --key that is not an age identity (a .pub, say) exits \
{UsageError.exit_code}."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, type=Path, metavar="IDENTITY",
                        help="the station's age identity (NAME.key from ecgd keygen)")
    parser.add_argument("--appliances", required=True, type=Path, metavar="DIR",
                        help="enrolled appliances: one NAME.pub signing key per appliance")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="sealed report files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        identity = load_identity(args.key)
    except ConfigError as exc:
        raise UsageError(f"--key {exc} (ecgd keygen wrote it as NAME.key)") from exc
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
