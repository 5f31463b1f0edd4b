"""`ecgd receive` as a real process: TLS 1.3 with client certificates, checks, durable store."""
from __future__ import annotations

import hashlib
import http.client
import json
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Optional, Tuple

import pyrage
import pytest

from ecgd.report_store import is_report_file_name
from ecgd.security.keys import generate_signing_key, load_recipients, load_signing_key
from ecgd.security.seal import seal_report
from seal_helpers import sample_report
from station_helpers import Authority, ReceiverProcess, Site, free_port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return Site(tmp_path_factory.mktemp("receiver-site"))


@pytest.fixture(scope="module")
def receiver(site: Site, tmp_path_factory: pytest.TempPathFactory):
    process = ReceiverProcess(site, free_port(), tmp_path_factory.mktemp("receiver-logs"))
    yield process.wait_listening()
    process.stop()


def _client_context(site: Site, cert: Optional[Tuple[Path, Path]] = ("default",),
                    max_version: Optional[ssl.TLSVersion] = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(site.ca.cert_file))
    if max_version is not None:
        context.maximum_version = max_version
    if cert == ("default",):
        context.load_cert_chain(str(site.client_cert), str(site.client_key))
    elif cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def _put(receiver: ReceiverProcess, context: ssl.SSLContext, path: str, body: bytes,
         method: str = "PUT") -> Tuple[int, dict]:
    connection = http.client.HTTPSConnection("127.0.0.1", receiver.port, context=context,
                                             timeout=30)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _sealed(site: Site, signing_key_file: Optional[Path] = None) -> Tuple[str, bytes]:
    report = sample_report()
    sealed = seal_report(report, load_recipients([site.station_keys["public"]]),
                         load_signing_key(signing_key_file or site.signing_keys["private"]))
    return report["report_id"] + ".ecgr", sealed


def test_report_is_stored_once_under_its_appliance(site: Site, receiver) -> None:
    """201 'stored' with the digest, the exact bytes under inbox/ward3/; a second PUT is 200
    'already-stored' and leaves the first copy alone."""
    name, sealed = _sealed(site)
    status, answer = _put(receiver, _client_context(site), f"/reports/{name}", sealed)
    assert status == 201
    assert answer == {"report_id": name[:-5], "appliance": "ward3", "status": "stored",
                      "sha256": hashlib.sha256(sealed).hexdigest()}
    stored = site.inbox / "ward3" / name
    assert stored.read_bytes() == sealed
    assert stored.stat().st_mode & 0o777 == 0o600
    status, answer = _put(receiver, _client_context(site), f"/reports/{name}", sealed)
    assert (status, answer["status"]) == (200, "already-stored")
    assert [p.name for p in (site.inbox / "ward3").iterdir() if p.name == name] == [name]


def test_reports_failing_a_check_are_refused_and_not_stored(site: Site, receiver,
                                                            tmp_path: Path) -> None:
    """Unsigned, unknown-signer, truncated and misnamed reports: 422 naming the check."""
    stranger = generate_signing_key(tmp_path / "stranger")
    name, sealed = _sealed(site)
    other_name, _ = _sealed(site)
    unsigned = pyrage.encrypt(b"{}", [pyrage.x25519.Recipient.from_str(
        load_recipients([site.station_keys["public"]])[0].recipient)])
    cases = {
        "unsigned": (name, unsigned),
        "unknown signer": _sealed(site, stranger["private"]),
        "signature mismatch": (name, sealed[:-1]),
        "the signed report id is not the one in the request": (other_name, sealed),
    }
    for check, (case_name, body) in cases.items():
        status, answer = _put(receiver, _client_context(site), f"/reports/{case_name}", body)
        assert status == 422 and answer["error"].startswith(check), (check, answer)
    stored = {p.name for p in site.inbox.rglob("*.ecgr")}
    assert not {name, other_name, cases["unknown signer"][0]} & stored


def test_only_a_put_of_a_report_name_is_accepted(site: Site, receiver) -> None:
    """Other paths are 404, other methods 405, and nothing is written."""
    name, sealed = _sealed(site)
    before = sorted(site.inbox.rglob("*"))
    assert _put(receiver, _client_context(site), f"/reports/.{name}.00.tmp", sealed)[0] == 404
    assert _put(receiver, _client_context(site), "/reports/../x.ecgr", sealed)[0] == 404
    assert _put(receiver, _client_context(site), f"/reports/{name}", sealed, "POST")[0] == 405
    assert sorted(site.inbox.rglob("*")) == before


def _handshake_refused(receiver: ReceiverProcess, context: ssl.SSLContext) -> bool:
    """True when the TLS handshake or the first exchange over it fails."""
    try:
        _put(receiver, context, "/reports/x", b"")
    except (ssl.SSLError, ConnectionError, http.client.HTTPException):
        return True
    return False


def test_clients_without_a_good_certificate_or_tls13_are_refused(site: Site, receiver,
                                                                 tmp_path: Path) -> None:
    """No client certificate, one from another CA, or a TLS 1.2-only client: refused."""
    stranger_ca = Authority(tmp_path / "stranger-pki", "stranger")
    assert _handshake_refused(receiver, _client_context(site, cert=None))
    assert _handshake_refused(receiver, _client_context(
        site, cert=stranger_ca.issue("ward3", server=False)))
    assert _handshake_refused(receiver, _client_context(site, max_version=ssl.TLSVersion.TLSv1_2))
    name, sealed = _sealed(site)
    assert _put(receiver, _client_context(site), f"/reports/{name}", sealed)[0] == 201


def test_receive_refuses_to_start_without_enrolled_appliances(site: Site, tmp_path: Path) -> None:
    """An empty --appliances folder exits 78 with one line naming it, before listening."""
    empty = tmp_path / "none"
    empty.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "ecgd", "receive", "--listen", f"127.0.0.1:{free_port()}",
         "--cert", str(site.server_cert), "--key", str(site.server_key),
         "--client-ca", str(site.ca.cert_file), "--dir", str(tmp_path / "inbox"),
         "--appliances", str(empty)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 78
    assert completed.stderr.splitlines() == [
        f"ecgd: {empty}: no enrolled appliance (NAME.pub signing keys)"]


def test_stored_names_follow_the_reports_folder_rule(site: Site, receiver) -> None:
    """Everything the receiver stored is a report by report_store's rule."""
    name, sealed = _sealed(site)
    _put(receiver, _client_context(site), f"/reports/{name}", sealed)
    assert all(is_report_file_name(p.name) for p in (site.inbox / "ward3").iterdir())


def test_receiver_start_removes_what_a_killed_receiver_left_half_written(
        tmp_path: Path) -> None:
    """A hidden write temporary in an appliance's folder is deleted at start; reports stay."""
    site = Site(tmp_path / "site")
    name, sealed = _sealed(site)
    first = ReceiverProcess(site, free_port(), tmp_path).wait_listening()
    try:
        assert _put(first, _client_context(site), f"/reports/{name}", sealed)[0] == 201
    finally:
        first.stop(signal.SIGKILL)
    folder = site.inbox / "ward3"
    stale = folder / f".{name}.0123456789abcdef.tmp"
    stale.write_bytes(sealed[:100])
    second = ReceiverProcess(site, free_port(), tmp_path).wait_listening()
    try:
        assert not stale.exists()
        assert sorted(path.name for path in folder.iterdir()) == [name]
        assert '"stale_temporaries_removed"' in second.log_text()
    finally:
        second.stop()
