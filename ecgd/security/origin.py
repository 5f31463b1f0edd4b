"""Provable origin: the appliance's Ed25519 signature inside the sealed report's age header.

Anyone holding the station's *public* key can seal a report, so a seal alone proves
nothing about who wrote it. Each appliance therefore signs what it seals, and the station
accepts only reports signed by an appliance it enrolled. The signature is one more header
stanza, written last, just before the header MAC (age readers ignore stanza types they do
not know, so the file stays a plain age file)::

    -> ecgd.invalid/ed25519 <signer key id, 16 hex> <report id>
    <base64 Ed25519 signature, 64 bytes>

    signed message = "ecgd report signature v1" 0x00
                     || the header before this stanza (version line, recipient stanzas)
                     || this stanza's argument line
                     || the payload (nonce and every encrypted chunk)

The signature covers the ciphertext, so the station's receiving end checks it without the
private key; the header MAC (checked on decryption) covers the signature stanza, so a
signature cannot be swapped for another without the file key. The report inside names its
signer and its id again (``signer_key_id``, ``report_id``), and opening a report checks
both against the stanza: an enrolled appliance cannot pass another's report off as its own,
and a report cannot be delivered under another report's id.
"""
from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Mapping

from cryptography.exceptions import InvalidSignature

from ecgd.errors import TamperedError
from ecgd.security.age_format import AgeHeader, ParsedStanza, Stanza, parse_header
from ecgd.security.keys import EnrolledAppliance, SigningKey

SIGNATURE_STANZA_TYPE = "ecgd.invalid/ed25519"
SIGNATURE_BYTES = 64
_DOMAIN = b"ecgd report signature v1\x00"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
# ecgd 0.1's own container: unsigned, so anyone with the station's public key could write one.
_LEGACY_MAGIC = b"ECGDSEAL"


@dataclasses.dataclass(frozen=True)
class Origin:
    """Who sealed a report (an enrolled appliance) and the report id it signed."""

    appliance: EnrolledAppliance
    report_id: str

    def describe(self) -> str:
        """One line for people: the enrolled name and the key id."""
        return f"{self.appliance.name} (signing key {self.appliance.key_id})"


def _signed_message(header_before: bytes, stanza: Stanza, payload: bytes) -> bytes:
    return _DOMAIN + header_before + stanza.arg_line() + payload


def signature_stanza(signing_key: SigningKey, report_id: str, header_before: bytes,
                     payload: bytes) -> Stanza:
    """The signature stanza over a header so far and its payload (``age_format.encrypt``)."""
    unsigned = Stanza((SIGNATURE_STANZA_TYPE, signing_key.key_id, report_id), b"")
    signature = signing_key.private_key.sign(_signed_message(header_before, unsigned, payload))
    return Stanza(unsigned.args, signature)


def _signature_of(header: AgeHeader) -> ParsedStanza:
    """The one signature stanza, which must be the last; TamperedError naming the check."""
    signatures = [parsed for parsed in header.stanzas
                  if parsed.stanza.args[0] == SIGNATURE_STANZA_TYPE]
    if not signatures:
        raise TamperedError("unsigned: no appliance signature (sealed with the station's "
                            "public key alone, or by an ecgd without signing)")
    if len(signatures) > 1 or signatures[0] is not header.stanzas[-1]:
        raise TamperedError("signature check failed: the signature stanza must be the last "
                            "and only one")
    return signatures[0]


def verify_origin(sealed: bytes, enrolled: Mapping[str, EnrolledAppliance]) -> Origin:
    """Check a sealed report's signature against the enrolled appliances, without decrypting.

    TamperedError naming the failed check: not an age file, unsigned, signed by an appliance
    that is not enrolled, or a signature that does not match the file (modified, truncated
    or forged).
    """
    if sealed.startswith(_LEGACY_MAGIC):
        raise TamperedError("unsigned: an ECGDSEAL v1 report (ecgd 0.1), whose origin cannot "
                            "be proven; ecgd 0.1 still opens it, this ecgd does not")
    header = parse_header(sealed)
    parsed = _signature_of(header)
    args = parsed.stanza.args
    if (len(args) != 3 or not _KEY_ID.fullmatch(args[1])
            or len(parsed.stanza.body) != SIGNATURE_BYTES):
        raise TamperedError("signature check failed: malformed signature stanza")
    try:
        report_id = str(uuid.UUID(args[2]))
    except ValueError as exc:
        raise TamperedError("signature check failed: the signed report id is not a UUID") from exc
    if report_id != args[2]:
        raise TamperedError("signature check failed: the signed report id is not canonical")
    appliance = enrolled.get(args[1])
    if appliance is None:
        raise TamperedError(f"unknown signer: signed by key {args[1]}, which is not an "
                            f"enrolled appliance")
    message = _signed_message(sealed[:parsed.offset], parsed.stanza,
                              sealed[header.payload_offset:])
    try:
        appliance.public_key.verify(parsed.stanza.body, message)
    except InvalidSignature as exc:
        raise TamperedError(f"signature mismatch: not the file {appliance.name} signed "
                            f"(modified, truncated or forged)") from exc
    return Origin(appliance, report_id)
