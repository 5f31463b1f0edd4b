"""Produce models: a seeded reference Net1D, or a converted PyTorch checkpoint.

Both go through the same builder (:func:`ecgd.model.onnx_graph.build_graph`) and the same
writer, so there is one way a Net1D becomes ``NAME.onnx`` + ``NAME.json``. Files are written
to a temp name and renamed; the manifest is written last, so a model without a manifest may
be left by a crash, but never a manifest naming a partial model.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ecgd import __version__
from ecgd.errors import ModelError
from ecgd.model.checkpoint import Checkpoint, load_checkpoint
from ecgd.model.manifest import (
    DEFAULT_THRESHOLD,
    Manifest,
    read_labels,
    sha256_of_file,
    sha256_of_labels,
    write_atomic,
    write_manifest,
)
from ecgd.model.net1d import ECGFOUNDER_12LEAD, Net1DSpec, architecture_dict
from ecgd.model.onnx_graph import build_graph, random_weights
from ecgd.signal.profiles import PROFILE_DEFAULTS
from ecgd.records.leads import STANDARD_LEADS

DEFAULT_PROFILE = "ecgfounder"
MODEL_FS_HZ = 500.0
# ECGFounder's 150 labels in output order: tasks.txt of PKUDigitalHealth/ECGFounder (commit
# 04edac7, MIT licence beside it), shipped so that reference models name real findings.
# Pinned: the file's published sha256, so an edited copy is refused, not silently used.
ECGFOUNDER_LABELS = Path(__file__).with_name("ecgfounder-tasks.txt")
ECGFOUNDER_LABELS_SHA256 = "7c087a0d383c7ea9ae9b818ad00a551b029334edfa5f1fbb5036bfbaa0df0c39"


def ecgfounder_labels() -> Tuple[str, ...]:
    """The shipped ECGFounder labels, checked against their pinned sha256."""
    labels = read_labels(ECGFOUNDER_LABELS, ECGFOUNDER_12LEAD.n_classes)
    if sha256_of_labels(labels) != ECGFOUNDER_LABELS_SHA256:
        raise ModelError(f"{ECGFOUNDER_LABELS}: sha256 is not ECGFounder's published "
                         f"{ECGFOUNDER_LABELS_SHA256} (file altered)")
    return labels


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or len(name) > 120:
        raise ModelError(f"model name {name!r}: must be a plain file name stem")


def write_model(out_dir: Path, name: str, onnx_bytes: bytes, *, spec: Net1DSpec,
                labels: Sequence[str], trained: bool, precision: str,
                provenance: Mapping[str, Any],
                preprocessing_profile: str = DEFAULT_PROFILE,
                preprocessing_params: Optional[Mapping[str, Any]] = None,
                thresholds: Optional[Sequence[float]] = None) -> Path:
    """Write ``out_dir/NAME.onnx`` then ``out_dir/NAME.json``; returns the manifest path."""
    _check_name(name)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = out_dir / f"{name}.onnx"
        write_atomic(onnx_path, onnx_bytes)
    except OSError as exc:
        raise ModelError(f"{out_dir}: cannot write model: {exc.strerror}") from exc
    manifest = Manifest(
        name=name,
        path=out_dir / f"{name}.json",
        onnx_path=onnx_path,
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        labels=tuple(labels),
        labels_sha256=sha256_of_labels(labels),
        thresholds=tuple(thresholds) if thresholds is not None
        else (DEFAULT_THRESHOLD,) * len(labels),
        lead_names=STANDARD_LEADS,
        fs_hz=MODEL_FS_HZ,
        n_samples=spec.n_samples,
        precision=precision,
        trained=trained,
        preprocessing_profile=preprocessing_profile,
        preprocessing_params=dict(preprocessing_params if preprocessing_params is not None
                                  else PROFILE_DEFAULTS[preprocessing_profile]),
        architecture=architecture_dict(spec),
        provenance=dict(provenance),
    )
    try:
        return write_manifest(manifest)
    except OSError as exc:
        raise ModelError(f"{out_dir}: cannot write manifest: {exc.strerror}") from exc


def _base_provenance() -> Dict[str, Any]:
    return {
        "ecgd_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "builder": "ecgd.model.onnx_graph.build_graph",
        "graph_layout": "conv2d",
    }


def build_reference(out_dir: Path, *, labels_path: Optional[Path] = None, seed: int = 0,
                    name: str = "ecgfounder-reference") -> Path:
    """Build the ECGFounder Net1D with seeded random weights (``trained: false``).

    Without ``labels_path`` the labels are ECGFounder's own (shipped with ecgd). Returns
    the manifest path (``out_dir/NAME.json``).
    """
    spec = ECGFOUNDER_12LEAD
    labels = (read_labels(labels_path, spec.n_classes) if labels_path is not None
              else ecgfounder_labels())
    weights = random_weights(spec, seed)
    onnx_bytes = build_graph(spec, weights, doc=f"ECGFounder Net1D, untrained, seed {seed}") \
        .SerializeToString()
    provenance = dict(_base_provenance(), source="seeded-random-weights", seed=seed,
                      labels_source="file" if labels_path is not None else "ecgfounder-tasks.txt")
    return write_model(out_dir, name, onnx_bytes, spec=spec, labels=labels, trained=False,
                       precision="fp32", provenance=provenance)


def convert(checkpoint_path: Path, labels_path: Path, out_dir: Path, *,
            name: str = "ecgfounder") -> Tuple[Path, Checkpoint]:
    """Convert a PyTorch Net1D checkpoint (never executing its pickle) into a model.

    Returns the manifest path and the checked :class:`Checkpoint` (for its ``ignored``
    keys). Everything is checked before anything is written.
    """
    spec = ECGFOUNDER_12LEAD
    checkpoint_path = Path(checkpoint_path)
    labels = read_labels(labels_path, spec.n_classes)
    checkpoint = load_checkpoint(checkpoint_path, spec)
    try:
        checkpoint_sha256 = sha256_of_file(checkpoint_path)
    except OSError as exc:
        raise ModelError(f"{checkpoint_path}: cannot read: {exc.strerror}") from exc
    onnx_bytes = build_graph(spec, checkpoint.weights,
                             doc=f"ECGFounder Net1D from {checkpoint_path.name}") \
        .SerializeToString()
    provenance = dict(
        _base_provenance(),
        source="checkpoint",
        checkpoint_file=checkpoint_path.name,
        checkpoint_sha256=checkpoint_sha256,
        checkpoint_key_prefix=checkpoint.stripped_prefix,
        ignored_keys=len(checkpoint.ignored),
        training={k: v for k, v in checkpoint.info.items()
                  if isinstance(v, (int, float)) and np.isfinite(v)},
    )
    manifest_path = write_model(out_dir, name, onnx_bytes, spec=spec, labels=labels,
                                trained=True, precision="fp32", provenance=provenance)
    return manifest_path, checkpoint
