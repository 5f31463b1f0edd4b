"""Key material: X25519 recipient key pairs and the pseudonym key, as small text files.

The appliance holds only recipients' *public* keys, so it cannot read its own output; the
private key lives at the reading station. Both halves are one line of text:

    ecgd-x25519-public-v1 <base64 of the 32-byte raw X25519 public key>
    ecgd-x25519-private-v1 <base64 of the 32-byte raw X25519 private key>

A key's id is the first 8 bytes of SHA-256 over its 32 raw public bytes, as 16 lowercase hex
digits; sealed containers name their recipients by it. The pseudonym key is 32 random bytes
written as 64 lowercase hex digits and a newline (read by ``ecgd.security.pseudonym``).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
import secrets
from pathlib import Path
from typing import Dict, List, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ecgd import durable
from ecgd.bounded_read import FileTooLargeError, read_bounded
from ecgd.errors import ConfigError

PUBLIC_KEY_TAG = "ecgd-x25519-public-v1"
PRIVATE_KEY_TAG = "ecgd-x25519-private-v1"
_KEY_KINDS = {PUBLIC_KEY_TAG: "public", PRIVATE_KEY_TAG: "private"}
KEY_ID_BYTES = 8
RAW_KEY_BYTES = 32
PSEUDONYM_KEY_FILE_NAME = "pseudonym.key"
PSEUDONYM_KEY_BYTES = 32

# Key files are a few dozen bytes; anything large is not a key and is not read whole.
_KEY_FILE_MAX_BYTES = 4096
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclasses.dataclass(frozen=True)
class RecipientKey:
    """A public key that reports are sealed to; ``key_id`` is its 16-hex-digit fingerprint."""

    key_id: str
    public_key: X25519PublicKey
    path: Path

    def raw_bytes(self) -> bytes:
        """The 32 raw public key bytes."""
        return raw_public_bytes(self.public_key)


def raw_public_bytes(public_key: X25519PublicKey) -> bytes:
    """The 32 raw bytes of an X25519 public key."""
    # public_bytes_raw (cryptography >= 40), not public_bytes(Encoding.Raw, ...): the
    # serialization module it needs takes longer to import than the rest of `decrypt`.
    return public_key.public_bytes_raw()


def key_id_bytes(public_key: X25519PublicKey) -> bytes:
    """The 8-byte fingerprint of a public key: SHA-256 over its raw bytes, truncated."""
    return hashlib.sha256(raw_public_bytes(public_key)).digest()[:KEY_ID_BYTES]


def key_id_of(public_key: X25519PublicKey) -> str:
    """The fingerprint of a public key as 16 lowercase hex digits."""
    return key_id_bytes(public_key).hex()


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


def _read_key_line(path: Path, tag: str) -> bytes:
    """Read ``<tag> <base64>`` from ``path``; return the 32 decoded bytes or raise ConfigError."""
    content = read_key_file(path)
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not an ecgd key file (not ASCII text)") from exc
    if text.endswith("\n"):
        text = text[:-1]
    parts = text.split(" ")
    if len(parts) == 2 and "\n" not in text and parts[0] in _KEY_KINDS and parts[0] != tag:
        raise ConfigError(f"{path}: is a {_KEY_KINDS[parts[0]]} key; a {_KEY_KINDS[tag]} key "
                          f"is needed here")
    if len(parts) != 2 or "\n" in text or parts[0] != tag:
        raise ConfigError(f"{path}: not an ecgd key file (expected one line '{tag} <base64>')")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{path}: key is not valid base64") from exc
    if len(raw) != RAW_KEY_BYTES:
        raise ConfigError(f"{path}: key has {len(raw)} bytes, expected {RAW_KEY_BYTES}")
    return raw


def load_recipient(path: Path) -> RecipientKey:
    """Load one recipient public key file; ConfigError naming the file if it is not one."""
    raw = _read_key_line(Path(path), PUBLIC_KEY_TAG)
    public_key = X25519PublicKey.from_public_bytes(raw)
    try:
        # a low-order point makes every agreement all-zero, which seal() cannot use
        X25519PrivateKey.generate().exchange(public_key)
    except ValueError as exc:
        raise ConfigError(f"{path}: key is a low-order X25519 point, not a usable "
                          f"public key") from exc
    return RecipientKey(key_id=key_id_of(public_key), public_key=public_key, path=Path(path))


def load_recipients(paths: Sequence[Path]) -> List[RecipientKey]:
    """Load every recipient public key; ConfigError naming every missing, bad or repeated
    key (one problem per key)."""
    if not paths:
        raise ConfigError("no recipient keys configured: reports could not be read by anyone")
    recipients: List[RecipientKey] = []
    problems: List[str] = []
    seen: Dict[str, Path] = {}
    for path in paths:
        try:
            recipient = load_recipient(Path(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if recipient.key_id in seen:
            problems.append(
                f"{path}: same key as {seen[recipient.key_id]} (key id {recipient.key_id})")
            continue
        seen[recipient.key_id] = Path(path)
        recipients.append(recipient)
    if problems:
        raise ConfigError(problems=problems)
    return recipients


def load_private_key(path: Path) -> X25519PrivateKey:
    """Load a recipient private key file (reading station side); ConfigError if it is not one."""
    raw = _read_key_line(Path(path), PRIVATE_KEY_TAG)
    return X25519PrivateKey.from_private_bytes(raw)


def format_public_key(public_key: X25519PublicKey) -> bytes:
    """The text of a ``.pub`` file for ``public_key``."""
    encoded = base64.b64encode(raw_public_bytes(public_key)).decode("ascii")
    return f"{PUBLIC_KEY_TAG} {encoded}\n".encode("ascii")


def format_private_key(private_key: X25519PrivateKey) -> bytes:
    """The text of a ``.key`` file for ``private_key``."""
    raw = private_key.private_bytes_raw()
    return f"{PRIVATE_KEY_TAG} {base64.b64encode(raw).decode('ascii')}\n".encode("ascii")


def generate_keys(out_dir: Path, name: str = "reading-station") -> Dict[str, Path]:
    """Write a new recipient key pair and pseudonym key into ``out_dir``; never overwrite.

    Returns ``{"private": <name>.key (0600), "public": <name>.pub (0644),
    "pseudonym": pseudonym.key (0600)}``. ``out_dir`` is created 0700 if missing.
    ConfigError if ``name`` is unusable or any of the three files already exists.
    """
    if not _NAME_PATTERN.fullmatch(name) or name == "pseudonym":
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not 'pseudonym')"
        )
    out_dir = Path(out_dir)
    targets = {
        "private": out_dir / f"{name}.key",
        "public": out_dir / f"{name}.pub",
        "pseudonym": out_dir / PSEUDONYM_KEY_FILE_NAME,
    }
    for path in targets.values():
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: already exists, refusing to overwrite key material")
    try:
        durable.ensure_private_dir(out_dir)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot create key folder: {exc.strerror or exc}") from exc
    private_key = X25519PrivateKey.generate()
    pseudonym_text = (secrets.token_bytes(PSEUDONYM_KEY_BYTES).hex() + "\n").encode("ascii")
    contents = {
        "private": (format_private_key(private_key), 0o600),
        "public": (format_public_key(private_key.public_key()), 0o644),
        "pseudonym": (pseudonym_text, 0o600),
    }
    try:
        for role, (data, mode) in contents.items():
            durable.write_durable(out_dir, targets[role].name, data, mode=mode, replace=False)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot write keys: {exc.strerror or exc}") from exc
    return targets
