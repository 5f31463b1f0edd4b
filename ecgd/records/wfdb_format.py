"""WFDB records (PhysioNet ``.hea`` header + ``.dat``/``.mat`` signal files), decoded with numpy.

ecgd reads WFDB itself rather than through the ``wfdb`` package, which brings pandas,
matplotlib, aiohttp and soundfile onto an appliance that uses none of them and parses each
header twice through pandas (92 % of a 10-s read). The tests compare this reader with
``wfdb`` on every WFDB record in the shared data and on files of every format below.

Storage formats (``signal(5)``; every value little-endian unless said otherwise):

- 8: 8-bit first differences, each sample the previous one plus the stored byte, the first
  added to the header's initial value;
- 16, 61 (big-endian), 160 (offset binary), 24, 32: two's complement integers;
- 80: 8-bit offset binary;
- 212: two 12-bit samples in 3 bytes (low 8 bits of each in bytes 0 and 2, the high
  nibbles in byte 1: the first sample's in its low half);
- 310: three 10-bit samples in two 16-bit words (bits 1-10 of each word, the third
  sample's low five bits in bits 11-15 of the first word, its high five in the second's);
- 311: three 10-bit samples in one 32-bit word (bits 0-9, 10-19, 20-29).

The MATLAB variant (``.mat`` signal files of the PhysioNet/CinC challenges, ``16+24``) is
format 16 after a 24-byte MATLAB v4 matrix header, which the header's byte offset skips.
The lowest value of each format except 8 marks an invalid sample; a recording holding one
is refused. Compressed formats (508, 516, 524), multi-frequency and multi-segment records,
and skewed signals are refused with a reason.

Every signal file named by the header must sit beside it (no path in its name), be a
regular file, not be the header itself, and hold exactly the bytes the header's format,
signal count and length imply; all of this, the input size limit and the sample limit are
checked before a sample is decoded. Physical value = (digital - baseline) / gain, in the
header's unit (``mV``, ``uV``, ``V``; missing means mV), converted to millivolts; any other
unit is refused. ``rails_mv`` holds the range the ADC resolution (else the storage format)
can represent.

Known quirk: the EGM conversions of GE MUSE exports (``muse-*.hea``) declare a gain of
200/mV for values already in microvolts, so their amplitudes come out 5x too large. They
are read exactly as the header says; amplitude quality control has to flag them.
"""
from __future__ import annotations

import os
import re
import stat
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, STANDARD_LEADS, Recording,
                                    check_sample_budget, lead_label, normalize_lead_name,
                                    read_record_bytes, refuse_repeated_leads)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem
from ecgd.records.wfdb_header import SignalSpec, WfdbHeader, parse_header

# format -> (samples per group, bytes per group, bits per sample)
_FORMAT_PACKING = {
    "8": (1, 1, 8), "80": (1, 1, 8), "16": (1, 2, 16), "61": (1, 2, 16), "160": (1, 2, 16),
    "24": (1, 3, 24), "32": (1, 4, 32), "212": (2, 3, 12), "310": (3, 4, 10),
    "311": (3, 4, 10),
}
_DIFFERENCE_FORMAT = "8"

# Unit field (lower case) -> millivolts per unit.
_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3, "nv": 1e-6}

_PATIENT_COMMENT = re.compile(r"^\s*(?:mrn|patient[ _-]?id|pid)\s*[:=]?\s+(\S.*?)\s*$",
                              re.IGNORECASE)
