"""Sealed reports: hybrid public-key encryption to every recipient, and durable atomic writes.

Each report gets a fresh random 256-bit data key. The report is encrypted once with
AES-256-GCM under that key; the data key is wrapped once per recipient with a key derived
(HKDF-SHA256) from an X25519 agreement between a fresh ephemeral key and the recipient's
public key. The whole header is the AAD of the report encryption, so changing any byte of
the container (header, a recipient entry, the nonce, the ciphertext or the tag), truncating
it or appending to it makes ``unseal`` fail.

Container version 1 (all integers unsigned, big-endian; sizes in bytes)::

    offset       size  field
    0            8     magic  b"ECGDSEAL"
    8            1     version = 1
    9            1     N = number of recipient entries, 1..255
    10           100*N recipient entries, each:
                   8   key id: SHA-256(recipient raw X25519 public key)[:8]
                  32   ephemeral X25519 public key (fresh per entry)
                  12   wrap nonce (random)
                  48   wrapped data key: AES-256-GCM(KEK, wrap nonce, data key,
                       AAD = magic | version | key id) = 32-byte key + 16-byte tag
    10+100*N     12    data nonce (random)
    22+100*N     rest  AES-256-GCM(data key, data nonce, report, AAD = bytes 0..22+100*N)
                       = ciphertext (same length as the report) + 16-byte tag

    KEK = HKDF-SHA256(IKM = X25519(ephemeral private, recipient public), salt = none,
                      info = b"ecgd-seal-v1 key-wrap" | ephemeral public | recipient public,
                      length = 32)

Reports are written with ``write_durable``: a temporary file in the target directory, fsync,
rename, fsync of the directory, so a crash leaves either the whole old state or the whole
new file, never a torn one.
"""
from __future__ import annotations

import dataclasses
import secrets
import struct
from pathlib import Path
from typing import Sequence, Tuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ecgd import durable
from ecgd.errors import SealError, TamperedError
from ecgd.security.keys import KEY_ID_BYTES, RecipientKey, key_id_bytes, raw_public_bytes

MAGIC = b"ECGDSEAL"
VERSION = 1
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
EPHEMERAL_KEY_BYTES = 32
WRAPPED_KEY_BYTES = DATA_KEY_BYTES + TAG_BYTES
ENTRY_BYTES = KEY_ID_BYTES + EPHEMERAL_KEY_BYTES + NONCE_BYTES + WRAPPED_KEY_BYTES
PREFIX_BYTES = len(MAGIC) + 2
MAX_RECIPIENTS = 255
_WRAP_INFO = b"ecgd-seal-v1 key-wrap"


@dataclasses.dataclass(frozen=True)
class RecipientEntry:
    """One recipient's slot in a container: who it is for and the wrapped data key."""

    key_id: str
    ephemeral_public: bytes
    wrap_nonce: bytes
    wrapped_key: bytes


@dataclasses.dataclass(frozen=True)
class ContainerHeader:
    """The parsed (not yet authenticated) header of a sealed container."""

    version: int
    entries: Tuple[RecipientEntry, ...]
    data_nonce: bytes
    header_bytes: int

    @property
    def key_ids(self) -> Tuple[str, ...]:
        """The recipients' key ids (16 hex digits each), in container order."""
        return tuple(entry.key_id for entry in self.entries)


def _derive_kek(shared_secret: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=DATA_KEY_BYTES,
        salt=None,
        info=_WRAP_INFO + ephemeral_public + recipient_public,
    )
    return hkdf.derive(shared_secret)


def _wrap_aad(key_id: bytes) -> bytes:
    return MAGIC + bytes([VERSION]) + key_id


def seal(plaintext: bytes, recipients: Sequence[RecipientKey]) -> bytes:
    """Encrypt ``plaintext`` so that each recipient's private key alone can open it."""
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise SealError(f"cannot seal to {len(recipients)} recipients (1..{MAX_RECIPIENTS})")
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    parts = [MAGIC, struct.pack(">BB", VERSION, len(recipients))]
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = raw_public_bytes(ephemeral.public_key())
        recipient_public = raw_public_bytes(recipient.public_key)
        try:
            shared_secret = ephemeral.exchange(recipient.public_key)
        except ValueError as exc:  # a low-order key (keys.py refuses them when loading)
            raise SealError(f"recipient {recipient.key_id}: key agreement failed") from exc
        kek = _derive_kek(shared_secret, ephemeral_public, recipient_public)
        key_id = key_id_bytes(recipient.public_key)
        wrap_nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = AESGCM(kek).encrypt(wrap_nonce, data_key, _wrap_aad(key_id))
        parts.extend((key_id, ephemeral_public, wrap_nonce, wrapped))
    parts.append(secrets.token_bytes(NONCE_BYTES))
    header = b"".join(parts)
    return header + AESGCM(data_key).encrypt(parts[-1], bytes(plaintext), header)


