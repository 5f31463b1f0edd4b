"""``ecgd decrypt --key PRIVATE_KEY FILE...``: print sealed reports as JSON lines."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecgd.errors import ConfigError, TamperedError, UsageError
from ecgd.security.keys import load_private_key
from ecgd.security.seal import unseal

EXIT_UNREADABLE = 1
# Sealed reports are kilobytes; a far larger file is not one and is not read whole.
_SEALED_MAX_BYTES = 64 * 1024 * 1024


DESCRIPTION = f"""Decrypt each FILE with the private key and print its JSON report on one
line of stdout. A file that fails authentication (modified, truncated, not sealed to this
key) or is not a sealed report is named on stderr with the reason, the others are still
printed, and the exit code is {TamperedError.exit_code}. An unreadable file exits
{EXIT_UNREADABLE}; a --key that is not a private key exits {UsageError.exit_code}."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, type=Path, metavar="PRIVATE_KEY",
                        help="the recipient private key (NAME.key from ecgd keygen)")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="sealed report files")
    parser.set_defaults(handler=run)


def _read_sealed(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(_SEALED_MAX_BYTES + 1)
    if len(data) > _SEALED_MAX_BYTES:
        raise TamperedError(f"larger than {_SEALED_MAX_BYTES} bytes, not a sealed report")
    return data


def run(args: argparse.Namespace) -> int:
    try:
        private_key = load_private_key(args.key)
    except ConfigError as exc:
        raise UsageError(f"--key {exc} (ecgd keygen wrote it as NAME.key)") from exc
    exit_code = 0
    for path in args.files:
        try:
            plaintext = unseal(_read_sealed(path), private_key)
            report = json.loads(plaintext.decode("utf-8"))
        except OSError as exc:
            print(f"ecgd: {path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            exit_code = max(exit_code, EXIT_UNREADABLE)
            continue
        except TamperedError as exc:
            print(f"ecgd: {path}: {exc}", file=sys.stderr)
            exit_code = max(exit_code, TamperedError.exit_code)
            continue
        except (UnicodeDecodeError, json.JSONDecodeError):
            # Authentic but not JSON: sealed by something other than ecgd's report writer.
            print(f"ecgd: {path}: decrypted, but the content is not a JSON report",
                  file=sys.stderr)
            exit_code = max(exit_code, TamperedError.exit_code)
            continue
        print(json.dumps(report, ensure_ascii=False, separators=(",", ":")), flush=True)
    return exit_code
