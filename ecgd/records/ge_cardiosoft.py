"""GE CardioSoft ``CardiologyXML`` reader (CardioSoft 6.x / 12SL, the UK-Biobank-style ECG).

Reads ``StripData`` only: the 10-s resting strip, one ``WaveformData lead="..."`` element per
lead holding comma-separated integer counts, scaled by ``StripData/Resolution`` (microvolts
per LSB, 5 in the exports seen). The median beat (``MedianSamples``) and the 16-s
``FullDisclosure`` stream are not the rhythm the model expects and are ignored.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.etree.ElementTree import Element

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import Recording, normalize_lead_name
from ecgd.records.xml_safety import (acquisition_time, optional_text, parse_number,
                                     parse_xml, required, required_text)

_RESOLUTION_UNITS_UV = {"uvperlsb": 1.0, "mvperlsb": 1e3}
_TIME_FIELDS = ("Year", "Month", "Day", "Hour", "Minute", "Second")


def read(path: Path, max_bytes: int) -> Recording:
    """Read the 10-s StripData of a CardioSoft XML export as millivolts."""
    path = Path(path)
    source = path.name
    root = parse_xml(path, max_bytes)
    strip = required(root, "StripData", source)
    fs_hz = parse_number(required_text(strip, "SampleRate", source), "SampleRate", source)
    resolution_uv = _resolution_uv(strip, source)
    names, counts = _leads(strip, source)
    start_time, metadata = _start(root, source)
    metadata.update(_description(root))
    metadata["resolution_uv"] = resolution_uv
    samples_mv = (counts * (resolution_uv * 1e-3)).astype(np.float32)
    return Recording(samples_mv=samples_mv, fs_hz=fs_hz, lead_names=tuple(names),
                     format="ge-cardiosoft", start_time=start_time,
                     patient_id=_patient_id(root), metadata=metadata)


def _resolution_uv(strip: Element, source: str) -> float:
    """StripData/Resolution in microvolts per LSB."""
    element = required(strip, "Resolution", source)
    units = (element.get("units") or "uVperLsb").lower()
    if units not in _RESOLUTION_UNITS_UV:
        raise RecordError(f"{source}: StripData resolution units {element.get('units')!r} "
                          f"are not supported")
    value = parse_number(element.text, "StripData Resolution", source) * _RESOLUTION_UNITS_UV[units]
    if value <= 0:
        raise RecordError(f"{source}: StripData resolution {value:g} uV is not positive")
    return value


def _leads(strip: Element, source: str) -> Tuple[List[str], np.ndarray]:
    """Lead names and integer counts ``[leads, n]``, checked against the declared sizes."""
    elements = strip.findall("WaveformData")
    if not elements:
        raise RecordError(f"{source}: StripData has no WaveformData")
    declared_leads = optional_text(strip, "NumberOfLeads")
    if declared_leads is not None and \
            parse_number(declared_leads, "NumberOfLeads", source) != len(elements):
        raise RecordError(f"{source}: NumberOfLeads says {declared_leads}, StripData holds "
                          f"{len(elements)} leads")
    n_samples = int(parse_number(required_text(strip, "ChannelSampleCountTotal", source),
                                 "ChannelSampleCountTotal", source))
    names: List[str] = []
    rows: List[np.ndarray] = []
    for element in elements:
        label = (element.get("lead") or "").strip()
        if not label:
            raise RecordError(f"{source}: a StripData WaveformData has no lead attribute")
        name = normalize_lead_name(label)
        row = _counts(element.text, name, source)
        if len(row) != n_samples:
            raise RecordError(f"{source}: lead {name} holds {len(row)} samples, "
                              f"ChannelSampleCountTotal says {n_samples}")
        names.append(name)
        rows.append(row)
    return names, np.stack(rows)


def _counts(text: Optional[str], lead: str, source: str) -> np.ndarray:
    """Comma-separated integers (whitespace allowed) as float64."""
    tokens = (text or "").replace(",", " ").split()
    try:
        # numpy parses the tokens as int() does, 2x faster than a list of Python ints
        return np.array(tokens, dtype=np.int64).astype(np.float64)
    except (ValueError, OverflowError) as exc:
        raise RecordError(f"{source}: lead {lead} samples are not integers ({exc})") from exc


def _start(root: Element, source: str) -> Tuple[Optional[dt.datetime], Dict[str, Any]]:
    """ObservationDateTime (separate local-time fields, no zone)."""
    element = root.find("ObservationDateTime")
    if element is None:
        return None, {}
    fields = [optional_text(element, name) for name in _TIME_FIELDS]
    if any(field is None for field in fields[:3]):
        raise RecordError(f"{source}: ObservationDateTime lacks a year, month or day")
    try:
        year, month, day, hour, minute, second = (int(field or 0) for field in fields)
        moment = dt.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise RecordError(f"{source}: ObservationDateTime is not a valid date/time") from exc
    text = " ".join(f"{name}={field}" for name, field in zip(_TIME_FIELDS, fields) if field)
    start_time, metadata = acquisition_time(moment, text)
    return start_time, dict(metadata)


def _patient_id(root: Element) -> Optional[str]:
    """PatientInfo/PID (older exports: PatientID)."""
    return optional_text(root, "PatientInfo/PID") or optional_text(root, "PatientInfo/PatientID")


def _description(root: Element) -> Dict[str, Any]:
    """Device, software versions and the 12SL interpretation statements."""
    found: Dict[str, Any] = {
        "device": optional_text(root, "ClinicalInfo/DeviceInfo/Desc"),
        "software_version": optional_text(root, "ClinicalInfo/DeviceInfo/SoftwareVer"),
        "analysis_version": optional_text(root, "ClinicalInfo/DeviceInfo/AnalysisVer"),
    }
    statements = [text.strip() for text in
                  (d.text for d in root.findall("Interpretation/Diagnosis/DiagnosisText"))
                  if text and text.strip()]
    if statements:
        found["statements"] = statements
    return {key: value for key, value in found.items() if value}
