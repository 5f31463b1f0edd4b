"""The Net1D architecture of ECGFounder as data: hyper-parameters, blocks, state-dict keys.

Nothing here runs a network. The ONNX builder, the checkpoint converter and the manifest
all read the same :class:`Net1DSpec`, so there is one description of the architecture
(``../shared/docs/ECGFOUNDER.md``) and every state-dict key and shape follows from it.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Dict, List, Mapping, Tuple

from ecgd.errors import ModelError

# Graph input and output names of every ecgd Net1D (the ONNX contract; kept here, not in
# onnx_graph, so that loading a model never imports the onnx package).
INPUT_NAME = "ecg"
OUTPUT_NAME = "logits"


@dataclasses.dataclass(frozen=True)
class Net1DSpec:
    """Hyper-parameters of a Net1D (defaults: the 12-lead ECGFounder checkpoint).

    ``kernel_size`` and ``stride`` are in samples; ``n_samples`` is the fixed input length
    the graph is built for (10 s at 500 Hz).
    """

    in_channels: int = 12
    base_filters: int = 64
    ratio: float = 1.0
    filter_list: Tuple[int, ...] = (64, 160, 160, 400, 400, 1024, 1024)
    m_blocks_list: Tuple[int, ...] = (2, 2, 2, 3, 3, 4, 4)
    kernel_size: int = 16
    stride: int = 2
    groups_width: int = 16
    n_classes: int = 150
    n_samples: int = 5000

    def __post_init__(self) -> None:
        if len(self.filter_list) != len(self.m_blocks_list) or not self.filter_list:
            raise ModelError("architecture: filter_list and m_blocks_list must be non-empty "
                             "and of equal length")
        positive = (self.in_channels, self.base_filters, self.kernel_size, self.stride,
                    self.groups_width, self.n_classes, self.n_samples, *self.filter_list,
                    *self.m_blocks_list)
        if min(positive) <= 0 or self.ratio <= 0:
            raise ModelError("architecture: every size must be positive")
        for block in blocks(self):
            if block.middle_channels % self.groups_width:
                raise ModelError(f"architecture: {block.middle_channels} channels are not a "
                                 f"multiple of groups_width {self.groups_width}")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One residual block: where it sits, its channels, stride and grouped-conv groups."""

    stage: int
    index: int
    in_channels: int
    out_channels: int
    middle_channels: int
    stride: int
    groups: int
    is_first: bool

    @property
    def prefix(self) -> str:
        return f"stage_list.{self.stage}.block_list.{self.index}"

    @property
    def downsamples(self) -> bool:
        return self.stride > 1


def blocks(spec: Net1DSpec) -> List[BlockSpec]:
    """Every residual block of ``spec`` in execution order."""
    out = []
    in_channels = spec.base_filters
    for stage, (out_channels, m_blocks) in enumerate(zip(spec.filter_list, spec.m_blocks_list)):
        middle = int(out_channels * spec.ratio)
        for index in range(m_blocks):
            out.append(BlockSpec(
                stage=stage,
                index=index,
                in_channels=in_channels if index == 0 else out_channels,
                out_channels=out_channels,
                middle_channels=middle,
                stride=spec.stride if index == 0 else 1,
                groups=middle // spec.groups_width,
                is_first=stage == 0 and index == 0,
            ))
        in_channels = out_channels
    return out


# The 12-lead ECGFounder checkpoint's architecture (``12_lead_ECGFounder.pth``).
ECGFOUNDER_12LEAD = Net1DSpec()


def same_padding(length: int, stride: int, kernel_size: int) -> Tuple[int, int]:
    """Zero padding (left, right) in samples of a "SAME" convolution over ``length``."""
    out_length = math.ceil(length / stride)
    pad = max(0, (out_length - 1) * stride + kernel_size - length)
    return pad // 2, pad - pad // 2


