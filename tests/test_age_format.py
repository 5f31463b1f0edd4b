"""ecgd's age writer against independent decoders (pyrage, the age tool) and a known answer."""
from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import List

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ecgd.errors import SealError, TamperedError
from ecgd.security import age_format
from ecgd.security.age_format import Stanza, encrypt, parse_header
from ecgd.security.keys import (
    SigningKey,
    generate_keys,
    key_id_of,
    load_identity,
    load_recipient,
    load_recipients,
)
from ecgd.security.origin import signature_stanza
from seal_helpers import SPEC_IDENTITY, SPEC_RECIPIENT, age_decrypt, age_tool


# ecgd's seal of b'{"report_id":"x"}' to the age specification's example recipient, signed by
# the Ed25519 key whose seed is bytes 0..31, with file key bytes 0..15, payload nonce bytes
# 16..31 and ephemeral secret bytes 32..63. `age --decrypt` with the specification's
# identity opens these exact bytes (the test below checks that it still does).
KNOWN_ANSWER = base64.b64decode(
    "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBOWUJ5MWpaWWdOR3U2akthMzVFaE9EaFI3U0dpamp0MTZX"
    "WFEwczBXWWxRCmdLTHdwVjIxRW1LZlppajF4cGpFNUpuMWhHbklxS3k2TGh5VjVneTY0YU0KLT4gZWNnZC5pbnZh"
    "bGlkL2VkMjU1MTkgNTY0NzVhYTc1NDYzNDc0YyAwMDAwMDAwMC0wMDAwLTUwMDAtODAwMC0wMDAwMDAwMDAwMDAK"
    "ZitOZ2FabGNDSEFiUVdsYi83Vk1rNXBIZGhHNzdaeCtNVlhPV2I0Z0lyR1NObmdnODJSb0ZRQ3A5RUVqL3pXYgpK"
    "djdCYUNGTUw3UXFEVlExcDB5eEJ3Ci0tLSBrTlVwc3RNWkFUYW0zdU1lakFWRy8rRUc1TjV3dzJ5elZHdmhXZy9t"
    "MS9FChAREhMUFRYXGBkaGxwdHh/+m027QrFnhMP/fg1Oh0lO46vnZVFUn1G0UZgAP0kAJNI=")


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory):
    """Two station key pairs made by generate_keys."""
    base = tmp_path_factory.mktemp("age-keys")
    return [generate_keys(base / "a", "a"), generate_keys(base / "b", "b")]


def _publics(station) -> List[X25519PublicKey]:
    return [recipient.public_key for recipient in
            load_recipients([keys["public"] for keys in station])]


def _pyrage_identity(path: Path):
    return pyrage.x25519.Identity.from_str(load_identity(path).secret)


def _extra(header: bytes, payload: bytes) -> Stanza:
    return Stanza(("example.invalid/extra", "arg"), b"extra body" * 7)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 5])
def test_pyrage_opens_every_chunk_layout(station, size: int) -> None:
    """Plaintexts around the 64 KiB chunk boundaries decrypt byte-exactly with pyrage."""
    plaintext = bytes(index % 251 for index in range(size))
    sealed = encrypt(plaintext, _publics(station), _extra)
    for keys in station:
        assert pyrage.decrypt(sealed, [_pyrage_identity(keys["private"])]) == plaintext


def test_age_tool_opens_a_file_with_an_extra_stanza(station, tmp_path: Path) -> None:
    """`age --decrypt` ignores ecgd's extra stanza and returns the exact plaintext."""
    plaintext = b'{"qt_ms": 412}' * 5000
    sealed = tmp_path / "r.age"
    sealed.write_bytes(encrypt(plaintext, _publics(station), _extra))
    assert age_decrypt(sealed, station[1]["private"]) == plaintext


