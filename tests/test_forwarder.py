"""`ecgd forward`: delivery over real TLS to real and broken stations; never lost, never early."""
from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from structlog.testing import capture_logs

from ecgd.config import load_config
from ecgd.delivery.forwarder import Forwarder, StationClient
from ecgd.delivery.receiver import ReportInbox
from ecgd.delivery.tls import client_context
from ecgd.errors import ConfigError, ReportRefused, StationUnavailable
from ecgd.logs import get_logger
from ecgd.report_store import delivered_dir, list_reports
from ecgd.security.keys import load_enrolled_appliances
from daemon_harness import full_filesystem
from station_helpers import Authority, Behaviour, Site, TestStation, run_crash_scenario

# Reports forwarded in the crash test below (tools/delivery_soak.py runs 500).
CRASH_TEST_REPORTS = 120


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def _server_context(site: Site, cert: Optional[Tuple[Path, Path]] = None,
                    max_version: Optional[ssl.TLSVersion] = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_file, key_file = cert or (site.server_cert, site.server_key)
    context.load_cert_chain(str(cert_file), str(key_file))
    if max_version is not None:
        context.maximum_version = max_version
    return context


def _forwarder(site: Site, port: int, timeout_s: float = 5.0) -> Forwarder:
    config = load_config(site.forward_config(f"https://127.0.0.1:{port}", timeout_s=timeout_s))
    forward = config.forward
    assert forward is not None
    context = client_context(forward.ca_file, forward.client_cert, forward.client_key)
    return Forwarder(forward, site.reports, StationClient(forward.url, context, timeout_s),
                     get_logger(component="forward"), threading.Event())


def _real_station(site: Site):
    """The station's own store (ReportInbox) behind a TestStation: a real ack."""
    inbox = ReportInbox(site.inbox, load_enrolled_appliances(site.enrolled),
                        get_logger(component="receive"))

    def store(path: str, body: bytes):
        status, answer = inbox.store(path.rsplit("/", 1)[1], body)
        return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()
    return store


def _one_pass(site: Site, behaviour: Behaviour) -> Tuple[Forwarder, List[dict]]:
    """One delivery pass to a TestStation acting as ``behaviour``; the forwarder and logs."""
    station = TestStation(_server_context(site), behaviour)
    try:
        forwarder = _forwarder(site, station.port)
        with capture_logs() as logs:
            forwarder.deliver_pending()
    finally:
        station.close()
    return forwarder, logs


def _undelivered(site: Site) -> List[str]:
    return [path.name for path in list_reports(site.reports)]


def _delivered(site: Site) -> List[str]:
    return [path.name for path in list_reports(delivered_dir(site.reports))]


def test_pass_delivers_every_report_byte_identical(site: Site) -> None:
    """One pass: each report is at the station exactly as sealed, and moved to delivered/."""
    sealed = {path.name: path.read_bytes() for path in site.seal_reports(5)}
    forwarder, logs = _one_pass(site, _real_station(site))
    assert site.station_files() == sealed
    assert _undelivered(site) == [] and _delivered(site) == sorted(sealed)
    assert [e["report_id"] + ".ecgr" for e in logs if e["event"] == "report_delivered"] == \
        sorted(sealed)
    assert forwarder.counts.delivered == 5


@pytest.mark.parametrize("case", ["other CA", "plain HTTP", "TLS 1.2 only"])
def test_stations_that_cannot_prove_themselves_get_nothing(site: Site, tmp_path: Path,
                                                           case: str) -> None:
    """A station certificate from another CA, plain HTTP and a TLS 1.2-only server are
    refused at the handshake: nothing is sent, nothing marked delivered."""
    site.seal_reports(2)
    contexts = {
        "other CA": lambda: _server_context(
            site, cert=Authority(tmp_path / "other", "other").issue("station", server=True)),
        "plain HTTP": lambda: None,
        "TLS 1.2 only": lambda: _server_context(site, max_version=ssl.TLSVersion.TLSv1_2),
    }
    station = TestStation(contexts[case](), _real_station(site))
    try:
        with pytest.raises(StationUnavailable) as info:
            _forwarder(site, station.port).deliver_pending()
    finally:
        station.close()
    assert station.requests == []
    expected = {"other CA": "CERTIFICATE_VERIFY_FAILED", "plain HTTP": "SSL",
                "TLS 1.2 only": "SSL"}[case]
    assert expected in str(info.value)
    assert len(_undelivered(site)) == 2 and _delivered(site) == []


@pytest.mark.parametrize("case", ["garbage", "not an ack", "wrong digest", "redirect",
                                  "server error", "hangs"])
def test_broken_station_answers_never_mark_delivered(site: Site, case: str) -> None:
    """Garbage, a 200 that is no acknowledgement, an ack of other bytes, a redirect
    elsewhere, a 503 and no answer at all: StationUnavailable, every report kept."""
    site.seal_reports(2)

    def behaviour(path: str, body: bytes):
        ack = {"report_id": path.rsplit("/", 1)[1][:-5], "appliance": "ward3",
               "status": "stored", "sha256": hashlib.sha256(body).hexdigest()}
        return {
            "garbage": (0, {}, b"\x16\x03garbage\r\n\r\n"),
            "not an ack": (200, {}, b"<html>OK</html>"),
            "wrong digest": (201, {}, json.dumps({**ack, "sha256": "0" * 64}).encode()),
            "redirect": (302, {"Location": "https://elsewhere.invalid/reports/"}, b""),
            "server error": (503, {}, b'{"error": "maintenance"}'),
            "hangs": None,
        }[case]
    station = TestStation(_server_context(site), behaviour)
    try:
        with pytest.raises(StationUnavailable) as info:
            _forwarder(site, station.port, timeout_s=0.5).deliver_pending()
    finally:
        station.close()
    assert len(station.requests) == 1
    expected = {"garbage": "BadStatusLine", "not an ack": "not an acknowledgement",
                "wrong digest": "acknowledged something else", "redirect": "redirect",
                "server error": "503: maintenance", "hangs": "timed out"}[case]
    assert expected in str(info.value)
    assert len(_undelivered(site)) == 2 and _delivered(site) == []


def test_report_truncated_or_deleted_under_the_forwarder(site: Site) -> None:
    """While the first report is being received, the second is truncated and the third
    deleted: the truncated one is refused and kept, the deleted one skipped, the rest sent."""
    paths = sorted(site.seal_reports(4))  # the order the forwarder sends them in
    sealed = {path.name: path.read_bytes() for path in paths}
    store = _real_station(site)

    def behaviour(path: str, body: bytes):
        if path.endswith(paths[0].name):
            paths[1].write_bytes(sealed[paths[1].name][:-10])
            paths[2].unlink()
        return store(path, body)
    forwarder, logs = _one_pass(site, behaviour)
    assert _delivered(site) == sorted([paths[0].name, paths[3].name])
    assert _undelivered(site) == [paths[1].name]
    assert site.station_files() == {name: sealed[name] for name in _delivered(site)}
    refusals = [e for e in logs
                if e["event"] == "report_refused" and e["component"] == "forward"]
    assert [e["report_id"] + ".ecgr" for e in refusals] == [paths[1].name]
    assert "signature mismatch" in refusals[0]["reason"]
    assert forwarder.counts.refused == 1


def test_refused_report_does_not_block_the_others(site: Site) -> None:
    """The station refusing one report (422) raises ReportRefused for it alone."""
    site.seal_reports(1)
    station = TestStation(_server_context(site),
                          lambda path, body: (422, {}, b'{"error": "unknown signer: key x"}'))
    try:
        client = _forwarder(site, station.port).client
        name = _undelivered(site)[0]
        with pytest.raises(ReportRefused, match="422.*unknown signer"):
            client.put_report(name, (site.reports / name).read_bytes())
    finally:
        station.close()


def test_full_station_disk_is_retried_until_there_is_room(site: Site) -> None:
    """A station whose disk is full answers 507; nothing is delivered until it has room,
    then everything is (the report is never lost, never marked delivered early)."""
    with full_filesystem(site.inbox, "64k") as filler:
        sealed = {path.name: path.read_bytes() for path in site.seal_reports(3)}
        station = TestStation(_server_context(site), _real_station(site))
        try:
            forwarder = _forwarder(site, station.port)
            with pytest.raises(StationUnavailable, match="507"):
                forwarder.deliver_pending()
            assert len(_undelivered(site)) == 3 and _delivered(site) == []
            filler.unlink()
            forwarder.deliver_pending()
        finally:
            station.close()
        assert site.station_files() == sealed
        assert _delivered(site) == sorted(sealed)


def test_config_refuses_plain_http_and_a_missing_section(site: Site) -> None:
    """[forward] url must be https; `ecgd forward` without [forward] exits 78."""
    with pytest.raises(ConfigError, match=r"\[forward\] url: must be https://"):
        load_config(site.forward_config("http://127.0.0.1:8080"))
    bare = site.root / "bare.toml"
    bare.write_text(f'[reports]\ndir = "{site.reports}"\n')
    completed = subprocess.run([sys.executable, "-m", "ecgd", "forward", "--config", str(bare)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 78
    assert "no [forward] section" in completed.stderr


def test_crashes_on_both_ends_lose_nothing_and_duplicate_nothing(site: Site,
                                                                 tmp_path: Path) -> None:
    """Reports forwarded while the forwarder is SIGKILLed and the receiver stopped (SIGKILL
    or SIGTERM) at random points, then restarted: the station ends with every report
    exactly once, byte-identical, and the appliance with every report in delivered/."""
    sealed = {path.name: path.read_bytes() for path in site.seal_reports(CRASH_TEST_REPORTS)}
    run_crash_scenario(site, tmp_path, interruptions=4)
    stored = [path.name for path in site.inbox.rglob("*")
              if path.is_file() and not path.name.startswith(".")]
    assert sorted(stored) == sorted(sealed)
    assert site.station_files() == sealed
    assert _delivered(site) == sorted(sealed)
