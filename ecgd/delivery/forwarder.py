"""The appliance end of delivery (``ecgd forward``): sealed reports to the reading station.

One pass takes every report in the reports folder (``report_store.list_reports``: hidden
temporaries are never sent), PUTs it to ``<url>/reports/<report id>.ecgr`` and, once the
station has acknowledged that it stored exactly these bytes durably, moves it into
``delivered/``. PUT by report id makes delivery idempotent: a report sent again after a
crash between the station's acknowledgement and the move is acknowledged as already stored.

Failures keep the report where it is, so nothing is ever lost or marked delivered early:
- the station down, hung (``timeout_s``), refusing the TLS handshake, redirecting (never
  followed: reports go to the configured host only) or answering anything but an
  acknowledgement: ``StationUnavailable``; the pass stops and the next one starts after a
  capped exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``);
- the station refusing one report (a 4xx answer, e.g. a truncated file failing its signature
  check): ``ReportRefused``; the other reports go on, this one is tried again after
  ``retry_max_s``;
- a report deleted or replaced while it was being sent: left for the next pass.

HTTP is the standard library's ``http.client`` over ``ssl``: one PUT at a time on one
kept-alive connection needs nothing more, and the appliance stays free of an HTTP stack.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ecgd import durable
from ecgd.config import ForwardConfig
from ecgd.errors import ReportRefused, StationUnavailable
from ecgd.report_store import REPORT_MAX_BYTES, delivered_dir, list_reports, report_id_of

ACK_STATUSES = ("stored", "already-stored")
# An acknowledgement is a small JSON object; a longer answer is not one and is not read.
_ANSWER_MAX_BYTES = 64 * 1024
_REASON_MAX_CHARS = 200


@dataclasses.dataclass(frozen=True)
class Acknowledgement:
    """The station's word that it holds a report durably."""

    report_id: str
    status: str
    appliance: str


def _answer_reason(body: bytes) -> str:
    """The station's ``error`` text, or the start of its answer, as one printable line."""
    try:
        reason = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        reason = body.decode("utf-8", "replace")
    cleaned = "".join(char if char.isprintable() else " " for char in reason)
    return cleaned[:_REASON_MAX_CHARS] or "no reason given"


