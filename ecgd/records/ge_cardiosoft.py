"""GE CardioSoft ``CardiologyXML`` reader (CardioSoft 6.x / 12SL, the UK-Biobank-style ECG).

Reads ``StripData`` only: the 10-s resting strip, one ``WaveformData lead="..."`` element per
lead holding comma-separated integer counts, scaled by ``StripData/Resolution`` (microvolts
per LSB, 5 in the exports seen). The median beat (``MedianSamples``) and the 16-s
``FullDisclosure`` stream are not the rhythm the model expects and are ignored.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.etree.ElementTree import Element

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, Recording, check_sample_budget,
                                    lead_label, normalize_lead_name)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem
from ecgd.records.xml_safety import (optional_text, parse_integers, parse_number, parse_xml,
                                     required, required_text)

_RESOLUTION_UNITS_UV = {"uvperlsb": 1.0, "mvperlsb": 1e3}
_TIME_FIELDS = ("Year", "Month", "Day", "Hour", "Minute", "Second")


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read the 10-s StripData of a CardioSoft XML export as millivolts; a strip stating
    more than ``max_samples`` leads x samples is refused before it is parsed."""
    path = Path(path)
    source = path.name
    root = parse_xml(path, max_bytes)
    strip = required(root, "StripData", source)
    fs_hz = parse_number(required_text(strip, "SampleRate", source), "SampleRate", source)
    resolution_uv = _resolution_uv(strip, source)
    names, counts = _leads(strip, source, max_samples)
    start_time, notes = _start(root)
    metadata: Dict[str, Any] = dict(notes)
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
        raise RecordError(f"{source}: StripData resolution units are not uVperLsb or "
                          f"mVperLsb")
    value = parse_number(element.text, "StripData Resolution", source) * _RESOLUTION_UNITS_UV[units]
    if value <= 0:
        raise RecordError(f"{source}: StripData resolution is not positive")
    return value


def _leads(strip: Element, source: str, max_samples: int) -> Tuple[List[str], np.ndarray]:
    """Lead names and integer counts ``[leads, n]``, checked against the declared sizes."""
    elements = strip.findall("WaveformData")
    if not elements:
        raise RecordError(f"{source}: StripData has no WaveformData")
    declared_leads = optional_text(strip, "NumberOfLeads")
    if declared_leads is not None and \
            parse_number(declared_leads, "NumberOfLeads", source) != len(elements):
        raise RecordError(f"{source}: NumberOfLeads disagrees with the {len(elements)} leads "
                          f"StripData holds")
    n_samples = parse_number(required_text(strip, "ChannelSampleCountTotal", source),
                             "ChannelSampleCountTotal", source)
    check_sample_budget(len(elements), math.ceil(n_samples), max_samples, source)
    names: List[str] = []
    rows: List[np.ndarray] = []
    for index, element in enumerate(elements):
        label = (element.get("lead") or "").strip()
        if not label:
            raise RecordError(f"{source}: a StripData WaveformData has no lead attribute")
        what = f"lead {lead_label(label, index)} samples"
        row = parse_integers(element.text, what, source, max(int(n_samples), 0))
        if len(row) != n_samples:
            raise RecordError(f"{source}: {what} are more or fewer than the "
                              f"ChannelSampleCountTotal stated")
        names.append(normalize_lead_name(label))
        rows.append(row)
    return names, np.stack(rows)


def _start(root: Element) -> StartTime:
    """ObservationDateTime (separate local-time fields, no zone)."""
    element = root.find("ObservationDateTime")
    if element is None:
        return None, {}
    texts = [optional_text(element, name) for name in _TIME_FIELDS]
    if any(text is None for text in texts[:3]) or not all(
            text.isascii() and text.isdigit() for text in texts if text is not None):
        return time_problem("ObservationDateTime", "is not a valid calendar date and time")
    year, month, day, hour, minute, second = (text or "0" for text in texts)
    return acquisition_start("ObservationDateTime", year, month, day, hour, minute, second)


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
