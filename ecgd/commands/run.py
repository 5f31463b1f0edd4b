"""``ecgd run``: the appliance daemon (foreground, systemd Type=notify)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ecgd.commands import add_config_option
from ecgd.config import load_config
from ecgd.daemon import Daemon, load_resources
from ecgd.errors import ConfigError, EcgdError
from ecgd.logs import configure_logging, get_logger
from ecgd.preflight import find_problems

DESCRIPTION = """Run the appliance in the foreground: watch the spool folder (and the serial
device, when [serial] is configured), interpret every 10-second window, and write one sealed
report per window. Tells systemd READY=1 once config, keys, directories and model are
verified and the ONNX session is loaded; STOPPING=1 on SIGTERM, then drains and exits 0.
Any startup problem (config, keys, directories, model) exits 78, which the shipped unit does
not restart on; every problem found is printed, one per line, as 'ecgd check' lists them."""


def register(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.set_defaults(handler=run)


def _refuse(reasons: Sequence[str]) -> int:
    get_logger(component="daemon").error("startup_refused", reasons=list(reasons))
    for reason in reasons:
        print(f"ecgd: {reason}", file=sys.stderr)
    return ConfigError.exit_code


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.logging.format, config.logging.level)
    problems = find_problems(config)
    if problems:
        return _refuse(problems)
    try:
        resources = load_resources(config)
    except EcgdError as exc:
        return _refuse(exc.lines())
    return Daemon(config, resources).run()
