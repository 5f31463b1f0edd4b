"""Sealed containers, key files, durable writes, and the keygen / decrypt commands."""
from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from ecgd.commands import decrypt as decrypt_command
from ecgd.commands import keygen as keygen_command
from ecgd.errors import ConfigError, SealError, TamperedError
from ecgd.security.keys import (
    RecipientKey,
    generate_keys,
    load_private_key,
    load_recipient,
    load_recipients,
)
from ecgd.security.seal import (
    ENTRY_BYTES,
    MAGIC,
    PREFIX_BYTES,
    TAG_BYTES,
    ensure_private_dir,
    parse_header,
    seal,
    unseal,
    write_durable,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT = json.dumps({"report_id": "r-1", "labels": {"sinus rhythm": 0.93}}).encode("utf-8")


@pytest.fixture(scope="module")
def key_sets(tmp_path_factory: pytest.TempPathFactory) -> List[Dict[str, Path]]:
    """Two recipient key pairs (reading station and archive) made by generate_keys."""
    base = tmp_path_factory.mktemp("keys")
    return [generate_keys(base / "station", "station"), generate_keys(base / "archive", "archive")]


@pytest.fixture(scope="module")
def recipients(key_sets: List[Dict[str, Path]]) -> List[RecipientKey]:
    return load_recipients([keys["public"] for keys in key_sets])


def _modes(paths: Dict[str, Path]) -> Dict[str, int]:
    return {role: stat.S_IMODE(path.stat().st_mode) for role, path in paths.items()}


def test_roundtrip_to_one_recipient(key_sets, recipients) -> None:
    """A report sealed to one key opens with that key and yields the exact bytes."""
    container = seal(REPORT, recipients[:1])
    assert unseal(container, load_private_key(key_sets[0]["private"])) == REPORT
    assert REPORT not in container


def test_roundtrip_to_two_recipients(key_sets, recipients) -> None:
    """A report sealed to two keys opens with either private key."""
    container = seal(REPORT, recipients)
    for keys in key_sets:
        assert unseal(container, load_private_key(keys["private"])) == REPORT


def test_empty_report_roundtrips(key_sets, recipients) -> None:
    """Zero-length plaintext still seals and opens (the tag alone is authenticated)."""
    container = seal(b"", recipients[:1])
    assert unseal(container, load_private_key(key_sets[0]["private"])) == b""


def test_sealing_is_randomized(recipients) -> None:
    """Sealing the same report twice gives different containers (fresh keys and nonces)."""
    assert seal(REPORT, recipients) != seal(REPORT, recipients)


def test_header_parses_to_recipients_in_order(recipients) -> None:
    """The header names version 1, each recipient's key id in order, and its own length."""
    container = seal(REPORT, recipients)
    header = parse_header(container)
    assert container.startswith(MAGIC)
    assert header.version == 1
    assert header.key_ids == tuple(r.key_id for r in recipients)
    assert all(len(key_id) == 16 for key_id in header.key_ids)
    assert header.header_bytes == PREFIX_BYTES + 2 * ENTRY_BYTES + 12
    assert len(container) == header.header_bytes + len(REPORT) + TAG_BYTES


def test_every_byte_flip_is_detected(key_sets, recipients) -> None:
    """Flipping any single bit anywhere in a two-recipient container fails authentication."""
    container = seal(b'{"qt_ms": 412}', recipients)
    private_key = load_private_key(key_sets[0]["private"])
    undetected = []
    for index in range(len(container)):
        for mask in (0x01, 0x80):
            changed = bytearray(container)
            changed[index] ^= mask
            try:
                unseal(bytes(changed), private_key)
            except TamperedError:
                continue
            undetected.append((index, mask))
    assert undetected == []


def test_every_truncation_is_detected(key_sets, recipients) -> None:
    """Every proper prefix of a container, including empty, raises TamperedError."""
    container = seal(REPORT, recipients)
    private_key = load_private_key(key_sets[1]["private"])
    for length in range(len(container)):
        with pytest.raises(TamperedError):
            unseal(container[:length], private_key)


def test_appended_bytes_are_detected(key_sets, recipients) -> None:
    """A byte appended after the tag makes the container fail authentication."""
    container = seal(REPORT, recipients)
    with pytest.raises(TamperedError, match="authentication"):
        unseal(container + b"\x00", load_private_key(key_sets[0]["private"]))


def test_wrong_key_is_refused(tmp_path, key_sets, recipients) -> None:
    """A private key the report was not sealed to raises TamperedError naming its key id."""
    stranger = generate_keys(tmp_path, "stranger")
    stranger_id = load_recipient(stranger["public"]).key_id
    container = seal(REPORT, recipients[:1])
    with pytest.raises(TamperedError, match=f"not sealed to key {stranger_id}"):
        unseal(container, load_private_key(stranger["private"]))


def test_unknown_version_is_refused(key_sets, recipients) -> None:
    """A container with a version byte this ecgd does not know names that version."""
    changed = bytearray(seal(REPORT, recipients))
    changed[len(MAGIC)] = 2
    with pytest.raises(TamperedError, match="unknown container version 2"):
        unseal(bytes(changed), load_private_key(key_sets[0]["private"]))


def test_non_container_is_refused(key_sets) -> None:
    """Plain JSON is reported as not an ecgd sealed report."""
    with pytest.raises(TamperedError, match="not an ecgd sealed report"):
        unseal(REPORT, load_private_key(key_sets[0]["private"]))


def test_tampered_error_is_one_line(key_sets, recipients) -> None:
    """Every TamperedError message is a single line."""
    container = seal(REPORT, recipients)
    private_key = load_private_key(key_sets[0]["private"])
    for broken in (b"", container[:-1], container + b"x", b"ECGDSEAL\x01\x00" + bytes(40)):
        with pytest.raises(TamperedError) as info:
            unseal(broken, private_key)
        assert "\n" not in str(info.value)


def test_seal_without_recipients_is_refused() -> None:
    """Sealing to nobody is a SealError, not an unreadable report."""
    with pytest.raises(SealError, match="0 recipients"):
        seal(REPORT, [])


# ---- key files ----------------------------------------------------------------------------


def test_generate_keys_modes_and_formats(tmp_path) -> None:
    """keygen writes the private and pseudonym keys 0600, the public key 0644, in a 0700 dir."""
    out_dir = tmp_path / "new"
    paths = generate_keys(out_dir, "ward3")
    assert {role: path.name for role, path in paths.items()} == {
        "private": "ward3.key", "public": "ward3.pub", "pseudonym": "pseudonym.key"}
    assert _modes(paths) == {"private": 0o600, "public": 0o644, "pseudonym": 0o600}
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    assert paths["public"].read_text().startswith("ecgd-x25519-public-v1 ")
    assert paths["private"].read_text().startswith("ecgd-x25519-private-v1 ")
    pseudonym_text = paths["pseudonym"].read_text()
    assert len(pseudonym_text) == 65 and pseudonym_text.endswith("\n")
    bytes.fromhex(pseudonym_text.strip())
    assert sorted(p.name for p in out_dir.iterdir()) == ["pseudonym.key", "ward3.key", "ward3.pub"]


def test_generate_keys_refuses_to_overwrite(tmp_path) -> None:
    """A second keygen into the same place raises ConfigError and changes no file."""
    paths = generate_keys(tmp_path, "station")
    before = {role: path.read_bytes() for role, path in paths.items()}
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keys(tmp_path, "station")
    other = generate_keys(tmp_path / "elsewhere", "station")
    assert {role: path.read_bytes() for role, path in paths.items()} == before
    assert other["private"].read_bytes() != before["private"]


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "pseudonym", "x" * 65])
def test_generate_keys_refuses_bad_names(tmp_path, name: str) -> None:
    """Key names that would escape the directory or collide with pseudonym.key are refused."""
    with pytest.raises(ConfigError, match="key name"):
        generate_keys(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_private_key_matches_public_key_id(key_sets) -> None:
    """The key id of a loaded public key equals the id derived from its private key."""
    from ecgd.security.keys import key_id_of

    private_key = load_private_key(key_sets[0]["private"])
    assert key_id_of(private_key.public_key()) == load_recipient(key_sets[0]["public"]).key_id


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not an ecgd key file"),
        (b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n", "not an ecgd key file"),
        (b"ecgd-x25519-public-v1 !!!notbase64\n", "not valid base64"),
        (b"ecgd-x25519-public-v1 AAAA\n", "3 bytes, expected 32"),
        (b"ecgd-x25519-public-v1 " + b"A" * 43 + b"=\n\n", "not an ecgd key file"),
        (b"\xff\xfe", "not ASCII"),
        (b"ecgd-x25519-public-v1 " + b"A" * 43 + b"=\n", "low-order X25519 point"),
        (b"ecgd-x25519-public-v1 AQ" + b"A" * 41 + b"=\n", "low-order X25519 point"),
    ],
)
def test_bad_public_key_file_is_config_error(tmp_path, content: bytes, reason: str) -> None:
    """A malformed recipient key is a ConfigError naming the file and the reason."""
    path = tmp_path / "bad.pub"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason) as info:
        load_recipients([path])
    assert str(path) in str(info.value)


