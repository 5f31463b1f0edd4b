"""tests/conftest.py: without ../shared/data the tests that need it skip on a developer's
machine and fail in CI (.ci/run sets ECGD_REQUIRE_SHARED_DATA=1)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REQUIRE_SHARED_DATA

_NEEDS_DATA = '''
def test_needs_the_recordings(shared_data):
    """Uses the shared_data fixture."""
    assert shared_data.is_dir()
'''


def _run_without_shared_data(tmp_path: Path, require: bool) -> subprocess.CompletedProcess:
    """pytest on a checkout copy (conftest + one test) with no ../shared beside it."""
    tests = tmp_path / "checkout" / "tests"
    tests.mkdir(parents=True)
    shutil.copyfile(Path(__file__).with_name("conftest.py"), tests / "conftest.py")
    (tests / "test_needs_data.py").write_text(_NEEDS_DATA)
    env = {key: value for key, value in os.environ.items() if key != REQUIRE_SHARED_DATA}
    if require:
        env[REQUIRE_SHARED_DATA] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests)], capture_output=True, text=True, env=env,
                          cwd=tests.parent, timeout=120)


@pytest.mark.parametrize("require, code, outcome", [(False, 0, "1 skipped"),
                                                    (True, 1, "1 error")])
def test_missing_recordings_skip_for_developers_and_fail_in_ci(tmp_path: Path, require: bool,
                                                               code: int, outcome: str) -> None:
    """Without ../shared: exit 0 with the test skipped, or, with ECGD_REQUIRE_SHARED_DATA=1,
    exit 1 with it in error and the reason saying where the recordings were looked for."""
    result = _run_without_shared_data(tmp_path, require)
    assert result.returncode == code, result.stdout + result.stderr
    assert outcome in result.stdout
    if require:
        assert "real recordings not found at" in result.stdout
        assert f"{REQUIRE_SHARED_DATA}=1 requires them" in result.stdout


def test_ci_requires_the_recordings() -> None:
    """.ci/run exports ECGD_REQUIRE_SHARED_DATA=1 before the README's test command."""
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    lines = script.splitlines()
    assert f"export {REQUIRE_SHARED_DATA}=1" in lines
    assert lines.index(f"export {REQUIRE_SHARED_DATA}=1") < lines.index("python -m pytest -q")
