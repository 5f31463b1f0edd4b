"""HL7 v3 Annotated ECG (FDA aECG) XML reader.

Reads the RHYTHM series (never the derived representative beat): its sequence set holds a
time sequence (``TIME_ABSOLUTE`` or ``TIME_RELATIVE``: head + increment in s or ms) and one
``SLIST_PQ`` sequence per lead whose physical value is ``origin + scale * digit`` in the
units the file names (nV, uV, mV or V). Leads keep the file's order (the HL7 example stores
I, II, V1-V6, III, aVR, aVL, aVF); ``MDC_ECG_LEAD_*`` codes are normalized.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.etree.ElementTree import Element

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, Recording, check_sample_budget,
                                    lead_label, normalize_lead_name)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem
from ecgd.records.xml_safety import (optional_text, parse_integers, parse_number, parse_xml,
                                     required)

_NS = "{urn:hl7-org:v3}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_MV_PER_UNIT = {"nv": 1e-6, "uv": 1e-3, "mv": 1.0, "v": 1e3}
_S_PER_UNIT = {"s": 1.0, "ms": 1e-3}
_TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")
_LEAD_CODE_PREFIX = "MDC_ECG_LEAD_"
_HL7_TIME = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6})\d*)?"
                       r"([+-]\d{4})?$")


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read the rhythm waveforms of an HL7 aECG file as millivolts; more than
    ``max_samples`` digits in all leads together are refused as they are parsed."""
    path = Path(path)
    source = path.name
    root = parse_xml(path, max_bytes)
    series = _rhythm_series(root, source)
    sequence_set = required(series, f"{_NS}component/{_NS}sequenceSet", source)
    fs_hz, time_head = _sampling(sequence_set, source)
    names, samples_mv, scales_uv = _leads(sequence_set, source, max_samples)
    start_text = time_head or _series_start(series)
    start_time, notes = _start(start_text)
    metadata: Dict[str, Any] = dict(notes)
    metadata.update(_device(series))
    metadata["resolution_uv"] = scales_uv[0] if len(set(scales_uv)) == 1 else scales_uv
    return Recording(samples_mv=samples_mv, fs_hz=fs_hz, lead_names=tuple(names),
                     format="hl7-aecg", start_time=start_time,
                     patient_id=_subject_id(root), metadata=metadata)


def _rhythm_series(root: Element, source: str) -> Element:
    """The first ``series`` coded RHYTHM (representative beats live in derivedSeries)."""
    for series in root.iter(f"{_NS}series"):
        code = series.find(f"{_NS}code")
        if code is not None and code.get("code") == "RHYTHM":
            return series
    raise RecordError(f"{source}: no RHYTHM series (only rhythm waveforms are read)")


def _sampling(sequence_set: Element, source: str) -> Tuple[float, Optional[str]]:
    """Sampling rate from the time sequence's increment; the absolute head time if any."""
    for sequence in sequence_set.iter(f"{_NS}sequence"):
        code = sequence.find(f"{_NS}code")
        if code is None or code.get("code") not in _TIME_CODES:
            continue
        value = required(sequence, f"{_NS}value", source)
        increment = required(value, f"{_NS}increment", source)
        unit = (increment.get("unit") or "s").lower()
        if unit not in _S_PER_UNIT:
            raise RecordError(f"{source}: time increment unit is not s or ms")
        step_s = parse_number(increment.get("value"), "time increment", source) * _S_PER_UNIT[unit]
        if step_s <= 0:
            raise RecordError(f"{source}: time increment is not positive")
        head = value.find(f"{_NS}head")
        if code.get("code") == "TIME_ABSOLUTE" and head is not None:
            return 1.0 / step_s, head.get("value")
        return 1.0 / step_s, None
    raise RecordError(f"{source}: rhythm series has no TIME_ABSOLUTE/TIME_RELATIVE sequence")


