"""``ecgd`` command line: argv -> command -> exit code (the codes are listed in EPILOG).

Only the module of the command being run is imported, so a command starts as fast as what
it needs allows: ``ecgd --help`` lists every command from :data:`COMMANDS` without importing
any of them, and ``ecgd decrypt`` never loads numpy or ONNX Runtime.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import traceback
from typing import List, Optional, Sequence

from ecgd import __version__
from ecgd.errors import EcgdError

EXIT_INTERNAL = 70


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its name, the module implementing it, and its line in ``ecgd --help``.

    The module has ``DESCRIPTION`` (its ``--help`` text, printed as written) and
    ``register(parser)``, which adds the command's options and sets ``handler``.
    """

    name: str
    module: str
    help: str


# Subcommands in the order ``ecgd --help`` lists them. Adding a command is one line here
# plus its module.
COMMANDS = (
    Command("run", "ecgd.commands.run", "run the appliance daemon (systemd service)"),
    Command("check", "ecgd.commands.check", "validate config, keys, directories and model"),
    Command("status", "ecgd.commands.status", "show the running daemon's state and counters"),
    Command("analyze", "ecgd.commands.analyze", "interpret recording files (JSON Lines)"),
    Command("batch", "ecgd.commands.batch", "reprocess an archive into Parquet/JSON Lines"),
    Command("model", "ecgd.commands.model", "build, convert, verify or quantize a model"),
    Command("keygen", "ecgd.commands.keygen",
            "write the station's keys, or an appliance's signing key"),
    Command("decrypt", "ecgd.commands.decrypt",
            "verify and decrypt sealed reports: JSON lines, a summary line each, or "
            "indented JSON"),
    Command("render", "ecgd.commands.render",
            "draw sealed reports as the standard 12-lead printout (PDF, PNG, SVG)"),
    Command("export", "ecgd.commands.export",
            "export sealed reports as FHIR R4 Bundles or DICOM 12-lead ECG files"),
    Command("forward", "ecgd.commands.forward",
            "deliver sealed reports to the reading station (systemd service)"),
    Command("receive", "ecgd.commands.receive", "receive delivered reports (reading station)"),
    Command("patient", "ecgd.commands.patient",
            "set, clear or show the patient connected to the live device"),
    Command("simulate", "ecgd.commands.simulate",
            "stream a recording as a serial ECG device would"),
    Command("collect", "ecgd.commands.collect",
            "copy undelivered reports into a folder, then mark them delivered"),
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


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``ecgd`` parser; only the ``selected`` command's module is imported to fill in
    its options (the others are listed by name and help line only)."""
    parser = argparse.ArgumentParser(
        prog="ecgd",
        description="Bedside 12-lead ECG interpretation: recordings in, sealed reports out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ecgd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for command in COMMANDS:
        if command.name == selected:
            module = importlib.import_module(command.module)
            command_parser = subparsers.add_parser(
                command.name, help=command.help, description=module.DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
            module.register(command_parser)
        else:
            subparsers.add_parser(command.name, help=command.help, add_help=False)
    return parser


def selected_command(argv: Sequence[str]) -> Optional[str]:
    """The command ``argv`` names: its first word that is not an option (``ecgd`` itself
    takes no option with a value)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(selected_command(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except EcgdError as exc:
        for line in exc.lines():
            print(f"ecgd: {line}", file=sys.stderr)
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
