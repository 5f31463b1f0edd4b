"""Read a PyTorch zip checkpoint without importing torch and without running pickle code.

A ``.pth`` file is a zip holding ``<name>/data.pkl`` (a pickle) and ``<name>/data/<key>``
(raw little-endian storage bytes). ``torch.load(weights_only=False)`` would execute whatever
the pickle asks for; here a restricted unpickler resolves only the globals needed to rebuild
tensors, ordered dicts and numpy scalars, each mapped to a harmless stand-in, and refuses any
other global by name before anything is called. Tensors are not read until asked for
(:meth:`LazyTensor.load`), so the optimizer's Adam state never occupies memory.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np

from ecgd.errors import CheckpointError
from ecgd.model.net1d import Net1DSpec, expected_shapes, is_batchnorm_key

# torch's legacy storage class names -> numpy dtype of their elements
_STORAGE_DTYPES: Dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # widened to float32 in LazyTensor.load
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_MAX_PICKLE_BYTES = 64 * 1024 * 1024
_MAX_BYTEORDER_BYTES = 64
_MAX_TENSOR_ELEMENTS = 1 << 31
_CONVERTIBLE_DTYPES = ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage")


@dataclasses.dataclass(frozen=True)
class StorageType:
    """Stand-in for ``torch.<Kind>Storage``: only its name is kept."""

    kind: str


@dataclasses.dataclass(frozen=True)
class StorageRef:
    """A storage record in the zip: ``key`` names ``<prefix>/data/<key>``."""

    kind: str
    key: str
    numel: int


@dataclasses.dataclass(frozen=True)
class LazyTensor:
    """A tensor described by the pickle, read from the zip only by :meth:`load`."""

    storage: StorageRef
    offset: int
    shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    archive: "_Archive" = dataclasses.field(repr=False, compare=False)

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError("pickle tried to modify a tensor record")

    def load(self) -> np.ndarray:
        """The tensor as a contiguous numpy array (bfloat16 widened to float32)."""
        return self.archive.read_tensor(self)


class _Archive:
    """The opened zip: storage bytes by key, read once each and bounds-checked."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, source: str) -> None:
        self.zf = zf
        self.prefix = prefix
        self.source = source

    def read_tensor(self, tensor: LazyTensor) -> np.ndarray:
        ref = tensor.storage
        dtype = _STORAGE_DTYPES[ref.kind]
        name = f"{self.prefix}data/{ref.key}"
        try:
            # the declared size, checked before inflating: a member can expand ~1000x
            declared_bytes = self.zf.getinfo(name).file_size
            if declared_bytes != ref.numel * dtype.itemsize:
                raise CheckpointError(f"{self.source}: storage {name} holds {declared_bytes} "
                                      f"bytes, expected {ref.numel * dtype.itemsize}")
            raw = self.zf.read(name)
        except KeyError as exc:
            raise CheckpointError(f"{self.source}: storage {name} is missing") from exc
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{self.source}: storage {name} is corrupt ({exc})") from exc
        if len(raw) != ref.numel * dtype.itemsize:
            raise CheckpointError(f"{self.source}: storage {name} holds {len(raw)} bytes, "
                                  f"expected {ref.numel * dtype.itemsize}")
        flat = np.frombuffer(raw, dtype=dtype)
        # as_strided reads raw memory: prove every addressed element lies inside the storage
        if any(s < 0 for s in tensor.stride) or tensor.offset < 0:
            raise CheckpointError(f"{self.source}: tensor with negative offset/stride refused")
        if math.prod(tensor.shape) > 0:
            last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride))
            if last >= flat.size:
                raise CheckpointError(f"{self.source}: tensor reaches past its storage {name}")
        view = np.lib.stride_tricks.as_strided(
            flat[tensor.offset:] if math.prod(tensor.shape) > 0 else flat[:0],
            shape=tensor.shape,
            strides=tuple(s * dtype.itemsize for s in tensor.stride),
            writeable=False,
        )
        array = np.array(view, copy=True)
        if ref.kind == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _safe_numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError("numpy.dtype with a non-string spec refused")
    dtype = np.dtype(spec)
    if dtype.kind not in "biufc":
        raise CheckpointError(f"numpy.dtype {spec!r} refused (numbers only)")
    return dtype


