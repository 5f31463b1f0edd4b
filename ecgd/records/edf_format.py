"""EDF and EDF+ (European Data Format) recordings, decoded with numpy.

Parsed here rather than through ``wfdb.io.convert.edf.read_edf`` because that function
drops the patient field, raises bare ``Exception`` on bad input and does not notice a
truncated data section; the format is a fixed-width ASCII header plus int16 records, so
the decoder is short. On the shared sample it matches wfdb to half a digital step (wfdb
rounds the baseline to an integer; this follows the EDF formula exactly; tested).

Layout: a 256-byte header, 256 bytes per signal, then data records, each holding
``samples_per_record[i]`` little-endian int16 values for signal 0, then signal 1, ...
Physical value = (digital - digital_min) * (physical_max - physical_min)
/ (digital_max - digital_min) + physical_min, in the signal's physical dimension
(``mV``, ``uV`` or ``V``; anything else is refused). EDF+ annotation signals are skipped;
discontinuous EDF+ (``EDF+D``) and signals with different rates are refused.

Patient: EDF+ structures the patient field as ``code sex birthdate name`` with ``X`` for
unknown, and the code is the identifier. Plain EDF holds free text, taken whole. Template
placeholders (``X``, the literal ``dd-MMM-yyyy`` some writers leave) are not identifiers.
The start date has a two-digit year (85-99 -> 19xx, 00-84 -> 20xx, as the spec says) and no
time zone: it is local time (:mod:`ecgd.records.timestamps`). ``rails_mv`` is each signal's
physical minimum and maximum, the values its digital range maps to.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, Recording, check_sample_budget,
                                    lead_label, normalize_lead_name, refuse_repeated_leads)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem

_FIXED_HEADER_BYTES = 256
_SIGNAL_HEADER_BYTES = 256
_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3}
_ANNOTATION_LABEL = "EDF Annotations"
_PLACEHOLDERS = {"X", "DD-MMM-YYYY"}
# Per-signal header fields: name -> width in bytes, in file order.
_SIGNAL_FIELDS = (
    ("label", 16), ("transducer", 80), ("physical_dimension", 8), ("physical_min", 8),
    ("physical_max", 8), ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80),
    ("samples_per_record", 8), ("reserved", 32),
)


@dataclasses.dataclass(frozen=True)
class _Header:
    """The parsed EDF header; ``signals`` maps field name -> one string per signal."""

    patient: str
    recording: str
    start_date: str
    start_time: str
    header_bytes: int
    reserved: str
    n_records: int
    record_duration_s: float
    signals: Dict[str, List[str]]


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read an EDF/EDF+ file as float32 millivolts ``[leads, n]``.

    ``max_bytes`` bounds the bytes read; the caller's size check refuses larger files first.
    More than ``max_samples`` leads x samples are refused before they are decoded.
    """
    path = Path(path)
    name = path.name
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RecordError(f"{name}: larger than the limit of {max_bytes} bytes; refused")
    header = _parse_header(data, name)
    if header.reserved.startswith("EDF+D"):
        raise RecordError(f"{name}: discontinuous EDF+ (EDF+D) is not supported")
    labels = [label.strip() for label in header.signals["label"]]
    spr = [_parse_int(v, "samples per record", name) for v in header.signals["samples_per_record"]]
    if any(n <= 0 for n in spr):
        raise RecordError(f"{name}: a signal has no samples per data record")
    record_values = sum(spr)
    n_records = _check_data_length(len(data) - header.header_bytes, header.n_records,
                                   record_values, name)
    keep = [i for i, label in enumerate(labels) if label != _ANNOTATION_LABEL]
    if not keep:
        raise RecordError(f"{name}: no signals besides EDF+ annotations")
    if len({spr[i] for i in keep}) != 1:
        raise RecordError(f"{name}: signals have different sampling rates; not supported")
    if header.record_duration_s <= 0 or not math.isfinite(header.record_duration_s):
        raise RecordError(f"{name}: data record duration is not a positive number")
    check_sample_budget(len(keep), n_records * spr[keep[0]], max_samples, name)
    digital = np.frombuffer(data, dtype="<i2", offset=header.header_bytes,
                            count=n_records * record_values).reshape(n_records, record_values)
    starts = np.cumsum([0] + spr)
    samples_mv = np.empty((len(keep), n_records * spr[keep[0]]), dtype=np.float32)
    rails_mv = np.empty((len(keep), 2), dtype=np.float64)
    for row, signal in enumerate(keep):
        gain, offset, digital_range = _scaling(header, signal, lead_label(labels[signal], row),
                                               name)
        values = digital[:, starts[signal]:starts[signal + 1]].reshape(-1).astype(np.float64)
        samples_mv[row] = values * gain + offset
        ends = [value * gain + offset for value in digital_range]
        rails_mv[row] = (min(ends), max(ends))
    start_time, notes = _start_time(header)
    metadata: Dict[str, Any] = {
        "units": sorted({header.signals["physical_dimension"][i].strip() for i in keep}),
        "original_lead_names": [labels[i] for i in keep],
        "edf_variant": header.reserved.strip()[:5] or "EDF",
        "record_duration_s": header.record_duration_s,
        **notes,
    }
    return Recording(
        samples_mv=samples_mv,
        fs_hz=round(spr[keep[0]] / header.record_duration_s, 6),
        lead_names=_lead_names([labels[i] for i in keep], name),
        format="edf",
        start_time=start_time,
        patient_id=_patient_id(header.patient, header.reserved.startswith("EDF+")),
        metadata=metadata,
        rails_mv=rails_mv,
    )


