"""DICOM 12-lead ECG waveforms (Waveform Storage) through ``pydicom``.

A waveform file holds several multiplex groups, typically the 10-s rhythm and a 1.2-s
median beat. The rhythm is the group with the longest duration (samples / rate); an
ORIGINAL group wins a tie over a DERIVED one. Per channel (PS3.3 C.10.9.1.4.3):

    value = (stored + ChannelBaseline) * ChannelSensitivity * ChannelSensitivityCorrectionFactor

in the unit of ChannelSensitivityUnitsSequence (UCUM ``uV``, ``mV`` or ``V``), converted to
millivolts. The baseline is taken in stored-value units, as the standard words it (pydicom's
own ``multiplex_array`` adds it after scaling; both sample files have baseline 0). A channel
without sensitivity or unit is refused: its amplitude would be a guess. ``rails_mv`` is the
range each channel's ``WaveformBitsStored`` (else the group's bits allocated) can hold.

pydicom parses lazily: a malformed element (a bad VR, a value of the wrong length) raises
when it is first used, with pydicom's or Python's own exception. Every use of the dataset
therefore happens inside one translation into RecordError. pydicom's warnings and log lines
quote element values (names, dates), so they are silenced: a file's values never reach the
journal.
"""
from __future__ import annotations

import logging
import math
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, STANDARD_LEADS, Recording,
                                    check_sample_budget, lead_label, normalize_lead_name,
                                    refuse_repeated_leads)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").disabled = True
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")

# What pydicom (or Python under it) raises on hostile bytes and malformed elements; its
# parser says "No tag to read at file position ..." with an OSError.
_MALFORMED = (InvalidDicomError, BytesLengthException, AttributeError, TypeError, ValueError,
              LookupError, OverflowError, NotImplementedError, struct.error, EOFError, OSError)

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
_DATE_TIME = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6})\d*)?"
                        r"([+-]\d{4})?$")


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read the rhythm multiplex group of a DICOM ECG as float32 millivolts ``[leads, n]``.

    ``max_bytes`` is enforced by the caller's size check before this reads the file whole;
    a group of more than ``max_samples`` channels x samples is refused before decoding.
    """
    path = Path(path)
    name = path.name
    try:
        dataset = pydicom.dcmread(str(path))
        return _recording(dataset, name, max_samples)
    except _MALFORMED as exc:
        raise RecordError(f"{name}: not a readable DICOM ECG: a malformed element "
                          f"({type(exc).__name__})") from exc


def _recording(dataset: Dataset, name: str, max_samples: int) -> Recording:
    """The Recording of a parsed dataset; pydicom errors pass through to ``read``."""
    groups = dataset.get("WaveformSequence")
    if not groups:
        raise RecordError(f"{name}: DICOM without a WaveformSequence (not an ECG waveform)")
    index = _rhythm_group_index(groups, name)
    group = groups[index]
    samples_mv, raw_names, units, rails_mv = _decode_group(group, name, max_samples)
    start_time, notes = _start_time(dataset)
    metadata: Dict[str, Any] = {
        "units": sorted(set(units)),
        "original_lead_names": raw_names,
        "multiplex_group": index,
        "multiplex_group_label": str(group.get("MultiplexGroupLabel", "")),
        "n_multiplex_groups": len(groups),
        "manufacturer": str(dataset.get("Manufacturer", "")),
        "model": str(dataset.get("ManufacturerModelName", "")),
        **notes,
    }
    return Recording(
        samples_mv=samples_mv,
        fs_hz=float(group.SamplingFrequency),
        lead_names=_lead_names(group, raw_names, name),
        format="dicom",
        start_time=start_time,
        patient_id=_patient_id(dataset),
        metadata=metadata,
        rails_mv=rails_mv,
    )


def _rhythm_group_index(groups: List[Dataset], name: str) -> int:
    """Index of the longest group (ties: ORIGINAL before DERIVED, then first)."""
    best_index = -1
    best_key: Tuple[float, int] = (0.0, 0)
    for index, group in enumerate(groups):
        fs_hz = float(group.get("SamplingFrequency") or 0)
        n_samples = int(group.get("NumberOfWaveformSamples") or 0)
        if not fs_hz > 0 or n_samples <= 0:
            continue
        key = (n_samples / fs_hz, 1 if group.get("WaveformOriginality") == "ORIGINAL" else 0)
        if key > best_key:
            best_index, best_key = index, key
    if best_index < 0:
        raise RecordError(f"{name}: no waveform group with a sampling rate and samples")
    return best_index


def _decode_group(group: Dataset, name: str, max_samples: int
                  ) -> Tuple[np.ndarray, List[str], List[str], np.ndarray]:
    """Stored samples of one multiplex group scaled to float32 millivolts ``[leads, n]``,
    with each channel's source name, stored unit and representable range in mV."""
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    bits_allocated = int(group.WaveformBitsAllocated)
    interpretation = str(group.WaveformSampleInterpretation)
    if (bits_allocated, interpretation) not in _SAMPLE_DTYPES:
        raise RecordError(f"{name}: waveform sample encoding (bits allocated, sample "
                          f"interpretation) is not supported")
    dtype = np.dtype(_SAMPLE_DTYPES[(bits_allocated, interpretation)])
    if n_channels <= 0:
        raise RecordError(f"{name}: the rhythm group has no channels")
    check_sample_budget(n_channels, n_samples, max_samples, name)
    data = group.get("WaveformData")
    expected_bytes = n_channels * n_samples * dtype.itemsize
    if data is None or len(data) < expected_bytes:
        held = 0 if data is None else len(data)
        raise RecordError(f"{name}: WaveformData holds {held} bytes, fewer than its channels "
                          f"and samples need")
    channels = group.get("ChannelDefinitionSequence") or []
    if len(channels) != n_channels:
        raise RecordError(f"{name}: {len(channels)} channel definitions for "
                          f"NumberOfWaveformChannels")
    stored = np.frombuffer(data[:expected_bytes], dtype=dtype).reshape(n_samples, n_channels)
    samples_mv = np.empty((n_channels, n_samples), dtype=np.float32)
    rails_mv = np.empty((n_channels, 2), dtype=np.float64)
    raw_names = []
    units = []
    for row, channel in enumerate(channels):
        raw_name = _channel_name(channel, row)
        raw_names.append(raw_name)
        gain_mv, unit = _channel_gain_mv(channel, lead_label(raw_name, row), name)
        units.append(unit)
        baseline = float(channel.get("ChannelBaseline") or 0.0)
        samples_mv[row] = (stored[:, row].astype(np.float64) + baseline) * gain_mv
        low, high = _stored_range(channel, bits_allocated, dtype)
        ends = ((low + baseline) * gain_mv, (high + baseline) * gain_mv)
        rails_mv[row] = (min(ends), max(ends))
    return samples_mv, raw_names, units, rails_mv


