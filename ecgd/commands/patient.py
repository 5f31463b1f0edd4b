"""``ecgd patient set ID | clear | show``: say who is connected to the live device."""
from __future__ import annotations

import argparse
import sys

from ecgd.commands import add_config_option
from ecgd.config import load_config
from ecgd.patient import PatientStore

DESCRIPTION = """Say who is connected to the live device: set ID, clear, or show.

The daemon picks the change up with the next window, without a restart. 'show' prints the
plain identifier to the operator's terminal: the one place it may appear. 'set -' reads
the identifier from standard input, keeping it out of the process list and shell history.
The file is [privacy] patient_file of the config (the same one 'ecgd run' reads)."""


def register(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    set_parser = actions.add_parser("set", help="associate the live device with a patient")
    set_parser.add_argument("identifier", metavar="ID", help="patient identifier, or - for stdin")
    actions.add_parser("clear", help="no patient is connected")
    actions.add_parser("show", help="print the current patient identifier")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store = PatientStore(load_config(args.config).privacy.patient_file)
    if args.action == "set":
        identifier = args.identifier
        if identifier == "-":
            identifier = sys.stdin.readline().rstrip("\r\n")
        store.set(identifier)
        print(f"patient set ({store.path})")
    elif args.action == "clear":
        store.clear()
        print(f"patient cleared ({store.path})")
    else:
        identifier = store.current()
        if identifier is None:
            print("no patient set", file=sys.stderr)
            return 1
        print(identifier)
    return 0
