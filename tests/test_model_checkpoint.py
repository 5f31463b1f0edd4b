"""Bad checkpoints and labels: one line naming the file and reason, no output written, and
a booby-trapped pickle is refused without its payload ever running."""
from __future__ import annotations

import os
import pickle
import tracemalloc
import zipfile
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from ecgd.errors import CheckpointError
from ecgd.model.checkpoint import load_checkpoint
from ecgd.model.net1d import ECGFOUNDER_12LEAD, expected_shapes
from model_helpers import run_model_command, upstream_checkpoint

torch = pytest.importorskip("torch")


def _cheap_state(shapes: Dict[str, tuple]) -> Dict:
    """Right-shaped tensors sharing one 1-element storage (stride 0): a full key set in a
    checkpoint of a few kilobytes."""
    one = torch.full((1,), 0.25)
    return {k: one.expand(*shape) for k, shape in shapes.items()}


def _convert(tmp_path: Path, checkpoint: Path, labels: Path):
    out_dir = tmp_path / "out"
    code, out, err = run_model_command(["convert", "--checkpoint", str(checkpoint),
                                        "--labels", str(labels), "--out", str(out_dir)])
    written = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    return code, err, written


def _save(tmp_path: Path, state: Dict, name: str = "ck.pth") -> Path:
    path = tmp_path / name
    torch.save(upstream_checkpoint(state, with_optimizer=False), path)
    return path


