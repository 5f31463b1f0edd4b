"""An ONNX Runtime session for one verified model.

The ONNX bytes are read once, hashed against the manifest and handed to ONNX Runtime from
memory, so the file that was verified is the file that runs. Session options are set
deliberately: every graph optimisation, ``threads`` intra-op threads for the convolutions,
one inter-op thread and sequential execution (the graph is a chain; parallel execution
would only add scheduling overhead on a 2-to-4-core appliance).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List

import numpy as np
import onnxruntime as ort

from ecgd.errors import ModelError
from ecgd.model.manifest import Manifest, load_manifest
from ecgd.model.onnx_graph import INPUT_NAME, OUTPUT_NAME


def session_options(threads: int) -> ort.SessionOptions:
    """The ORT options every ecgd session (and the benchmark) uses."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # ORT's own warnings would bypass ecgd's structured log
    return options


def _check_io(name: str, args: List[Any], expected: List[Any], what: str, source: str) -> None:
    if len(args) != 1:
        raise ModelError(f"{source}: graph has {len(args)} {what}s, expected 1")
    arg = args[0]
    if arg.name != name or arg.type != "tensor(float)":
        raise ModelError(f"{source}: graph {what} is {arg.name!r} {arg.type}, expected "
                         f"{name!r} tensor(float)")
    shape = list(arg.shape)
    # the batch axis must be symbolic so any batch size runs
    if len(shape) != len(expected) or shape[1:] != expected[1:] or isinstance(shape[0], int):
        raise ModelError(f"{source}: graph {what} shape {shape} is not "
                         f"[batch, {', '.join(map(str, expected[1:]))}] as the manifest says")


class ModelSession:
    """A loaded model: ``manifest`` and :meth:`predict_logits`."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession) -> None:
        self.manifest = manifest
        self._session = session
        self._input_shape = (len(manifest.lead_names), manifest.n_samples)

    @classmethod
    def open(cls, manifest_path: Path, threads: int) -> "ModelSession":
        """Verify ``manifest_path`` and its ONNX file, then start ONNX Runtime on it."""
        if not 1 <= threads <= 64:
            raise ModelError(f"threads={threads}: must be between 1 and 64")
        manifest = load_manifest(manifest_path, verify_onnx=False)
        source = manifest.path.name
        try:
            onnx_bytes = manifest.onnx_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{source}: cannot read model file {manifest.onnx_path.name}: "
                             f"{exc.strerror}") from exc
        if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
            raise ModelError(f"{source}: sha256 of {manifest.onnx_path.name} does not match "
                             f"the manifest (file altered or replaced)")
        try:
            session = ort.InferenceSession(onnx_bytes, session_options(threads),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelError(f"{source}: {manifest.onnx_path.name} is not a loadable ONNX "
                             f"model ({str(exc).splitlines()[0][:200]})") from exc
        _check_io(INPUT_NAME, session.get_inputs(),
                  ["batch", len(manifest.lead_names), manifest.n_samples], "input", source)
        _check_io(OUTPUT_NAME, session.get_outputs(), ["batch", manifest.n_classes], "output",
                  source)
        return cls(manifest, session)

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits float32 ``[b, n_classes]`` for preprocessed windows float32
        ``[b, leads, n_samples]`` in the manifest's lead order; any ``b`` >= 1.
        """
        if batch.ndim != 3 or batch.shape[1:] != self._input_shape or batch.shape[0] < 1:
            raise ModelError(f"{self.manifest.name}: input shape {batch.shape} is not "
                             f"[b, {self._input_shape[0]}, {self._input_shape[1]}]")
        if batch.dtype != np.float32:
            raise ModelError(f"{self.manifest.name}: input dtype {batch.dtype}, expected "
                             f"float32")
        try:
            (logits,) = self._session.run(None, {self._session.get_inputs()[0].name:
                                                 np.ascontiguousarray(batch)})
        except Exception as exc:
            raise ModelError(f"{self.manifest.name}: inference failed "
                             f"({str(exc).splitlines()[0][:200]})") from exc
        return logits