def test_missing_and_swapped_keys_are_config_errors(tmp_path, key_sets) -> None:
    """A missing key file, a private key given as public (and vice versa) are ConfigErrors."""
    with pytest.raises(ConfigError, match="cannot read key"):
        load_recipients([tmp_path / "absent.pub"])
    with pytest.raises(ConfigError, match="not an ecgd key file"):
        load_recipients([key_sets[0]["private"]])
    with pytest.raises(ConfigError, match="not an ecgd key file"):
        load_private_key(key_sets[0]["public"])


def test_duplicate_recipient_is_config_error(tmp_path, key_sets) -> None:
    """The same public key listed twice (under two names) is refused."""
    copy = tmp_path / "copy.pub"
    copy.write_bytes(key_sets[0]["public"].read_bytes())
    with pytest.raises(ConfigError, match="same key as"):
        load_recipients([key_sets[0]["public"], copy])


# ---- durable writes -----------------------------------------------------------------------


def test_write_durable_writes_0600_and_leaves_no_temp(tmp_path) -> None:
    """write_durable produces exactly the named file with mode 0600 and the given bytes."""
    target = write_durable(tmp_path, "report.ecgd", b"sealed bytes")
    assert target == tmp_path / "report.ecgd"
    assert target.read_bytes() == b"sealed bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.ecgd"]


