"""The reference model and its ONNX Runtime session (full-size Net1D, built once)."""
from __future__ import annotations

import numpy as np
import pytest

from ecgd.errors import ModelError
from ecgd.model.build import ECGFOUNDER_LABELS_SHA256, build_reference, ecgfounder_labels
from ecgd.model.manifest import load_manifest
from ecgd.model.net1d import ECGFOUNDER_12LEAD, count_parameters
from ecgd.model.session import ModelSession, session_options
from model_helpers import cinc_windows


@pytest.fixture(scope="session")
def session(reference_manifest) -> ModelSession:
    return ModelSession.open(reference_manifest, threads=2)


def test_reference_manifest_describes_the_ecgfounder_network(reference_manifest,
                                                            ecgfounder_labels):
    """Untrained, fp32, 30.75 M parameters, the real labels in file order."""
    manifest = load_manifest(reference_manifest)
    assert manifest.trained is False and manifest.precision == "fp32"
    assert manifest.architecture["n_parameters"] == count_parameters(ECGFOUNDER_12LEAD)
    assert 30_000_000 < manifest.architecture["n_parameters"] < 31_000_000
    assert manifest.labels == tuple(ecgfounder_labels.read_text().splitlines())
    assert manifest.labels_sha256 == ("7c087a0d383c7ea9ae9b818ad00a551b"
                                      "029334edfa5f1fbb5036bfbaa0df0c39")


def test_any_batch_size_gives_the_per_window_logits(session, shared_data):
    """A batch of 3 real windows gives the same logits as three batches of 1."""
    windows = cinc_windows(shared_data, 3)
    batch = session.predict_logits(windows)
    single = np.concatenate([session.predict_logits(w[np.newaxis]) for w in windows])
    assert batch.shape == (3, 150) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different ECGs, different outputs


@pytest.mark.parametrize("shape, dtype", [((1, 12, 4999), np.float32), ((12, 5000), np.float32),
                                          ((1, 11, 5000), np.float32),
                                          ((1, 12, 5000), np.float64)])
def test_wrong_input_is_refused(session, shape, dtype):
    """Windows of the wrong shape or dtype raise ModelError instead of reaching ORT."""
    with pytest.raises(ModelError, match="ecgfounder-reference: input"):
        session.predict_logits(np.zeros(shape, dtype=dtype))


def test_build_without_labels_uses_ecgfounders_and_is_deterministic(tmp_path,
                                                                    reference_manifest):
    """Same seed -> same weights; without a labels file the labels are ECGFounder's own
    (shipped), whose sha256 is the published one."""
    manifest = load_manifest(build_reference(tmp_path, seed=0))
    assert len(manifest.labels) == 150 and "untrained" not in " ".join(manifest.labels)
    assert manifest.labels_sha256 == ECGFOUNDER_LABELS_SHA256
    assert manifest.provenance["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ecgfounder-reference.json", "ecgfounder-reference.onnx"]
    # labels live in the manifest, so the same seed gives a byte-identical graph
    assert manifest.onnx_sha256 == load_manifest(reference_manifest).onnx_sha256


def test_shipped_labels_are_pinned(tmp_path, monkeypatch):
    """The shipped tasks.txt is ECGFounder's published file; an edited copy is refused."""
    from ecgd.model import build

    assert len(set(ecgfounder_labels())) == 150
    edited = tmp_path / "ecgfounder-tasks.txt"
    edited.write_text(build.ECGFOUNDER_LABELS.read_text().replace("ABNORMAL ECG",
                                                                   "ABNORMAL ECG (edited)"))
    monkeypatch.setattr(build, "ECGFOUNDER_LABELS", edited)
    with pytest.raises(ModelError, match="sha256 is not ECGFounder's published"):
        build.ecgfounder_labels()


def test_fp32_sessions_skip_weight_prepacking_and_int8_sessions_keep_it():
    """Prepacking copies fp32 weights (+42 MiB) for no speed; INT8 kernels need it (2x)."""
    assert session_options(2, "fp32").get_session_config_entry(
        "session.disable_prepacking") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        session_options(2, "int8").get_session_config_entry("session.disable_prepacking")