def _leads(sequence_set: Element, source: str,
           max_samples: int) -> Tuple[List[str], np.ndarray, List[float]]:
    """Lead names, float32 millivolts ``[leads, n]`` and each lead's scale in microvolts."""
    names: List[str] = []
    rows: List[np.ndarray] = []
    scales_uv: List[float] = []
    for sequence in sequence_set.iter(f"{_NS}sequence"):
        code = sequence.find(f"{_NS}code")
        lead_code = code.get("code", "") if code is not None else ""
        if not lead_code.startswith(_LEAD_CODE_PREFIX):
            continue
        label = lead_label(lead_code, len(names))
        value = required(sequence, f"{_NS}value", source)
        if value.get(_XSI_TYPE, "SLIST_PQ") != "SLIST_PQ":
            raise RecordError(f"{source}: lead {label} value type is not SLIST_PQ")
        origin_mv = _quantity_mv(required(value, f"{_NS}origin", source), f"lead {label} origin",
                                 source)
        scale_mv = _quantity_mv(required(value, f"{_NS}scale", source), f"lead {label} scale",
                                source)
        decoded = sum(len(row) for row in rows)
        digits = parse_integers(required(value, f"{_NS}digits", source).text,
                                f"lead {label} digits", source, max_samples - decoded)
        check_sample_budget(1, decoded + len(digits), max_samples, source)
        if len(digits) == 0:
            raise RecordError(f"{source}: lead {label} has no digits")
        names.append(normalize_lead_name(lead_code))
        rows.append(origin_mv + scale_mv * digits)
        scales_uv.append(round(scale_mv * 1e3, 6))
    if not rows:
        raise RecordError(f"{source}: rhythm series has no MDC_ECG_LEAD_* sequences")
    if len({len(row) for row in rows}) != 1:
        counts = ", ".join(f"{lead_label(n, i)}={len(r)}"
                           for i, (n, r) in enumerate(zip(names, rows)))
        raise RecordError(f"{source}: leads have different sample counts ({counts})")
    return names, np.stack(rows).astype(np.float32), scales_uv


def _quantity_mv(element: Element, what: str, source: str) -> float:
    """A physical quantity (``value`` + ``unit``) in millivolts."""
    unit = (element.get("unit") or "").lower()
    if unit not in _MV_PER_UNIT:
        raise RecordError(f"{source}: {what} unit is not a voltage (nV, uV, mV or V)")
    return parse_number(element.get("value"), what, source) * _MV_PER_UNIT[unit]


def _series_start(series: Element) -> Optional[str]:
    """The series' effectiveTime low (or center) value, when there is no absolute head."""
    for tag in ("low", "center"):
        found = series.find(f"{_NS}effectiveTime/{_NS}{tag}")
        if found is not None and found.get("value"):
            return found.get("value")
    return None


def _start(text: Optional[str]) -> StartTime:
    """An HL7 TS (``YYYYMMDD[HH[MM[SS[.ffff]]]][+ZZZZ]``) as start_time and its notes."""
    if not text:
        return None, {}
    match = _HL7_TIME.match(text.strip())
    if not match:
        return time_problem("the acquisition time", "is not an HL7 timestamp")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    return acquisition_start("the acquisition time", year, month, day, hour or 0, minute or 0,
                             second or 0, (fraction or "0").ljust(6, "0"), offset)


def _device(series: Element) -> Dict[str, str]:
    """Device model and software from the series author, where present."""
    device_path = f"{_NS}author/{_NS}seriesAuthor/{_NS}manufacturedSeriesDevice"
    found = {
        "device": optional_text(series, f"{device_path}/{_NS}manufacturerModelName"),
        "software_version": optional_text(series, f"{device_path}/{_NS}softwareName"),
    }
    return {key: value for key, value in found.items() if value}


def _subject_id(root: Element) -> Optional[str]:
    """The trial subject id (HL7 ``trialSubject/id@extension``), else a vendor PatientID."""
    for subject in root.iter(f"{_NS}trialSubject"):
        identifier = subject.find(f"{_NS}id")
        if identifier is not None and (identifier.get("extension") or "").strip():
            return identifier.get("extension", "").strip()
        vendor_id = optional_text(subject, f"{_NS}subjectDemographicPerson/{_NS}PatientID")
        if vendor_id:
            return vendor_id
    return None