def _stored_range(channel: Dataset, bits_allocated: int, dtype: np.dtype) -> Tuple[int, int]:
    """The lowest and highest stored value ``WaveformBitsStored`` allows (bits allocated
    when the channel does not state it, or states more)."""
    bits = int(channel.get("WaveformBitsStored") or bits_allocated)
    bits = bits if 0 < bits <= bits_allocated else bits_allocated
    if dtype.kind == "u":
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _channel_name(channel: Dataset, row: int) -> str:
    """The channel's source meaning (``Lead I (Einthoven)``, ``V1``) or its position."""
    source = channel.get("ChannelSourceSequence")
    if source:
        meaning = str(source[0].get("CodeMeaning", "")).strip()
        if meaning:
            return meaning
    label = str(channel.get("ChannelLabel", "")).strip()
    return label or f"channel{row + 1}"


def _channel_gain_mv(channel: Dataset, label: str, name: str) -> Tuple[float, str]:
    """Millivolts per stored unit (sensitivity x correction x unit) and the unit code.

    Sensitivity and unit are required; the correction factor defaults to 1.
    """
    sensitivity = channel.get("ChannelSensitivity")
    units = channel.get("ChannelSensitivityUnitsSequence")
    if sensitivity is None or not units:
        raise RecordError(f"{name}: channel {label} has no sensitivity/unit, so its "
                          f"amplitude is unknown")
    unit = str(units[0].get("CodeValue", "")).strip()
    factor = _MV_PER_UNIT.get(unit.lower())
    if factor is None:
        raise RecordError(f"{name}: channel {label} has a unit that is not a voltage (uV, mV "
                          f"or V)")
    correction = channel.get("ChannelSensitivityCorrectionFactor")
    gain_mv = float(sensitivity) * (1.0 if correction is None else float(correction)) * factor
    if not math.isfinite(gain_mv) or gain_mv == 0:
        raise RecordError(f"{name}: channel {label} sensitivity is not a finite, non-zero "
                          f"number")
    return gain_mv, unit


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
    refuse_repeated_leads(names, name)
    return tuple(names)


def _patient_id(dataset: Dataset) -> Optional[str]:
    """PatientID, else PatientName; None when neither holds text."""
    for keyword in ("PatientID", "PatientName"):
        value = str(dataset.get(keyword, "") or "").strip()
        if value:
            return value
    return None


def _start_time(dataset: Dataset) -> StartTime:
    """AcquisitionDateTime, else ContentDate + ContentTime, with the offset the value or
    TimezoneOffsetFromUTC states (see :mod:`ecgd.records.timestamps`)."""
    field = "AcquisitionDateTime"
    text = str(dataset.get("AcquisitionDateTime", "") or "").strip()
    if not text:
        field = "ContentDate/ContentTime"
        date = str(dataset.get("ContentDate", "") or "").strip()
        time = str(dataset.get("ContentTime", "") or "").strip()
        if not date or not time:
            return None, {}
        text = date + time
    match = _DATE_TIME.match(text)
    if not match:
        return time_problem(field, "is not a DICOM date and time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    offset = offset or str(dataset.get("TimezoneOffsetFromUTC", "") or "").strip() or None
    return acquisition_start(field, year, month, day, hour, minute or 0, second or 0,
                             (fraction or "0").ljust(6, "0"), offset)
