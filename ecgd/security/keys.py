"""Key files: the reading station's age keys, appliance signing keys, the pseudonym key.

The reading station's keys are standard age X25519 keys, so the `age` tool reads them too:

    NAME.pub   the recipient, one line ``age1...`` (Bech32, HRP ``age``); copied to the
               appliance, which seals reports to it
    NAME.key   the identity, as ``age-keygen`` writes it: ``# created:`` and
               ``# public key:`` comment lines, then ``AGE-SECRET-KEY-1...``; it never
               leaves the station (``age --decrypt -i NAME.key`` opens a report)

An appliance proves where a report comes from with an Ed25519 signing key made on the
appliance itself; both halves are one line of text:

    ecgd-ed25519-public-v1 <base64 of the 32-byte raw public key>    enrolled at the station
    ecgd-ed25519-private-v1 <base64 of the 32-byte raw private key>  readable by the service only

A signing key's id is the first 8 bytes of SHA-256 over its 32 raw public bytes, as 16
lowercase hex digits; signatures name their signer by it. The pseudonym key is 32 random
bytes written as 64 lowercase hex digits and a newline (read by ``ecgd.security.pseudonym``).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import bech32
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ecgd import durable
from ecgd.bounded_read import FileTooLargeError, read_bounded
from ecgd.errors import ConfigError

AGE_RECIPIENT_HRP = "age"
AGE_IDENTITY_HRP = "age-secret-key-"
SIGNING_PUBLIC_TAG = "ecgd-ed25519-public-v1"
SIGNING_PRIVATE_TAG = "ecgd-ed25519-private-v1"
KEY_ID_BYTES = 8
RAW_KEY_BYTES = 32
PSEUDONYM_KEY_FILE_NAME = "pseudonym.key"
PSEUDONYM_KEY_BYTES = 32
DEFAULT_SIGNING_KEY_NAME = "appliance-signing"

# Key files are a few dozen bytes; anything large is not a key and is not read whole.
_KEY_FILE_MAX_BYTES = 4096
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclasses.dataclass(frozen=True)
class RecipientKey:
    """A reading station's age recipient that reports are sealed to."""

    recipient: str
    public_key: X25519PublicKey
    path: Path


@dataclasses.dataclass(frozen=True)
class StationIdentity:
    """A reading station's age identity (private key) and the recipient it belongs to."""

    secret: str
    recipient: str
    path: Path


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """This appliance's Ed25519 signing key; ``key_id`` is its 16-hex-digit fingerprint."""

    key_id: str
    private_key: Ed25519PrivateKey


@dataclasses.dataclass(frozen=True)
class EnrolledAppliance:
    """An appliance the station accepts reports from: its name is the enrolled file's stem."""

    name: str
    key_id: str
    public_key: Ed25519PublicKey
    path: Path


