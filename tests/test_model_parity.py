"""Parity: a torch.save checkpoint converted by ``ecgd model convert`` equals an independent
PyTorch Net1D on real ECG windows (max |logit difference| <= 1e-4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgd.model.manifest import load_manifest
from ecgd.model.session import ModelSession
from model_helpers import cinc_windows, run_model_command, upstream_checkpoint

torch = pytest.importorskip("torch")
torch_net1d = pytest.importorskip("torch_net1d")

MAX_LOGIT_DIFF = 1e-4


@pytest.fixture(scope="session")
def torch_model():
    """The independent Net1D, seeded; the head is scaled up so logits span several units
    like a trained model's (a tiny-logit model would make a 1e-4 bound meaningless)."""
    torch.manual_seed(1234)
    model = torch_net1d.Net1D().eval()
    with torch.no_grad():
        model.dense.weight.mul_(40.0)
    return model


@pytest.fixture(scope="session")
def real_windows(shared_data: Path) -> np.ndarray:
    return cinc_windows(shared_data, 6)


@pytest.fixture(scope="session")
def converted(tmp_path_factory, torch_model, ecgfounder_labels):
    """The checkpoint torch.save writes in the upstream layout, converted by the command."""
    folder = tmp_path_factory.mktemp("parity")
    checkpoint = folder / "12_lead_ECGFounder.pth"
    torch.save(upstream_checkpoint(torch_model.state_dict()), checkpoint)
    code, out, err = run_model_command(["convert", "--checkpoint", str(checkpoint),
                                        "--labels", str(ecgfounder_labels),
                                        "--out", str(folder / "model")])
    assert code == 0, err
    return folder / "model" / "ecgfounder.json", checkpoint, out


def test_converted_model_matches_torch_on_real_ecgs(converted, torch_model, real_windows):
    """ONNX Runtime logits of the converted model equal PyTorch's within 1e-4."""
    session = ModelSession.open(converted[0], threads=2)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(real_windows)).numpy()
    actual = session.predict_logits(real_windows)
    assert expected.std() > 1.0  # logits span a trained-like range
    assert np.abs(actual - expected).max() <= MAX_LOGIT_DIFF


def test_convert_records_provenance_and_ignored_batchnorm(converted):
    """The manifest says trained, pins the checkpoint's sha256; 305 bn entries are ignored."""
    import hashlib

    manifest_path, checkpoint, out = converted
    manifest = load_manifest(manifest_path)
    assert manifest.trained is True
    assert manifest.provenance["checkpoint_sha256"] == hashlib.sha256(
        checkpoint.read_bytes()).hexdigest()
    assert manifest.provenance["training"]["val_auroc"] == pytest.approx(0.9125)
    assert manifest.provenance["ignored_keys"] == 305  # 5 first_bn + 20 blocks x 3 x 5
    assert "305 unused batch-norm entries ignored" in out


def test_module_prefix_checkpoint_converts_to_the_same_graph(tmp_path, torch_model, converted,
                                                            ecgfounder_labels):
    """A DataParallel ('module.'-prefixed) checkpoint gives a byte-identical graph."""
    state = {f"module.{k}": v for k, v in torch_model.state_dict().items()}
    checkpoint = tmp_path / "12_lead_ECGFounder.pth"
    torch.save(upstream_checkpoint(state, with_optimizer=False), checkpoint)
    code, out, err = run_model_command(["convert", "--checkpoint", str(checkpoint),
                                        "--labels", str(ecgfounder_labels),
                                        "--out", str(tmp_path / "m")])
    assert code == 0, err
    assert "stripped prefix 'module.'" in out
    ours = load_manifest(tmp_path / "m" / "ecgfounder.json")
    assert ours.onnx_sha256 == load_manifest(converted[0]).onnx_sha256