def test_write_durable_mode_ignores_umask(tmp_path) -> None:
    """The requested mode is applied exactly, whatever the process umask."""
    previous = os.umask(0o277)
    try:
        target = write_durable(tmp_path, "key.pub", b"x", mode=0o644)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_durable_replaces_atomically(tmp_path) -> None:
    """Writing an existing name replaces its content; replace=False refuses instead."""
    write_durable(tmp_path, "r.ecgd", b"first")
    write_durable(tmp_path, "r.ecgd", b"second")
    assert (tmp_path / "r.ecgd").read_bytes() == b"second"
    with pytest.raises(SealError, match="File exists"):
        write_durable(tmp_path, "r.ecgd", b"third", replace=False)
    assert (tmp_path / "r.ecgd").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["r.ecgd"]


@pytest.mark.parametrize("name", ["", ".", "..", "../escape", "a/b", ".hidden"])
def test_write_durable_refuses_path_names(tmp_path, name: str) -> None:
    """Only plain, visible file names are accepted (no separators, no traversal)."""
    with pytest.raises(SealError, match="not a plain file name"):
        write_durable(tmp_path / "d", name, b"x")


def test_write_durable_into_unusable_directory_is_seal_error(tmp_path) -> None:
    """A 'directory' that is a regular file (fails even for root) raises SealError naming it."""
    blocker = tmp_path / "reports"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(SealError, match="Not a directory") as info:
        write_durable(blocker, "r.ecgd", b"x")
    assert str(blocker / "r.ecgd") in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


