"""The ``ecgd`` command line: subcommands, help and exit codes."""
from __future__ import annotations

import subprocess
import sys

from ecgd.cli import COMMAND_MODULES, main


def test_help_lists_every_command_and_the_exit_codes(capsys) -> None:
    """`ecgd --help` names each subcommand and documents the exit codes."""
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    text = capsys.readouterr().out
    for module in COMMAND_MODULES:
        assert module.rsplit(".", 1)[1] in text
    for code in ("0", "1", "2", "65", "69", "74", "78", "70"):
        assert f"\n  {code} " in text


def test_missing_command_is_a_usage_error() -> None:
    """No subcommand: exit 2 (argparse usage error)."""
    result = subprocess.run([sys.executable, "-m", "ecgd"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: ecgd" in result.stderr


def test_model_error_is_one_line_and_exit_65(tmp_path) -> None:
    """A missing model manifest: one line naming it, exit 65, no traceback."""
    result = subprocess.run([sys.executable, "-m", "ecgd", "analyze", "--model",
                             str(tmp_path / "nope.json"), str(tmp_path / "x.csv")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 65
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.json" in lines[0] and "Traceback" not in result.stderr
