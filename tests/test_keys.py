"""Key files: age keys the age tools share with ecgd, signing keys, enrolled appliances."""
from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Dict

import bech32
import pytest

from ecgd.errors import ConfigError
from ecgd.security.keys import (
    credential_or_file,
    generate_keys,
    generate_signing_key,
    load_enrolled_appliances,
    load_identity,
    load_recipient,
    load_recipients,
    load_signing_key,
)
from seal_helpers import SPEC_IDENTITY, SPEC_RECIPIENT, age_tool


def _modes(paths: Dict[str, Path]) -> Dict[str, int]:
    return {role: stat.S_IMODE(path.stat().st_mode) for role, path in paths.items()}


def test_station_keys_are_age_keys_with_modes(tmp_path: Path) -> None:
    """keygen writes an age identity (0600), its age1 recipient (0644) and a pseudonym key."""
    out_dir = tmp_path / "new"
    created = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    paths = generate_keys(out_dir, "ward3", created=created)
    assert {role: path.name for role, path in paths.items()} == {
        "private": "ward3.key", "public": "ward3.pub", "pseudonym": "pseudonym.key"}
    assert _modes(paths) == {"private": 0o600, "public": 0o644, "pseudonym": 0o600}
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    recipient = paths["public"].read_text()
    lines = paths["private"].read_text().splitlines()
    assert lines[:2] == ["# created: 2026-01-02T03:04:05Z", f"# public key: {recipient.strip()}"]
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    assert len(bytes.fromhex(paths["pseudonym"].read_text().strip())) == 32


def test_station_keys_agree_with_the_age_tools(tmp_path: Path) -> None:
    """age-keygen derives ecgd's recipient from ecgd's identity, and an identity age-keygen
    made loads in ecgd with the recipient it printed."""
    paths = generate_keys(tmp_path / "ecgd")
    derived = age_tool("age-keygen", "-y", str(paths["private"]))
    assert derived.stdout.decode() == paths["public"].read_text()
    made = age_tool("age-keygen", "-o", str(tmp_path / "made.key"))
    assert made.returncode == 0
    printed = made.stderr.decode().strip().rsplit(" ", 1)[-1]
    assert load_identity(tmp_path / "made.key").recipient == printed


def test_spec_key_pair_is_a_known_answer(tmp_path: Path) -> None:
    """The age specification's example identity gives its example recipient."""
    (tmp_path / "spec.key").write_text(SPEC_IDENTITY + "\n")
    (tmp_path / "spec.pub").write_text(SPEC_RECIPIENT + "\n")
    assert load_identity(tmp_path / "spec.key").recipient == SPEC_RECIPIENT
    assert load_recipient(tmp_path / "spec.pub").recipient == SPEC_RECIPIENT


def test_generate_keys_refuses_to_overwrite(tmp_path: Path) -> None:
    """A second keygen into the same place raises ConfigError and changes no file."""
    paths = generate_keys(tmp_path, "station")
    before = {role: path.read_bytes() for role, path in paths.items()}
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keys(tmp_path, "station")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_signing_key(tmp_path, "station")
    assert {role: path.read_bytes() for role, path in paths.items()} == before


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "pseudonym", "x" * 65])
def test_generate_keys_refuses_bad_names(tmp_path: Path, name: str) -> None:
    """Key names that would escape the directory or collide with pseudonym.key are refused."""
    for generate in (generate_keys, generate_signing_key):
        with pytest.raises(ConfigError, match="key name"):
            generate(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, reason", [
    (b"", "expected one line 'age1"),
    (b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n", "expected one line 'age1"),
    (SPEC_RECIPIENT.encode()[:-1] + b"q\n", "bad Bech32"),
    ((SPEC_RECIPIENT[:10] + SPEC_RECIPIENT[10:].upper() + "\n").encode(), "bad Bech32"),
    ((SPEC_RECIPIENT + "\n" + SPEC_RECIPIENT + "\n").encode(), "expected one line"),
    (b"\xff\xfe", "not ASCII"),
    ((bech32.bech32_encode("age", bech32.convertbits(bytes(16), 8, 5, True)) + "\n").encode(),
     "key has 16 bytes, expected 32"),
])
def test_bad_recipient_file_is_config_error(tmp_path: Path, content: bytes, reason: str) -> None:
    """A malformed recipient is a ConfigError naming the file and the reason."""
    path = tmp_path / "bad.pub"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason) as info:
        load_recipients([path])
    assert str(path) in str(info.value)


