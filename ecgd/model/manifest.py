"""The model manifest: ``NAME.json`` beside ``NAME.onnx``, pinning everything a model is.

A manifest records the format version, the Net1D architecture, the input contract (lead
order, rate, samples), the output contract (labels in order, sigmoid, per-label
thresholds), the preprocessing profile the model was trained with, precision, the sha256
of the ONNX file and of the labels, and provenance. :func:`load_manifest` refuses a
manifest whose hashes, shapes or fields do not hold, with one line naming the file.

Document layout (``format_version`` 1)::

    {"format_version": 1, "name": ..., "onnx_file": "NAME.onnx", "onnx_sha256": ...,
     "precision": "fp32" | "int8", "trained": bool, "architecture": {...Net1D...},
     "input": {"name": "ecg", "lead_names": [...12...], "fs_hz": 500.0, "n_samples": 5000},
     "output": {"name": "logits", "activation": "sigmoid", "labels": [...],
                "labels_sha256": ..., "thresholds": [...]},
     "preprocessing": {"profile": "ecgfounder", "params": {...}},
     "provenance": {...}}
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Tuple

from ecgd import durable
from ecgd.errors import ModelError
from ecgd.model.net1d import Net1DSpec, spec_from_dict
from ecgd.model.net1d import INPUT_NAME, OUTPUT_NAME
from ecgd.signal.profiles import PROFILE_DEFAULTS
from ecgd.records.leads import STANDARD_LEADS

FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8")
DEFAULT_THRESHOLD = 0.5
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

@dataclasses.dataclass(frozen=True)
class Manifest:
    """A loaded, verified manifest. ``path`` is the manifest file, ``onnx_path`` its model."""

    name: str
    path: Path
    onnx_path: Path
    onnx_sha256: str
    labels: Tuple[str, ...]
    labels_sha256: str
    thresholds: Tuple[float, ...]
    lead_names: Tuple[str, ...]
    fs_hz: float
    n_samples: int
    precision: str
    trained: bool
    preprocessing_profile: str
    preprocessing_params: Dict[str, Any]
    architecture: Dict[str, Any]
    provenance: Dict[str, Any]
    format_version: int = FORMAT_VERSION

    @property
    def spec(self) -> Net1DSpec:
        return spec_from_dict(self.architecture)

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def sha256_of_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_labels(labels: Sequence[str]) -> str:
    """Hex sha256 of the labels as a file: one per line, UTF-8, final newline.

    For ECGFounder's ``tasks.txt`` this equals the file's own published hash.
    """
    return hashlib.sha256(("\n".join(labels) + "\n").encode("utf-8")).hexdigest()


def read_labels(path: Path, n_classes: int) -> Tuple[str, ...]:
    """Read a labels file: exactly ``n_classes`` non-empty, distinct lines, in output order."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read labels: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path}: labels file is not UTF-8 text") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    labels = tuple(line.strip() for line in lines)
    empty = [i + 1 for i, label in enumerate(labels) if not label]
    if empty:
        raise ModelError(f"{path}: labels file line {empty[0]} is empty "
                         f"(expected {n_classes} non-empty lines)")
    if len(labels) != n_classes:
        raise ModelError(f"{path}: labels file has {len(labels)} lines, "
                         f"expected exactly {n_classes}")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ModelError(f"{path}: duplicate labels {duplicates[:3]}")
    return labels


def manifest_document(manifest: Manifest) -> Dict[str, Any]:
    """The JSON object written to ``manifest.path``."""
    return {
        "format_version": manifest.format_version,
        "name": manifest.name,
        "onnx_file": manifest.onnx_path.name,
        "onnx_sha256": manifest.onnx_sha256,
        "precision": manifest.precision,
        "trained": manifest.trained,
        "architecture": manifest.architecture,
        "input": {
            "name": INPUT_NAME,
            "lead_names": list(manifest.lead_names),
            "fs_hz": manifest.fs_hz,
            "n_samples": manifest.n_samples,
        },
        "output": {
            "name": OUTPUT_NAME,
            "activation": "sigmoid",
            "labels": list(manifest.labels),
            "labels_sha256": manifest.labels_sha256,
            "thresholds": list(manifest.thresholds),
        },
        "preprocessing": {
            "profile": manifest.preprocessing_profile,
            "params": manifest.preprocessing_params,
        },
        "provenance": manifest.provenance,
    }


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a model file crash-safely (:func:`ecgd.durable.write_durable`); ModelError on failure.

    Model files hold no patient data: ``mode`` lets the service user read them.
    """
    path = Path(path)
    try:
        durable.write_durable(path.parent, path.name, data, mode=mode)
    except OSError as exc:
        raise ModelError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest`` atomically to ``manifest.path``; returns that path."""
    text = json.dumps(manifest_document(manifest), indent=2, ensure_ascii=False) + "\n"
    write_atomic(manifest.path, text.encode("utf-8"))
    return manifest.path


