"""The arguments every reading-station command opens reports with (not a command itself)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_station_key_arguments(parser: argparse.ArgumentParser) -> None:
    """``--key IDENTITY`` and ``--appliances DIR``: the station's age identity, and the
    enrolled appliances whose signatures it accepts."""
    parser.add_argument("--key", required=True, type=Path, metavar="IDENTITY",
                        help="the station's age identity (NAME.key from ecgd keygen)")
    parser.add_argument("--appliances", required=True, type=Path, metavar="DIR",
                        help="enrolled appliances: one NAME.pub signing key per appliance")