class _Payload:
    """Pickles as os.system(<command>), the classic booby trap."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_booby_trapped_pickle_is_refused_and_never_runs(tmp_path, ecgfounder_labels):
    """A __reduce__ that runs a shell command is refused by name; the marker never appears."""
    marker = tmp_path / "payload-ran"
    checkpoint = tmp_path / "evil.pth"
    with zipfile.ZipFile(checkpoint, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps(
            {"state_dict": {"first_conv.conv.weight": _Payload(f"touch {marker}")}},
            protocol=2))
        zf.writestr("evil/byteorder", "little")
    code, err, written = _convert(tmp_path, checkpoint, ecgfounder_labels)
    assert code == 65
    assert err.count("\n") == 1 and "evil.pth" in err and "posix.system" in err
    assert not marker.exists()
    assert written == []


def test_truncated_checkpoint_is_refused(tmp_path, ecgfounder_labels):
    """A checkpoint cut short is refused with one line naming it."""
    full = _save(tmp_path, _cheap_state(expected_shapes(ECGFOUNDER_12LEAD)))
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    code, err, written = _convert(tmp_path, cut, ecgfounder_labels)
    assert code == 65 and err.count("\n") == 1 and "cut.pth" in err
    assert written == []


def test_non_zip_checkpoint_is_refused(tmp_path, ecgfounder_labels):
    """A legacy/non-zip file is named as not a PyTorch zip checkpoint."""
    bogus = tmp_path / "old.pth"
    bogus.write_bytes(pickle.dumps({"state_dict": {}}))
    code, err, written = _convert(tmp_path, bogus, ecgfounder_labels)
    assert code == 65 and "old.pth: not a PyTorch zip checkpoint" in err
    assert written == []


@pytest.mark.parametrize("change, reason", [
    ("missing", "missing 1 keys (dense.bias)"),
    ("extra", "unexpected 1 keys (stage_list.7.block_list.0.conv1.conv.weight)"),
    ("misshaped", "stage_list.2.block_list.1.conv2.conv.weight has shape [160, 16, 15], "
                  "expected [160, 16, 16]"),
])
def test_wrong_architecture_is_refused(tmp_path, ecgfounder_labels, change, reason):
    """Missing, unexpected and mis-shaped keys are each named in one line."""
    shapes = dict(expected_shapes(ECGFOUNDER_12LEAD))
    if change == "missing":
        del shapes["dense.bias"]
    elif change == "extra":
        shapes["stage_list.7.block_list.0.conv1.conv.weight"] = (4, 4, 1)
    else:
        shapes["stage_list.2.block_list.1.conv2.conv.weight"] = (160, 16, 15)
    checkpoint = _save(tmp_path, _cheap_state(shapes))
    code, err, written = _convert(tmp_path, checkpoint, ecgfounder_labels)
    assert code == 65 and err.count("\n") == 1 and reason in err and "ck.pth" in err
    assert written == []


def test_shared_storage_checkpoint_reads_back_exact_values(tmp_path):
    """Strided/shared-storage tensors and float64 weights are read as torch wrote them."""
    shapes = expected_shapes(ECGFOUNDER_12LEAD)
    state = _cheap_state(shapes)
    weight = torch.arange(150 * 1024, dtype=torch.float64).reshape(1024, 150).t()
    state["dense.weight"] = weight  # non-contiguous view, float64 storage
    checkpoint = _save(tmp_path, state)
    loaded = load_checkpoint(checkpoint, ECGFOUNDER_12LEAD)
    np.testing.assert_array_equal(loaded.weights["dense.weight"],
                                  weight.numpy().astype(np.float32))
    assert loaded.weights["first_conv.conv.bias"].dtype == np.float32
    assert loaded.info == {"epoch": 7, "step": 12345, "val_auroc": pytest.approx(0.9125)}


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """A pickle describing a tensor larger than its storage cannot read foreign memory."""
    checkpoint = _save(tmp_path, _cheap_state(expected_shapes(ECGFOUNDER_12LEAD)))
    with zipfile.ZipFile(checkpoint) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl_name = next(n for n in members if n.endswith("data.pkl"))
    # stride 0 -> stride 1: every tensor now claims numel elements of a 1-element storage
    members[pkl_name] = members[pkl_name].replace(b"K\x00K\x00", b"K\x01K\x01")
    forged = tmp_path / "forged.pth"
    with zipfile.ZipFile(forged, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match="forged.pth: .*past its storage"):
        load_checkpoint(forged, ECGFOUNDER_12LEAD)


@pytest.mark.parametrize("target, reason", [
    ("/data/", "bomb.pth: storage .* holds 268435456 bytes"),
    ("/byteorder", "bomb.pth: byteorder record is larger than"),
])
def test_zip_bomb_member_is_refused_before_inflating(tmp_path, target, reason):
    """A storage or byteorder member declaring far more bytes than it may hold is refused
    unread (peak memory stays far below its 256 MiB)."""
    checkpoint = _save(tmp_path, _cheap_state(expected_shapes(ECGFOUNDER_12LEAD)))
    with zipfile.ZipFile(checkpoint) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    bomb = tmp_path / "bomb.pth"
    chunk = bytes(16 * 1024 * 1024)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if target not in name:
                zf.writestr(name, data)
                continue
            with zf.open(name, "w", force_zip64=True) as member:
                for _ in range(16):  # 256 MiB of zeros, ~256 KiB deflated
                    member.write(chunk)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=reason):
            load_checkpoint(bomb, ECGFOUNDER_12LEAD)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 64 * 1024 * 1024


@pytest.mark.parametrize("text, reason", [
    ("a\n" * 149, "has 149 lines, expected exactly 150"),
    ("a\n" * 151, "has 151 lines, expected exactly 150"),
    ("".join(f"l{i}\n" for i in range(74)) + "\n" + "".join(f"m{i}\n" for i in range(75)),
     "line 75 is empty"),
])
def test_labels_file_must_have_150_non_empty_lines(tmp_path, text, reason):
    """A labels file that is not exactly 150 non-empty lines is refused before any work."""
    labels = tmp_path / "tasks.txt"
    labels.write_text(text)
    checkpoint = tmp_path / "never-read.pth"
    checkpoint.write_bytes(b"not even looked at")
    code, err, written = _convert(tmp_path, checkpoint, labels)
    assert code == 65 and err.count("\n") == 1 and f"tasks.txt: labels file {reason}" in err
    assert written == []