def test_write_failing_midway_removes_temp_file(tmp_path) -> None:
    """A write the kernel refuses part-way (file size limit, as disk full) leaves no temp file.

    RLIMIT_FSIZE makes write() fail with EFBIG even for root, in a child process so the
    limit cannot affect the test runner.
    """
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        from ecgd.errors import SealError
        from ecgd.security.seal import write_durable
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
        try:
            write_durable(Path(sys.argv[1]), "big.ecgd", b"x" * 65536)
        except SealError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )
    assert completed.returncode == 3, completed.stderr
    assert "big.ecgd: cannot write: File too large" in completed.stdout
    assert list(tmp_path.iterdir()) == []


def test_ensure_private_dir_creates_and_tightens(tmp_path) -> None:
    """Missing directories are created 0700; an existing 0755 one is tightened to 0700."""
    created = ensure_private_dir(tmp_path / "a" / "reports")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    existing = tmp_path / "open"
    existing.mkdir(mode=0o755)
    ensure_private_dir(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o700


def test_ensure_private_dir_refuses_symlink_and_file(tmp_path) -> None:
    """A symlinked or regular-file path is refused with SealError, not followed."""
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SealError, match="symlink"):
        ensure_private_dir(link)
    assert stat.S_IMODE(real.stat().st_mode) == 0o755
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(SealError):
        ensure_private_dir(regular)


# ---- commands -----------------------------------------------------------------------------


def test_keygen_command_writes_keys(tmp_path, capsys) -> None:
    """`ecgd keygen --out DIR --name N` writes the three files and prints their paths."""
    code = keygen_command.run(argparse.Namespace(out=tmp_path / "k", name="ward"))
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("ward.key", "ward.pub", "pseudonym.key"):
        assert str(tmp_path / "k" / name) in printed
    assert load_recipient(tmp_path / "k" / "ward.pub").key_id in printed


def test_decrypt_command_prints_reports_and_flags_tampering(tmp_path, capsys, key_sets,
                                                             recipients) -> None:
    """Good files print one JSON line each; a tampered file is one stderr line and exit 65."""
    reports = [{"report_id": f"r-{index}", "window_index": index} for index in range(2)]
    files = []
    for index, report in enumerate(reports):
        sealed = seal(json.dumps(report, indent=2).encode("utf-8"), recipients)
        files.append(write_durable(tmp_path, f"r{index}.ecgd", sealed))
    tampered = bytearray(files[0].read_bytes())
    tampered[-1] ^= 0x01
    bad = write_durable(tmp_path, "bad.ecgd", bytes(tampered))
    args = argparse.Namespace(key=key_sets[1]["private"], files=[files[0], bad, files[1]],
                              summary=False, pretty=False)
    code = decrypt_command.run(args)
    captured = capsys.readouterr()
    assert code == TamperedError.exit_code == 65
    assert [json.loads(line) for line in captured.out.splitlines()] == reports
    assert captured.err.splitlines() == [
        f"ecgd: {bad}: failed authentication (modified, truncated or extended)"]


def test_decrypt_command_unreadable_file_exits_1(tmp_path, capsys, key_sets) -> None:
    """A missing input file is named on stderr and exits 1 (not a tampering verdict)."""
    args = argparse.Namespace(key=key_sets[0]["private"], files=[tmp_path / "gone.ecgd"],
                              summary=False, pretty=False)
    assert decrypt_command.run(args) == 1
    assert capsys.readouterr().err.startswith(f"ecgd: {tmp_path / 'gone.ecgd'}: cannot read")


def test_seal_to_a_low_order_key_is_seal_error(tmp_path) -> None:
    """A recipient key that makes X25519 fail is a SealError (retried, logged), not a crash."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    from ecgd.security.keys import RecipientKey

    weak = X25519PublicKey.from_public_bytes(bytes(32))
    with pytest.raises(SealError, match="key agreement failed"):
        seal(b"{}", [RecipientKey(key_id="00" * 8, public_key=weak, path=tmp_path / "k")])
