"""The one type every reader returns, and the 12-lead arrangement the model needs.

Readers live one per format in this package; each turns a file into a ``Recording``
(float32 millivolts, ``[leads, n]``, the file's own rate and lead names normalized).
Nothing here guesses: a lead that cannot be obtained is reported, never zero-filled.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ecgd.bounded_read import FileTooLargeError, read_bounded
from ecgd.config import LimitsConfig
from ecgd.errors import RecordError
from ecgd.records.timestamps import START_TIME_ERROR

STANDARD_LEADS: Tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)

# Sampling rates a recording may have, in Hz. The floor: quality control measures noise in
# the 10-45 Hz band, which needs a Nyquist frequency above 45 Hz, and the slowest real
# export seen (Mindray HL7 aECG) is 100 Hz; below it an input would also be upsampled
# more than 5x (a 2-Hz input took 34 s and 7.3 GB). The ceiling: an ECG holds nothing
# above a few hundred Hz, resting and high-resolution ECG devices sample at 1-2 kHz (the
# fastest here: 1000 Hz), and the anti-aliasing filter grows with the rate ratio.
MIN_FS_HZ = 100.0
MAX_FS_HZ = 10000.0

# leads x samples one input may decode to, unless the caller passes its [limits] value
DEFAULT_MAX_SAMPLES = LimitsConfig.max_input_samples

_CANONICAL_BY_KEY = {name.upper(): name for name in STANDARD_LEADS}
_LEAD_PREFIXES = ("MDC_ECG_LEAD_", "LEAD_", "LEAD ")


@dataclasses.dataclass(frozen=True)
class Recording:
    """A decoded ECG recording.

    ``samples_mv`` is float32 ``[n_leads, n_samples]`` in millivolts, in the order of
    ``lead_names`` (normalized with :func:`normalize_lead_name` where they are standard
    leads; other channels keep their own name). ``patient_id`` is the plain identifier the
    file carries, if any: it must never reach a log line, a file name or a report.
    """

    samples_mv: np.ndarray
    fs_hz: float
    lead_names: Tuple[str, ...]
    format: str
    start_time: Optional[dt.datetime] = None
    patient_id: Optional[str] = None
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)
    rails_mv: Optional[np.ndarray] = None

    @property
    def n_samples(self) -> int:
        return int(self.samples_mv.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz


def normalize_lead_name(raw: str) -> str:
    """Return the standard spelling of a lead name, or the stripped input if not standard.

    ``I``, ``ii``, ``AVR``, ``avr``, ``MDC_ECG_LEAD_AVR``, ``Lead I (Einthoven)``,
    ``Lead aVR`` and ``V1`` all map onto the names in ``STANDARD_LEADS``.
    """
    name = raw.strip()
    name = re.sub(r"\s*\(.*\)\s*$", "", name)  # "Lead I (Einthoven)" -> "Lead I"
    key = name.upper()
    for prefix in _LEAD_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):].strip()
            break
    key = key.replace("-", "").replace(" ", "")
    return _CANONICAL_BY_KEY.get(key, name)


def lead_label(raw_name: str, index: int) -> str:
    """How an error names a lead: its standard name, else its 1-based position ``channel
    N`` (a name read from a file is never echoed)."""
    lead = normalize_lead_name(raw_name)
    return lead if lead in STANDARD_LEADS else f"channel {index + 1}"


def validate_recording(recording: Recording, source: str,
                       max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Refuse recordings no reader should return: wrong shape, a rate outside
    ``MIN_FS_HZ``-``MAX_FS_HZ``, more than ``max_samples`` leads x samples, NaN/Inf samples.

    A start time the report cannot hold (the last sample past year 9999) is dropped and
    noted, like any other bad timestamp (:mod:`ecgd.records.timestamps`).
    """
    samples = recording.samples_mv
    if samples.ndim != 2 or samples.shape[0] != len(recording.lead_names):
        raise RecordError(f"{source}: samples shape {samples.shape} does not match "
                          f"{len(recording.lead_names)} lead names")
    if samples.shape[1] == 0:
        raise RecordError(f"{source}: no samples")
    check_sample_budget(samples.shape[0], samples.shape[1], max_samples, source)
    check_sampling_rate(recording.fs_hz, source)
    if not np.all(np.isfinite(samples)):
        raise RecordError(f"{source}: samples contain NaN or Inf")
    if recording.rails_mv is not None and (
            recording.rails_mv.shape != (samples.shape[0], 2)
            or not np.all(recording.rails_mv[:, 0] < recording.rails_mv[:, 1])):
        raise RecordError(f"{source}: declared digital range does not fit its "
                          f"{samples.shape[0]} leads")
    refuse_repeated_leads(recording.lead_names, source)
    return fit_start_time(recording)


