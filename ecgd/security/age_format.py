"""The age file format (age-encryption.org/v1, c2sp.org/age) with X25519 recipients.

ecgd writes age files itself, from ``cryptography``'s primitives, for one reason: the
appliance's signature has to sit in the header, as one more stanza before the header MAC,
and a binding that only exposes ``encrypt()`` (pyrage) cannot put it there. The result is
still a plain age file: age readers must ignore stanza types they do not know (age and rage
add random "grease" stanzas to every file to keep readers honest), so ``age --decrypt``,
rage and pyrage open it. The reading station decrypts through pyrage; the tests check this
writer against pyrage, the ``age`` tool and a known-answer vector.

A file, as written here::

    age-encryption.org/v1
    -> X25519 <base64 ephemeral share>            one stanza per recipient
    <base64 ChaCha20-Poly1305(wrap key, file key)>
    -> <extra stanza, e.g. the appliance signature>
    <base64 body>
    --- <base64 HMAC-SHA-256(HKDF(file key, "header"), header up to and including "---")>
    <16-byte nonce><payload: ChaCha20-Poly1305 STREAM of 64 KiB chunks>

    wrap key    = HKDF-SHA-256(X25519(ephemeral, recipient), salt = share || recipient,
                               info = "age-encryption.org/v1/X25519")
    payload key = HKDF-SHA-256(file key, salt = nonce, info = "payload")
    chunk nonce = 11-byte big-endian chunk counter || 0x01 for the last chunk, else 0x00

Base64 is standard, unpadded and canonical; stanza bodies wrap at 64 columns and end with a
line shorter than 64 (possibly empty). ``parse_header`` reads exactly this grammar, strictly,
so that what ecgd checks in a header is what pyrage reads.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import secrets
from typing import Callable, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ecgd.errors import SealError, TamperedError
from ecgd.security.keys import raw_public_bytes

VERSION_LINE = b"age-encryption.org/v1\n"
MAC_MARK = b"---"
FILE_KEY_BYTES = 16
PAYLOAD_NONCE_BYTES = 16
CHUNK_BYTES = 64 * 1024
TAG_BYTES = 16
X25519_STANZA_TYPE = "X25519"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_BODY_COLUMNS = 64
_MAC_TEXT_CHARS = 43
# A header with more stanzas than this is not one ecgd wrote (it writes recipients + 1).
_MAX_STANZAS = 64
_ZERO_NONCE = bytes(12)

# Called with (header so far, payload) when both are known; returns a last stanza.
ExtraStanza = Callable[[bytes, bytes], "Stanza"]


@dataclasses.dataclass(frozen=True)
class Stanza:
    """One header stanza: its arguments (the first is its type) and its decoded body."""

    args: Tuple[str, ...]
    body: bytes

    def arg_line(self) -> bytes:
        """The stanza's first line, ``-> ARG ARG...`` and a line feed."""
        return ("-> " + " ".join(self.args) + "\n").encode("ascii")

    def encode(self) -> bytes:
        """The stanza as header text: its argument line, then its body wrapped at 64."""
        text = b64encode(self.body)
        lines = [text[i: i + _BODY_COLUMNS] for i in range(0, len(text), _BODY_COLUMNS)]
        if not lines or len(lines[-1]) == _BODY_COLUMNS:
            lines.append(b"")
        return self.arg_line() + b"".join(line + b"\n" for line in lines)


@dataclasses.dataclass(frozen=True)
class ParsedStanza:
    """A stanza read from a file, with where it starts (its offset in the file)."""

    stanza: Stanza
    offset: int


@dataclasses.dataclass(frozen=True)
class AgeHeader:
    """A parsed, not yet authenticated, header; the payload starts at ``payload_offset``."""

    stanzas: Tuple[ParsedStanza, ...]
    mac: bytes
    mac_offset: int
    payload_offset: int


def b64encode(data: bytes) -> bytes:
    """Standard base64 without padding, as age writes it."""
    return base64.b64encode(data).rstrip(b"=")


