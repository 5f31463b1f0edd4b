"""What ``ecgd run`` verifies before READY=1, as a list of problems, one line each.

``ecgd check`` prints the list; ``ecgd run`` refuses to start on it (exit 78). Each line
starts with the config key it is about and names the full path. Checking never creates or
changes anything: ``check`` often runs as root before the first start, and a folder it
created would belong to root and lock the service user out.

The model costs most to verify. The quick check (what ``check`` does by default) reads the
manifest, checks every field and the labels hash, and that the model file is a readable
regular file. Re-hashing the 117 MB model file (about 0.25 s) and starting ONNX Runtime on
it with the pipeline around it (importing onnxruntime and scipy, opening the session) cost
1-2 s more: ``check --full`` does that too, and ``ecgd run`` always does before READY=1.
Imports here stay light so that ``check`` starts at once; the full check imports its heavy
modules only when asked.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, List, Tuple

from ecgd.config import Config, WindowConfig
from ecgd.errors import ConfigError, EcgdError, ModelError
from ecgd.model.manifest import Manifest, load_manifest
from ecgd.security.keys import SigningKey, credential_or_file, load_recipients, load_signing_key
from ecgd.security.pseudonym import load_pseudonym_key, pseudonym_key_path

if TYPE_CHECKING:
    from ecgd.pipeline import Analyzer


def _skipped(defaulted: AbstractSet[str], section: str, key: str) -> bool:
    """True when a bad value left ``[section] key`` at its default: checking the default
    would report a problem the config does not have."""
    return f"[{section}] {key}" in defaulted or f"[{section}]" in defaulted


def _folders(config: Config) -> Tuple[Tuple[str, str, Path], ...]:
    return (("reports", "dir", config.reports.dir),
            ("privacy", "patient_file", config.privacy.patient_file.parent),
            ("spool", "dir", config.spool.dir),
            ("spool", "processing_dir", config.spool.processing_dir),
            ("spool", "done_dir", config.spool.done_dir),
            ("spool", "failed_dir", config.spool.failed_dir))


def folder_problems(config: Config, defaulted: AbstractSet[str] = frozenset()) -> List[str]:
    """What ``run`` would find wrong with its folders, without creating or changing any."""
    problems = []
    for section, key, folder in _folders(config):
        if _skipped(defaulted, section, key):
            continue
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.is_symlink() or not existing.is_dir():
            problems.append(f"[{section}] {key}: {existing} is not a directory")
        elif not os.access(existing, os.W_OK | os.X_OK):
            what = "is not writable" if existing == folder else f"cannot be created in {existing}"
            problems.append(f"[{section}] {key}: {folder} {what}")
    return problems


def load_appliance_signing_key(config: Config) -> SigningKey:
    """This appliance's signing key: the systemd credential if present, else the key file."""
    return load_signing_key(credential_or_file(config.reports.signing_credential,
                                               config.reports.signing_key_file))


def key_problems(config: Config, defaulted: AbstractSet[str] = frozenset()) -> List[str]:
    """Every recipient key that is missing, malformed or repeated; a bad signing key; a bad
    pseudonym key."""
    problems = []
    if not _skipped(defaulted, "reports", "recipients"):
        try:
            load_recipients(config.reports.recipients)
        except ConfigError as exc:
            problems += [f"[reports] recipients: {line}" for line in exc.problems]
    if not _skipped(defaulted, "reports", "signing_key_file"):
        source = credential_or_file(config.reports.signing_credential,
                                    config.reports.signing_key_file)
        key = ("signing_credential" if source != config.reports.signing_key_file
               else "signing_key_file")
        try:
            load_appliance_signing_key(config)
        except ConfigError as exc:
            problems += [f"[reports] {key}: {line}" for line in exc.problems]
    if not _skipped(defaulted, "privacy", "pseudonym_key_file"):
        credential = pseudonym_key_path(config.privacy) != config.privacy.pseudonym_key_file
        key = "pseudonym_credential" if credential else "pseudonym_key_file"
        try:
            load_pseudonym_key(config.privacy)
        except ConfigError as exc:
            problems += [f"[privacy] {key}: {line}" for line in exc.problems]
    return problems


def model_window_samples(window: WindowConfig, manifest: Manifest) -> int:
    """Samples in one window at the model's rate; ConfigError unless the model takes that."""
    samples = int(round(window.seconds * manifest.fs_hz))
    if samples != manifest.n_samples:
        raise ConfigError(f"[window] seconds: {window.seconds:g} s at {manifest.fs_hz:g} Hz "
                          f"is {samples} samples but model {manifest.name} takes "
                          f"{manifest.n_samples}")
    return samples


def _check_model_file(manifest: Manifest) -> None:
    """The model file exists, is a regular file and can be opened (not re-hashed)."""
    try:
        fd = os.open(manifest.onnx_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ModelError(f"{manifest.path}: cannot read model file {manifest.onnx_path}: "
                         f"{exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelError(f"{manifest.path}: model file {manifest.onnx_path} is not a "
                             f"regular file")
    finally:
        os.close(fd)


def open_analyzer(config: Config) -> "Analyzer":
    """The model verified (sha256 of every byte loaded) and running in ONNX Runtime, with
    the configured pipeline around it. Imported here, not at the top: it loads
    onnxruntime and scipy, which the quick check must not pay for."""
    from ecgd.model.session import ModelSession
    from ecgd.pipeline import Analyzer

    session = ModelSession.open(config.model.manifest, threads=config.model.threads)
    return Analyzer(session, config.window, config.qc, config.preprocess.mains_hz,
                    config.model.batch_max, measurement=config.measurements,
                    keep_waveform=config.reports.waveform)


def model_problems(config: Config, defaulted: AbstractSet[str] = frozenset(),
                   full: bool = False) -> List[str]:
    """What is wrong with the model; ``full`` re-hashes it and starts ONNX Runtime."""
    if _skipped(defaulted, "model", "manifest"):
        return []
    try:
        if full:
            open_analyzer(config)
        else:
            manifest = load_manifest(config.model.manifest, verify_onnx=False)
            _check_model_file(manifest)
            if not _skipped(defaulted, "window", "seconds"):
                model_window_samples(config.window, manifest)
    except ConfigError as exc:
        return list(exc.problems)
    except EcgdError as exc:
        return [f"[model] manifest: {line}" for line in exc.lines()]
    return []


def find_problems(config: Config, defaulted: AbstractSet[str] = frozenset(),
                  full: bool = False) -> List[str]:
    """Every problem ``run`` would refuse to start on, one line each (empty: all good).

    ``defaulted`` names config keys whose bad values were replaced by defaults (see
    ``ecgd.config.ConfigReading``); they are not checked again.
    """
    return (folder_problems(config, defaulted) + key_problems(config, defaulted)
            + model_problems(config, defaulted, full))