def expected_shapes(spec: Net1DSpec) -> Dict[str, Tuple[int, ...]]:
    """The state-dict keys inference uses, with their shapes (PyTorch layout).

    Conv weights are ``[out, in / groups, k]``, Linear weights ``[out, in]``.
    """
    shapes: Dict[str, Tuple[int, ...]] = {
        "first_conv.conv.weight": (spec.base_filters, spec.in_channels, spec.kernel_size),
        "first_conv.conv.bias": (spec.base_filters,),
    }
    for block in blocks(spec):
        mid, out = block.middle_channels, block.out_channels
        convs = {
            "conv1": (mid, block.in_channels, 1),
            "conv2": (mid, mid // block.groups, spec.kernel_size),
            "conv3": (out, mid, 1),
        }
        for name, shape in convs.items():
            shapes[f"{block.prefix}.{name}.conv.weight"] = shape
            shapes[f"{block.prefix}.{name}.conv.bias"] = (shape[0],)
        shapes[f"{block.prefix}.se_fc1.weight"] = (out // 2, out)
        shapes[f"{block.prefix}.se_fc1.bias"] = (out // 2,)
        shapes[f"{block.prefix}.se_fc2.weight"] = (out, out // 2)
        shapes[f"{block.prefix}.se_fc2.bias"] = (out,)
    last = spec.filter_list[-1]
    shapes["dense.weight"] = (spec.n_classes, last)
    shapes["dense.bias"] = (spec.n_classes,)
    return shapes


_BATCHNORM_KEY = re.compile(r"^(first_bn|stage_list\.\d+\.block_list\.\d+\.bn[123])\."
                            r"(weight|bias|running_mean|running_var|num_batches_tracked)$")


def is_batchnorm_key(key: str) -> bool:
    """True for the batch-norm entries the checkpoint carries but inference never uses."""
    return _BATCHNORM_KEY.match(key) is not None


def count_parameters(spec: Net1DSpec) -> int:
    """Number of weights and biases inference uses."""
    return sum(math.prod(shape) for shape in expected_shapes(spec).values())


def architecture_dict(spec: Net1DSpec) -> Dict[str, Any]:
    """The spec as the JSON object a manifest records."""
    return {
        "name": "Net1D",
        "in_channels": spec.in_channels,
        "base_filters": spec.base_filters,
        "ratio": spec.ratio,
        "filter_list": list(spec.filter_list),
        "m_blocks_list": list(spec.m_blocks_list),
        "kernel_size": spec.kernel_size,
        "stride": spec.stride,
        "groups_width": spec.groups_width,
        "n_classes": spec.n_classes,
        "n_samples": spec.n_samples,
        "use_bn": False,
        "use_do": False,
        "activation": "swish",
        "n_parameters": count_parameters(spec),
    }


def spec_from_dict(data: Mapping[str, Any]) -> Net1DSpec:
    """Rebuild a spec from a manifest's ``architecture`` object; ModelError when it is not one."""
    if not isinstance(data, Mapping) or data.get("name") != "Net1D":
        raise ModelError("architecture: not a Net1D")
    try:
        spec = Net1DSpec(
            in_channels=int(data["in_channels"]),
            base_filters=int(data["base_filters"]),
            ratio=float(data["ratio"]),
            filter_list=tuple(int(v) for v in data["filter_list"]),
            m_blocks_list=tuple(int(v) for v in data["m_blocks_list"]),
            kernel_size=int(data["kernel_size"]),
            stride=int(data["stride"]),
            groups_width=int(data["groups_width"]),
            n_classes=int(data["n_classes"]),
            n_samples=int(data["n_samples"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"architecture: missing or malformed field ({exc})") from exc
    if data.get("use_bn") or data.get("use_do"):
        raise ModelError("architecture: batch-norm/dropout variants are not supported")
    if architecture_dict(spec) != dict(data):
        raise ModelError("architecture: fields disagree with a Net1D of these hyper-parameters")
    return spec