_DX_COMMENT = re.compile(r"^\s*dx\s*:\s*(.+?)\s*$", re.IGNORECASE)
_BASE_TIME = re.compile(r"^(?:(?:(\d{1,2}):)?(\d{1,2}):)?(\d{1,2})(?:\.(\d{1,6})\d*)?$")
_BASE_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{1,4})$")


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read the WFDB record whose header is ``path`` as float32 millivolts ``[leads, n]``.

    Refuses, before decoding any sample, a record whose header plus signal files exceed
    ``max_bytes`` bytes or whose signals exceed ``max_samples`` leads x samples, a
    missing/short/long signal file, and the layouts listed in the module docstring.
    """
    path = Path(path)
    name = path.name
    header = parse_header(_header_text(path, max_bytes), name)
    _refuse_unsupported(header, name)
    files = _signal_files(header, path, max_bytes)
    n_samples = _signal_length(header, files, name)
    check_sample_budget(len(header.signals), n_samples, max_samples, name)
    labels = [lead_label(spec.description or "", index)
              for index, spec in enumerate(header.signals)]
    scale_mv = np.array([_mv_per_unit(spec, label, name)
                         for spec, label in zip(header.signals, labels)])
    digital = _decode_files(header, files, path.parent, n_samples, name)
    invalid = [label for label, spec, row in zip(labels, header.signals, digital)
               if _has_invalid_marker(spec, row)]
    if invalid:
        raise RecordError(f"{name}: missing samples (WFDB invalid-sample markers) in "
                          f"{', '.join(invalid)}")
    gains = np.array([spec.adc_gain for spec in header.signals])
    baselines = np.array([float(spec.baseline) for spec in header.signals])
    samples_mv = np.empty((len(header.signals), n_samples), dtype=np.float32)
    for row, values in enumerate(digital):
        samples_mv[row] = (values - baselines[row]) / gains[row] * scale_mv[row]
    start_time, time_notes = _start_time(header)
    return Recording(
        samples_mv=samples_mv,
        fs_hz=header.fs_hz,
        lead_names=_unique_lead_names(header.signals, name),
        format="wfdb",
        start_time=start_time,
        patient_id=_patient_id(header.comments),
        metadata={**_metadata(header, list(files)), **time_notes},
        rails_mv=_rails_mv(header.signals, scale_mv),
    )


def _header_text(path: Path, max_bytes: int) -> str:
    """The header as text: UTF-8 where it is, else Latin-1 (every byte is a character)."""
    data = read_record_bytes(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _refuse_unsupported(header: WfdbHeader, name: str) -> None:
    """Refuse layouts this reader does not decode, before any signal file is touched."""
    unsupported = [spec.line_no for spec in header.signals if spec.format not in _FORMAT_PACKING]
    if unsupported:
        raise RecordError(f"{name}: line {unsupported[0]}: the WFDB signal format is not "
                          f"supported (8, 16, 24, 32, 61, 80, 160, 212, 310 and 311 are)")
    if any(spec.samples_per_frame != 1 for spec in header.signals):
        raise RecordError(f"{name}: multi-frequency WFDB records (samples per frame > 1) "
                          f"are not supported")
    if any(spec.skew for spec in header.signals):
        raise RecordError(f"{name}: skewed WFDB signals are not supported")


def _signal_files(header: WfdbHeader, header_path: Path,
                  max_bytes: int) -> "OrderedDict[str, Tuple[List[int], int]]":
    """Signal file name -> (its channels, its size in bytes), in header order, unread.

    Each must be a plain name beside the header, not the header, and a regular file; the
    header and its files together may not exceed ``max_bytes``.
    """
    name = header_path.name
    channels_by_file: "OrderedDict[str, List[int]]" = OrderedDict()
    for channel, spec in enumerate(header.signals):
        file_name = spec.file_name
        if file_name in ("~", ".", "..") or Path(file_name).name != file_name or \
                any(ord(character) < 32 for character in file_name):
            raise RecordError(f"{name}: line {spec.line_no}: the signal file is not a plain "
                              f"file name beside the header; refused")
        if file_name == name:
            raise RecordError(f"{name}: line {spec.line_no}: the header names itself as its "
                              f"signal file; refused")
        channels_by_file.setdefault(file_name, []).append(channel)
    total_bytes = os.lstat(header_path).st_size
    files: "OrderedDict[str, Tuple[List[int], int]]" = OrderedDict()
    for file_name, channels in channels_by_file.items():
        line_no = header.signals[channels[0]].line_no
        size_bytes = _signal_file_size(header_path.parent / file_name, line_no, name)
        files[file_name] = (channels, size_bytes)
        total_bytes += size_bytes
    if total_bytes > max_bytes:
        raise RecordError(f"{name}: header and signal files total {total_bytes} bytes, over "
                          f"the limit of {max_bytes} bytes; refused unread")
    return files


def _signal_file_size(data_path: Path, line_no: int, name: str) -> int:
    """The size of a signal file that must exist as a regular file."""
    try:
        info = os.lstat(data_path)
    except OSError as exc:
        raise RecordError(f"{name}: the signal file of line {line_no} cannot be opened: "
                          f"{exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise RecordError(f"{name}: the signal file of line {line_no} is not a regular file; "
                          f"refused")
    return info.st_size


def _signal_length(header: WfdbHeader,
                   files: "OrderedDict[str, Tuple[List[int], int]]", name: str) -> int:
    """Samples per signal: the header's, checked against every file's size, or (when the
    header omits it) what the first file holds."""
    n_samples = header.n_samples
    for channels, size_bytes in files.values():
        spec = header.signals[channels[0]]
        if any(header.signals[c].format != spec.format
               or header.signals[c].byte_offset != spec.byte_offset for c in channels):
            raise RecordError(f"{name}: the signals of the file of line {spec.line_no} "
                              f"disagree on format or byte offset")
        group_samples, group_bytes, _bits = _FORMAT_PACKING[spec.format]
        payload_bytes = size_bytes - spec.byte_offset
        frames_held = max(payload_bytes, 0) * group_samples // (group_bytes * len(channels))
        if n_samples is None:
            whole = payload_bytes * group_samples % (group_bytes * len(channels)) == 0
            if payload_bytes <= 0 or not whole:
                raise RecordError(f"{name}: header states no length and the signal file of "
                                  f"line {spec.line_no} ({size_bytes} bytes) is not a whole "
                                  f"number of frames")
            n_samples = frames_held
            continue
        least_bytes, most_bytes = _payload_bytes(spec.format, n_samples * len(channels))
        if size_bytes < spec.byte_offset + least_bytes:
            raise RecordError(f"{name}: the signal file of line {spec.line_no} is truncated: "
                              f"its {size_bytes} bytes hold {frames_held} samples per signal, "
                              f"fewer than the header declares")
        if size_bytes > spec.byte_offset + most_bytes:
            raise RecordError(f"{name}: header/data length mismatch: the signal file of line "
                              f"{spec.line_no} has {size_bytes} bytes, more than the header's "
                              f"length needs")
    if not n_samples:
        raise RecordError(f"{name}: the record holds no samples")
    return n_samples


def _payload_bytes(fmt: str, n_values: int) -> Tuple[int, int]:
    """The fewest and most bytes ``n_values`` samples take in format ``fmt``: a last,
    partial group of 212/310/311 may be written only as far as its bits reach (as wfdb
    does) or in full."""
    group_samples, group_bytes, bits = _FORMAT_PACKING[fmt]
    whole, extra = divmod(n_values, group_samples)
    most = (whole + (extra > 0)) * group_bytes
    if fmt == "310" and extra == 2:
        return most, most  # the second sample sits in the group's second word
    return whole * group_bytes + -(-extra * bits // 8), most


def _decode_files(header: WfdbHeader, files: "OrderedDict[str, Tuple[List[int], int]]",
                  folder: Path, n_samples: int, name: str) -> List[np.ndarray]:
    """Each signal's digital values (int64, one array per signal in header order)."""
    digital: List[Optional[np.ndarray]] = [None] * len(header.signals)
    for file_name, (channels, size_bytes) in files.items():
        spec = header.signals[channels[0]]
        n_values = n_samples * len(channels)
        least_bytes, most_bytes = _payload_bytes(spec.format, n_values)
        data = read_record_bytes(folder / file_name, size_bytes)
        payload = data[spec.byte_offset:spec.byte_offset + most_bytes]
        if len(payload) < least_bytes:
            raise RecordError(f"{name}: the signal file of line {spec.line_no} shrank while "
                              f"it was read")
        # a partial last group is decoded as a whole one (the missing bits are zero)
        payload += bytes(most_bytes - len(payload))
        values = _decode_samples(payload, spec.format, n_values)
        frames = values.reshape(n_samples, len(channels))
        for column, channel in enumerate(channels):
            signal = frames[:, column]
            if spec.format == _DIFFERENCE_FORMAT:
                signal = np.cumsum(signal) + header.signals[channel].initial_value
            digital[channel] = signal
    if any(values is None for values in digital):
        raise RecordError(f"{name}: a signal has no signal file")  # unreachable: files cover all
    return [values for values in digital if values is not None]


