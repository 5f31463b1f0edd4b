"""What `ecgd check` and `ecgd run` verify before starting: every problem, one line each."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

from model_helpers import write_tiny_model
from test_daemon import Appliance

LABELS = tuple(f"label-{index:03d}" for index in range(150))


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"), LABELS)


def _config(root: Path, manifest: Path, *replacements: Tuple[str, str],
            extra: str = "") -> Path:
    """The config of a local installation (test_daemon.Appliance) with text replaced."""
    appliance = Appliance(root, manifest, extra_toml=extra)
    text = appliance.config.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    appliance.config.write_text(text)
    return appliance.config


def _ecgd(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgd", *map(str, argv)],
                          capture_output=True, text=True, timeout=120)


def test_check_lists_every_problem_in_one_run_on_stdout(tmp_path: Path) -> None:
    """Bad values, an unknown key, a missing recipient and pseudonym key, a file where a
    folder goes and a missing manifest: all listed by one `ecgd check`, one per line on
    stdout, each naming its config key and full path; exit 78."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the reports folder should go")
    config = _config(tmp_path, tmp_path / "models" / "gone.json",
                     ("threads = 1\n", "threads = 1\nbatch_max = 0\nthredas = 2\n"),
                     ("settle_s = 0.3", "settle_s = -5"),
                     (f'dir = "{tmp_path / "reports"}"', f'dir = "{blocker / "reports"}"'),
                     (str(tmp_path / "keys" / "reading-station.pub"), str(tmp_path / "nokey.pub")),
                     (str(tmp_path / "keys" / "pseudonym.key"),
                      str(tmp_path / "nopseudonym.key")))
    result = _ecgd("check", "--config", config)
    assert result.returncode == 78
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"ecgd: {config}: [model] thredas: unknown key (did you mean threads?)",
        f"ecgd: {config}: [model] batch_max: must be between 1 and 256",
        f"ecgd: {config}: [spool] settle_s: must be >= 0",
        f"ecgd: [reports] dir: {blocker} is not a directory",
        f"ecgd: [reports] recipients: {tmp_path / 'nokey.pub'}: cannot read age recipient: No "
        f"such file or directory",
        f"ecgd: [privacy] pseudonym_key_file: {tmp_path / 'nopseudonym.key'}: cannot read "
        f"pseudonym key: No such file or directory",
        f"ecgd: [model] manifest: {tmp_path / 'models' / 'gone.json'}: cannot read "
        f"manifest: No such file or directory",
    ]


def test_check_json_holds_the_same_problems(tmp_path: Path, tiny_manifest: Path) -> None:
    """`ecgd check --json` prints one JSON object with every problem line."""
    config = _config(tmp_path, tiny_manifest, ("threads = 1", "threads = 0"),
                     ("settle_s = 0.3", "settle_s = -5"))
    text = _ecgd("check", "--config", config).stdout
    plain = _ecgd("check", "--json", "--config", config)
    assert plain.returncode == 78
    document = json.loads(plain.stdout)
    assert document == {"config": str(config), "ok": False, "model_check": "manifest",
                        "problems": [line[len("ecgd: "):] for line in text.splitlines()]}
    assert len(document["problems"]) == 2


def test_a_bad_value_is_not_checked_again_at_its_default(tmp_path: Path,
                                                         tiny_manifest: Path) -> None:
    """A recipients value of the wrong type is one problem; check does not go on to look
    for the default /etc/ecgd key it fell back to (a problem the config does not have)."""
    public = tmp_path / "keys" / "reading-station.pub"
    config = _config(tmp_path, tiny_manifest,
                     (f'recipients = ["{public}"]', f'recipients = "{public}"'))
    result = _ecgd("check", "--config", config)
    assert result.stdout.splitlines() == [
        f"ecgd: {config}: [reports] recipients: must be a list"]


def test_quick_check_trusts_the_manifest_and_full_check_rehashes(tmp_path: Path) -> None:
    """The quick check (default) reads the manifest but does not re-hash the model file;
    --full re-hashes it and loads it in ONNX Runtime, as `ecgd run` does."""
    manifest = write_tiny_model(tmp_path / "model", LABELS)
    config = _config(tmp_path, manifest)
    assert _ecgd("check", "--config", config).returncode == 0
    assert _ecgd("check", "--full", "--config", config).returncode == 0
    onnx_path = manifest.with_suffix(".onnx")
    altered = bytearray(onnx_path.read_bytes())
    altered[-1] ^= 0xFF
    onnx_path.write_bytes(bytes(altered))
    quick = _ecgd("check", "--config", config)
    assert quick.returncode == 0 and quick.stdout == f"ecgd: {config}: ok\n"
    full = _ecgd("check", "--full", "--config", config)
    assert full.returncode == 78
    assert full.stdout.splitlines() == [
        f"ecgd: [model] manifest: {manifest}: sha256 of {onnx_path} does not match the "
        f"manifest (file altered or replaced)"]
    onnx_path.unlink()
    assert _ecgd("check", "--config", config).stdout.splitlines() == [
        f"ecgd: [model] manifest: {manifest}: cannot read model file {onnx_path}: "
        f"No such file or directory"]


def test_run_refuses_to_start_naming_every_problem(tmp_path: Path,
                                                   tiny_manifest: Path) -> None:
    """`ecgd run` exits 78 and prints every problem `check` finds, not only the first."""
    config = _config(tmp_path, tiny_manifest, (
        f'recipients = ["{tmp_path / "keys" / "reading-station.pub"}"]',
        f'recipients = ["{tmp_path / "a.pub"}", "{tmp_path / "b.pub"}"]'))
    result = _ecgd("run", "--config", config)
    assert result.returncode == 78
    problems = [line for line in result.stderr.splitlines() if line.startswith("ecgd: ")]
    assert problems == [
        f"ecgd: [reports] recipients: {tmp_path / name}: cannot read age recipient: No such "
        f"file or directory" for name in ("a.pub", "b.pub")]