def refuse_repeated_leads(names: Sequence[str], source: str) -> None:
    """RecordError when a lead name repeats (which channel would be the lead?). Standard
    names are named in the message; other names came from the file and are not."""
    repeated = {name for name in names if list(names).count(name) > 1}
    if repeated:
        standard = [lead for lead in STANDARD_LEADS if lead in repeated]
        what = f"lead {', '.join(standard)}" if standard else "a channel name"
        raise RecordError(f"{source}: {what} appears more than once")


def check_sampling_rate(fs_hz: float, source: str) -> None:
    """RecordError unless ``fs_hz`` lies within ``MIN_FS_HZ``-``MAX_FS_HZ`` (the rate is
    rounded to 1 uHz first, so a rate computed as 1 / 0.01 s is 100 Hz)."""
    if not (MIN_FS_HZ <= round(fs_hz, 6) <= MAX_FS_HZ):
        raise RecordError(f"{source}: sampling rate outside {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz, "
                          f"the rates an ECG is read at; refused")


def check_sample_budget(n_leads: int, n_samples: int, max_samples: int, source: str) -> None:
    """RecordError when ``n_leads`` x ``n_samples`` exceeds ``max_samples``; readers call it
    with the declared sizes before they allocate the samples."""
    if n_leads * n_samples > max_samples:
        raise RecordError(f"{source}: decodes to more than {max_samples} samples (leads x "
                          f"samples, [limits] max_input_samples); refused")


def fit_start_time(recording: Recording) -> Recording:
    """The recording, without its start time when the last sample would fall past the
    largest time a report can hold; the metadata then says why."""
    if recording.start_time is None:
        return recording
    try:
        recording.start_time + dt.timedelta(seconds=recording.duration_s)
    except OverflowError:
        metadata = {**recording.metadata, START_TIME_ERROR:
                    "start time plus the recording's duration passes year 9999"}
        return dataclasses.replace(recording, start_time=None, metadata=metadata)
    return recording


@dataclasses.dataclass(frozen=True)
class StandardLeads:
    """A recording arranged in the model's lead order.

    ``samples_mv`` is float32 ``[12, n]`` in ``STANDARD_LEADS`` order, or None when a lead
    is ``missing`` (then the recording cannot be interpreted). ``derived`` names the limb
    leads computed from I and II (8-lead exports).
    """

    samples_mv: Optional[np.ndarray]
    derived: Tuple[str, ...]
    missing: Tuple[str, ...]


def arrange_standard_leads(recording: Recording,
                           order: Sequence[str] = STANDARD_LEADS) -> StandardLeads:
    """Pick the 12 standard leads in model order, deriving III/aVR/aVL/aVF from I and II.

    Einthoven/Goldberger: III = II - I; aVR = -(I + II)/2; aVL = I - II/2; aVF = II - I/2.
    """
    index = {name: i for i, name in enumerate(recording.lead_names)}
    samples = recording.samples_mv
    lead_i = samples[index["I"]] if "I" in index else None
    lead_ii = samples[index["II"]] if "II" in index else None
    derivable = lead_i is not None and lead_ii is not None
    out = np.empty((len(order), recording.n_samples), dtype=np.float32)
    derived = []
    missing = []
    for row, name in enumerate(order):
        if name in index:
            out[row] = samples[index[name]]
        elif derivable and name in _DERIVATIONS:
            out[row] = _DERIVATIONS[name](lead_i, lead_ii)
            derived.append(name)
        else:
            missing.append(name)
    if missing:
        return StandardLeads(None, tuple(derived), tuple(missing))
    return StandardLeads(out, tuple(derived), ())


_DERIVATIONS = {
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2.0,
    "aVL": lambda i, ii: i - ii / 2.0,
    "aVF": lambda i, ii: ii - i / 2.0,
}


def read_record_bytes(path: Path, max_bytes: int) -> bytes:
    """All bytes of the recording file ``path``; RecordError naming it when it holds more
    than ``max_bytes`` (refused from its size, unread) or cannot be read."""
    try:
        return read_bounded(path, max_bytes)
    except FileTooLargeError as exc:
        raise RecordError(f"{path.name}: {exc.strerror}") from exc
    except OSError as exc:
        raise RecordError(f"{path.name}: cannot read: {exc.strerror}") from exc