def _safe_numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise CheckpointError("numpy scalar of a non-numeric dtype refused")
    if len(data) != dtype.itemsize:
        raise CheckpointError("numpy scalar with the wrong number of bytes refused")
    return np.frombuffer(data, dtype=dtype)[0]


def _safe_codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding != "latin1":
        raise CheckpointError("_codecs.encode other than str -> latin1 refused")
    return text.encode("latin1")


def _ordered_dict(*args: Any) -> "collections.OrderedDict[Any, Any]":
    if args and not isinstance(args[0], (list, tuple)):
        raise CheckpointError("collections.OrderedDict with a non-sequence argument refused")
    return collections.OrderedDict(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_globals``; everything else is refused by name."""

    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self._globals: Dict[Tuple[str, str], Callable[..., Any]] = {
            ("collections", "OrderedDict"): _ordered_dict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("numpy", "dtype"): _safe_numpy_dtype,
            ("numpy.core.multiarray", "scalar"): _safe_numpy_scalar,
            ("numpy._core.multiarray", "scalar"): _safe_numpy_scalar,
            ("_codecs", "encode"): _safe_codecs_encode,
        }
        for kind in _STORAGE_DTYPES:
            self._globals[("torch", kind)] = StorageType(kind)  # type: ignore[assignment]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise CheckpointError(f"{self.archive.source}: refuses pickle global "
                                  f"{module}.{name} (only tensors, ordered dicts and numpy "
                                  f"scalars are allowed)") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], StorageType) or not isinstance(pid[4], int)):
            raise CheckpointError(f"{self.archive.source}: unexpected persistent id in pickle")
        key = str(pid[2])
        if not re.fullmatch(r"[0-9A-Za-z_]+", key) or not 0 <= pid[4] <= _MAX_TENSOR_ELEMENTS:
            raise CheckpointError(f"{self.archive.source}: malformed storage record {key!r}")
        return StorageRef(pid[1].kind, key, pid[4])

    def _rebuild_tensor(self, storage: Any, offset: Any, shape: Any, stride: Any,
                        *_ignored: Any) -> LazyTensor:
        if (not isinstance(storage, StorageRef) or not isinstance(offset, int)
                or not isinstance(shape, tuple) or not isinstance(stride, tuple)
                or len(shape) != len(stride)
                or not all(isinstance(v, int) and v >= 0 for v in shape + stride)):
            raise CheckpointError(f"{self.archive.source}: malformed tensor record in pickle")
        return LazyTensor(storage, offset, shape, stride, self.archive)

    def _rebuild_parameter(self, data: Any, *_ignored: Any) -> Any:
        if not isinstance(data, LazyTensor):
            raise CheckpointError(f"{self.archive.source}: malformed parameter record in pickle")
        return data


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A Net1D checkpoint, checked against its architecture.

    ``weights``: state-dict key (prefix removed) -> float32 array, exactly the keys
    inference needs. ``ignored``: keys that were present and deliberately not used
    (batch-norm entries). ``info``: scalar training facts (epoch, step, val_auroc) if present.
    """

    weights: Dict[str, np.ndarray]
    ignored: Tuple[str, ...]
    stripped_prefix: str
    info: Dict[str, Any]


def _open_archive(path: Path) -> Tuple[zipfile.ZipFile, str, bytes]:
    source = path.name
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{source}: no such file") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a PyTorch zip checkpoint ({exc})") from exc
    pickles = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        zf.close()
        raise CheckpointError(f"{source}: not a PyTorch zip checkpoint (expected one "
                              f"<name>/data.pkl, found {len(pickles)})")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        if zf.getinfo(pickles[0]).file_size > _MAX_PICKLE_BYTES:
            raise CheckpointError(f"{source}: data.pkl is larger than "
                                  f"{_MAX_PICKLE_BYTES} bytes; refused")
        has_byteorder = prefix + "byteorder" in zf.namelist()
        if has_byteorder and zf.getinfo(prefix + "byteorder").file_size > _MAX_BYTEORDER_BYTES:
            raise CheckpointError(f"{source}: byteorder record is larger than "
                                  f"{_MAX_BYTEORDER_BYTES} bytes; refused")
        byteorder = zf.read(prefix + "byteorder") if has_byteorder else b"little"
        if byteorder.strip() != b"little":
            raise CheckpointError(f"{source}: big-endian checkpoints are not supported")
        data = zf.read(pickles[0])
    except CheckpointError:
        zf.close()
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        zf.close()
        raise CheckpointError(f"{source}: corrupt zip checkpoint ({exc})") from exc
    return zf, prefix, data


