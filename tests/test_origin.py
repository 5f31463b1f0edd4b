"""Provable origin: signature checks with and without the station's private key."""
from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path

import pyrage
import pytest

from ecgd.errors import TamperedError
from ecgd.security import age_format
from ecgd.security.keys import (
    generate_keys,
    generate_signing_key,
    load_enrolled_appliances,
    load_identity,
    load_recipients,
    load_signing_key,
)
from ecgd.security.origin import signature_stanza, verify_origin
from ecgd.security.seal import seal_report
from ecgd.security.unseal import open_sealed_report
from seal_helpers import sample_report


class Site:
    """A station, two enrolled appliances (ward-a, ward-b) and one stranger that is not."""

    def __init__(self, root: Path) -> None:
        self.station = generate_keys(root / "station")
        enrolled_dir = root / "enrolled"
        enrolled_dir.mkdir()
        self.signers = {}
        for name in ("ward-a", "ward-b", "stranger"):
            keys = generate_signing_key(root / name)
            self.signers[name] = load_signing_key(keys["private"])
            if name != "stranger":
                (enrolled_dir / f"{name}.pub").write_bytes(keys["public"].read_bytes())
        self.enrolled = load_enrolled_appliances(enrolled_dir)
        self.recipients = load_recipients([self.station["public"]])
        self.identity = load_identity(self.station["private"])

    def seal(self, report, signer: str = "ward-a") -> bytes:
        return seal_report(report, self.recipients, self.signers[signer])

    def open(self, sealed: bytes):
        return open_sealed_report(sealed, self.identity, self.enrolled)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return Site(tmp_path_factory.mktemp("site"))


def test_signed_report_opens_with_its_signer(site: Site) -> None:
    """A report ward-a sealed opens as itself plus signer_key_id, attributed to ward-a."""
    report = sample_report()
    opened = site.open(site.seal(report))
    assert opened.origin.appliance.name == "ward-a"
    assert opened.origin.report_id == report["report_id"]
    assert opened.report == {**report, "signer_key_id": site.signers["ward-a"].key_id}


def test_receive_side_check_needs_no_private_key(site: Site) -> None:
    """verify_origin names the signer and report id from the ciphertext alone."""
    report = sample_report()
    origin = verify_origin(site.seal(report, "ward-b"), site.enrolled)
    assert (origin.appliance.name, origin.report_id) == ("ward-b", report["report_id"])


def test_report_sealed_with_only_the_public_key_is_refused(site: Site) -> None:
    """A plain age file to the station (what a forger can make) is 'unsigned'."""
    forged = pyrage.encrypt(json.dumps(sample_report()).encode(),
                            [pyrage.x25519.Recipient.from_str(site.recipients[0].recipient)])
    for check in (lambda: verify_origin(forged, site.enrolled), lambda: site.open(forged)):
        with pytest.raises(TamperedError, match="^unsigned: no appliance signature"):
            check()


def test_report_signed_by_an_unenrolled_appliance_is_refused(site: Site) -> None:
    """A well-formed signature by a key the station never enrolled is 'unknown signer'."""
    sealed = site.seal(sample_report(), "stranger")
    with pytest.raises(TamperedError, match="^unknown signer: signed by key "
                                            + site.signers["stranger"].key_id):
        site.open(sealed)


def test_every_bit_flip_is_refused(site: Site) -> None:
    """Flipping any bit anywhere in a sealed report makes opening it fail.

    Outside the MAC line the receive-side check alone already refuses it.
    """
    sealed = site.seal({"report_id": str(uuid.uuid4()), "qt_ms": 412})
    header = age_format.parse_header(sealed)
    unnoticed, unnoticed_without_key = [], []
    for index in range(len(sealed)):
        changed = bytearray(sealed)
        changed[index] ^= 0x01 if index % 2 else 0x80
        try:
            site.open(bytes(changed))
            unnoticed.append(index)
        except TamperedError:
            pass
        if not header.mac_offset <= index < header.payload_offset:
            try:
                verify_origin(bytes(changed), site.enrolled)
                unnoticed_without_key.append(index)
            except TamperedError:
                pass
    assert unnoticed == [] and unnoticed_without_key == []


