"""The ``ecgd`` command line: subcommands, help and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ecgd.cli import COMMANDS, build_parser, main


def _modules_loaded_by(code: str) -> set:
    """The modules a fresh interpreter has imported after running ``code``."""
    script = (f"import sys, io, contextlib\n"
              f"with contextlib.redirect_stdout(io.StringIO()):\n"
              f"    try:\n        {code}\n    except SystemExit:\n        pass\n"
              f"print(__import__('json').dumps(sorted(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_help_lists_every_command_and_the_exit_codes(capsys) -> None:
    """`ecgd --help` names each subcommand with its help line and documents the exit codes."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    words = " ".join(text.split())  # argparse wraps long help lines
    for command in COMMANDS:
        assert f"    {command.name} " in text and command.help in words
    for code in ("0", "1", "2", "65", "69", "74", "78", "70"):
        assert f"\n  {code} " in text


def test_help_imports_no_command_module() -> None:
    """`ecgd --help` lists the commands without importing any of their modules."""
    loaded = _modules_loaded_by("from ecgd.cli import main; main(['--help'])")
    assert "ecgd.cli" in loaded
    assert not [name for name in loaded if name.startswith("ecgd.commands.")]


@pytest.mark.parametrize("command", ["check", "decrypt", "patient", "status"])
def test_quick_commands_import_no_heavy_library(command: str) -> None:
    """check, decrypt, patient and status load neither numpy, scipy nor ONNX Runtime
    (what made every command take seconds to start)."""
    loaded = _modules_loaded_by(f"from ecgd.cli import main; main(['{command}', '--help'])")
    assert f"ecgd.commands.{command}" in loaded
    assert not {"numpy", "scipy", "onnxruntime", "structlog", "watchdog"} & loaded


@pytest.mark.parametrize("command", [command.name for command in COMMANDS])
def test_every_command_has_its_own_help_without_markup(command: str, capsys) -> None:
    """Each registered module fills in its parser; its --help is plain text, with no raw
    reStructuredText double backticks."""
    with pytest.raises(SystemExit) as exit_:
        build_parser(command).parse_args([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: ecgd {command}")
    assert "``" not in text


def test_missing_command_is_a_usage_error() -> None:
    """No subcommand: exit 2 (argparse usage error)."""
    result = subprocess.run([sys.executable, "-m", "ecgd"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: ecgd" in result.stderr


def test_model_error_is_one_line_and_exit_65(tmp_path) -> None:
    """A missing model manifest: one line naming its full path and saying how to choose
    another, exit 65, no traceback."""
    result = subprocess.run([sys.executable, "-m", "ecgd", "analyze", "--model",
                             str(tmp_path / "nope.json"), str(tmp_path / "x.csv")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 65
    assert result.stderr.splitlines() == [
        f"ecgd: {tmp_path / 'nope.json'}: cannot read manifest: No such file or directory "
        f"(use --model to choose another)"]