class _Fields:
    """Typed access to a JSON object; every failure names the manifest and the field."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ModelError(f"{source}: {where or 'manifest'} is not a JSON object")
        self.data = data
        self.where = where
        self.source = source

    def fail(self, key: str, reason: str) -> ModelError:
        return ModelError(f"{self.source}: {self.where}{key} {reason}")

    def get(self, key: str, kind: Any) -> Any:
        if key not in self.data:
            raise self.fail(key, "is missing")
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"has the wrong type ({type(value).__name__})")
        return value

    def only(self, keys: Sequence[str]) -> None:
        unknown = sorted(set(self.data) - set(keys))
        if unknown:
            raise self.fail(unknown[0], "is not a manifest field")


def _check_preprocessing(profile: str, params: Mapping[str, Any], source: str) -> None:
    if profile not in PROFILE_DEFAULTS:
        raise ModelError(f"{source}: unknown preprocessing profile {profile!r} "
                         f"(known: {', '.join(sorted(PROFILE_DEFAULTS))})")
    expected = PROFILE_DEFAULTS[profile]
    if set(params) != set(expected):
        raise ModelError(f"{source}: preprocessing params for {profile!r} must be exactly "
                         f"{sorted(expected)}")
    for key, default in expected.items():
        if type(params[key]) is not type(default) and not (
                isinstance(default, float) and isinstance(params[key], int)):
            raise ModelError(f"{source}: preprocessing.params.{key} has the wrong type")


def load_manifest(path: Path, *, verify_onnx: bool = True) -> Manifest:
    """Load and verify a manifest: every field, the labels hash and (unless told not to,
    because the caller hashes the bytes it loads) the ONNX file's sha256.
    """
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > _MAX_MANIFEST_BYTES:
            raise ModelError(f"{source}: manifest of {size} bytes is implausibly large")
        document = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ModelError(f"{source}: cannot read manifest: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{source}: manifest is not valid JSON ({exc})") from exc

    top = _Fields(document, "", source)
    top.only(("format_version", "name", "onnx_file", "onnx_sha256", "precision", "trained",
              "architecture", "input", "output", "preprocessing", "provenance"))
    version = top.get("format_version", int)
    if version != FORMAT_VERSION:
        raise top.fail("format_version", f"is {version}; this ecgd reads {FORMAT_VERSION}")
    name = top.get("name", str)
    if not _NAME_PATTERN.fullmatch(name):
        raise top.fail("name", "must be letters, digits, '.', '_' or '-'")
    onnx_file = top.get("onnx_file", str)
    if not _NAME_PATTERN.fullmatch(onnx_file) or not onnx_file.endswith(".onnx"):
        raise top.fail("onnx_file", "must be a plain NAME.onnx beside the manifest")
    onnx_sha256 = top.get("onnx_sha256", str)
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
        raise top.fail("onnx_sha256", "is not a hex sha256")
    precision = top.get("precision", str)
    if precision not in PRECISIONS:
        raise top.fail("precision", f"must be one of {PRECISIONS}")
    trained = top.get("trained", bool)
    architecture = top.get("architecture", dict)
    try:
        spec = spec_from_dict(architecture)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from exc

    inp = _Fields(top.get("input", dict), "input.", source)
    inp.only(("name", "lead_names", "fs_hz", "n_samples"))
    if inp.get("name", str) != INPUT_NAME:
        raise inp.fail("name", f"must be {INPUT_NAME!r}")
    lead_names = tuple(inp.get("lead_names", list))
    if len(lead_names) != spec.in_channels or sorted(map(str, lead_names)) != sorted(
            STANDARD_LEADS):
        raise inp.fail("lead_names", f"must be the {len(STANDARD_LEADS)} standard leads")
    fs_hz = inp.get("fs_hz", float)
    if not 1.0 <= fs_hz <= 20000.0:
        raise inp.fail("fs_hz", "is not a plausible sampling rate")
    n_samples = inp.get("n_samples", int)
    if n_samples != spec.n_samples:
        raise inp.fail("n_samples", f"is {n_samples}, the architecture says {spec.n_samples}")

    out = _Fields(top.get("output", dict), "output.", source)
    out.only(("name", "activation", "labels", "labels_sha256", "thresholds"))
    if out.get("name", str) != OUTPUT_NAME:
        raise out.fail("name", f"must be {OUTPUT_NAME!r}")
    if out.get("activation", str) != "sigmoid":
        raise out.fail("activation", "must be 'sigmoid'")
    labels = tuple(out.get("labels", list))
    if len(labels) != spec.n_classes or not all(isinstance(v, str) and v.strip() == v and v
                                                for v in labels):
        raise out.fail("labels", f"must be {spec.n_classes} non-empty strings")
    if len(set(labels)) != len(labels):
        raise out.fail("labels", "contains duplicates")
    labels_sha256 = out.get("labels_sha256", str)
    if sha256_of_labels(labels) != labels_sha256:
        raise out.fail("labels_sha256", "does not match the labels (labels were altered)")
    thresholds = tuple(out.get("thresholds", list))
    if len(thresholds) != spec.n_classes or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in thresholds):
        raise out.fail("thresholds", f"must be {spec.n_classes} numbers in [0, 1]")

    pre = _Fields(top.get("preprocessing", dict), "preprocessing.", source)
    pre.only(("profile", "params"))
    profile = pre.get("profile", str)
    params = pre.get("params", dict)
    _check_preprocessing(profile, params, source)
    provenance = top.get("provenance", dict)

    onnx_path = path.parent / onnx_file
    if verify_onnx:
        try:
            actual = sha256_of_file(onnx_path)
        except OSError as exc:
            raise ModelError(f"{source}: cannot read model file {onnx_path}: "
                             f"{exc.strerror}") from exc
        if actual != onnx_sha256:
            raise ModelError(f"{source}: sha256 of {onnx_path} does not match the manifest "
                             f"(file altered or replaced)")

    return Manifest(
        name=name, path=path, onnx_path=onnx_path, onnx_sha256=onnx_sha256, labels=labels,
        labels_sha256=labels_sha256, thresholds=tuple(float(v) for v in thresholds),
        lead_names=lead_names, fs_hz=fs_hz, n_samples=n_samples, precision=precision,
        trained=trained, preprocessing_profile=profile, preprocessing_params=dict(params),
        architecture=dict(architecture), provenance=dict(provenance), format_version=version,
    )
