"""DICOM 12-lead ECG waveforms (Waveform Storage) through ``pydicom``.

A waveform file holds several multiplex groups, typically the 10-s rhythm and a 1.2-s
median beat. The rhythm is the group with the longest duration (samples / rate); an
ORIGINAL group wins a tie over a DERIVED one. Per channel (PS3.3 C.10.9.1.4.3):

    value = (stored + ChannelBaseline) * ChannelSensitivity * ChannelSensitivityCorrectionFactor

in the unit of ChannelSensitivityUnitsSequence (UCUM ``uV``, ``mV`` or ``V``), converted to
millivolts. The baseline is taken in stored-value units, as the standard words it (pydicom's
own ``multiplex_array`` adds it after scaling; both sample files have baseline 0). A channel
without sensitivity or unit is refused: its amplitude would be a guess.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ecgd.errors import RecordError
from ecgd.records.recording import STANDARD_LEADS, Recording, normalize_lead_name

_MV_PER_UNIT = {"uv": 1e-3, "mv": 1.0, "v": 1e3}

# (WaveformBitsAllocated, WaveformSampleInterpretation) -> little-endian dtype.
_SAMPLE_DTYPES = {
    (8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "<i2", (16, "US"): "<u2",
    (32, "SL"): "<i4", (32, "UL"): "<u4",
}

# SCP-ECG lead codes (``5.6.3-9-N``) for channels whose meaning is not a lead name.
_SCP_LEADS = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
              61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}
_SCP_CODE = re.compile(r"^5\.6\.3-9-(\d+)$")
_UTC_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")


def read(path: Path, max_bytes: int) -> Recording:
    """Read the rhythm multiplex group of a DICOM ECG as float32 millivolts ``[leads, n]``.

    ``max_bytes`` is enforced by the caller's size check before this reads the file whole.
    """
    path = Path(path)
    name = path.name
    try:
        dataset = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises many types on hostile or broken bytes
        raise RecordError(f"{name}: not a readable DICOM file: {_one_line(exc)}") from exc
    groups = dataset.get("WaveformSequence")
    if not groups:
        raise RecordError(f"{name}: DICOM without a WaveformSequence (not an ECG waveform)")
    try:
        index = _rhythm_group_index(groups, name)
        group = groups[index]
        samples_mv, raw_names, units = _decode_group(group, name)
        patient_id = _patient_id(dataset)
        start_time, zone_note = _start_time(dataset)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        # pydicom converts element values lazily, so a malformed value surfaces here.
        raise RecordError(f"{name}: malformed waveform element: {_one_line(exc)}") from exc
    metadata: Dict[str, Any] = {
        "units": sorted(set(units)),
        "original_lead_names": raw_names,
        "multiplex_group": index,
        "multiplex_group_label": str(group.get("MultiplexGroupLabel", "")),
        "n_multiplex_groups": len(groups),
        "manufacturer": str(dataset.get("Manufacturer", "")),
        "model": str(dataset.get("ManufacturerModelName", "")),
    }
    if zone_note:
        metadata["start_time_zone"] = zone_note
    return Recording(
        samples_mv=samples_mv,
        fs_hz=float(group.SamplingFrequency),
        lead_names=_lead_names(group, raw_names, name),
        format="dicom",
        start_time=start_time,
        patient_id=patient_id,
        metadata=metadata,
    )


def _rhythm_group_index(groups: List[Dataset], name: str) -> int:
    """Index of the longest group (ties: ORIGINAL before DERIVED, then first)."""
    best_index = -1
    best_key: Tuple[float, int] = (0.0, 0)
    for index, group in enumerate(groups):
        fs_hz = float(group.get("SamplingFrequency") or 0)
        n_samples = int(group.get("NumberOfWaveformSamples") or 0)
        if fs_hz <= 0 or n_samples <= 0:
            continue
        key = (n_samples / fs_hz, 1 if group.get("WaveformOriginality") == "ORIGINAL" else 0)
        if key > best_key:
            best_index, best_key = index, key
    if best_index < 0:
        raise RecordError(f"{name}: no waveform group with a sampling rate and samples")
    return best_index


def _decode_group(group: Dataset, name: str) -> Tuple[np.ndarray, List[str], List[str]]:
    """Stored samples of one multiplex group scaled to float32 millivolts ``[leads, n]``,
    with each channel's source name and stored unit."""
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    key = (int(group.WaveformBitsAllocated), str(group.WaveformSampleInterpretation))
    if key not in _SAMPLE_DTYPES:
        raise RecordError(f"{name}: waveform sample encoding {key[0]} bits {key[1]} "
                          f"is not supported")
    dtype = np.dtype(_SAMPLE_DTYPES[key])
    data = group.get("WaveformData")
    expected_bytes = n_channels * n_samples * dtype.itemsize
    if data is None or len(data) < expected_bytes:
        held = 0 if data is None else len(data)
        raise RecordError(f"{name}: WaveformData holds {held} bytes, {n_channels} channels x "
                          f"{n_samples} samples need {expected_bytes}")
    channels = group.get("ChannelDefinitionSequence") or []
    if len(channels) != n_channels:
        raise RecordError(f"{name}: {len(channels)} channel definitions for {n_channels} "
                          f"channels")
    stored = np.frombuffer(data[:expected_bytes], dtype=dtype).reshape(n_samples, n_channels)
    samples_mv = np.empty((n_channels, n_samples), dtype=np.float32)
    raw_names = []
    units = []
    for row, channel in enumerate(channels):
        raw_name = _channel_name(channel, row)
        raw_names.append(raw_name)
        gain_mv, unit = _channel_gain_mv(channel, raw_name, name)
        units.append(unit)
        baseline = float(channel.get("ChannelBaseline") or 0.0)
        samples_mv[row] = (stored[:, row].astype(np.float64) + baseline) * gain_mv
    return samples_mv, raw_names, units