def test_every_truncation_and_extension_is_refused(site: Site) -> None:
    """Every proper prefix, and the file with a byte appended, fails to open."""
    sealed = site.seal(sample_report())
    for length in range(len(sealed)):
        with pytest.raises(TamperedError):
            site.open(sealed[:length])
    with pytest.raises(TamperedError):
        site.open(sealed + b"\x00")


def test_another_appliance_cannot_resign_a_report(site: Site) -> None:
    """ward-b swapping ward-a's signature for its own passes the ciphertext check, but the
    header MAC (which needs the file key) makes opening fail."""
    sealed = site.seal(sample_report(), "ward-a")
    header = age_format.parse_header(sealed)
    signature = header.stanzas[-1]
    before, payload = sealed[:signature.offset], sealed[header.payload_offset:]
    resigned_stanza = signature_stanza(site.signers["ward-b"], signature.stanza.args[2],
                                       before, payload)
    resigned = (before + resigned_stanza.encode()
                + sealed[header.mac_offset:header.payload_offset] + payload)
    assert verify_origin(resigned, site.enrolled).appliance.name == "ward-b"
    with pytest.raises(TamperedError, match="^decryption failed"):
        site.open(resigned)


def _sealed_claiming(site: Site, signer: str, named_signer: str, signed_report_id: str,
                     report) -> bytes:
    """``report`` naming ``named_signer`` inside, signed by ``signer`` as ``signed_report_id``."""
    plaintext = json.dumps({**report, "signer_key_id": site.signers[named_signer].key_id})
    return age_format.encrypt(
        plaintext.encode(), [site.recipients[0].public_key],
        functools.partial(signature_stanza, site.signers[signer], signed_report_id))


def test_report_naming_another_signer_inside_is_refused(site: Site) -> None:
    """ward-b sealing content that names ward-a as its signer fails the inner binding."""
    report = sample_report()
    sealed = _sealed_claiming(site, "ward-b", "ward-a", report["report_id"], report)
    with pytest.raises(TamperedError, match="^signer mismatch: signed by ward-b"):
        site.open(sealed)


def test_report_signed_under_another_id_is_refused(site: Site) -> None:
    """A signature naming one report id over content holding another is refused."""
    sealed = _sealed_claiming(site, "ward-a", "ward-a", str(uuid.uuid4()), sample_report())
    with pytest.raises(TamperedError, match="^report id mismatch"):
        site.open(sealed)


def test_signature_must_be_the_last_and_only_stanza(site: Site) -> None:
    """A second signature stanza, or one before a recipient stanza, is refused."""
    report = sample_report()
    sign = functools.partial(signature_stanza, site.signers["ward-a"], report["report_id"])
    doubled = age_format.encrypt(
        b"{}", [site.recipients[0].public_key],
        lambda header, payload: age_format.Stanza(
            sign(header, payload).args, sign(header, payload).body + b"x"))
    assert verify_origin(site.seal(report), site.enrolled)
    with pytest.raises(TamperedError, match="malformed signature stanza"):
        verify_origin(doubled, site.enrolled)
    sealed = site.seal(report)
    header = age_format.parse_header(sealed)
    signature_text = sealed[header.stanzas[-1].offset:header.mac_offset]
    twice = sealed.replace(signature_text, signature_text * 2)
    with pytest.raises(TamperedError, match="last and only one"):
        verify_origin(twice, site.enrolled)


def test_legacy_ecgdseal_container_is_refused_by_name(site: Site) -> None:
    """An ecgd 0.1 ECGDSEAL v1 file is refused as unsigned, saying what it is."""
    with pytest.raises(TamperedError, match="^unsigned: an ECGDSEAL v1 report"):
        site.open(b"ECGDSEAL\x01\x01" + bytes(200))