def parse_header(container: bytes) -> ContainerHeader:
    """Parse a container's header; TamperedError if it is not a complete version-1 container.

    Parsing authenticates nothing: only ``unseal`` proves the header was not modified.
    """
    if not container or container[: len(MAGIC)] != MAGIC[: len(container)]:
        raise TamperedError("not a sealed report (it does not start with "
                            f"{MAGIC.decode('ascii')})")
    if len(container) < PREFIX_BYTES:
        raise TamperedError(f"truncated: {len(container)} bytes is shorter than the header")
    version, count = struct.unpack_from(">BB", container, len(MAGIC))
    if version != VERSION:
        raise TamperedError(f"unknown container version {version} (this ecgd reads {VERSION})")
    if count == 0:
        raise TamperedError("container names no recipients")
    header_bytes = PREFIX_BYTES + count * ENTRY_BYTES + NONCE_BYTES
    if len(container) < header_bytes + TAG_BYTES:
        raise TamperedError(
            f"truncated: {len(container)} bytes, a container for {count} recipient(s) "
            f"needs at least {header_bytes + TAG_BYTES}"
        )
    entries = []
    offset = PREFIX_BYTES
    for _ in range(count):
        fields = []
        for size in (KEY_ID_BYTES, EPHEMERAL_KEY_BYTES, NONCE_BYTES, WRAPPED_KEY_BYTES):
            fields.append(bytes(container[offset: offset + size]))
            offset += size
        entries.append(RecipientEntry(fields[0].hex(), fields[1], fields[2], fields[3]))
    data_nonce = bytes(container[offset: offset + NONCE_BYTES])
    return ContainerHeader(VERSION, tuple(entries), data_nonce, header_bytes)


def unseal(container: bytes, private_key: X25519PrivateKey) -> bytes:
    """Decrypt a container with a recipient's private key; TamperedError on any failure.

    Modification, truncation, appended bytes, an unknown version and a key the report was
    not sealed to all raise TamperedError with a one-line reason.
    """
    header = parse_header(container)
    own_public = private_key.public_key()
    own_id = key_id_bytes(own_public).hex()
    entry = next((e for e in header.entries if e.key_id == own_id), None)
    if entry is None:
        raise TamperedError(
            f"not sealed to key {own_id} (sealed to {', '.join(header.key_ids)})"
        )
    try:
        peer = X25519PublicKey.from_public_bytes(entry.ephemeral_public)
        shared_secret = private_key.exchange(peer)
    except ValueError as exc:
        # A low-order ephemeral point gives an all-zero secret, which cryptography refuses.
        raise TamperedError("recipient entry holds an invalid ephemeral key") from exc
    kek = _derive_kek(shared_secret, entry.ephemeral_public, raw_public_bytes(own_public))
    try:
        data_key = AESGCM(kek).decrypt(
            entry.wrap_nonce, entry.wrapped_key, _wrap_aad(bytes.fromhex(entry.key_id))
        )
        return AESGCM(data_key).decrypt(
            header.data_nonce,
            bytes(container[header.header_bytes:]),
            bytes(container[: header.header_bytes]),
        )
    except InvalidTag as exc:
        raise TamperedError("failed authentication (modified, truncated or extended)") from exc


def ensure_private_dir(path: Path) -> Path:
    """:func:`ecgd.durable.ensure_private_dir`, failures as SealError."""
    try:
        return durable.ensure_private_dir(path)
    except OSError as exc:
        raise SealError(f"{path}: cannot use as a private directory: "
                        f"{exc.strerror or exc}") from exc


def write_durable(directory: Path, name: str, data: bytes, mode: int = 0o600,
                  replace: bool = True) -> Path:
    """:func:`ecgd.durable.write_durable`, failures (disk full, unwritable) as SealError."""
    try:
        return durable.write_durable(directory, name, data, mode=mode, replace=replace)
    except ValueError as exc:
        raise SealError(str(exc)) from exc
    except OSError as exc:
        raise SealError(f"{Path(directory) / name}: cannot write: "
                        f"{exc.strerror or exc}") from exc