def _channel_name(channel: Dataset, row: int) -> str:
    """The channel's source meaning (``Lead I (Einthoven)``, ``V1``) or its position."""
    source = channel.get("ChannelSourceSequence")
    if source:
        meaning = str(source[0].get("CodeMeaning", "")).strip()
        if meaning:
            return meaning
    label = str(channel.get("ChannelLabel", "")).strip()
    return label or f"channel{row + 1}"


def _channel_gain_mv(channel: Dataset, raw_name: str, name: str) -> Tuple[float, str]:
    """Millivolts per stored unit (sensitivity x correction x unit) and the unit code.

    Sensitivity and unit are required; the correction factor defaults to 1.
    """
    sensitivity = channel.get("ChannelSensitivity")
    units = channel.get("ChannelSensitivityUnitsSequence")
    if sensitivity is None or not units:
        raise RecordError(f"{name}: channel {raw_name} has no sensitivity/unit, so its "
                          f"amplitude is unknown")
    unit = str(units[0].get("CodeValue", "")).strip()
    factor = _MV_PER_UNIT.get(unit.lower())
    if factor is None:
        raise RecordError(f"{name}: channel {raw_name} has unit {unit!r}, not a voltage")
    correction = channel.get("ChannelSensitivityCorrectionFactor")
    correction_value = 1.0 if correction is None else float(correction)
    return float(sensitivity) * correction_value * factor, unit


def _lead_names(group: Dataset, raw_names: List[str], name: str) -> Tuple[str, ...]:
    """Normalized names, falling back to the SCP-ECG lead code when the meaning is not one."""
    names = []
    for channel, raw_name in zip(group.ChannelDefinitionSequence, raw_names):
        lead = normalize_lead_name(raw_name)
        if lead not in STANDARD_LEADS:
            source = channel.get("ChannelSourceSequence")
            code = str(source[0].get("CodeValue", "")) if source else ""
            match = _SCP_CODE.match(code.strip())
            if match and int(match.group(1)) in _SCP_LEADS:
                lead = _SCP_LEADS[int(match.group(1))]
        names.append(lead)
    repeated = sorted({lead for lead in names if names.count(lead) > 1})
    if repeated:
        raise RecordError(f"{name}: lead {', '.join(repeated)} appears more than once")
    return tuple(names)


def _patient_id(dataset: Dataset) -> Optional[str]:
    """PatientID, else PatientName; None when neither holds text."""
    for keyword in ("PatientID", "PatientName"):
        value = str(dataset.get(keyword, "") or "").strip()
        if value:
            return value
    return None


def _start_time(dataset: Dataset) -> Tuple[Optional[dt.datetime], Optional[str]]:
    """Acquisition time in UTC (AcquisitionDateTime, else ContentDate + ContentTime).

    Returns the time and a note when the zone was not stored and UTC was assumed.
    """
    text = str(dataset.get("AcquisitionDateTime", "") or "").strip()
    if not text:
        date = str(dataset.get("ContentDate", "") or "").strip()
        time = str(dataset.get("ContentTime", "") or "").strip()
        if not date or not time:
            return None, None
        text = date + time
    match = re.match(r"^(\d{8})(\d{2})(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$", text)
    if not match:
        return None, None
    date_part, hour, minute, second, offset = match.groups()
    try:
        naive = dt.datetime.strptime(date_part + hour + (minute or "00") + (second or "00"),
                                     "%Y%m%d%H%M%S")
    except ValueError:
        return None, "stored date/time is not a valid calendar time"
    offset = offset or str(dataset.get("TimezoneOffsetFromUTC", "") or "").strip() or None
    zone = _zone(offset)
    if zone is None:
        return naive.replace(tzinfo=dt.timezone.utc), "not stored in the file; taken as UTC"
    return naive.replace(tzinfo=zone).astimezone(dt.timezone.utc), None


def _zone(offset: Optional[str]) -> Optional[dt.timezone]:
    """``+0100`` -> a fixed-offset zone; None when absent or malformed."""
    match = _UTC_OFFSET.match(offset or "")
    if not match:
        return None
    sign, hours, minutes = match.groups()
    delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
    return dt.timezone(-delta if sign == "-" else delta)


def _one_line(exc: BaseException) -> str:
    """A foreign exception as one short line (its type when it has no message)."""
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__
