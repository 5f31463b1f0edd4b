"""Shared fixtures: the real recordings in ../shared/data and a full-size reference model."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real recordings (../shared/data beside the checkout)."""
    if not (SHARED_DATA / "SOURCES.md").is_file():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (../shared beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ecgfounder_labels(shared_data: Path) -> Path:
    """ECGFounder's 150-line label file, as users pass it in with the checkpoint."""
    return shared_data / "ecgfounder" / "tasks.txt"


@pytest.fixture(scope="session")
def reference_manifest(tmp_path_factory: pytest.TempPathFactory, ecgfounder_labels: Path) -> Path:
    """A full-size Net1D with seeded weights, built once per test session into a temp dir."""
    from ecgd.model.build import build_reference

    out_dir = tmp_path_factory.mktemp("reference-model")
    return build_reference(out_dir, labels_path=ecgfounder_labels, seed=0)

