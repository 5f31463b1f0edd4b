"""``ecgd`` command line: argv -> command -> exit code (the codes are listed in EPILOG)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import List, Optional

from ecgd import __version__
from ecgd.errors import EcgdError

EXIT_INTERNAL = 70

# Subcommand modules in the order ``ecgd --help`` lists them.
COMMAND_MODULES = (
    "ecgd.commands.run",
    "ecgd.commands.check",
    "ecgd.commands.analyze",
    "ecgd.commands.model",
    "ecgd.commands.keygen",
    "ecgd.commands.decrypt",
    "ecgd.commands.render",
    "ecgd.commands.export",
    "ecgd.commands.forward",
    "ecgd.commands.receive",
    "ecgd.commands.patient",
    "ecgd.commands.simulate",
)

EPILOG = """exit codes:
  0   success
  1   an input file could not be read (named on stderr), a check failed, or a report
      could not be exported as asked
  2   command-line usage error
  65  model, manifest or checkpoint refused; sealed report failed authentication
  69  a live source failed
  74  a report, rendered page or export could not be written
  78  configuration invalid (systemd does not restart the service on 78)
  70  internal error (a bug)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgd",
        description="Bedside 12-lead ECG interpretation: recordings in, sealed reports out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ecgd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except EcgdError as exc:
        print(f"ecgd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ecgd analyze ... | head`): stop quietly, like other tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception:  # a bug: say so loudly, with the traceback for the bug report
        traceback.print_exc()
        print("ecgd: internal error (a bug); please report it with the lines above",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
