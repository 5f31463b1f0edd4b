"""The station end of delivery (``ecgd receive``): store what enrolled appliances send.

``PUT /reports/<report id>.ecgr`` with the sealed report as the body. Before anything is
written, the appliance signature is checked against the enrolled appliances
(``origin.verify_origin``: no private key needed) and the signed report id against the name.
The report is then written durably (temporary file, fsync, rename, fsync of the folder) as
``DIR/<appliance name>/<report id>.ecgr``, and only then acknowledged with
``{"report_id", "appliance", "sha256", "status"}``, ``status`` being ``stored`` (201) or
``already-stored`` (200: the same appliance sent this report id before; the first copy is
kept, so a re-delivery after a crash never makes a second file). Per appliance, because two
appliances given the same recording make the same report ids.

Refusals: 422 (a failed check, named), 413 (too large), 404/405 (anything but a PUT of a
report name), 507 (disk full: the forwarder keeps the report and retries), 500 (any other
write failure). The TLS layer (``tls.server_context``, served by uvicorn) has already
refused clients without a certificate from the client CA, and anything but TLS 1.3.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Mapping, MutableMapping, Tuple

from ecgd import durable
from ecgd.errors import TamperedError
from ecgd.report_store import REPORT_MAX_BYTES, is_report_file_name, report_id_of
from ecgd.security.keys import EnrolledAppliance
from ecgd.security.origin import verify_origin

ROUTE_PREFIX = "/reports/"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ReportInbox:
    """The station's folder of received reports, one subfolder per enrolled appliance."""

    def __init__(self, folder: Path, enrolled: Mapping[str, EnrolledAppliance], log: Any) -> None:
        self.folder = Path(folder)
        self.enrolled = enrolled
        self.log = log

    def remove_stale_temporaries(self) -> None:
        """Delete the hidden temporaries a killed receiver left in the appliances' folders.

        Call at start, before listening: such a file is an unfinished copy of a report the
        appliance was never told was stored, so it sends that report again.
        """
        for appliance in self.enrolled.values():
            folder = self.folder / appliance.name
            if folder.is_dir():
                removed = durable.remove_stale_temporaries(folder)
                if removed:
                    self.log.info("stale_temporaries_removed", appliance=appliance.name,
                                  count=removed)

    def store(self, name: str, sealed: bytes) -> Tuple[int, Dict[str, str]]:
        """Check and durably store one report; (HTTP status, JSON answer)."""
        report_id = report_id_of(name)
        try:
            origin = verify_origin(sealed, self.enrolled)
        except TamperedError as exc:
            self.log.warning("report_refused", report_id=report_id, reason=str(exc))
            return 422, {"error": str(exc)}
        if origin.report_id != report_id:
            reason = "the signed report id is not the one in the request"
            self.log.warning("report_refused", report_id=report_id, reason=reason)
            return 422, {"error": reason}
        answer = {"report_id": report_id, "appliance": origin.appliance.name,
                  "sha256": hashlib.sha256(sealed).hexdigest()}
        folder = self.folder / origin.appliance.name
        try:
            durable.ensure_private_dir(folder)
            durable.write_durable(folder, name, sealed, replace=False)
        except FileExistsError:
            self.log.info("report_received", status="already-stored", **answer)
            return 200, {**answer, "status": "already-stored"}
        except OSError as exc:
            self.log.error("report_not_stored", report_id=report_id,
                           reason=exc.strerror or str(exc))
            status = 507 if exc.errno in _DISK_FULL else 500
            return status, {"error": f"cannot store: {exc.strerror or exc}"}
        self.log.info("report_received", status="stored", **answer)
        return 201, {**answer, "status": "stored"}


class ReceiverApp:
    """The ASGI application: one route, ``PUT /reports/<report id>.ecgr``."""

    def __init__(self, inbox: ReportInbox) -> None:
        self.inbox = inbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        name = path[len(ROUTE_PREFIX):] if path.startswith(ROUTE_PREFIX) else ""
        if not is_report_file_name(name):
            await _answer(send, 404, {"error": "not a report path: PUT /reports/<id>.ecgr"})
            return
        if scope["method"] != "PUT":
            await _answer(send, 405, {"error": "only PUT"})
            return
        body = await _read_body(receive, REPORT_MAX_BYTES)
        if body is None:
            await _answer(send, 413, {"error": f"larger than {REPORT_MAX_BYTES} bytes"})
            return
        status, answer = await asyncio.get_running_loop().run_in_executor(
            None, self.inbox.store, name, body)
        await _answer(send, status, answer)


async def _read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The request body, or None once it grows past ``max_bytes`` (the rest is not kept)."""
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, status: int, answer: Mapping[str, str]) -> None:
    body = json.dumps(answer).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii"))]})
    await send({"type": "http.response.body", "body": body})
