"""``ecgd check``: validate everything ``ecgd run`` would, without running."""
from __future__ import annotations

import argparse
from pathlib import Path

from ecgd.commands.run import DEFAULT_CONFIG
from ecgd.config import load_config
from ecgd.daemon import check_config
from ecgd.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="validate config, keys, directories and model",
        description="Validate everything 'ecgd run' checks before it starts: the config "
                    "(unknown keys and bad values are errors), recipient keys, the pseudonym "
                    "key, the spool and report directories, and the model. Prints each "
                    "problem on its own line; exit 0 when there is none, 78 otherwise.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"ecgd TOML config (default {DEFAULT_CONFIG})")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problems = check_config(config)
    for problem in problems:
        print(f"ecgd: {problem}")
    if problems:
        return ConfigError.exit_code
    print(f"ecgd: {args.config}: ok")
    return 0
