"""Opening a sealed report at the reading station: verify its origin, decrypt, check it.

``open_sealed_report`` is the one way a station command reads a report (``ecgd decrypt``,
and the viewers that render or export reports): it refuses, naming the failed check, an
unsigned report, one signed by an appliance that is not enrolled, a signature that does not
match the file, a file that does not decrypt with the station's identity (modified,
truncated, extended, or not sealed to it), and a report whose content names another signer
or another id than its signature. Decryption goes through pyrage, the maintained binding of
the rage implementation of age (the ``station`` extra).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, Mapping

from ecgd.errors import ConfigError, TamperedError
from ecgd.report_store import REPORT_MAX_BYTES
from ecgd.security.keys import EnrolledAppliance, StationIdentity
from ecgd.security.origin import Origin, verify_origin
from ecgd.security.seal import SIGNER_FIELD


@dataclasses.dataclass(frozen=True)
class OpenedReport:
    """A report that passed every check, and the enrolled appliance that sealed it."""

    report: Dict[str, Any]
    origin: Origin


def read_sealed(path: Path) -> bytes:
    """The bytes of a sealed report file (OSError if unreadable; TamperedError if huge)."""
    with open(path, "rb") as handle:
        data = handle.read(REPORT_MAX_BYTES + 1)
    if len(data) > REPORT_MAX_BYTES:
        raise TamperedError(f"larger than {REPORT_MAX_BYTES} bytes, not a sealed report")
    return data


def _decrypt(sealed: bytes, identity: StationIdentity) -> bytes:
    try:
        import pyrage
        from pyrage import x25519
    except ImportError as exc:
        raise ConfigError("decrypting reports needs pyrage: pip install 'ecgd[station]'") from exc
    try:
        return bytes(pyrage.decrypt(sealed, [x25519.Identity.from_str(identity.secret)]))
    except pyrage.DecryptError as exc:
        raise TamperedError(f"decryption failed with {identity.path.name} ({exc}): not sealed "
                            f"to this station, or modified, truncated or extended") from exc


def open_sealed_report(sealed: bytes, identity: StationIdentity,
                       enrolled: Mapping[str, EnrolledAppliance]) -> OpenedReport:
    """Verify, decrypt and check one sealed report; TamperedError naming the failed check."""
    origin = verify_origin(sealed, enrolled)
    plaintext = _decrypt(sealed, identity)
    try:
        report = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TamperedError("decrypted, but the content is not a JSON report") from exc
    if not isinstance(report, dict):
        raise TamperedError("decrypted, but the content is not a JSON report")
    if report.get(SIGNER_FIELD) != origin.appliance.key_id:
        raise TamperedError(f"signer mismatch: signed by {origin.describe()}, but the report "
                            f"inside names another signer")
    if report.get("report_id") != origin.report_id:
        raise TamperedError("report id mismatch: the report inside is not the one signed")
    return OpenedReport(report, origin)
