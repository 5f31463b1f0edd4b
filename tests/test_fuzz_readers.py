"""Fuzzing in the suite: mutated real recordings of every format are read or refused in one
line (hypothesis drives the mutations), and ``ecgd analyze`` on a batch of them exits 0 or 1
with finite, in-range reports. Long runs: tools/fuzz_readers.py. Crashers found are kept as
recipes in tests/fuzz_regressions.json (they rebuild from ../shared/data)."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_harness
from ecgd.records.companions import content_sha256, recording_files
from ecgd.report import SCHEMA_PATH

T = TypeVar("T")
REGRESSIONS = json.loads((Path(__file__).parent / "fuzz_regressions.json").read_text())
_SEEDS: Dict[Path, fuzz_harness.SeedCache] = {}


def _seeds(shared_data: Path) -> fuzz_harness.SeedCache:
    """One seed cache per session: each seed is built from ../shared/data once."""
    return _SEEDS.setdefault(shared_data, fuzz_harness.SeedCache(shared_data))


class _DrawChooser:
    """Mutation choices drawn by hypothesis, so a failure shrinks to a small recipe."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))


@st.composite
def _recipes(draw: Any, shared_data: Path) -> fuzz_harness.Recipe:
    seed = draw(st.sampled_from(sorted(fuzz_harness.SEEDS)))
    return fuzz_harness.mutate(seed, _seeds(shared_data), _DrawChooser(draw))


def test_fuzzed_recordings_are_read_or_refused_in_one_line(shared_data: Path) -> None:
    """250 mutated real files of every format (hypothesis, fixed seed): each gives a
    validated recording or one RecordError line naming the file, never another exception."""
    @settings(max_examples=250, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(recipe=_recipes(shared_data))
    def read_or_refuse(recipe: fuzz_harness.Recipe) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = fuzz_harness.build(recipe, _seeds(shared_data), Path(folder))
            outcome = fuzz_harness.read_outcome(path)
        assert outcome.kind != "crash", (json.dumps(recipe.to_json()), outcome.detail)

    read_or_refuse()


@pytest.mark.parametrize("case", REGRESSIONS, ids=[c["recipe"]["seed"] for c in REGRESSIONS])
def test_fuzz_regressions_stay_fixed(shared_data: Path, tmp_path: Path,
                                     case: Dict[str, Any]) -> None:
    """Each crasher the fuzzer found (recipe in fuzz_regressions.json) is now refused in one
    line (or read), as recorded."""
    recipe = fuzz_harness.Recipe.from_json(case["recipe"])
    outcome = fuzz_harness.read_outcome(fuzz_harness.build(recipe, _seeds(shared_data),
                                                           tmp_path))
    assert outcome.kind == case["outcome"], outcome.detail


def test_analyze_on_fuzzed_recordings_exits_0_or_1_with_sound_reports(
        shared_data: Path, reference_manifest: Path, tmp_path: Path) -> None:
    """``ecgd analyze`` on 40 mutated files of every format plus the regression recipes:
    exit 0 or 1 (never 70), one stderr line per refused file naming it, every readable
    file reported, every report schema-valid with no NaN/Inf or out-of-range value."""
    jsonschema = pytest.importorskip("jsonschema")
    seeds = _seeds(shared_data)
    chooser = fuzz_harness.RandomChooser(random.Random(2026))
    names = sorted(fuzz_harness.SEEDS)
    recipes = [fuzz_harness.mutate(names[i % len(names)], seeds, chooser) for i in range(40)]
    recipes += [fuzz_harness.Recipe.from_json(c["recipe"]) for c in REGRESSIONS]
    paths: List[Path] = []
    expected: Dict[str, str] = {}
    readable_digests = set()
    for index, recipe in enumerate(recipes):
        folder = tmp_path / f"case{index:03d}"
        folder.mkdir()
        path = fuzz_harness.build(recipe, seeds, folder)
        paths.append(path)
        expected[str(path)] = fuzz_harness.read_outcome(path).kind
        if expected[str(path)] == "read":
            readable_digests.add(content_sha256(recording_files(path)))
    assert "crash" not in expected.values()
    result = subprocess.run([sys.executable, "-m", "ecgd", "analyze", "--model",
                             str(reference_manifest), *map(str, paths)],
                            capture_output=True, text=True, timeout=600)
    refused = [p for p in paths if expected[str(p)] == "refused"]
    assert result.returncode == (1 if refused else 0), result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "pseudonym" not in line]
    assert len(errors) == len(refused), errors
    assert all(re.match(r"^ecgd: [^:]+: \S", line) for line in errors), errors
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    reported = set()
    for line in result.stdout.splitlines():
        assert fuzz_harness.report_problems(line) == "", line[:300]
        report = json.loads(line)
        validator.validate(report)
        reported.add(report["source"]["content_sha256"])
    assert reported == readable_digests
