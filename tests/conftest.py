"""Shared fixtures: the real recordings in ../shared/data and a full-size reference model
(which needs no ../shared: its labels ship with ecgd)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Set by .ci/run: there, missing recordings fail the ~200 tests that need them instead of
# skipping them green. A developer without the data still gets skips.
REQUIRE_SHARED_DATA = "ECGD_REQUIRE_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real recordings (../shared/data beside the checkout)."""
    if not (SHARED_DATA / "SOURCES.md").is_file():
        reason = f"real recordings not found at {SHARED_DATA} (../shared beside the checkout)"
        if os.environ.get(REQUIRE_SHARED_DATA) == "1":
            pytest.fail(f"{reason}; {REQUIRE_SHARED_DATA}=1 requires them", pytrace=False)
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture(scope="session")
def ecgfounder_labels() -> Path:
    """ECGFounder's 150-line label file (the copy shipped with ecgd, sha256-pinned), as
    users pass it in with the checkpoint."""
    from ecgd.model.build import ECGFOUNDER_LABELS

    return ECGFOUNDER_LABELS


@pytest.fixture(scope="session")
def reference_manifest(tmp_path_factory: pytest.TempPathFactory, ecgfounder_labels: Path) -> Path:
    """A full-size Net1D with seeded weights, built once per test session into a temp dir."""
    from ecgd.model.build import build_reference

    out_dir = tmp_path_factory.mktemp("reference-model")
    return build_reference(out_dir, labels_path=ecgfounder_labels, seed=0)

