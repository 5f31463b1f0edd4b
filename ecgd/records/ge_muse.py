"""GE MUSE ``RestingECG`` XML reader.

Reads the ``Waveform`` whose ``WaveformType`` is ``Rhythm`` (never ``Median``). Each
``LeadData`` holds base64 little-endian int16 samples scaled by
``LeadAmplitudeUnitsPerBit`` in ``LeadAmplitudeUnits`` (microvolts in every export seen),
with its byte count, sample count and CRC-32 stated beside it; all are checked. MUSE
stores 8 leads (I, II, V1-V6); III, aVR, aVL and aVF are derived later by
``arrange_standard_leads``. The rate is ``SampleBase * 10**SampleExponent``.
"""
from __future__ import annotations

import math
import re
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union
from xml.etree.ElementTree import Element

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, Recording, check_sample_budget,
                                    lead_label, normalize_lead_name)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem
from ecgd.records.xml_safety import (decode_base64, optional_text, parse_number, parse_xml,
                                     required_text)

_MV_PER_UNIT = {"MICROVOLTS": 1e-3, "MILLIVOLTS": 1.0}
_SAMPLE_BYTES = 2
_DATE = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{1,4})$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2})$")


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read the rhythm waveform of a GE MUSE XML export as millivolts; leads whose stated
    sample counts add up to more than ``max_samples`` are refused before decoding."""
    path = Path(path)
    source = path.name
    root = parse_xml(path, max_bytes)
    waveform = _rhythm_waveform(root, source)
    fs_hz = _sampling_rate(waveform, source)
    names, samples_mv, units_per_bit = _leads(waveform, source, max_samples)
    start_time, notes = _start(root)
    metadata: Dict[str, Any] = dict(notes)
    metadata.update(_description(root))
    metadata["units_per_bit_uv"] = units_per_bit
    return Recording(samples_mv=samples_mv, fs_hz=fs_hz, lead_names=tuple(names),
                     format="ge-muse", start_time=start_time,
                     patient_id=optional_text(root, "PatientDemographics/PatientID"),
                     metadata=metadata)


def _rhythm_waveform(root: Element, source: str) -> Element:
    """The single ``Waveform`` of type Rhythm."""
    rhythms = [w for w in root.findall("Waveform")
               if (w.findtext("WaveformType") or "").strip().lower() == "rhythm"]
    if len(rhythms) != 1:
        raise RecordError(f"{source}: expected one Rhythm waveform, found {len(rhythms)}")
    return rhythms[0]


def _sampling_rate(waveform: Element, source: str) -> float:
    """SampleBase x 10^SampleExponent, refused when it is not a finite number of Hz
    (range limits are validate_recording's)."""
    base = parse_number(required_text(waveform, "SampleBase", source), "SampleBase", source)
    exponent = parse_number(optional_text(waveform, "SampleExponent") or "0",
                            "SampleExponent", source)
    try:
        fs_hz = base * 10.0 ** exponent
    except OverflowError as exc:
        raise RecordError(f"{source}: SampleBase x 10^SampleExponent is not a usable "
                          f"sampling rate") from exc
    if not math.isfinite(fs_hz) or fs_hz <= 0:
        raise RecordError(f"{source}: SampleBase x 10^SampleExponent is not a usable "
                          f"sampling rate")
    return fs_hz


def _leads(waveform: Element, source: str,
           max_samples: int) -> Tuple[List[str], np.ndarray, Union[float, List[float]]]:
    """Lead names, float32 millivolts ``[leads, n]`` and microvolts per bit (one value when
    all leads share it, else one per lead)."""
    lead_data = waveform.findall("LeadData")
    declared = optional_text(waveform, "NumberofLeads")
    if not lead_data:
        raise RecordError(f"{source}: Rhythm waveform has no LeadData")
    if declared is not None and parse_number(declared, "NumberofLeads", source) != len(lead_data):
        raise RecordError(f"{source}: NumberofLeads disagrees with the {len(lead_data)} leads "
                          f"the file holds")
    names: List[str] = []
    rows: List[np.ndarray] = []
    units_per_bit_uv: List[float] = []
    for index, element in enumerate(lead_data):
        decoded = sum(len(row) for row in rows)
        name, row_mv, per_bit_uv = _lead(element, index, source, decoded, max_samples)
        if rows and len(row_mv) != len(rows[0]):
            raise RecordError(f"{source}: lead {lead_label(name, index)} has {len(row_mv)} "
                              f"samples, lead {lead_label(names[0], 0)} has {len(rows[0])}")
        names.append(name)
        rows.append(row_mv)
        units_per_bit_uv.append(per_bit_uv)
    per_bit = units_per_bit_uv[0] if len(set(units_per_bit_uv)) == 1 else units_per_bit_uv
    return names, np.stack(rows).astype(np.float32), per_bit


def _lead(element: Element, index: int, source: str, decoded: int,
          max_samples: int) -> Tuple[str, np.ndarray, float]:
    """One LeadData: name, millivolts (float64) and microvolts per bit, all fields checked;
    refused before it is decoded when its stated sample count would take the leads
    ``decoded`` so far past ``max_samples``."""
    name = normalize_lead_name(required_text(element, "LeadID", source))
    what = f"lead {lead_label(name, index)}"
    sample_bytes = parse_number(optional_text(element, "LeadSampleSize") or "2",
                                f"{what} LeadSampleSize", source)
    if sample_bytes != _SAMPLE_BYTES:
        raise RecordError(f"{source}: {what} does not have 2-byte samples, the only size "
                          f"supported")
    n_samples = parse_number(required_text(element, "LeadSampleCountTotal", source),
                             f"{what} LeadSampleCountTotal", source)
    check_sample_budget(1, decoded + math.ceil(n_samples), max_samples, source)
    raw = decode_base64(element.findtext("WaveFormData"), f"{what} WaveFormData", source)
    n_bytes = optional_text(element, "LeadByteCountTotal")
    if n_bytes is not None and parse_number(n_bytes, f"{what} LeadByteCountTotal",
                                            source) != len(raw):
        raise RecordError(f"{source}: {what} decodes to {len(raw)} bytes, not the "
                          f"LeadByteCountTotal stated")
    if len(raw) != n_samples * _SAMPLE_BYTES:
        raise RecordError(f"{source}: {what} holds {len(raw) // _SAMPLE_BYTES} samples, not "
                          f"the LeadSampleCountTotal stated")
    crc = optional_text(element, "LeadDataCRC32")
    if crc is not None and zlib.crc32(raw) != parse_number(crc, f"{what} CRC32", source):
        raise RecordError(f"{source}: {what} fails its CRC-32 check (data corrupted)")
    per_bit = parse_number(required_text(element, "LeadAmplitudeUnitsPerBit", source),
                           f"{what} LeadAmplitudeUnitsPerBit", source)
    units = (optional_text(element, "LeadAmplitudeUnits") or "MICROVOLTS").upper()
    if units not in _MV_PER_UNIT:
        raise RecordError(f"{source}: {what} amplitude units are not MICROVOLTS or "
                          f"MILLIVOLTS")
    counts = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    return name, counts * per_bit * _MV_PER_UNIT[units], per_bit * _MV_PER_UNIT[units] * 1e3


def _start(root: Element) -> StartTime:
    """AcquisitionDate (MM-DD-YYYY) + AcquisitionTime: local time, no zone in MUSE."""
    date_text = optional_text(root, "TestDemographics/AcquisitionDate")
    time_text = optional_text(root, "TestDemographics/AcquisitionTime") or "00:00:00"
    if date_text is None:
        return None, {}
    date = _DATE.match(date_text)
    clock = _CLOCK.match(time_text)
    if not date or not clock:
        return time_problem("AcquisitionDate/AcquisitionTime", "is not MM-DD-YYYY HH:MM:SS")
    month, day, year = date.groups()
    return acquisition_start("AcquisitionDate/AcquisitionTime", year, month, day,
                             *clock.groups())


def _description(root: Element) -> Dict[str, Any]:
    """Non-identifying device facts and MUSE's own interpretation statements."""
    found: Dict[str, Any] = {
        "device": optional_text(root, "TestDemographics/AcquisitionDevice"),
        "software_version": optional_text(root, "TestDemographics/AcquisitionSoftwareVersion"),
        "muse_version": optional_text(root, "MuseInfo/MuseVersion"),
    }
    statements = _statement_lines(root.findall("Diagnosis/DiagnosisStatement"))
    if statements:
        found["statements"] = statements
    return {key: value for key, value in found.items() if value}


def _statement_lines(elements: List[Element]) -> List[str]:
    """Join MUSE's statement fragments into lines; ``StmtFlag`` ENDSLINE closes a line."""
    lines: List[str] = []
    fragments: List[str] = []
    for element in elements:
        text = (element.findtext("StmtText") or "").strip()
        if text:
            fragments.append(text)
        flags = {(flag.text or "").strip().upper() for flag in element.findall("StmtFlag")}
        if "ENDSLINE" in flags and fragments:
            lines.append(" ".join(fragments))
            fragments = []
    if fragments:
        lines.append(" ".join(fragments))
    return lines