class StationClient:
    """HTTPS to the one configured station, TLS 1.3 only; reconnects after any failure."""

    def __init__(self, url: str, context: ssl.SSLContext, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or ""
        self._port = parts.port or 443
        self._base_path = parts.path.rstrip("/")
        self._context = context
        self._timeout_s = timeout_s
        self._connection: Optional[http.client.HTTPSConnection] = None

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _exchange(self, path: str, body: bytes) -> Tuple[int, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(
                self._host, self._port, context=self._context, timeout=self._timeout_s)
        self._connection.request("PUT", path, body=body,
                                 headers={"Content-Type": "application/octet-stream"})
        response = self._connection.getresponse()
        answer = response.read(_ANSWER_MAX_BYTES + 1)
        if len(answer) > _ANSWER_MAX_BYTES or response.will_close:
            self.close()
        return response.status, answer[:_ANSWER_MAX_BYTES]

    def put_report(self, name: str, sealed: bytes) -> Acknowledgement:
        """Send one sealed report; its acknowledgement, or StationUnavailable/ReportRefused."""
        try:
            status, answer = self._exchange(f"{self._base_path}/reports/{name}", sealed)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise StationUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if status in (200, 201):
            return self._acknowledgement(name, sealed, answer)
        reason = _answer_reason(answer)
        if 300 <= status < 400:
            raise StationUnavailable(f"the station answered {status}, a redirect (not followed)")
        if 400 <= status < 500 and status not in (408, 429):
            raise ReportRefused(f"the station refused it ({status}): {reason}")
        raise StationUnavailable(f"the station answered {status}: {reason}")

    @staticmethod
    def _acknowledgement(name: str, sealed: bytes, answer: bytes) -> Acknowledgement:
        """Check that the answer acknowledges exactly these bytes under this report id."""
        try:
            ack: Any = json.loads(answer)
            acknowledgement = Acknowledgement(str(ack["report_id"]), str(ack["status"]),
                                              str(ack["appliance"]))
            sha256 = ack["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StationUnavailable("the station's answer is not an acknowledgement") from exc
        if (acknowledgement.report_id != report_id_of(name)
                or sha256 != hashlib.sha256(sealed).hexdigest()
                or acknowledgement.status not in ACK_STATUSES):
            raise StationUnavailable("the station acknowledged something else (report id, "
                                     "content digest or status differ)")
        return acknowledgement


@dataclasses.dataclass
class DeliveryCounts:
    """What STATUS= shows: delivered this run, waiting at the last pass, refused."""

    delivered: int = 0
    pending: int = 0
    refused: int = 0


class Forwarder:
    """Deliver every report in ``reports_dir`` until ``stop`` is set."""

    def __init__(self, config: ForwardConfig, reports_dir: Path, client: StationClient,
                 log: Any, stop: threading.Event,
                 on_status: Callable[[str], None] = lambda status: None) -> None:
        self.config = config
        self.reports_dir = Path(reports_dir)
        self.client = client
        self.log = log
        self.stop = stop
        self.on_status = on_status
        self.counts = DeliveryCounts()
        self._retry_refused_at: Dict[str, float] = {}
        self._outage: Optional[str] = None

    def run(self) -> None:
        """Passes over the folder, with capped exponential backoff while the station is down."""
        backoff_s = self.config.retry_initial_s
        while not self.stop.is_set():
            try:
                self.deliver_pending()
                # Not kept open while idle: the station need not hold a connection per appliance.
                self.client.close()
                wait_s, backoff_s = self.config.scan_s, self.config.retry_initial_s
                if self._outage is not None:
                    self.log.info("station_reachable_again")
                    self._outage = None
            except StationUnavailable as exc:
                if self._outage != str(exc):
                    self.log.warning("station_unavailable", reason=str(exc), retry_s=backoff_s)
                    self._outage = str(exc)
                wait_s, backoff_s = backoff_s, min(2 * backoff_s, self.config.retry_max_s)
            self.on_status(self.status_line())
            self.stop.wait(wait_s)

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        station = f"station unavailable: {self._outage}" if self._outage else "station ok"
        return (f"reports {self.counts.delivered} delivered, {self.counts.pending} waiting, "
                f"{self.counts.refused} refused; {station}")

    def deliver_pending(self) -> None:
        """One pass over the folder; StationUnavailable ends it early."""
        reports = list_reports(self.reports_dir)
        self.counts.pending = len(reports)
        self.counts.refused = len(self._retry_refused_at)
        for path in reports:
            if self.stop.is_set():
                return
            if self._retry_refused_at.get(path.name, 0.0) > time.monotonic():
                continue
            self._deliver(path)

    def _deliver(self, path: Path) -> None:
        report_id = report_id_of(path.name)
        try:
            sealed, sent = _read_report(path)
        except FileNotFoundError:
            return  # moved or deleted since the folder was listed: nothing to send
        except OSError as exc:
            self.log.error("report_unreadable", report_id=report_id,
                           reason=exc.strerror or str(exc))
            return
        try:
            ack = self.client.put_report(path.name, sealed)
        except ReportRefused as exc:
            self._retry_refused_at[path.name] = time.monotonic() + self.config.retry_max_s
            self.counts.refused = len(self._retry_refused_at)
            self.log.error("report_refused", report_id=report_id, reason=str(exc),
                           retry_s=self.config.retry_max_s)
            return
        self._retry_refused_at.pop(path.name, None)
        if self._mark_delivered(path, sent):
            self.counts.delivered += 1
            self.counts.pending -= 1
            self.log.info("report_delivered", report_id=report_id, status=ack.status,
                          appliance=ack.appliance)

    def _mark_delivered(self, path: Path, sent: os.stat_result) -> bool:
        """Move the report into delivered/ if it is still the file that was sent."""
        target_dir = delivered_dir(self.reports_dir)
        try:
            current = os.lstat(path)
            if (current.st_dev, current.st_ino) != (sent.st_dev, sent.st_ino):
                return False  # rewritten while it was sent: the next pass sends the new one
            durable.ensure_private_dir(target_dir)
            os.rename(path, target_dir / path.name)
            durable.fsync_directory(target_dir)
            durable.fsync_directory(self.reports_dir)
        except FileNotFoundError:
            return False
        except OSError as exc:
            # The station has it; the next pass sends it again (already-stored) and retries.
            self.log.error("report_not_moved", report_id=report_id_of(path.name),
                           reason=exc.strerror or str(exc))
            return False
        return True


def _read_report(path: Path) -> Tuple[bytes, os.stat_result]:
    """A report's bytes and the identity (stat) of the file they came from."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        sent = os.fstat(handle.fileno())
        data = handle.read(REPORT_MAX_BYTES + 1)
    if len(data) > REPORT_MAX_BYTES:
        raise OSError(f"larger than {REPORT_MAX_BYTES} bytes, not a sealed report")
    return data, sent