def _decode_samples(payload: bytes, fmt: str, n_values: int) -> np.ndarray:
    """The first ``n_values`` samples stored in ``payload`` in WFDB format ``fmt``, as int64
    (format 8: the stored differences, not yet summed)."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    values: np.ndarray
    if fmt in ("8", "80"):
        values = raw.view(np.int8) if fmt == "8" else raw.astype(np.int16) - 128
    elif fmt in ("16", "61", "160"):
        values = raw.view({"16": "<i2", "61": ">i2", "160": "<u2"}[fmt])
        if fmt == "160":
            values = values.astype(np.int32) - 32768
    elif fmt == "24":
        triples = raw.reshape(-1, 3).astype(np.int32)
        values = _sign_extend(triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16), 24)
    elif fmt == "32":
        values = raw.view("<i4")
    elif fmt == "212":
        groups = raw.reshape(-1, 3).astype(np.int32)
        pair = np.empty((len(groups), 2), dtype=np.int32)
        pair[:, 0] = groups[:, 0] | ((groups[:, 1] & 0x0F) << 8)
        pair[:, 1] = groups[:, 2] | ((groups[:, 1] & 0xF0) << 4)
        values = _sign_extend(pair.reshape(-1), 12)
    elif fmt in ("310", "311"):
        groups = raw.reshape(-1, 4).astype(np.int32)
        triple = np.empty((len(groups), 3), dtype=np.int32)
        if fmt == "310":
            first = groups[:, 0] | (groups[:, 1] << 8)
            second = groups[:, 2] | (groups[:, 3] << 8)
            triple[:, 0] = (first >> 1) & 0x3FF
            triple[:, 1] = (second >> 1) & 0x3FF
            triple[:, 2] = ((first >> 11) & 0x1F) | (((second >> 11) & 0x1F) << 5)
        else:
            word = (groups[:, 0] | (groups[:, 1] << 8) | (groups[:, 2] << 16)
                    | (groups[:, 3] << 24))
            triple[:, 0] = word & 0x3FF
            triple[:, 1] = (word >> 10) & 0x3FF
            triple[:, 2] = (word >> 20) & 0x3FF
        values = _sign_extend(triple.reshape(-1), 10)
    else:
        raise ValueError(f"format {fmt} has no decoder")  # a bug: formats are checked first
    return values[:n_values].astype(np.int64)


def _sign_extend(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-wide values as two's complement."""
    return values - ((values >> (bits - 1)) & 1) * (1 << bits)


