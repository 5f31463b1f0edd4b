"""A deliberately slow model with the manifest contract of a Net1D, for hang/backlog tests.

The graph takes ``ecg [batch, 12, 5000]`` and returns ``logits [batch, 150]`` like the real
network, but first spins an ONNX ``Loop`` for a chosen number of iterations: real ONNX
Runtime work that keeps the inference thread busy, as a throttled or stuck CPU would.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ecgd.model.manifest import load_manifest, sha256_of_file, write_manifest
from ecgd.model.net1d import INPUT_NAME, OUTPUT_NAME


def _spin_loop_body() -> onnx.GraphProto:
    iteration = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    condition = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [64, 64])
    cond_out = helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])
    state_out = helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [64, 64])
    nodes = [
        helper.make_node("Identity", ["cond"], ["cond_out"]),
        helper.make_node("MatMul", ["state", "state"], ["squared"]),
        helper.make_node("Tanh", ["squared"], ["state_out"]),
    ]
    return helper.make_graph(nodes, "spin", [iteration, condition, state], [cond_out, state_out])


def write_slow_model(reference_manifest: Path, out_dir: Path, iterations: int,
                     name: str = "slow-model") -> Path:
    """Write NAME.onnx + NAME.json whose inference spins ``iterations`` 64x64 matmuls."""
    reference = load_manifest(reference_manifest)
    n_leads, n_labels = len(reference.lead_names), len(reference.labels)
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trip_count"),
        numpy_helper.from_array(np.array(True), "keep_going"),
        numpy_helper.from_array(rng.normal(0, 0.1, (64, 64)).astype(np.float32), "state_init"),
        numpy_helper.from_array(rng.normal(0, 0.1, (n_leads, n_labels)).astype(np.float32),
                                "head"),
    ]
    nodes = [
        # The loop state depends on the input, so ONNX Runtime cannot fold it at load time.
        helper.make_node("ReduceMean", [INPUT_NAME], ["input_mean"], keepdims=0),
        helper.make_node("Add", ["state_init", "input_mean"], ["state0"]),
        helper.make_node("Loop", ["trip_count", "keep_going", "state0"], ["spun"],
                         body=_spin_loop_body()),
        helper.make_node("ReduceMean", ["spun"], ["spun_mean"], keepdims=0),
        helper.make_node("ReduceMean", [INPUT_NAME], ["lead_means"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["lead_means", "head"], ["raw_logits"]),
        helper.make_node("Add", ["raw_logits", "spun_mean"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["batch", n_leads, reference.n_samples])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n_labels])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # as ecgd's own builder: loadable by older ONNX Runtime releases
    onnx.checker.check_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    manifest = dataclasses.replace(reference, name=name, path=out_dir / f"{name}.json",
                                   onnx_path=onnx_path, onnx_sha256=sha256_of_file(onnx_path))
    return write_manifest(manifest)
