"""The one way a Net1D becomes ONNX: a weights dict (PyTorch layout) -> ``onnx.ModelProto``.

numpy + onnx only. ONNX Runtime's CPU kernels for 2-D convolutions are much faster than its
1-D ones on this network (``../shared/docs/PERFORMANCE.md``), so by default every Conv1d is
expressed as a Conv2d over ``[batch, channels, 1, samples]``: the input is unsqueezed once,
weights get a height-1 axis, and the head flattens. ``layout="conv1d"`` builds the plain
1-D graph with identical arithmetic, kept only so the benchmark can show the difference.

SAME padding is the convolution's ``pads`` attribute (zeros, as upstream's ``F.pad``). The
max-pool shortcut pads with an explicit zero ``Pad`` because MaxPool's own padding is -inf,
which would differ from upstream whenever the last sample is negative.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ecgd.errors import ModelError
from ecgd.model.net1d import (INPUT_NAME, OUTPUT_NAME, Net1DSpec, blocks, expected_shapes,
                              same_padding)

OPSET = 17
LAYOUTS = ("conv2d", "conv1d")


class _GraphBuilder:
    """Accumulates nodes and initializers; names are unique by construction."""

    def __init__(self, weights: Mapping[str, np.ndarray], layout: str) -> None:
        self.weights = weights
        self.layout = layout
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self._counter = 0

    def fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}_{self._counter}"

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: Sequence[str], stem: str, output: str = "",
             **attrs: Any) -> str:
        output = output or self.fresh(stem)
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def swish(self, x: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x], "sigmoid")], "swish")

    def conv(self, x: str, key: str, length: int, stride: int, groups: int) -> str:
        """SAME Conv1d of weights ``key`` over a signal of ``length`` samples."""
        weight = np.asarray(self.weights[f"{key}.conv.weight"], dtype=np.float32)
        bias = np.asarray(self.weights[f"{key}.conv.bias"], dtype=np.float32)
        kernel = weight.shape[-1]
        left, right = same_padding(length, stride, kernel)
        attrs: Dict[str, Any]
        if self.layout == "conv2d":
            weight = weight[:, :, np.newaxis, :]
            attrs = dict(kernel_shape=[1, kernel], strides=[1, stride], pads=[0, left, 0, right])
        else:
            attrs = dict(kernel_shape=[kernel], strides=[stride], pads=[left, right])
        w = self.constant(f"{key}.weight", np.ascontiguousarray(weight))
        b = self.constant(f"{key}.bias", bias)
        return self.node("Conv", [x, w, b], key.replace(".", "_"), group=groups, **attrs)

    def linear(self, x: str, key: str, output: str = "") -> str:
        w = self.constant(f"{key}.weight", np.asarray(self.weights[f"{key}.weight"], np.float32))
        b = self.constant(f"{key}.bias", np.asarray(self.weights[f"{key}.bias"], np.float32))
        return self.node("Gemm", [x, w, b], key.replace(".", "_"), output=output, transB=1)

    def time_mean(self, x: str) -> str:
        """Mean over time, flattened to ``[batch, channels]``."""
        pooled = self.node("GlobalAveragePool", [x], "mean")
        return self.node("Flatten", [pooled], "flat", axis=1)

    def pad(self, x: str, pads: Sequence[int]) -> str:
        name = self.constant(self.fresh("pads"), np.asarray(pads, dtype=np.int64))
        return self.node("Pad", [x, name], "pad", mode="constant")


def _check_weights(spec: Net1DSpec, weights: Mapping[str, np.ndarray]) -> None:
    for key, shape in expected_shapes(spec).items():
        if key not in weights:
            raise ModelError(f"weights: missing {key}")
        if tuple(weights[key].shape) != shape:
            raise ModelError(f"weights: {key} has shape {tuple(weights[key].shape)}, "
                             f"expected {shape}")


def build_graph(spec: Net1DSpec, weights: Mapping[str, np.ndarray], *,
                layout: str = "conv2d", doc: str = "ECGFounder Net1D") -> onnx.ModelProto:
    """Build the inference graph: ``ecg`` float32 [batch, in_channels, n_samples] -> ``logits``
    float32 [batch, n_classes]. ``weights`` maps state-dict keys (no ``module.`` prefix) to
    arrays in PyTorch layout; batch-norm entries are not needed.
    """
    if layout not in LAYOUTS:
        raise ModelError(f"unknown graph layout {layout!r} (expected one of {LAYOUTS})")
    _check_weights(spec, weights)
    g = _GraphBuilder(weights, layout)
    spatial_pad = 2 if layout == "conv2d" else 1  # number of spatial axes in pads lists

    x = INPUT_NAME
    if layout == "conv2d":
        x = g.node("Unsqueeze", [x, g.constant("axes_height", np.asarray([2], np.int64))],
                   "as_2d")
    length = spec.n_samples
    x = g.swish(g.conv(x, "first_conv", length, spec.stride, 1))
    length = -(-length // spec.stride)

    for block in blocks(spec):
        p = block.prefix
        a = x if block.is_first else g.swish(x)
        a = g.swish(g.conv(a, f"{p}.conv1", length, 1, 1))
        a = g.swish(g.conv(a, f"{p}.conv2", length, block.stride, block.groups))
        out_length = -(-length // block.stride)
        a = g.conv(a, f"{p}.conv3", out_length, 1, 1)

        se = g.swish(g.linear(g.time_mean(a), f"{p}.se_fc1"))
        se = g.node("Sigmoid", [g.linear(se, f"{p}.se_fc2")], "se_gate")
        se_axes = [2, 3] if layout == "conv2d" else [2]
        se = g.node("Unsqueeze", [se, g.constant(g.fresh("axes"), np.asarray(se_axes, np.int64))],
                    "se_gate_4d")
        a = g.node("Mul", [a, se], "se_scaled")

        shortcut = x
        if block.downsamples:
            # upstream pads (0 left, kernel - 1 = 1 right) with zeros, then max-pools k = s = 2
            zeros_before = [0] * (2 + spatial_pad)
            right = [0] * (1 + spatial_pad) + [block.stride - 1]
            shortcut = g.pad(shortcut, zeros_before + right)
            pool_attrs: Dict[str, Any] = (
                dict(kernel_shape=[1, block.stride], strides=[1, block.stride])
                if layout == "conv2d"
                else dict(kernel_shape=[block.stride], strides=[block.stride]))
            shortcut = g.node("MaxPool", [shortcut], "shortcut_pool", **pool_attrs)
        if block.out_channels != block.in_channels:
            extra = block.out_channels - block.in_channels
            before = [0, extra // 2] + [0] * spatial_pad
            after = [0, extra - extra // 2] + [0] * spatial_pad
            shortcut = g.pad(shortcut, before + after)
        x = g.node("Add", [a, shortcut], "block_out")
        length = out_length

    g.linear(g.time_mean(x), "dense", output=OUTPUT_NAME)

    graph = helper.make_graph(
        g.nodes, "net1d",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["batch", spec.in_channels, spec.n_samples])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                       ["batch", spec.n_classes])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ecgd", doc_string=doc)
    # ir_version 8 keeps the file loadable by the older ONNX Runtime on Raspberry Pi OS.
    model.ir_version = 8
    return model


def random_weights(spec: Net1DSpec, seed: int) -> Dict[str, np.ndarray]:
    """Seeded weights with PyTorch's default initialisation scale, U(-1/sqrt(fan_in), +).

    Deterministic for a given ``seed`` on every platform (numpy's PCG64).
    """
    rng = np.random.default_rng(seed)
    shapes = expected_shapes(spec)
    weights = {}
    for key, shape in shapes.items():
        weight_shape = shapes[key[: -len("bias")] + "weight"] if key.endswith("bias") else shape
        fan_in = int(np.prod(weight_shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        weights[key] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return weights


def float_parameter_count(model: onnx.ModelProto) -> int:
    """Number of float32 weight elements in ``model`` (an FP32 Net1D: its parameter count)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type == TensorProto.FLOAT)