def raw_public_bytes(public_key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an X25519 or Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private_bytes(private_key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The fingerprint of a signing key: SHA-256 over its raw bytes, first 8, as hex."""
    return hashlib.sha256(raw_public_bytes(public_key)).digest()[:KEY_ID_BYTES].hex()


def read_key_file(path: Path, what: str = "key") -> bytes:
    """The bytes of a small key file; ConfigError naming it if unreadable or not small.

    Key files are a few dozen bytes: anything over ``_KEY_FILE_MAX_BYTES`` is not read whole.
    """
    try:
        return read_bounded(path, _KEY_FILE_MAX_BYTES)
    except FileTooLargeError as exc:
        raise ConfigError(f"{path}: not an ecgd {what} file (larger than "
                          f"{_KEY_FILE_MAX_BYTES} bytes)") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc


def credential_or_file(credential: str, key_file: Path) -> Path:
    """Where a secret is read from: the systemd credential if present, else ``key_file``.

    systemd's ``LoadCredential=`` hands a root-only file to the service alone, under
    ``$CREDENTIALS_DIRECTORY``.
    """
    credentials_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        path = Path(credentials_dir) / credential
        if path.is_file():
            return path
    return key_file


def _key_lines(path: Path, what: str) -> List[str]:
    """The non-comment, non-blank lines of a small ASCII key file."""
    try:
        text = read_key_file(path, what).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not an {what} file (not ASCII text)") from exc
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def _bech32_key(text: str, hrp: str, path: Path, what: str) -> bytes:
    """The 32 bytes a Bech32 key string of ``hrp`` encodes; ConfigError if it is not one."""
    decoded_hrp, data = bech32.bech32_decode(text)
    raw = None if data is None else bech32.convertbits(data, 5, 8, False)
    if decoded_hrp != hrp or raw is None:
        raise ConfigError(f"{path}: not an {what} file (bad Bech32 string)")
    if len(raw) != RAW_KEY_BYTES:
        raise ConfigError(f"{path}: key has {len(raw)} bytes, expected {RAW_KEY_BYTES}")
    return bytes(raw)


def _bech32_encode(hrp: str, raw: bytes) -> str:
    words = bech32.convertbits(raw, 8, 5, True)
    if words is None:  # convertbits fails only on values outside 0..255, never for bytes
        raise ValueError("cannot convert key bytes to Bech32 words")
    return bech32.bech32_encode(hrp, words)


def age_recipient_string(public_key: X25519PublicKey) -> str:
    """The ``age1...`` text of an X25519 public key."""
    return _bech32_encode(AGE_RECIPIENT_HRP, raw_public_bytes(public_key))


def load_recipient(path: Path) -> RecipientKey:
    """Load one age recipient file (one ``age1...`` line); ConfigError naming it if not one.

    Low-order points are refused: every agreement with one is all-zero, so nothing sealed to
    it could be opened, and age readers must refuse such a stanza.
    """
    path = Path(path)
    lines = _key_lines(path, "age recipient")
    if len(lines) != 1 or not lines[0].startswith(AGE_RECIPIENT_HRP + "1"):
        raise ConfigError(f"{path}: not an age recipient file (expected one line 'age1...')")
    public_key = X25519PublicKey.from_public_bytes(
        _bech32_key(lines[0], AGE_RECIPIENT_HRP, path, "age recipient"))
    try:
        X25519PrivateKey.generate().exchange(public_key)
    except ValueError as exc:
        raise ConfigError(f"{path}: key is a low-order X25519 point, not a usable "
                          f"public key") from exc
    return RecipientKey(recipient=lines[0], public_key=public_key, path=path)


def load_recipients(paths: Sequence[Path]) -> List[RecipientKey]:
    """Load every recipient file; ConfigError on a missing, bad or repeated key."""
    if not paths:
        raise ConfigError("no recipient keys configured: reports could not be read by anyone")
    recipients: List[RecipientKey] = []
    seen: Dict[str, Path] = {}
    for path in paths:
        recipient = load_recipient(Path(path))
        if recipient.recipient in seen:
            raise ConfigError(f"{path}: same key as {seen[recipient.recipient]}")
        seen[recipient.recipient] = Path(path)
        recipients.append(recipient)
    return recipients


def load_identity(path: Path) -> StationIdentity:
    """Load a station's age identity file (``NAME.key``, or one ``age-keygen`` wrote)."""
    path = Path(path)
    lines = _key_lines(path, "age identity")
    prefix = AGE_IDENTITY_HRP.upper() + "1"
    if len(lines) != 1 or not lines[0].startswith(prefix):
        raise ConfigError(f"{path}: not an age identity file (expected one line "
                          f"'{prefix}...')")
    raw = _bech32_key(lines[0], AGE_IDENTITY_HRP, path, "age identity")
    public_key = X25519PrivateKey.from_private_bytes(raw).public_key()
    return StationIdentity(secret=lines[0], recipient=age_recipient_string(public_key),
                           path=path)


def format_age_identity(private_key: X25519PrivateKey, created: dt.datetime) -> bytes:
    """The text of an age identity file, in ``age-keygen``'s layout."""
    secret = _bech32_encode(AGE_IDENTITY_HRP, _raw_private_bytes(private_key)).upper()
    return (f"# created: {created.strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
            f"# public key: {age_recipient_string(private_key.public_key())}\n"
            f"{secret}\n").encode("ascii")


def _read_signing_line(path: Path, tag: str) -> bytes:
    """Read ``<tag> <base64>`` from ``path``; return the 32 decoded bytes or raise ConfigError."""
    lines = _key_lines(path, "ecgd signing key")
    parts = lines[0].split(" ") if len(lines) == 1 else []
    if len(parts) != 2 or parts[0] != tag:
        raise ConfigError(f"{path}: not an ecgd signing key file (expected one line "
                          f"'{tag} <base64>')")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{path}: key is not valid base64") from exc
    if len(raw) != RAW_KEY_BYTES:
        raise ConfigError(f"{path}: key has {len(raw)} bytes, expected {RAW_KEY_BYTES}")
    return raw


def load_signing_key(path: Path) -> SigningKey:
    """Load this appliance's Ed25519 signing key; ConfigError naming the file if not one."""
    private_key = Ed25519PrivateKey.from_private_bytes(
        _read_signing_line(Path(path), SIGNING_PRIVATE_TAG))
    return SigningKey(key_id=key_id_of(private_key.public_key()), private_key=private_key)


def load_enrolled_appliance(path: Path) -> EnrolledAppliance:
    """Load one enrolled appliance's public signing key (``NAME.pub``)."""
    path = Path(path)
    public_key = Ed25519PublicKey.from_public_bytes(_read_signing_line(path, SIGNING_PUBLIC_TAG))
    return EnrolledAppliance(name=path.stem, key_id=key_id_of(public_key),
                             public_key=public_key, path=path)


def load_enrolled_appliances(folder: Path) -> Dict[str, EnrolledAppliance]:
    """Every appliance enrolled in ``folder`` (one ``NAME.pub`` each), by key id.

    ConfigError when the folder cannot be read, holds no ``.pub`` file, or holds a bad or
    repeated key: a station that trusts nobody, or trusts by accident, must not start.
    """
    folder = Path(folder)
    try:
        paths = sorted(path for path in folder.iterdir() if path.name.endswith(".pub"))
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot read enrolled appliances: "
                          f"{exc.strerror or exc}") from exc
    if not paths:
        raise ConfigError(f"{folder}: no enrolled appliance (NAME.pub signing keys)")
    enrolled: Dict[str, EnrolledAppliance] = {}
    for path in paths:
        appliance = load_enrolled_appliance(path)
        if appliance.key_id in enrolled:
            raise ConfigError(f"{path}: same key as {enrolled[appliance.key_id].path} "
                              f"(key id {appliance.key_id})")
        enrolled[appliance.key_id] = appliance
    return enrolled


def _check_key_name(name: str) -> None:
    if not _NAME_PATTERN.fullmatch(name) or name == "pseudonym":
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'pseudonym')"
        )


