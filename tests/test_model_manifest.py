"""Manifests: written complete, and refused with one line when a hash, shape or field is off."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from ecgd.errors import ModelError
from ecgd.model.manifest import load_manifest, manifest_document, sha256_of_file
from ecgd.model.session import ModelSession
from model_helpers import run_model_command, write_tiny_model

LABELS = tuple(f"finding {i}" for i in range(150))


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny_model(tmp_path / "model", LABELS)


def _edit(manifest_path: Path, change) -> None:
    document = json.loads(manifest_path.read_text())
    change(document)
    manifest_path.write_text(json.dumps(document))


def test_written_manifest_round_trips(tiny):
    """What write_model writes, load_manifest reads back field for field."""
    manifest = load_manifest(tiny)
    assert manifest.labels == LABELS and manifest.thresholds == (0.5,) * 150
    assert manifest.lead_names[:3] == ("I", "II", "III") and manifest.fs_hz == 500.0
    assert manifest.preprocessing_profile == "ecgfounder"
    assert manifest.preprocessing_params["bandpass_hz"] == [0.67, 40.0]
    assert manifest_document(manifest) == json.loads(tiny.read_text())
    assert [p.name for p in tiny.parent.iterdir() if p.name.startswith(".")] == []


def test_altered_onnx_file_is_refused(tiny):
    """One flipped byte in the ONNX file: load_manifest and ModelSession both refuse."""
    onnx_path = tiny.with_suffix(".onnx")
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    for load in (load_manifest, lambda p: ModelSession.open(p, threads=1)):
        with pytest.raises(ModelError) as info:
            load(tiny)
        assert str(info.value) == (f"{tiny}: sha256 of {onnx_path} does not match the "
                                   f"manifest (file altered or replaced)")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["output"]["labels"].__setitem__(3, "NORMAL ECG"),
     "labels_sha256 does not match"),
    (lambda d: d["output"]["labels"].pop(), "output.labels must be 150"),
    (lambda d: d["output"]["thresholds"].__setitem__(0, 1.5), "thresholds must be 150 numbers"),
    (lambda d: d["input"].__setitem__("n_samples", 4000), "n_samples is 4000"),
    (lambda d: d["input"]["lead_names"].reverse() or d["input"]["lead_names"].__setitem__(
        0, "V7"), "lead_names must be the 12 standard leads"),
    (lambda d: d.__setitem__("precision", "fp16"), "precision must be one of"),
    (lambda d: d.__setitem__("format_version", 2), "format_version is 2"),
    (lambda d: d.__setitem__("surprise", 1), "surprise is not a manifest field"),
    (lambda d: d.__setitem__("onnx_file", "../elsewhere.onnx"), "onnx_file must be a plain"),
    (lambda d: d["architecture"].__setitem__("kernel_size", 15), "architecture: fields disagree"),
    (lambda d: d["preprocessing"].__setitem__("profile", "magic"),
     "unknown preprocessing profile 'magic'"),
    (lambda d: d["preprocessing"]["params"].pop("notch_q"), "preprocessing params for"),
    (lambda d: d.pop("trained"), "trained is missing"),
])
def test_tampered_manifest_is_refused_in_one_line(tiny, change, message):
    """Each altered field gives a ModelError naming the manifest's full path and the
    reason."""
    _edit(tiny, change)
    with pytest.raises(ModelError) as info:
        load_manifest(tiny)
    assert str(info.value).startswith(f"{tiny}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_json_manifest_is_refused(tmp_path):
    """A manifest that is not JSON is refused, naming its full path."""
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(ModelError) as info:
        load_manifest(path)
    assert str(info.value).startswith(f"{path}: manifest is not valid JSON")


def _swap_graph(manifest_path: Path, graph_input_shape, graph_output_shape) -> None:
    """Replace the model with a valid ONNX graph of other shapes, re-pinning its hash."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["ecg"], ["logits"], axes=[2], keepdims=0)], "other",
        [helper.make_tensor_value_info("ecg", TensorProto.FLOAT, graph_input_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, graph_output_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx_path = manifest_path.with_suffix(".onnx")
    onnx.save(model, str(onnx_path))
    _edit(manifest_path, lambda d: d.__setitem__("onnx_sha256", sha256_of_file(onnx_path)))


def test_onnx_of_another_shape_is_refused(tiny):
    """A hash-consistent ONNX whose input is not [batch, 12, 5000] is refused by the session."""
    _swap_graph(tiny, ["batch", 12, 4000], ["batch", 12])
    with pytest.raises(ModelError) as info:
        ModelSession.open(tiny, threads=1)
    assert str(info.value).startswith(f"{tiny}: graph input shape ['batch', 12, 4000]")


def test_verify_refuses_a_graph_that_is_not_the_net1d(tiny):
    """``ecgd model verify`` exits 65 when the graph's weights are not the manifest's Net1D."""
    _swap_graph(tiny, ["batch", 12, 5000], ["batch", 12])
    code, out, err = run_model_command(["verify", str(tiny)])
    assert code == 65 and f"{tiny}: graph holds 0 float weights" in err


def test_verify_runs_the_model_on_real_records(tiny, shared_data):
    """verify prints one summary line per readable file ("1 window", not "1 windows") and
    exits 1 naming an unreadable one by its full path."""
    record = shared_data / "cinc2021" / "HR06000.hea"
    two_lead = shared_data / "mitdb" / "100.hea"
    code, out, err = run_model_command(["verify", str(tiny), str(record), str(two_lead)])
    assert code == 1
    assert f"{record}: 1 window, " in out and "top: finding" in out
    assert err.strip().startswith(f"ecgd: {two_lead}: lacks leads")
    code, out, err = run_model_command(["verify", str(tiny), str(record)])
    assert code == 0 and err == ""


def test_missing_onnx_file_is_refused(tiny):
    """A manifest whose model file is gone is refused, naming both by their full paths."""
    tiny.with_suffix(".onnx").unlink()
    with pytest.raises(ModelError) as info:
        load_manifest(tiny)
    assert str(info.value).startswith(
        f"{tiny}: cannot read model file {tiny.with_suffix('.onnx')}")