def read_pickle(path: Path) -> Tuple[Any, zipfile.ZipFile]:
    """Unpickle ``path``'s data.pkl with the restricted unpickler.

    Returns the object tree (tensors as :class:`LazyTensor`) and the open zip, which the
    caller closes after loading the tensors it needs.
    """
    path = Path(path)
    zf, prefix, data = _open_archive(path)
    archive = _Archive(zf, prefix, path.name)
    try:
        tree = _RestrictedUnpickler(data, archive).load()
    except CheckpointError:
        zf.close()
        raise
    except Exception as exc:  # any malformed pickle: EOF, bad opcode, wrong arity, ...
        zf.close()
        raise CheckpointError(f"{path.name}: malformed pickle in checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    return tree, zf


def _state_dict_of(tree: Any, source: str) -> Mapping[str, Any]:
    if isinstance(tree, Mapping) and "state_dict" in tree:
        state = tree["state_dict"]
    else:
        state = tree
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) for k in state):
        raise CheckpointError(f"{source}: no state_dict of named tensors in checkpoint")
    return state


def _scalar_info(tree: Any) -> Dict[str, Any]:
    info: Dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for key in ("epoch", "step", "val_auroc"):
            value = tree.get(key)
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                    value, bool):
                info[key] = value.item() if isinstance(value, np.generic) else value
    return info


def _describe(keys: List[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_checkpoint(path: Path, spec: Net1DSpec) -> Checkpoint:
    """Read a Net1D checkpoint: restricted unpickle, ``module.`` prefix, every key and shape.

    Raises CheckpointError naming the file and the first problem: not a zip, truncated,
    refused pickle global, missing / extra / mis-shaped keys, non-float weights.
    """
    path = Path(path)
    source = path.name
    tree, zf = read_pickle(path)
    try:
        state = _state_dict_of(tree, source)
        prefix = ""
        if all(k.startswith("module.") for k in state):
            prefix = "module."
        state = {k[len(prefix):]: v for k, v in state.items()}
        expected = expected_shapes(spec)
        ignored = sorted(k for k in state if k not in expected and is_batchnorm_key(k))
        extra = sorted(k for k in state if k not in expected and not is_batchnorm_key(k))
        missing = [k for k in expected if k not in state]
        if missing:
            raise CheckpointError(f"{source}: not a Net1D of this architecture: missing "
                                  f"{len(missing)} keys ({_describe(missing)})")
        if extra:
            raise CheckpointError(f"{source}: not a Net1D of this architecture: unexpected "
                                  f"{len(extra)} keys ({_describe(extra)})")
        weights: Dict[str, np.ndarray] = {}
        for key, shape in expected.items():
            tensor = state[key]
            if not isinstance(tensor, LazyTensor):
                raise CheckpointError(f"{source}: {key} is not a tensor")
            if tensor.shape != shape:
                raise CheckpointError(f"{source}: {key} has shape {list(tensor.shape)}, "
                                      f"expected {list(shape)}")
            if tensor.storage.kind not in _CONVERTIBLE_DTYPES:
                raise CheckpointError(f"{source}: {key} is {tensor.storage.kind}, "
                                      f"expected floating-point weights")
            array = tensor.load().astype(np.float32)
            if not np.all(np.isfinite(array)):
                raise CheckpointError(f"{source}: {key} contains NaN or Inf")
            weights[key] = array
    finally:
        zf.close()
    return Checkpoint(weights, tuple(ignored), prefix, _scalar_info(tree))