def test_known_answer_vector(tmp_path: Path) -> None:
    """Fixed keys, file key and nonces give exactly the pinned bytes, which age opens.

    Dropping or changing any authenticated input of the construction (an HKDF salt or info,
    the header MAC's coverage, the chunk nonce, the signed message) changes these bytes.
    """
    recipient_file = tmp_path / "spec.pub"
    recipient_file.write_text(SPEC_RECIPIENT + "\n")
    signer = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    sealed = encrypt(
        b'{"report_id":"x"}', [load_recipient(recipient_file).public_key],
        functools.partial(signature_stanza, SigningKey(key_id_of(signer.public_key()), signer),
                          "00000000-0000-5000-8000-000000000000"),
        file_key=bytes(range(16)), payload_nonce=bytes(range(16, 32)),
        ephemerals=[X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))])
    assert sealed == KNOWN_ANSWER
    identity = tmp_path / "spec.key"
    identity.write_text(SPEC_IDENTITY + "\n")
    pinned = tmp_path / "known.age"
    pinned.write_bytes(KNOWN_ANSWER)
    assert age_decrypt(pinned, identity) == b'{"report_id":"x"}'


def test_header_mac_covers_the_extra_stanza(station, tmp_path: Path) -> None:
    """Changing one character of the extra stanza makes both age and pyrage refuse the file."""
    sealed = encrypt(b"report", _publics(station), _extra)
    changed = sealed.replace(b"example.invalid/extra arg", b"example.invalid/extra arh")
    assert changed != sealed
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(changed, [_pyrage_identity(station[0]["private"])])
    path = tmp_path / "changed.age"
    path.write_bytes(changed)
    assert age_tool("age", "--decrypt", "-i", str(station[0]["private"]), str(path)).returncode != 0


def test_encryption_is_randomized(station) -> None:
    """Two seals of the same plaintext share no stanza and no payload bytes."""
    first, second = (encrypt(b"same", _publics(station)) for _ in range(2))
    assert first != second
    assert parse_header(first).stanzas[0] != parse_header(second).stanzas[0]


def test_low_order_recipient_is_seal_error() -> None:
    """A recipient key that makes X25519 all-zero is a SealError, not a file nobody opens."""
    with pytest.raises(SealError, match="low-order"):
        encrypt(b"{}", [X25519PublicKey.from_public_bytes(bytes(32))])


def test_no_recipient_is_seal_error() -> None:
    """Sealing to nobody is refused."""
    with pytest.raises(SealError, match="0 recipients"):
        encrypt(b"{}", [])


def test_parse_header_reads_what_was_written(station) -> None:
    """The parsed header has the recipient stanzas, the extra stanza and the payload offset."""
    sealed = encrypt(b"x", _publics(station), _extra)
    header = parse_header(sealed)
    assert [parsed.stanza.args[0] for parsed in header.stanzas] == [
        "X25519", "X25519", "example.invalid/extra"]
    assert header.stanzas[2].stanza.body == b"extra body" * 7
    assert sealed[header.mac_offset:].startswith(b"--- ")
    assert len(sealed) - header.payload_offset == 16 + 1 + 16


@pytest.mark.parametrize("damage, reason", [
    (lambda s: s.replace(b"age-encryption.org/v1", b"age-encryption.org/v2"), "version line"),
    (lambda s: s.replace(b"-> X25519 ", b"-> X25519  "), "stanza arguments"),
    (lambda s: s.replace(b"--- ", b"---"), "MAC line"),
    (lambda s: s[: s.index(b"--- ")], "does not end"),
    (lambda s: s.replace(b"\n---", b"=\n---", 1), "stanza body"),
    (lambda s: b"", "version line"),
])
def test_parse_header_refuses_malformed_headers(station, damage, reason: str) -> None:
    """Non-canonical or broken header text is refused, naming what is wrong."""
    sealed = encrypt(b"x", _publics(station)[:1], _extra)
    with pytest.raises(TamperedError, match=reason):
        parse_header(damage(sealed))


def test_non_canonical_base64_is_refused() -> None:
    """Base64 with padding or with non-zero trailing bits is not age's canonical encoding."""
    assert age_format.b64decode_canonical(b"AAE") == b"\x00\x01"
    for text in (b"AAE=", b"AAF", b"A A"):
        with pytest.raises(ValueError):
            age_format.b64decode_canonical(text)
