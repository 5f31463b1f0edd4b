"""``ecgd check``: list every problem ``ecgd run`` would refuse to start on, without running."""
from __future__ import annotations

import argparse
import json
import os

from ecgd.commands import add_config_option
from ecgd.config import read_config
from ecgd.errors import ConfigError
from ecgd.preflight import find_problems

DESCRIPTION = """Check everything 'ecgd run' checks before it starts: every config value
(unknown keys and bad values are errors), the recipient keys, the pseudonym key, the spool,
report and patient folders, and the model manifest. Every problem found is printed on its
own line on stdout (with --json, one JSON object), naming the config key and the full path
it is about. Exit 0 when there is none, 78 otherwise.

By default the model's manifest, labels and file are checked but its 117 MB are not
re-hashed, so that check answers at once; --full also re-hashes the model and loads it in
ONNX Runtime, as 'ecgd run' does (about 1 s more)."""


def register(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--full", action="store_true",
                        help="also re-hash the model file and load it in ONNX Runtime")
    parser.add_argument("--json", action="store_true",
                        help='print {"config", "ok", "model_check", "problems"} as JSON')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reading = read_config(args.config)
    problems = list(reading.problems)
    if reading.complete:
        problems += find_problems(reading.config, reading.defaulted, full=args.full)
    config_path = os.path.abspath(args.config)
    if args.json:
        print(json.dumps({"config": config_path, "ok": not problems,
                          "model_check": "full" if args.full else "manifest",
                          "problems": problems}, indent=2))
    else:
        for problem in problems:
            print(f"ecgd: {problem}")
        if not problems:
            print(f"ecgd: {config_path}: ok")
    return ConfigError.exit_code if problems else 0