def _has_invalid_marker(spec: SignalSpec, values: np.ndarray) -> bool:
    """True when a sample holds the format's invalid-sample value (its lowest value)."""
    if spec.format == _DIFFERENCE_FORMAT:
        return False
    bits = _FORMAT_PACKING[spec.format][2]
    return bool(np.any(values == -(1 << (bits - 1))))


def _rails_mv(signals: Sequence[SignalSpec], scale_mv: np.ndarray) -> Optional[np.ndarray]:
    """Per signal, the lowest and highest millivolts its digital range can represent: the
    ADC resolution around the ADC zero where stated (within the storage width), else the
    storage format's range less the invalid-sample value. None when a signal has neither
    (format 8 without an ADC resolution)."""
    rails = np.empty((len(signals), 2), dtype=np.float64)
    for row, spec in enumerate(signals):
        storage_bits = _FORMAT_PACKING[spec.format][2]
        storage = (-(1 << (storage_bits - 1)) + 1, (1 << (storage_bits - 1)) - 1)
        if 0 < spec.adc_resolution_bits <= storage_bits:
            half = 1 << (spec.adc_resolution_bits - 1)
            digital = (max(spec.adc_zero - half, storage[0]),
                       min(spec.adc_zero + half - 1, storage[1]))
        elif spec.format == _DIFFERENCE_FORMAT:
            return None
        else:
            digital = storage
        ends = [(value - spec.baseline) / spec.adc_gain * scale_mv[row] for value in digital]
        rails[row] = (min(ends), max(ends))
    return rails


