"""``ecgd run``: the appliance daemon (foreground, systemd Type=notify)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecgd.config import DEFAULT_CONFIG, load_config
from ecgd.daemon import Daemon, load_resources
from ecgd.errors import ConfigError, EcgdError
from ecgd.logs import configure_logging, get_logger

DESCRIPTION = """Run the appliance in the foreground: watch the spool folder (and the serial
device, when [serial] is configured), interpret every 10-second window, and write one sealed
report per window. Tells systemd READY=1 once config, keys, directories and model are
verified and the ONNX session is loaded; STOPPING=1 on SIGTERM, then drains and exits 0.
Any startup problem (config, keys, directories, model) exits 78, which the shipped unit does
not restart on."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the appliance daemon (systemd service)",
                                   description=DESCRIPTION)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"ecgd TOML config (default {DEFAULT_CONFIG})")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.logging.format, config.logging.level)
    try:
        resources = load_resources(config)
    except EcgdError as exc:
        get_logger(component="daemon").error("startup_refused", reason=str(exc))
        print(f"ecgd: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    return Daemon(config, resources).run()