@pytest.mark.parametrize("raw", [bytes(32), b"\x01" + bytes(31)])
def test_low_order_recipient_is_refused(tmp_path: Path, raw: bytes) -> None:
    """The all-zero and order-1 X25519 points are refused when the key file is loaded."""
    path = tmp_path / "weak.pub"
    path.write_text(bech32.bech32_encode("age", bech32.convertbits(raw, 8, 5, True)) + "\n")
    with pytest.raises(ConfigError, match="low-order X25519 point"):
        load_recipient(path)


def test_missing_swapped_and_repeated_keys_are_config_errors(tmp_path: Path) -> None:
    """A missing recipient, an identity given as recipient (and vice versa), and the same
    recipient twice are ConfigErrors."""
    keys = generate_keys(tmp_path / "k")
    with pytest.raises(ConfigError, match="cannot read"):
        load_recipients([tmp_path / "absent.pub"])
    with pytest.raises(ConfigError, match="not an age recipient"):
        load_recipients([keys["private"]])
    with pytest.raises(ConfigError, match="not an age identity"):
        load_identity(keys["public"])
    copy = tmp_path / "copy.pub"
    copy.write_bytes(keys["public"].read_bytes())
    with pytest.raises(ConfigError, match="same key as"):
        load_recipients([keys["public"], copy])


def test_signing_key_pair_loads_with_one_key_id(tmp_path: Path) -> None:
    """The appliance key pair: 0600/0644, and the private half's id is the enrolled id."""
    paths = generate_signing_key(tmp_path / "appliance")
    assert {role: path.name for role, path in paths.items()} == {
        "private": "appliance-signing.key", "public": "appliance-signing.pub"}
    assert _modes(paths) == {"private": 0o600, "public": 0o644}
    signing_key = load_signing_key(paths["private"])
    enrolled = load_enrolled_appliances(tmp_path / "appliance")
    assert list(enrolled) == [signing_key.key_id]
    assert enrolled[signing_key.key_id].name == "appliance-signing"


def test_enrolled_folder_problems_are_config_errors(tmp_path: Path) -> None:
    """An empty folder, a bad .pub, a private key as .pub and a repeated key are refused;
    files not ending in .pub are not keys and are left alone."""
    folder = tmp_path / "enrolled"
    folder.mkdir()
    (folder / "README").write_text("one NAME.pub per appliance\n")
    with pytest.raises(ConfigError, match="no enrolled appliance"):
        load_enrolled_appliances(folder)
    with pytest.raises(ConfigError, match="cannot read enrolled"):
        load_enrolled_appliances(tmp_path / "absent")
    keys = generate_signing_key(tmp_path / "a")
    (folder / "ward.pub").write_bytes(keys["private"].read_bytes())
    with pytest.raises(ConfigError, match="not an ecgd signing key file"):
        load_enrolled_appliances(folder)
    (folder / "ward.pub").write_bytes(keys["public"].read_bytes())
    (folder / "ward-again.pub").write_bytes(keys["public"].read_bytes())
    with pytest.raises(ConfigError, match="same key as"):
        load_enrolled_appliances(folder)
    (folder / "ward-again.pub").unlink()
    assert [a.name for a in load_enrolled_appliances(folder).values()] == ["ward"]


def test_credential_is_preferred_to_the_key_file(tmp_path: Path, monkeypatch) -> None:
    """With $CREDENTIALS_DIRECTORY holding the credential, it is read instead of the file."""
    key_file = tmp_path / "etc.key"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert credential_or_file("signing.key", key_file) == key_file
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert credential_or_file("signing.key", key_file) == key_file
    (credentials / "signing.key").write_text("x")
    assert credential_or_file("signing.key", key_file) == credentials / "signing.key"
