"""One input's work, the same on every engine: key it, skip it when already committed,
read and prepare it, infer it (batched with other inputs), and flatten its reports to rows.

An input is keyed by its content: ``sha256:<digest>``, the digest ``ecgd analyze`` and the
daemon put in ``source.content_sha256`` (and seed report ids with). An input whose bytes
cannot be read (refused unread, vanished, a header naming missing files) is keyed by its
name instead: ``name:<name hash>``. The key is what makes a batch exactly-once: the ledger
commits each key once, and a resumed run skips committed keys before reading anything more
than the bytes it hashes.

Failures give the reason ``ecgd analyze`` prints for the same file, with the input's names
replaced by its name hash (the table is not sealed; see ``ecgd.batch.table``).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from ecgd import __version__
from ecgd.batch.table import Row, error_row, window_row
from ecgd.config import MeasurementConfig, QcConfig, WindowConfig
from ecgd.errors import EcgdError, RecordError
from ecgd.model.manifest import Manifest
from ecgd.model.session import ModelSession
from ecgd.pipeline import Analyzer, PreparedRecording, file_source
from ecgd.records.companions import content_sha256, recording_files, wfdb_signal_files
from ecgd.records.reader import check_input_file, read_recording
from ecgd.report import utc_timestamp
from ecgd.security.pseudonym import hash_name, pseudonymize, redact_names

WINDOWS, ERROR, SKIPPED = "windows", "error", "skipped"


@dataclasses.dataclass(frozen=True)
class WorkSettings:
    """Everything an input's analysis depends on besides the model (picklable, so every
    worker process and Ray task gets the same)."""

    window: WindowConfig
    qc: QcConfig
    measurement: MeasurementConfig
    mains_hz: int
    max_input_bytes: int
    max_input_samples: int
    batch_max: int
    pseudonym_key: Optional[bytes]

    def analyzer(self, session: Optional[ModelSession],
                 manifest: Optional[Manifest] = None) -> Analyzer:
        """The Analyzer the daemon would build with these settings, without the report's
        waveform (the archive keeps the recordings; see ecgd.batch.table)."""
        return Analyzer(session, self.window, self.qc, self.mains_hz, self.batch_max,
                        measurement=self.measurement, keep_waveform=False, manifest=manifest)


@dataclasses.dataclass
class InputResult:
    """What became of one input: its window rows, its error row, or skipped (committed by
    an earlier attempt of this run). ``unpseudonymized``: the file named a patient but no
    pseudonym key is configured, so its rows carry no pseudonym."""

    key: str
    outcome: str
    window_rows: List[Row] = dataclasses.field(default_factory=list)
    error: Optional[Row] = None
    unpseudonymized: bool = False


@dataclasses.dataclass
class PreparedInput:
    """An input read and prepared, waiting for inference."""

    key: str
    name_hash: str
    prepared: PreparedRecording
    unpseudonymized: bool


class CommittedKeys:
    """The keys a run had committed when this attempt started: a sorted byte-string array
    (72 bytes a key, no per-key Python object), shared with every worker and Ray task."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = np.sort(np.array([key.encode("ascii") for key in keys], dtype="S72"))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not len(self._keys):
            return False
        wanted = np.bytes_(key.encode("ascii"))
        index = int(np.searchsorted(self._keys, wanted))
        return index < len(self._keys) and self._keys[index] == wanted

    def __len__(self) -> int:
        return len(self._keys)


CONTENT_PREFIX, NAME_PREFIX = "sha256:", "name:"


def content_key(digest: str) -> str:
    return CONTENT_PREFIX + digest


def name_key(name_hash: str) -> str:
    return NAME_PREFIX + name_hash


def input_name_hash(path: Path, settings: WorkSettings) -> str:
    """The hash that stands for ``path`` in tables and progress lines (keyed with the
    pseudonym key when one is configured, as the daemon's logs are)."""
    return hash_name(str(path), settings.pseudonym_key)


def readable_digest(path: Path, max_input_bytes: int) -> Optional[str]:
    """The content digest of the recording at ``path`` when all its files are plain names
    beside it, regular, within the limit and readable; None otherwise (the reader will say
    why). Nothing over the limit and nothing outside the folder is ever read."""
    try:
        files = recording_files(path)
        if any(file_path.parent != path.parent or file_path.name in ("", ".", "..")
               for file_path in files):
            return None
        for file_path in files:
            check_input_file(file_path, max_input_bytes)
        return content_sha256(files)
    except RecordError:
        return None


def input_key(path: Path, settings: WorkSettings) -> str:
    """The exactly-once key of the input at ``path`` (see the module docstring)."""
    digest = readable_digest(path, settings.max_input_bytes)
    return content_key(digest) if digest else name_key(input_name_hash(path, settings))