def _parse_header(data: bytes, name: str) -> _Header:
    """Split the fixed-width ASCII header; refuse anything that is not EDF."""
    if len(data) < _FIXED_HEADER_BYTES or data[:8].strip() != b"0":
        raise RecordError(f"{name}: not an EDF file (no '0' version field)")
    text = data[:_FIXED_HEADER_BYTES].decode("ascii", errors="replace")
    n_signals = _parse_int(text[252:256], "number of signals", name)
    header_bytes = _parse_int(text[184:192], "header size", name)
    expected_header = _FIXED_HEADER_BYTES + n_signals * _SIGNAL_HEADER_BYTES
    if n_signals <= 0 or header_bytes != expected_header or len(data) < header_bytes:
        raise RecordError(f"{name}: EDF header's number of signals and header size are "
                          f"inconsistent or truncated")
    signal_text = data[_FIXED_HEADER_BYTES:header_bytes].decode("ascii", errors="replace")
    signals: Dict[str, List[str]] = {}
    position = 0
    for field, width in _SIGNAL_FIELDS:
        signals[field] = [signal_text[position + i * width:position + (i + 1) * width]
                          for i in range(n_signals)]
        position += width * n_signals
    return _Header(
        patient=text[8:88].strip(),
        recording=text[88:168].strip(),
        start_date=text[168:176].strip(),
        start_time=text[176:184].strip(),
        header_bytes=header_bytes,
        reserved=text[192:236].strip(),
        n_records=_parse_int(text[236:244], "number of data records", name),
        record_duration_s=_parse_float(text[244:252], "data record duration", name),
        signals=signals,
    )


def _check_data_length(data_bytes: int, n_records: int, record_values: int, name: str) -> int:
    """Return the number of data records, refusing a short or over-long data section."""
    record_bytes = record_values * 2
    held = data_bytes // record_bytes
    if n_records == -1:
        if data_bytes <= 0 or data_bytes % record_bytes:
            raise RecordError(f"{name}: record count unknown and the data section "
                              f"({data_bytes} bytes) is not whole records")
        return held
    if n_records <= 0:
        raise RecordError(f"{name}: header's number of data records is not positive")
    if data_bytes < n_records * record_bytes:
        raise RecordError(f"{name}: truncated: its {data_bytes} data bytes hold {held} data "
                          f"records, fewer than the header declares")
    if data_bytes > n_records * record_bytes:
        raise RecordError(f"{name}: header/data length mismatch: the file holds {data_bytes} "
                          f"data bytes, more than the header's data records need")
    return n_records


def _scaling(header: _Header, signal: int, label: str,
             name: str) -> Tuple[float, float, Tuple[float, float]]:
    """(gain, offset) in mV so that physical_mv = digital * gain + offset, and the digital
    (minimum, maximum)."""
    fields = header.signals
    unit = fields["physical_dimension"][signal].strip()
    factor = _MV_PER_UNIT.get(unit.lower())
    if factor is None:
        raise RecordError(f"{name}: signal {label} has a physical dimension that is not a "
                          f"voltage (mV, uV or V)")
    physical_min = _parse_float(fields["physical_min"][signal], "physical minimum", name)
    physical_max = _parse_float(fields["physical_max"][signal], "physical maximum", name)
    digital_min = _parse_float(fields["digital_min"][signal], "digital minimum", name)
    digital_max = _parse_float(fields["digital_max"][signal], "digital maximum", name)
    if digital_max <= digital_min or physical_max == physical_min:
        raise RecordError(f"{name}: signal {label} has an empty digital or physical range")
    gain = (physical_max - physical_min) / (digital_max - digital_min)
    if not math.isfinite(gain) or not math.isfinite(physical_min - digital_min * gain):
        raise RecordError(f"{name}: signal {label} has a digital or physical range too wide "
                          f"to scale")
    return (gain * factor, (physical_min - digital_min * gain) * factor,
            (digital_min, digital_max))


def _start_time(header: _Header) -> StartTime:
    """The start date and time (local wall-clock time), or the note saying why not."""
    date = re.match(r"^(\d{2})\.(\d{2})\.(\d{2})$", header.start_date)
    clock = re.match(r"^(\d{2})\.(\d{2})\.(\d{2})$", header.start_time)
    if not date or not clock:
        return time_problem("the start date/time", "is not dd.mm.yy hh.mm.ss")
    day, month, year = (int(part) for part in date.groups())
    year += 1900 if year >= 85 else 2000
    return acquisition_start("the start date/time", year, month, day, *clock.groups())


def _patient_id(field: str, edf_plus: bool) -> Optional[str]:
    """The identifier in the patient field (see the module docstring), or None."""
    words = field.split()
    if edf_plus:
        code = words[0] if words else ""
        return code if code and code.upper() not in _PLACEHOLDERS else None
    kept = [word for word in words if word.upper() not in _PLACEHOLDERS]
    return " ".join(kept) or None


def _lead_names(labels: List[str], name: str) -> Tuple[str, ...]:
    """Normalized names; an ``ECG`` prefix (``ECG I``, ``ECG V1``) is dropped first."""
    names = []
    for label in labels:
        bare = re.sub(r"^ECG[\s_-]+", "", label, flags=re.IGNORECASE) or label
        names.append(normalize_lead_name(bare))
    refuse_repeated_leads(names, name)
    return tuple(names)


def _parse_int(text: str, what: str, name: str) -> int:
    """An integer header field, or RecordError naming it."""
    try:
        return int(text.strip())
    except ValueError as exc:
        raise RecordError(f"{name}: EDF {what} is not an integer") from exc


def _parse_float(text: str, what: str, name: str) -> float:
    """A finite numeric header field, or RecordError naming it."""
    try:
        value = float(text.strip())
    except ValueError as exc:
        raise RecordError(f"{name}: EDF {what} is not a number") from exc
    if not math.isfinite(value):
        raise RecordError(f"{name}: EDF {what} is not finite")
    return value
