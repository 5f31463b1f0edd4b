"""``ecgd receive``: the reading station's HTTPS endpoint that stores delivered reports."""
from __future__ import annotations

import argparse
import ssl
from pathlib import Path
from typing import Any, Callable, Tuple

from ecgd import durable
from ecgd.delivery.receiver import ReceiverApp, ReportInbox
from ecgd.delivery.tls import server_context
from ecgd.errors import ConfigError
from ecgd.logs import configure_logging, get_logger
from ecgd.security.keys import load_enrolled_appliances

# On SIGTERM, requests in progress get this long to finish (each is one durable write);
# without a bound, an idle TLS connection held by a client delays the exit for minutes.
_GRACEFUL_SHUTDOWN_S = 5

DESCRIPTION = """Receive sealed reports from enrolled appliances (ecgd forward) over HTTPS:
TLS 1.3 only, a client certificate issued by --client-ca required. Each report's appliance
signature is checked against --appliances (no private key is needed or read), then the
report is written durably as DIR/<appliance>/<report id>.ecgr and only then acknowledged.
Runs until SIGTERM; a bad option, certificate or key exits 78."""


def _listen_address(text: str) -> Tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, type=_listen_address, metavar="HOST:PORT",
                        help="address to listen on, e.g. 0.0.0.0:8443")
    parser.add_argument("--cert", required=True, type=Path, metavar="FILE",
                        help="the station's certificate (PEM, chain allowed)")
    parser.add_argument("--key", required=True, type=Path, metavar="FILE",
                        help="the station's TLS private key (PEM)")
    parser.add_argument("--client-ca", required=True, type=Path, metavar="FILE",
                        help="CA that issues the appliances' client certificates (PEM)")
    parser.add_argument("--dir", required=True, type=Path, metavar="DIR",
                        help="where received reports are stored (created 0700)")
    parser.add_argument("--appliances", required=True, type=Path, metavar="DIR",
                        help="enrolled appliances: one NAME.pub signing key per appliance")
    parser.add_argument("--log-format", default="auto", choices=("auto", "json", "console"),
                        help="json (journal), console (terminal) or auto (default)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError("ecgd receive needs uvicorn: pip install 'ecgd[station]'") from exc
    configure_logging(args.log_format)
    enrolled = load_enrolled_appliances(args.appliances)
    context = server_context(args.cert, args.key, args.client_ca)
    try:
        durable.ensure_private_dir(args.dir)
    except OSError as exc:
        raise ConfigError(f"{args.dir}: cannot use as the reports folder: "
                          f"{exc.strerror or exc}") from exc
    log = get_logger(component="receive")
    inbox = ReportInbox(args.dir, enrolled, log)
    try:
        inbox.remove_stale_temporaries()
    except OSError as exc:
        raise ConfigError(f"{args.dir}: cannot remove stale temporary files: "
                          f"{exc.strerror or exc}") from exc
    host, port = args.listen

    def ssl_context_factory(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    server = uvicorn.Server(uvicorn.Config(
        ReceiverApp(inbox), host=host, port=port,
        ssl_context_factory=ssl_context_factory, lifespan="off", access_log=False,
        log_config=None, server_header=False, date_header=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S))
    log.info("receiver_starting", host=host, port=port, appliances=len(enrolled))
    server.run()
    return 0