def _mv_per_unit(spec: SignalSpec, label: str, name: str) -> float:
    """Millivolts per header unit, or RecordError for a unit that is not a voltage."""
    factor = _MV_PER_UNIT.get(spec.units.strip().lower())
    if factor is None:
        raise RecordError(f"{name}: {label} (line {spec.line_no}) has a unit that is not a "
                          f"voltage (expected mV, uV or V)")
    return factor


def _unique_lead_names(signals: Sequence[SignalSpec], name: str) -> Tuple[str, ...]:
    """Normalized lead names; a signal without a description is ``channelN`` (its 1-based
    position, as DICOM's unnamed channels); repeated non-standard names are numbered
    (svdb: two ``ECG``)."""
    names = [normalize_lead_name(spec.description) if spec.description else f"channel{i + 1}"
             for i, spec in enumerate(signals)]
    refuse_repeated_leads([n for n in names if n in STANDARD_LEADS], name)
    repeated = {n for n in names if names.count(n) > 1}
    counters: Dict[str, int] = {}
    unique = []
    for lead in names:
        if lead in repeated:
            counters[lead] = counters.get(lead, 0) + 1
            lead = f"{lead}_{counters[lead]}"
        unique.append(lead)
    return tuple(unique)


def _start_time(header: WfdbHeader) -> StartTime:
    """The base date and time (no zone in WFDB: local wall-clock time). A header with a
    base time but no date has no start time."""
    if header.base_time is None or header.base_date is None:
        return None, {}
    clock = _BASE_TIME.match(header.base_time)
    date = _BASE_DATE.match(header.base_date)
    if not clock or not date:
        return time_problem("the base time/date", "is not HH:MM:SS DD/MM/YYYY")
    hour, minute, second, fraction = clock.groups()
    day, month, year = date.groups()
    return acquisition_start("the base time/date", year, month, day, hour or 0, minute or 0,
                             second, (fraction or "0").ljust(6, "0"))


def _patient_id(comments: Sequence[str]) -> Optional[str]:
    """Return the identifier from a ``# mrn ...`` / ``# patient id: ...`` comment, if any."""
    for comment in comments:
        match = _PATIENT_COMMENT.match(comment)
        if match:
            return match.group(1)
    return None


def _metadata(header: WfdbHeader, data_files: Sequence[str]) -> Dict[str, Any]:
    """Non-identifying facts about the source; header comments are left out on purpose."""
    metadata: Dict[str, Any] = {
        "units": sorted({spec.units for spec in header.signals}),
        "original_lead_names": [spec.description for spec in header.signals],
        "signal_formats": sorted({spec.format for spec in header.signals}),
        "signal_files": list(data_files),
    }
    uncalibrated = [i + 1 for i, spec in enumerate(header.signals) if not spec.gain_stated]
    if uncalibrated:
        metadata["uncalibrated_signals"] = uncalibrated
    for comment in header.comments:
        match = _DX_COMMENT.match(comment)
        if match:
            metadata["dx_snomed"] = [code.strip() for code in match.group(1).split(",")
                                     if code.strip()]
    return metadata
