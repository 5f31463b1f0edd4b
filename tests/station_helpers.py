"""Delivery tests: certificates made here, a site's keys, `ecgd receive` as a real process,
and an in-test HTTPS station whose behaviour each test chooses (garbage, hangs, redirects)."""
from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon_harness import REPO_ROOT, DaemonProcess, wait_for
from ecgd.report_store import delivered_dir, list_reports
from ecgd.security.keys import generate_keys, generate_signing_key, load_signing_key
from seal_helpers import write_sealed_reports


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class Authority:
    """A test CA that issues server (127.0.0.1, localhost) and client certificates."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_file = _write_cert(folder / f"{name}-ca.pem", self.cert)

    def issue(self, common_name: str, server: bool) -> Tuple[Path, Path]:
        """A certificate and key file signed by this CA, for a server or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(common_name))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=30)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = f"{self.name}-{common_name}"
        return (_write_cert(self.folder / f"{stem}.pem", cert),
                _write_key(self.folder / f"{stem}.key", key))


class Site:
    """A reading station and one appliance, with keys, certificates and folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.station_keys = generate_keys(root / "station-keys")
        self.signing_keys = generate_signing_key(root / "appliance-keys")
        self.enrolled = root / "enrolled"
        self.enrolled.mkdir()
        (self.enrolled / "ward3.pub").write_bytes(self.signing_keys["public"].read_bytes())
        self.ca = Authority(root / "pki", "site")
        self.server_cert, self.server_key = self.ca.issue("station", server=True)
        self.client_cert, self.client_key = self.ca.issue("ward3", server=False)
        self.reports = root / "appliance" / "reports"
        self.reports.mkdir(parents=True, mode=0o700)
        self.inbox = root / "station" / "inbox"

    def seal_reports(self, count: int) -> List[Path]:
        """``count`` signed reports in the appliance's reports folder."""
        return write_sealed_reports(self.reports, count, self.station_keys["public"],
                                    load_signing_key(self.signing_keys["private"]))

    def forward_config(self, url: str, **options: object) -> Path:
        """An ecgd config with [reports] and [forward] sections for this site."""
        settings = {"url": url, "ca_file": str(self.ca.cert_file),
                    "client_cert": str(self.client_cert), "client_key": str(self.client_key),
                    "timeout_s": 5.0, "retry_initial_s": 0.05, "retry_max_s": 0.4,
                    "scan_s": 0.2, **options}
        lines = "\n".join(f"{key} = {value!r}".replace("'", '"') for key, value in
                          settings.items())
        path = self.root / "forward.toml"
        path.write_text(f'[reports]\ndir = "{self.reports}"\n[logging]\nformat = "json"\n'
                        f"[forward]\n{lines}\n")
        return path

    def station_files(self) -> Dict[str, bytes]:
        """Every report the station stored, by file name (subfolder per appliance)."""
        if not self.inbox.exists():
            return {}
        return {path.name: path.read_bytes() for path in self.inbox.glob("*/*")
                if not path.name.startswith(".")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ReceiverProcess:
    """``ecgd receive`` as a real subprocess (uvicorn, TLS 1.3, client certificates)."""

    def __init__(self, site: Site, port: int, workdir: Path,
                 cert: Optional[Tuple[Path, Path]] = None) -> None:
        self.port = port
        self.log_path = workdir / f"receive-{port}-{os.getpid()}-{id(self)}.log"
        cert_file, key_file = cert or (site.server_cert, site.server_key)
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ecgd", "receive", "--listen", f"127.0.0.1:{port}",
             "--cert", str(cert_file), "--key", str(key_file),
             "--client-ca", str(site.ca.cert_file), "--dir", str(site.inbox),
             "--appliances", str(site.enrolled), "--log-format", "json"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))

    def wait_listening(self, timeout_s: float = 60.0) -> "ReceiverProcess":
        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"ecgd receive exited {self.process.returncode}: "
                                     + self.log_text())
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, timeout_s, "ecgd receive listening")
        return self

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)
        self._log.close()


# What an in-test station does with one PUT: (status, headers, body) or None to hang.
Behaviour = Callable[[str, bytes], Optional[Tuple[int, Dict[str, str], bytes]]]


class TestStation:
    """An HTTPS (or plain HTTP) server in a thread that answers PUTs as ``behaviour`` says.

    It stands in for a broken or hostile station; the real one is ``ReceiverProcess``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, context: Optional[ssl.SSLContext], behaviour: Behaviour) -> None:
        self.requests: List[str] = []
        self.released = threading.Event()
        station = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                station.requests.append(self.path)
                answer = behaviour(self.path, body)
                if answer is None:
                    station.released.wait(30)
                    return
                status, headers, payload = answer
                if status == 0:  # not HTTP at all
                    self.wfile.write(payload)
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-station")
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(30)


def run_crash_scenario(site: Site, workdir: Path, interruptions: int,
                       seed: Optional[int] = None) -> Dict[str, int]:
    """Forward every report in ``site.reports`` to a real receiver while, at random points,
    the forwarder is SIGKILLed and restarted or the receiver is stopped (SIGKILL or SIGTERM)
    and restarted once the forwarder has noticed. Returns how often each happened."""
    chance = random.Random(seed)
    total = len(list_reports(site.reports))
    delivered = lambda: len(list_reports(delivered_dir(site.reports)))  # noqa: E731
    port = free_port()
    config = site.forward_config(f"https://127.0.0.1:{port}")
    receivers = [ReceiverProcess(site, port, workdir).wait_listening()]
    forwarders = [DaemonProcess(config, workdir, subcommand="forward")]
    counts = {"forwarder_killed": 0, "receiver_stopped": 0}
    try:
        for step in range(interruptions):
            goal = min(delivered() + chance.randint(1, max(1, total // (interruptions + 2))),
                       total)
            wait_for(lambda: delivered() >= goal, 300, f"{goal} reports delivered")
            if step % 2 == 0:
                forwarders[-1].kill()
                counts["forwarder_killed"] += 1
                forwarders.append(DaemonProcess(config, workdir, subcommand="forward"))
            else:
                receivers[-1].stop(chance.choice([signal.SIGKILL, signal.SIGTERM]))
                counts["receiver_stopped"] += 1
                # With every report delivered (under load the forwarder can get there before
                # the stop), it has nothing to send and so never contacts the station.
                wait_for(lambda: ("station_unavailable" in forwarders[-1].log_text()
                                  or delivered() == total), 60,
                         "the forwarder noticing the station is down")
                receivers.append(ReceiverProcess(site, port, workdir).wait_listening())
        wait_for(lambda: delivered() == total, 600, "every report delivered")
        if forwarders[-1].terminate() != 0:
            raise AssertionError("ecgd forward did not exit 0 on SIGTERM:\n"
                                 + forwarders[-1].log_text())
    finally:
        for forwarder in forwarders:
            forwarder.close()
        receivers[-1].stop()
    return counts
