"""Subcommands of the ``ecgd`` CLI, one module each (listed in ``ecgd.cli.COMMANDS``):
``DESCRIPTION`` is its ``--help`` text, printed as written; ``register(parser)`` adds its
options and sets ``handler``; the handler takes the parsed args and returns an exit code.

Kept free of ecgd imports at the top: every command imports this package.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, defaulting to the installed config (the daemon's)."""
    from ecgd.config import DEFAULT_CONFIG  # here: not every command reads a config

    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"ecgd TOML config (default {DEFAULT_CONFIG})")
