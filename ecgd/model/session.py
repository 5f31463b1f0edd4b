"""An ONNX Runtime session for one verified model.

The ONNX file is hashed against the manifest once (:meth:`VerifiedModel.verify`, ~2 s for
the 117 MB fp32 Net1D when the file is not cached). Every session is then started from the
verified file (:meth:`VerifiedModel.start`): the file is opened, and ONNX Runtime loads that
open file (``/proc/self/fd/N``) only if it is still the inode that was hashed and has not
been written to since (device, inode, size, mtime and ctime unchanged, before and after the
load: any write changes mtime and ctime, and a file renamed over the model is another inode).
So ``ecgd batch`` hashes once per run and its worker processes start their sessions without
hashing again. The model is never held as a Python ``bytes`` copy: for the 123 MB fp32
Net1D that copy alone raised the daemon's peak RSS by 110 MB.

Session options are set deliberately: every graph optimisation except the NCHWc layout
transform, ``threads`` intra-op threads for the convolutions, one inter-op thread and
sequential execution (the graph is a chain; parallel execution would only add scheduling
overhead on a 2-to-4-core appliance). Measured on the 2-core development machine (fp32
Net1D, batch 4): NCHWc keeps a second, re-laid-out copy of every convolution weight
(+140 MB resident: session 321 MB instead of 183 MB) for 14-21% faster fp32 inference
(16.2 against 20.5 ms on 1 thread; without NCHWc the Conv2d graph is no faster than the
Conv1d one), and nothing for INT8 (16% slower there); memory decides (the fp32 daemon
peaked at 564 MB).
Weight prepacking is off for fp32 only: for the fp32 Conv2d graph it is a further copy of
the weights (-42 MiB peak without it, 314 -> 272 MiB in one process) for no measurable
speed (11.5 ms batch 1, 9.2 ms/window batch 4, with or without); INT8 QLinearConv kernels
repack every run without it (2x slower), so INT8 keeps it.
The CPU memory arena is off: it keeps the largest batch's activations reserved for good
(peak +40 MB at batch 16) for a 2% speed difference.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, List, Tuple, Union

import numpy as np
import onnxruntime as ort

from ecgd.errors import ModelError
from ecgd.model.manifest import Manifest, load_manifest
from ecgd.model.net1d import INPUT_NAME, OUTPUT_NAME


def session_options(threads: int, precision: str) -> ort.SessionOptions:
    """The ORT options every ecgd session uses for a model of ``precision`` (fp32, int8)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # ORT's own warnings would bypass ecgd's structured log
    options.enable_cpu_mem_arena = False
    if precision == "fp32":
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


# Graph transformers left out of every session (see the module docstring for the numbers).
DISABLED_OPTIMIZERS = ["NchwcTransformer"]


def start_session(model: Union[str, bytes], threads: int,
                  precision: str) -> ort.InferenceSession:
    """ONNX Runtime on ``model`` (a path or the file's bytes) as ecgd runs every model."""
    return ort.InferenceSession(model, session_options(threads, precision),
                                providers=["CPUExecutionProvider"],
                                disabled_optimizers=DISABLED_OPTIMIZERS)


_HASH_CHUNK_BYTES = 1 << 20


