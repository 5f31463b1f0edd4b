"""Sealing reports (sign + age), durable writes, and the keygen / decrypt commands."""
from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pyrage
import pytest

from ecgd.commands import decrypt as decrypt_command
from ecgd.commands import keygen as keygen_command
from ecgd.errors import SealError, TamperedError
from ecgd.report_store import report_file_name
from ecgd.security.keys import (
    generate_keys,
    generate_signing_key,
    load_enrolled_appliance,
    load_recipients,
    load_signing_key,
)
from ecgd.security.seal import ensure_private_dir, seal_report, write_durable
from seal_helpers import age_decrypt, sample_report


REPO_ROOT = Path(__file__).resolve().parents[1]


class Keys:
    """A station key set, an appliance signing key enrolled in ``enrolled/``, and a stranger."""

    def __init__(self, root: Path) -> None:
        self.station = generate_keys(root / "station")
        self.appliance = generate_signing_key(root / "enrolled", "ward3")
        self.stranger = generate_signing_key(root / "stranger", "stranger")
        self.enrolled_dir = root / "enrolled"
        self.recipients = load_recipients([self.station["public"]])

    def seal(self, report, signing_key_file=None) -> bytes:
        return seal_report(report, self.recipients,
                           load_signing_key(signing_key_file or self.appliance["private"]))

    def decrypt_args(self, files) -> argparse.Namespace:
        return argparse.Namespace(key=self.station["private"], appliances=self.enrolled_dir,
                                  files=list(files), summary=False, pretty=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


def test_sealed_report_is_an_age_file_the_age_tool_opens(tmp_path, keys) -> None:
    """The sealed JSON is the report plus its signer's key id, and `age --decrypt` prints it."""
    report = sample_report()
    path = write_durable(tmp_path, report_file_name(report["report_id"]), keys.seal(report))
    signer_id = load_enrolled_appliance(keys.appliance["public"]).key_id
    assert json.loads(age_decrypt(path, keys.station["private"])) == {
        **report, "signer_key_id": signer_id}
    assert json.dumps(report).encode() not in path.read_bytes()


def test_seal_is_randomized(keys) -> None:
    """Sealing the same report twice gives different files (fresh file key and nonces)."""
    report = sample_report()
    assert keys.seal(report) != keys.seal(report)


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


def test_keygen_command_writes_station_keys(tmp_path, capsys) -> None:
    """`ecgd keygen --out DIR --name N` writes the three files and prints the recipient."""
    code = keygen_command.run(argparse.Namespace(out=tmp_path / "k", name="ward",
                                                 appliance=False))
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("ward.key", "ward.pub", "pseudonym.key"):
        assert str(tmp_path / "k" / name) in printed
    assert (tmp_path / "k" / "ward.pub").read_text().strip() in printed


def test_keygen_command_writes_an_appliance_signing_key(tmp_path, capsys) -> None:
    """`ecgd keygen --appliance --out DIR` writes appliance-signing.key/.pub, prints the id."""
    code = keygen_command.run(argparse.Namespace(out=tmp_path / "a", name=None, appliance=True))
    printed = capsys.readouterr().out
    assert code == 0
    public = tmp_path / "a" / "appliance-signing.pub"
    assert load_enrolled_appliance(public).key_id in printed
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "appliance-signing.key", "appliance-signing.pub"]


def test_decrypt_command_prints_signer_and_report(tmp_path, capsys, keys) -> None:
    """Good files print {"signer", "report"} lines; each refused file is one stderr line
    naming the failed check, and the exit code is 65."""
    reports = [sample_report(index) for index in range(2)]
    good = [write_durable(tmp_path, f"r{index}.ecgr", keys.seal(report))
            for index, report in enumerate(reports)]
    tampered = bytearray(good[0].read_bytes())
    tampered[-1] ^= 0x01
    refused = {
        "tampered": (bytes(tampered), "signature mismatch"),
        "truncated": (good[0].read_bytes()[:-40], "signature mismatch"),
        "unsigned": (pyrage.encrypt(b"{}", [pyrage.x25519.Recipient.from_str(
            keys.recipients[0].recipient)]), "unsigned"),
        "stranger": (keys.seal(sample_report(), keys.stranger["private"]), "unknown signer"),
    }
    bad = {name: write_durable(tmp_path, f"{name}.ecgr", data)
           for name, (data, _) in refused.items()}
    code = decrypt_command.run(keys.decrypt_args([good[0], *bad.values(), good[1]]))
    captured = capsys.readouterr()
    assert code == TamperedError.exit_code == 65
    signer = {"appliance": "ward3", "key_id": load_enrolled_appliance(
        keys.appliance["public"]).key_id}
    assert [json.loads(line) for line in captured.out.splitlines()] == [
        {"signer": signer, "report": {**report, "signer_key_id": signer["key_id"]}}
        for report in reports]
    assert [line.split(": ", 2)[:2] for line in captured.err.splitlines()] == [
        ["ecgd", str(path)] for path in bad.values()]
    for line, (_, check) in zip(captured.err.splitlines(), refused.values()):
        assert line.split(": ", 2)[2].startswith(check), line


def test_decrypt_command_unreadable_file_exits_1(tmp_path, capsys, keys) -> None:
    """A missing input file is named on stderr and exits 1 (not a tampering verdict)."""
    assert decrypt_command.run(keys.decrypt_args([tmp_path / "gone.ecgr"])) == 1
    assert capsys.readouterr().err.startswith(f"ecgd: {tmp_path / 'gone.ecgr'}: cannot read")


def test_decrypt_as_a_command_refuses_without_enrolled_appliances(tmp_path, keys) -> None:
    """`ecgd decrypt` with an empty appliances folder exits 78 with one line naming it."""
    empty = tmp_path / "none"
    empty.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "ecgd", "decrypt", "--key", str(keys.station["private"]),
         "--appliances", str(empty), str(tmp_path / "x.ecgr")],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert completed.returncode == 78
    assert completed.stderr.splitlines() == [
        f"ecgd: {empty}: no enrolled appliance (NAME.pub signing keys)"]
