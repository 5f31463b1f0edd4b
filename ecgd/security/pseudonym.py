"""Pseudonyms: patient identifiers replaced by a keyed hash before anything leaves memory.

Input file names may hold identifiers too: logs and batch tables show ``hash_name`` of a
name instead, and ``redact_names`` replaces names inside an error reason by that hash.

``pseudonymize`` is HMAC-SHA256 under a site secret, so the same patient gets the same
pseudonym on this appliance (reports can be linked), while without the key a pseudonym
cannot be turned back into an identifier by hashing a list of candidate IDs.

Key file format (exact; anything else is refused): hex digits only, lowercase or uppercase,
at least 64 of them (32 bytes) and an even number, optionally followed by one newline.
``ecgd keygen`` writes 64 lowercase hex digits and a newline.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from pathlib import Path
from typing import Optional, Sequence

from ecgd.config import PrivacyConfig
from ecgd.errors import ConfigError
from ecgd.security.keys import credential_or_file, read_key_file

PSEUDONYM_KEY_MIN_BYTES = 32
NAME_HASH_HEX = 12
# A key file is one short line; a bigger file is a mistake and is not read whole.
_HEX_LINE = re.compile(rb"([0-9a-fA-F]+)\n?")


def pseudonymize(identifier: str, key: bytes) -> str:
    """The pseudonym of ``identifier``: lowercase hex HMAC-SHA256(key, identifier as UTF-8).

    The identifier is hashed exactly as given; callers decide normalisation (e.g. stripping).
    """
    if len(key) < PSEUDONYM_KEY_MIN_BYTES:
        raise ValueError(f"pseudonym key must be at least {PSEUDONYM_KEY_MIN_BYTES} bytes")
    return hmac.new(key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_pseudonym_key(content: bytes, source: str) -> bytes:
    """Decode the text of a pseudonym key file; ConfigError naming ``source`` if malformed."""
    match = _HEX_LINE.fullmatch(content)
    if match is None:
        raise ConfigError(
            f"{source}: pseudonym key must be one line of hex digits "
            f"(at least {2 * PSEUDONYM_KEY_MIN_BYTES})"
        )
    digits = match.group(1)
    if len(digits) % 2:
        raise ConfigError(f"{source}: pseudonym key has an odd number of hex digits")
    key = binascii.unhexlify(digits)
    if len(key) < PSEUDONYM_KEY_MIN_BYTES:
        raise ConfigError(
            f"{source}: pseudonym key is {len(key)} bytes, needs at least "
            f"{PSEUDONYM_KEY_MIN_BYTES}"
        )
    return key


def pseudonym_key_path(config: PrivacyConfig) -> Path:
    """Where the key is read from: the systemd credential if present, else the key file."""
    return credential_or_file(config.pseudonym_credential, config.pseudonym_key_file)


def load_pseudonym_key(config: PrivacyConfig) -> bytes:
    """Read the pseudonym key (systemd ``LoadCredential=`` first, then the key file).

    ConfigError naming the file if it is missing, unreadable, short or malformed.
    """
    path = pseudonym_key_path(config)
    return parse_pseudonym_key(read_key_file(path, "pseudonym key"), str(path))


def hash_name(name: str, key: Optional[bytes] = None) -> str:
    """Short hex digest of an input name: what logs show instead of the name.

    Plain sha256 when ``key`` is None; HMAC-SHA256 with ``key`` otherwise, so that short,
    guessable identifiers in names cannot be recovered from the logs by brute force.
    """
    raw = name.encode("utf-8", "surrogateescape")
    if key is None:
        digest = hashlib.sha256(raw).hexdigest()
    else:
        digest = hmac.new(key, raw, hashlib.sha256).hexdigest()
    return digest[:NAME_HASH_HEX]


def redact_names(reason: str, names: Sequence[str], name_hash: str) -> str:
    """``reason`` with every input name (longest first) replaced by ``<name_hash>``.

    A name is replaced where it stands as a name: at the start of the reason (every ecgd
    reason begins with the input's name or path), as a path component (after ``/``), in
    quotes, and, when it has an extension, wherever it is a whole token. A bare word that
    is also an input's name ("1" of ``1.hea``, a file called ``empty``) stays ordinary text
    elsewhere, so "exit code 1" and "is empty" keep their meaning.
    """
    for name in sorted(set(names), key=len, reverse=True):
        if not name:
            continue
        where = r"(?<![\w.-])" if "." in name else r"(?:^|(?<=[/'\"`]))"
        pattern = where + re.escape(name) + r"(?![\w-])(?!\.\w)"
        reason = re.sub(pattern, lambda _: f"<{name_hash}>", reason)
    return reason
