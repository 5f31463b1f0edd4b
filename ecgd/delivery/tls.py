"""TLS contexts for delivery: TLS 1.3 only, and each end proves who it is.

The appliance trusts only its configured ``ca_file`` (never the system's CA list): the CA
that issued the station's certificate, or the station's own self-signed certificate, which
pins it. The station requires a client certificate issued by its client CA. Bad or missing
certificate and key files are ConfigErrors naming the file.
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Callable

from ecgd.errors import ConfigError


def _load(action: str, path: Path, load: Callable[[], None]) -> None:
    """Run ``load``; its OSError or SSLError becomes a ConfigError naming ``path``."""
    try:
        load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{path}: cannot load {action}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from exc


def client_context(ca_file: Path, client_cert: Path, client_key: Path) -> ssl.SSLContext:
    """The appliance's context: TLS 1.3, the station verified against ``ca_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    _load("the station CA", ca_file, lambda: context.load_verify_locations(cafile=str(ca_file)))
    _load("the client certificate and key", client_cert,
          lambda: context.load_cert_chain(str(client_cert), str(client_key)))
    return context


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """The station's context: TLS 1.3, a client certificate from ``client_ca`` required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    _load("the certificate and key", cert, lambda: context.load_cert_chain(str(cert), str(key)))
    _load("the client CA", client_ca,
          lambda: context.load_verify_locations(cafile=str(client_ca)))
    return context
