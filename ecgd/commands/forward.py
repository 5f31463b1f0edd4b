"""``ecgd forward --config FILE``: deliver sealed reports to the reading station."""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import sdnotify

from ecgd.config import DEFAULT_CONFIG, load_config
from ecgd.delivery.forwarder import Forwarder, StationClient
from ecgd.delivery.tls import client_context
from ecgd.errors import ConfigError
from ecgd.logs import configure_logging, get_logger
from ecgd.security.keys import credential_or_file

DESCRIPTION = """Deliver the sealed reports in [reports] dir to the reading station named in
[forward] url, over HTTPS with TLS 1.3 only: the station's certificate is checked against
[forward] ca_file, and this appliance shows its client certificate. A report is moved to
<[reports] dir>/delivered/ only after the station acknowledged storing it. While the station
is down, it retries with capped backoff. Runs until SIGTERM (systemd Type=notify; its own
unit, systemd/ecgd-forward.service). A bad config or TLS file exits 78."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("forward", help="deliver sealed reports to the reading "
                                   "station (systemd service)", description=DESCRIPTION)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"ecgd TOML config with a [forward] section (default "
                             f"{DEFAULT_CONFIG})")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.forward is None:
        raise ConfigError(f"{args.config}: no [forward] section: nowhere to deliver reports")
    forward = config.forward
    configure_logging(config.logging.format, config.logging.level)
    context = client_context(forward.ca_file, forward.client_cert,
                             credential_or_file(forward.client_key_credential,
                                                forward.client_key))
    stop = threading.Event()

    def request_stop(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    notifier = sdnotify.SystemdNotifier()
    forwarder = Forwarder(forward, config.reports.dir,
                          StationClient(forward.url, context, forward.timeout_s),
                          get_logger(component="forward"), stop,
                          on_status=lambda status: notifier.notify(f"STATUS={status}"))
    notifier.notify("READY=1")
    forwarder.run()
    notifier.notify("STOPPING=1")
    return 0
