"""Pseudonyms (keyed HMAC) and loading the pseudonym key from a file or systemd credential."""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from ecgd.config import PrivacyConfig
from ecgd.errors import ConfigError
from ecgd.security.keys import generate_keys
from ecgd.security.pseudonym import load_pseudonym_key, pseudonymize, redact_names

KEY = bytes(range(32))


def _config(key_file: Path) -> PrivacyConfig:
    return PrivacyConfig(pseudonym_key_file=key_file, pseudonym_credential="pseudonym.key")


def test_pseudonym_is_hmac_sha256_hex() -> None:
    """The pseudonym equals the standard library's HMAC-SHA256 of the UTF-8 identifier."""
    identifier = "Müller-4711"
    expected = hmac.new(KEY, identifier.encode("utf-8"), hashlib.sha256).hexdigest()
    assert pseudonymize(identifier, KEY) == expected
    assert len(expected) == 64 and expected == expected.lower()


def test_pseudonym_rfc4231_vector() -> None:
    """RFC 4231 test case 6 (131-byte key) pins HMAC-SHA256 independently of this code."""
    identifier = "Test Using Larger Than Block-Size Key - Hash Key First"
    assert pseudonymize(identifier, b"\xaa" * 131) == (
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")


def test_pseudonym_is_stable_and_key_dependent() -> None:
    """Same identifier + key -> same pseudonym; another key or identifier -> another one."""
    other_key = bytes(32)
    assert pseudonymize("P001", KEY) == pseudonymize("P001", KEY)
    assert pseudonymize("P001", KEY) != pseudonymize("P001", other_key)
    assert pseudonymize("P001", KEY) != pseudonymize("P002", KEY)
    assert "P001" not in pseudonymize("P001", KEY)


def test_pseudonymize_refuses_short_key() -> None:
    """A key under 32 bytes is a programming error, not silently weak pseudonyms."""
    with pytest.raises(ValueError):
        pseudonymize("P001", b"short")


def test_loads_key_written_by_keygen(tmp_path, monkeypatch) -> None:
    """The pseudonym.key that keygen writes loads as its 32 bytes."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = generate_keys(tmp_path, "station")["pseudonym"]
    key = load_pseudonym_key(_config(path))
    assert key == bytes.fromhex(path.read_text().strip())
    assert len(key) == 32


def test_credential_takes_precedence(tmp_path, monkeypatch) -> None:
    """With $CREDENTIALS_DIRECTORY holding the credential, it is used instead of the file."""
    file_key = tmp_path / "file.key"
    file_key.write_text("11" * 32 + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pseudonym.key").write_text("22" * 32)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_pseudonym_key(_config(file_key)) == bytes([0x22]) * 32


def test_file_used_when_credential_absent(tmp_path, monkeypatch) -> None:
    """$CREDENTIALS_DIRECTORY without that credential falls back to the configured file."""
    file_key = tmp_path / "file.key"
    file_key.write_text("AB" * 40 + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load_pseudonym_key(_config(file_key)) == bytes([0xAB]) * 40


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "one line of hex"),
        (b"ab" * 31 + b"\n", "31 bytes, needs at least 32"),
        (b"ab" * 32 + b"a\n", "odd number"),
        (b"ab" * 32 + b"\n\n", "one line of hex"),
        (b" " + b"ab" * 32, "one line of hex"),
        (b"ab" * 16 + b"zz" + b"ab" * 15, "one line of hex"),
        (b"ab" * 32 + b"\r\n", "one line of hex"),
        (b"0x" + b"ab" * 32, "one line of hex"),
    ],
)
def test_malformed_key_is_config_error(tmp_path, monkeypatch, content: bytes, reason: str) -> None:
    """Short, odd, padded or non-hex key files are refused with the file named."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "pseudonym.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason) as info:
        load_pseudonym_key(_config(path))
    assert str(path) in str(info.value)


def test_missing_key_is_config_error(tmp_path, monkeypatch) -> None:
    """A missing key file is a ConfigError naming it (exit 78, no restart loop)."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "absent.key"
    with pytest.raises(ConfigError, match="cannot read pseudonym key") as info:
        load_pseudonym_key(_config(path))
    assert info.value.exit_code == 78
    assert str(path) in str(info.value)


def test_oversized_key_file_is_config_error(tmp_path, monkeypatch) -> None:
    """A large file at the key path is refused without being read whole."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"ab" * 4096)
    with pytest.raises(ConfigError, match="larger than"):
        load_pseudonym_key(_config(path))


@pytest.mark.parametrize("reason, names, expected", [
    # The subject every ecgd reason starts with, a path component, a quoted name.
    ("1.hea: header declares no signals", ["1.hea", "1"], "<h>: header declares no signals"),
    ("/spool/.claim/JOHN_SMITH.csv: line 3: a value is empty",
     ["JOHN_SMITH.csv"], "/spool/.claim/<h>: line 3: a value is empty"),
    ("cannot open 'SMITH' for reading", ["SMITH"], "cannot open '<h>' for reading"),
    # A name with an extension is a file name wherever it stands, also at a sentence end.
    ("the header names SMITH.dat.", ["SMITH.dat"], "the header names <h>."),
    # A bare word that is also an input name stays ordinary text inside the reason.
    ("1: converter failed with exit code 1", ["1.hea", "1"], "<h>: converter failed with exit code 1"),
    ("empty: is empty", ["empty"], "<h>: is empty"),
    ("data.csv: line 2: values, header has data", ["data.csv", "data"],
     "<h>: line 2: values, header has data"),
])
def test_redact_names_replaces_names_where_they_stand_as_names(reason, names, expected) -> None:
    """Names are replaced as subject, path part, quoted or with extension; bare words elsewhere stay."""
    assert redact_names(reason, names, "h") == expected