def _write_new_files(out_dir: Path, contents: Dict[str, tuple[Path, bytes, int]]) -> None:
    """Write each (path, bytes, mode) durably into ``out_dir``; never overwrite anything."""
    for path, _, _ in contents.values():
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: already exists, refusing to overwrite key material")
    try:
        durable.ensure_private_dir(out_dir)
        for path, data, mode in contents.values():
            durable.write_durable(out_dir, path.name, data, mode=mode, replace=False)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot write keys: {exc.strerror or exc}") from exc


def generate_keys(out_dir: Path, name: str = "reading-station",
                  created: Optional[dt.datetime] = None) -> Dict[str, Path]:
    """Write a reading station's age key pair and a pseudonym key; never overwrite.

    Returns ``{"private": <name>.key (age identity, 0600), "public": <name>.pub (age
    recipient, 0644), "pseudonym": pseudonym.key (0600)}``. ``out_dir`` is created 0700 if
    missing. ConfigError if ``name`` is unusable or any of the three files already exists.
    """
    _check_key_name(name)
    out_dir = Path(out_dir)
    private_key = X25519PrivateKey.generate()
    created = created or dt.datetime.now(dt.timezone.utc)
    contents = {
        "private": (out_dir / f"{name}.key", format_age_identity(private_key, created), 0o600),
        "public": (out_dir / f"{name}.pub",
                   (age_recipient_string(private_key.public_key()) + "\n").encode("ascii"),
                   0o644),
        "pseudonym": (out_dir / PSEUDONYM_KEY_FILE_NAME,
                      (secrets.token_bytes(PSEUDONYM_KEY_BYTES).hex() + "\n").encode("ascii"),
                      0o600),
    }
    _write_new_files(out_dir, contents)
    return {role: path for role, (path, _, _) in contents.items()}


def generate_signing_key(out_dir: Path, name: str = DEFAULT_SIGNING_KEY_NAME) -> Dict[str, Path]:
    """Write an appliance's Ed25519 signing key pair; never overwrite.

    Returns ``{"private": <name>.key (0600), "public": <name>.pub (0644, to enrol at the
    station)}``; ``out_dir`` is created 0700 if missing.
    """
    _check_key_name(name)
    out_dir = Path(out_dir)
    private_key = Ed25519PrivateKey.generate()
    public_raw = raw_public_bytes(private_key.public_key())
    contents = {
        "private": (out_dir / f"{name}.key",
                    (f"{SIGNING_PRIVATE_TAG} "
                     f"{base64.b64encode(_raw_private_bytes(private_key)).decode('ascii')}\n"
                     ).encode("ascii"), 0o600),
        "public": (out_dir / f"{name}.pub",
                   f"{SIGNING_PUBLIC_TAG} {base64.b64encode(public_raw).decode('ascii')}\n"
                   .encode("ascii"), 0o644),
    }
    _write_new_files(out_dir, contents)
    return {role: path for role, (path, _, _) in contents.items()}