def _sha256_of_fd(fd: int) -> str:
    """sha256 of the whole open file ``fd``, read from its start in 1 MB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    offset = 0
    while True:
        count = os.preadv(fd, [buffer], offset)
        if count == 0:
            return digest.hexdigest()
        digest.update(view[:count])
        offset += count


FileIdentity = Tuple[int, int, int, int, int]


def _identity(info: os.stat_result) -> FileIdentity:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _start_session_on_fd(fd: int, threads: int, precision: str) -> ort.InferenceSession:
    """ONNX Runtime on the open file ``fd`` (by its /proc path: no copy in Python)."""
    fd_path = f"/proc/self/fd/{fd}"
    if os.path.exists(fd_path):
        model: Union[str, bytes] = fd_path
    else:  # no /proc (not Linux): hand over the bytes of the same open file
        model = os.pread(fd, os.fstat(fd).st_size, 0)
    return start_session(model, threads, precision)


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


@dataclasses.dataclass(frozen=True)
class VerifiedModel:
    """A manifest whose ONNX file was hashed and matched, and the identity of that file."""

    manifest: Manifest
    identity: FileIdentity

    @classmethod
    def verify(cls, manifest_path: Path) -> "VerifiedModel":
        """Load ``manifest_path`` and hash its ONNX file against it (the one full read)."""
        manifest = load_manifest(manifest_path, verify_onnx=False)
        fd = _open_model(manifest)
        try:
            before = _identity(os.fstat(fd))
            try:
                digest = _sha256_of_fd(fd)
            except OSError as exc:
                raise _unreadable(manifest, exc) from exc
            if digest != manifest.onnx_sha256:
                raise ModelError(f"{manifest.path}: sha256 of {manifest.onnx_path} "
                                 f"does not match the manifest (file altered or replaced)")
            if _identity(os.fstat(fd)) != before:
                raise _written_to(manifest, "hashed")
        finally:
            os.close(fd)
        return cls(manifest, before)

    def start(self, threads: int) -> "ModelSession":
        """An ONNX Runtime session on the verified file, refused if it changed since."""
        if not 1 <= threads <= 64:
            raise ModelError(f"threads={threads}: must be between 1 and 64")
        manifest = self.manifest
        fd = _open_model(manifest)
        try:
            if _identity(os.fstat(fd)) != self.identity:
                raise _changed_since_verified(manifest)
            try:
                session = _start_session_on_fd(fd, threads, manifest.precision)
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
                raise _not_loadable(manifest, exc) from exc
            if _identity(os.fstat(fd)) != self.identity:
                raise _written_to(manifest, "loaded")
        finally:
            os.close(fd)
        return ModelSession.checked(manifest, session)

    def read_bytes(self) -> bytes:
        """The verified file's bytes, to ship to a machine that cannot open this file; the
        receiver checks them with :func:`start_from_bytes`."""
        fd = _open_model(self.manifest)
        try:
            if _identity(os.fstat(fd)) != self.identity:
                raise _changed_since_verified(self.manifest)
            try:
                data = os.pread(fd, self.identity[2], 0)
            except OSError as exc:
                raise _unreadable(self.manifest, exc) from exc
            if _identity(os.fstat(fd)) != self.identity:
                raise _written_to(self.manifest, "read")
        finally:
            os.close(fd)
        return data


def start_from_bytes(manifest: Manifest, onnx_bytes: bytes, threads: int) -> "ModelSession":
    """A session on model bytes that came from elsewhere (another machine's
    :meth:`VerifiedModel.read_bytes`): hashed here against the manifest first, in memory."""
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise ModelError(f"{manifest.path}: the model bytes received do not match the "
                         f"manifest's sha256; refusing them")
    try:
        session = start_session(onnx_bytes, threads, manifest.precision)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise _not_loadable(manifest, exc) from exc
    return ModelSession.checked(manifest, session)


def _open_model(manifest: Manifest) -> int:
    try:
        return os.open(manifest.onnx_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unreadable(manifest, exc) from exc


def _unreadable(manifest: Manifest, exc: OSError) -> ModelError:
    return ModelError(f"{manifest.path}: cannot read model file {manifest.onnx_path}: "
                      f"{exc.strerror}")


def _changed_since_verified(manifest: Manifest) -> ModelError:
    return ModelError(f"{manifest.path}: {manifest.onnx_path} changed after it was "
                      f"verified; refusing it")


def _not_loadable(manifest: Manifest, exc: Exception) -> ModelError:
    return ModelError(f"{manifest.path}: {manifest.onnx_path} is not a loadable ONNX "
                      f"model ({str(exc).splitlines()[0][:200]})")


def _written_to(manifest: Manifest, while_what: str) -> ModelError:
    return ModelError(f"{manifest.path}: {manifest.onnx_path} was written to while it "
                      f"was {while_what}; refusing what was read")


class ModelSession:
    """A loaded model: ``manifest`` and :meth:`predict_logits`."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession) -> None:
        self.manifest = manifest
        self._session = session
        self._input_shape = (len(manifest.lead_names), manifest.n_samples)

    @classmethod
    def open(cls, manifest_path: Path, threads: int) -> "ModelSession":
        """Verify ``manifest_path`` and its ONNX file, then start ONNX Runtime on it."""
        return VerifiedModel.verify(manifest_path).start(threads)

    @classmethod
    def checked(cls, manifest: Manifest, session: ort.InferenceSession) -> "ModelSession":
        """Wrap ``session`` once its graph's input and output agree with ``manifest``."""
        source = str(manifest.path)
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