def b64decode_canonical(text: bytes) -> bytes:
    """Decode unpadded base64, refusing padding and non-canonical encodings (ValueError)."""
    if text.endswith(b"="):
        raise ValueError("padded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("invalid base64") from exc
    if b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def x25519_stanza(file_key: bytes, recipient: X25519PublicKey,
                  ephemeral: X25519PrivateKey) -> Stanza:
    """The X25519 recipient stanza wrapping ``file_key`` to ``recipient``."""
    share = raw_public_bytes(ephemeral.public_key())
    try:
        shared_secret = ephemeral.exchange(recipient)
    except ValueError as exc:  # a low-order key (keys.py refuses them when loading)
        raise SealError("recipient key agreement failed (low-order X25519 key)") from exc
    wrap_key = _hkdf(shared_secret, share + raw_public_bytes(recipient), _X25519_INFO)
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza((X25519_STANZA_TYPE, b64encode(share).decode("ascii")), body)


def encrypt_payload(file_key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """The payload: ``nonce`` then the plaintext in STREAM chunks under the payload key."""
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    starts = range(0, max(len(plaintext), 1), CHUNK_BYTES)
    chunks = [nonce]
    for counter, start in enumerate(starts):
        last = start + CHUNK_BYTES >= len(plaintext)
        chunk_nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        chunks.append(aead.encrypt(chunk_nonce, plaintext[start: start + CHUNK_BYTES], None))
    return b"".join(chunks)


def header_mac(file_key: bytes, header_through_mark: bytes) -> bytes:
    """HMAC-SHA-256 of the header up to and including ``---``, keyed from the file key."""
    return hmac.new(_hkdf(file_key, b"", b"header"), header_through_mark,
                    hashlib.sha256).digest()


def encrypt(plaintext: bytes, recipients: Sequence[X25519PublicKey],
            extra_stanza: Optional[ExtraStanza] = None, *,
            file_key: Optional[bytes] = None, payload_nonce: Optional[bytes] = None,
            ephemerals: Optional[Sequence[X25519PrivateKey]] = None) -> bytes:
    """An age file of ``plaintext`` that each recipient's identity alone opens.

    ``extra_stanza`` (if given) is called with the header so far (version line and
    recipient stanzas) and the finished payload, and its stanza is written last, under the
    header MAC. ``file_key``, ``payload_nonce`` and ``ephemerals`` are fresh random values
    unless given: only a known-answer test fixes them.
    """
    if not recipients:
        raise SealError("cannot seal to 0 recipients")
    file_key = secrets.token_bytes(FILE_KEY_BYTES) if file_key is None else file_key
    nonce = secrets.token_bytes(PAYLOAD_NONCE_BYTES) if payload_nonce is None else payload_nonce
    keys = ([X25519PrivateKey.generate() for _ in recipients] if ephemerals is None
            else list(ephemerals))
    header = VERSION_LINE + b"".join(x25519_stanza(file_key, recipient, ephemeral).encode()
                                     for recipient, ephemeral in zip(recipients, keys))
    payload = encrypt_payload(file_key, nonce, plaintext)
    if extra_stanza is not None:
        header += extra_stanza(header, payload).encode()
    header += MAC_MARK
    mac = header_mac(file_key, header)
    return header + b" " + b64encode(mac) + b"\n" + payload


def _line_at(data: bytes, offset: int) -> Tuple[bytes, int]:
    """The line starting at ``offset`` (without its line feed) and where the next starts."""
    end = data.find(b"\n", offset)
    if end < 0:
        raise TamperedError("truncated: the age header does not end")
    return data[offset:end], end + 1


def _parse_stanza(data: bytes, offset: int) -> Tuple[Stanza, int]:
    line, position = _line_at(data, offset)
    args = line[3:].split(b" ")
    if not all(arg and all(0x21 <= byte <= 0x7E for byte in arg) for arg in args):
        raise TamperedError("not an age file (malformed stanza arguments)")
    body_lines: List[bytes] = []
    while True:
        body_line, position = _line_at(data, position)
        if len(body_line) > _BODY_COLUMNS:
            raise TamperedError("not an age file (stanza body line longer than 64)")
        body_lines.append(body_line)
        if len(body_line) < _BODY_COLUMNS:
            break
    try:
        body = b64decode_canonical(b"".join(body_lines))
    except ValueError as exc:
        raise TamperedError(f"not an age file (stanza body: {exc})") from exc
    return Stanza(tuple(arg.decode("ascii") for arg in args), body), position


def parse_header(data: bytes) -> AgeHeader:
    """Parse an age v1 header exactly as the format defines it; TamperedError if it is not.

    Parsing authenticates nothing: the header MAC needs the file key (pyrage checks it).
    """
    if not data.startswith(VERSION_LINE):
        raise TamperedError("not an age file (no age-encryption.org/v1 version line)")
    stanzas: List[ParsedStanza] = []
    position = len(VERSION_LINE)
    while data.startswith(b"-> ", position):
        if len(stanzas) == _MAX_STANZAS:
            raise TamperedError(f"not an ecgd report (more than {_MAX_STANZAS} stanzas)")
        stanza, next_position = _parse_stanza(data, position)
        stanzas.append(ParsedStanza(stanza, position))
        position = next_position
    if not stanzas:
        raise TamperedError("not an age file (no recipient stanza)")
    mac_offset = position
    line, payload_offset = _line_at(data, position)
    mac_text = line[len(MAC_MARK) + 1:]
    if not line.startswith(MAC_MARK + b" ") or len(mac_text) != _MAC_TEXT_CHARS:
        raise TamperedError("not an age file (malformed header MAC line)")
    try:
        mac = b64decode_canonical(mac_text)
    except ValueError as exc:
        raise TamperedError(f"not an age file (header MAC: {exc})") from exc
    return AgeHeader(tuple(stanzas), mac, mac_offset, payload_offset)