def prepare_input(path: Path, analyzer: Analyzer, settings: WorkSettings,
                  committed: CommittedKeys) -> Union[InputResult, PreparedInput]:
    """Key, skip-check, read and prepare one input; a failure is an error result."""
    started = time.perf_counter()
    name_hash = input_name_hash(path, settings)
    digest = readable_digest(path, settings.max_input_bytes)
    key = content_key(digest) if digest else name_key(name_hash)
    if key in committed:
        return InputResult(key, SKIPPED)
    try:
        try:
            recording = read_recording(path, settings.max_input_bytes,
                                       settings.max_input_samples)
            if digest is None:  # readable after all: hashed in analyze's order, with its reason
                digest = content_sha256(recording_files(path))
                key = content_key(digest)
                if key in committed:
                    return InputResult(key, SKIPPED)
        except RecordError as exc:
            return failed_input(path, key, name_hash, str(exc))
        read_ms = (time.perf_counter() - started) * 1000.0
        unpseudonymized = bool(recording.patient_id) and settings.pseudonym_key is None
        pseudonym = (pseudonymize(recording.patient_id, settings.pseudonym_key)
                     if recording.patient_id and settings.pseudonym_key is not None else None)
        try:
            prepared = analyzer.prepare(recording, file_source(path.name, recording.format,
                                                               digest), pseudonym, read_ms)
        except EcgdError as exc:
            return failed_input(path, key, name_hash, str(exc))
    except Exception as exc:  # a bug in a reader must cost one input, not the batch
        return failed_input(path, key, name_hash,
                            f"{path.name}: internal error while analysing "
                            f"({type(exc).__name__}); please report it")
    return PreparedInput(key, name_hash, prepared, unpseudonymized)


def refused_input(path: Path, refusal: str, settings: WorkSettings,
                  committed: CommittedKeys) -> InputResult:
    """The result of an entry the folder walk refuses (e.g. a link leaving the sources)."""
    key = input_key(path, settings)
    if key in committed:
        return InputResult(key, SKIPPED)
    return failed_input(path, key, input_name_hash(path, settings), refusal)


def finish_inputs(analyzer: Analyzer, items: Sequence[PreparedInput]) -> List[InputResult]:
    """Infer the accepted windows of ``items`` in shared batches; one result per item."""
    labels = analyzer.manifest.labels
    inferred = analyzer.infer_recordings([item.prepared for item in items])
    results = []
    for item, (logits, inference_ms) in zip(items, inferred):
        reports = analyzer.finish(item.prepared, logits, inference_ms)
        rows = [window_row(report, item.name_hash, labels) for report in reports]
        results.append(InputResult(item.key, WINDOWS, rows,
                                   unpseudonymized=item.unpseudonymized))
    return results


def analyse_inputs(paths: Sequence[Path], analyzer: Analyzer, settings: WorkSettings,
                   committed: CommittedKeys) -> List[InputResult]:
    """Prepare each of ``paths`` and infer their windows in batches of ``settings.batch_max``
    windows; one result per path, in order. At most one batch of prepared windows (plus the
    input being prepared) waits at a time."""
    outcomes: List[Union[InputResult, PreparedInput]] = []
    waiting_windows = 0
    for path in paths:
        outcome = prepare_input(path, analyzer, settings, committed)
        outcomes.append(outcome)
        if isinstance(outcome, PreparedInput):
            waiting_windows += len(outcome.prepared.model_inputs())
        if waiting_windows >= settings.batch_max:
            outcomes, waiting_windows = _finish_waiting(analyzer, outcomes), 0
    return [outcome for outcome in _finish_waiting(analyzer, outcomes)
            if isinstance(outcome, InputResult)]


def _finish_waiting(analyzer: Analyzer, outcomes: List[Union[InputResult, PreparedInput]]
                    ) -> List[Union[InputResult, PreparedInput]]:
    """``outcomes`` with every prepared input replaced by its finished result."""
    finished = iter(finish_inputs(analyzer, [outcome for outcome in outcomes
                                             if isinstance(outcome, PreparedInput)]))
    return [next(finished) if isinstance(outcome, PreparedInput) else outcome
            for outcome in outcomes]


def failed_input(path: Path, key: str, name_hash: str, reason: str) -> InputResult:
    """An error result whose reason names the input only by its hash."""
    digest = key[len(CONTENT_PREFIX):] if key.startswith(CONTENT_PREFIX) else None
    row = error_row(key, name_hash, digest, redact_names(reason, _names_of(path), name_hash),
                    utc_timestamp(), __version__)
    return InputResult(key, ERROR, error=row)


def _names_of(path: Path) -> List[str]:
    """The names a reason about ``path`` may hold: its own, its stem (WFDB record names),
    and the signal files a WFDB header names."""
    names = [path.name, path.stem]
    if path.suffix.lower() == ".hea":
        try:
            names += wfdb_signal_files(path)
        except RecordError:
            pass  # the header cannot be read: no signal file names can be in the reason
    return names
