"""WFDB records (PhysioNet ``.hea`` header + ``.dat``/``.mat`` signal files) through ``wfdb``.

The header is parsed first and every signal file it names is checked before a sample is
read: the file must sit beside the header (no path in its name), be a regular file (not a
symlink), and hold exactly the bytes the header's format, channel count and length imply.
``wfdb`` itself may fail obscurely on a short file or read a long one partially; this
module says which it is. Physical values come from the header's gain and baseline; the
unit field (``mV``, ``mv``, ``uV``, ``V``; missing means the WFDB default mV) converts them
to millivolts, and any other unit is refused.

Known quirk: the EGM conversions of GE MUSE exports (``muse-*.hea``) declare a gain of
200/mV for values already in microvolts, so their amplitudes come out 5x too large. They
are read exactly as the header says; amplitude quality control has to flag them.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import stat
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import wfdb

from ecgd.errors import RecordError
from ecgd.records.recording import STANDARD_LEADS, Recording, normalize_lead_name

# Storage formats with a fixed size: format -> (samples per group, bytes per group).
_FORMAT_PACKING = {
    "8": (1, 1), "80": (1, 1), "16": (1, 2), "61": (1, 2), "24": (1, 3), "32": (1, 4),
    "212": (2, 3), "310": (3, 4), "311": (3, 4),
}

# Unit field (lower case) -> millivolts per unit.
_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3, "nv": 1e-6}

_PATIENT_COMMENT = re.compile(r"^\s*(?:mrn|patient[ _-]?id|pid)\s*[:=]?\s+(\S.*?)\s*$",
                              re.IGNORECASE)
_DX_COMMENT = re.compile(r"^\s*dx\s*:\s*(.+?)\s*$", re.IGNORECASE)


def read(path: Path, max_bytes: int) -> Recording:
    """Read the WFDB record whose header is ``path`` as float32 millivolts ``[leads, n]``.

    Refuses, before reading any sample, a record whose header plus signal files exceed
    ``max_bytes`` bytes, a missing/short/long signal file, and unsupported layouts
    (multi-segment, multi-frequency, compressed formats).
    """
    path = Path(path)
    name = path.name
    record_base = path.with_suffix("")
    header = _read_header(record_base, name)
    data_files = _check_signal_files(header, path, max_bytes)
    try:
        record = wfdb.rdrecord(str(record_base), physical=True, return_res=64)
    except Exception as exc:  # wfdb raises bare ValueError/IndexError/... on bad bytes
        raise RecordError(f"{name}: wfdb could not read the signals: {_one_line(exc)}") from exc
    samples = np.asarray(record.p_signal, dtype=np.float64).T
    if samples.shape != (header.n_sig, header.sig_len):
        raise RecordError(f"{name}: read {samples.shape[1]} samples x {samples.shape[0]} "
                          f"channels, header says {header.sig_len} x {header.n_sig}")
    units = [unit if unit else "mV" for unit in (record.units or ["mV"] * header.n_sig)]
    scale_mv = np.array([_mv_per_unit(unit, channel, name)
                         for unit, channel in zip(units, record.sig_name)])
    samples_mv = (samples * scale_mv[:, np.newaxis]).astype(np.float32)
    bad_channels = [channel for channel, row in zip(record.sig_name, samples_mv)
                    if not np.all(np.isfinite(row))]
    if bad_channels:
        raise RecordError(f"{name}: missing or non-finite samples (WFDB invalid-sample "
                          f"markers) in {', '.join(bad_channels)}")
    return Recording(
        samples_mv=samples_mv,
        fs_hz=float(header.fs),
        lead_names=_unique_lead_names(record.sig_name, name),
        format="wfdb",
        start_time=_start_time(header.base_date, header.base_time),
        patient_id=_patient_id(header.comments),
        metadata=_metadata(header, units, data_files),
    )


def _read_header(record_base: Path, name: str) -> wfdb.Record:
    """Parse the header and refuse the layouts this reader does not handle."""
    try:
        header = wfdb.rdheader(str(record_base))
    except Exception as exc:  # wfdb's header parser raises anything on malformed text
        raise RecordError(f"{name}: not a readable WFDB header: {_one_line(exc)}") from exc
    if isinstance(header, wfdb.MultiRecord):
        raise RecordError(f"{name}: multi-segment WFDB records are not supported")
    if not header.n_sig:
        raise RecordError(f"{name}: header declares no signals")
    if not header.file_name or len(header.file_name) != header.n_sig:
        raise RecordError(f"{name}: header declares {header.n_sig} signals but has "
                          f"{len(header.file_name or [])} signal lines")
    if not header.fs or not math.isfinite(header.fs) or header.fs <= 0:
        raise RecordError(f"{name}: header sampling rate {header.fs!r} is not a positive number")
    if any(spf not in (None, 1) for spf in header.samps_per_frame):
        raise RecordError(f"{name}: multi-frequency WFDB records (samples per frame > 1) "
                          f"are not supported")
    unsupported = sorted({fmt for fmt in header.fmt if fmt not in _FORMAT_PACKING})
    if unsupported:
        raise RecordError(f"{name}: WFDB signal format {', '.join(unsupported)} is not "
                          f"supported (fixed-size formats only)")
    return header


def _check_signal_files(header: wfdb.Record, header_path: Path,
                        max_bytes: int) -> List[str]:
    """Check every signal file against the header, unread; return their names.

    Fills in ``header.sig_len`` from the file size when the header omits it.
    """
    name = header_path.name
    channels_by_file: OrderedDict[str, List[int]] = OrderedDict()
    for channel, file_name in enumerate(header.file_name):
        channels_by_file.setdefault(file_name, []).append(channel)
    total_bytes = os.lstat(header_path).st_size
    sizes = {}
    for file_name in channels_by_file:
        if file_name in ("~", "") or Path(file_name).name != file_name or file_name in (".", ".."):
            raise RecordError(f"{name}: signal file name {file_name!r} is not a plain file "
                              f"name beside the header; refused")
        sizes[file_name] = _signal_file_size(header_path.parent / file_name, name)
        total_bytes += sizes[file_name]
    if total_bytes > max_bytes:
        raise RecordError(f"{name}: header and signal files total {total_bytes} bytes, over "
                          f"the limit of {max_bytes} bytes; refused unread")
    for file_name, channels in channels_by_file.items():
        _check_signal_length(header, file_name, channels, sizes[file_name], name)
    return list(channels_by_file)


def _signal_file_size(data_path: Path, name: str) -> int:
    """Return the size of a signal file that must exist as a regular file."""
    try:
        info = os.lstat(data_path)
    except OSError as exc:
        raise RecordError(f"{name}: signal file {data_path.name} cannot be opened: "
                          f"{exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise RecordError(f"{name}: signal file {data_path.name} is not a regular file; refused")
    return info.st_size


def _check_signal_length(header: wfdb.Record, file_name: str, channels: Sequence[int],
                         size_bytes: int, name: str) -> None:
    """Compare a signal file's size with what the header's length and format imply."""
    fmts = {header.fmt[c] for c in channels}
    offsets = {header.byte_offset[c] or 0 for c in channels}
    if len(fmts) != 1 or len(offsets) != 1:
        raise RecordError(f"{name}: channels in {file_name} disagree on format or byte offset")
    fmt = fmts.pop()
    offset_bytes = offsets.pop()
    group_samples, group_bytes = _FORMAT_PACKING[fmt]
    payload_bytes = size_bytes - offset_bytes
    if header.sig_len is None:
        frame_values = len(channels)
        whole = payload_bytes * group_samples % (group_bytes * frame_values) == 0
        if payload_bytes <= 0 or not whole:
            raise RecordError(f"{name}: header states no length and {file_name} "
                              f"({size_bytes} bytes) is not a whole number of frames")
        header.sig_len = payload_bytes * group_samples // (group_bytes * frame_values)
        return
    n_values = header.sig_len * len(channels)
    expected_bytes = offset_bytes + math.ceil(n_values / group_samples) * group_bytes
    if size_bytes < expected_bytes:
        held = max(payload_bytes, 0) * group_samples // (group_bytes * len(channels))
        raise RecordError(f"{name}: signal file {file_name} is truncated: {size_bytes} bytes "
                          f"hold {held} of the {header.sig_len} samples the header declares")
    if size_bytes > expected_bytes:
        raise RecordError(f"{name}: header/data length mismatch: header declares "
                          f"{header.sig_len} samples ({expected_bytes} bytes) but "
                          f"{file_name} has {size_bytes} bytes")


def _mv_per_unit(unit: str, channel: str, name: str) -> float:
    """Millivolts per header unit, or RecordError for a unit that is not a voltage."""
    factor = _MV_PER_UNIT.get(unit.strip().lower())
    if factor is None:
        raise RecordError(f"{name}: channel {channel} has unit {unit!r}, not a voltage "
                          f"(expected mV or uV)")
    return factor


def _unique_lead_names(raw_names: Sequence[str], name: str) -> Tuple[str, ...]:
    """Normalize lead names; number repeated non-standard channels (svdb: two ``ECG``)."""
    names = [normalize_lead_name(raw) for raw in raw_names]
    repeated = {n for n in names if names.count(n) > 1}
    standard_repeats = sorted(repeated & set(STANDARD_LEADS))
    if standard_repeats:
        raise RecordError(f"{name}: lead {', '.join(standard_repeats)} appears more than once")
    counters: Dict[str, int] = {}
    unique = []
    for lead in names:
        if lead in repeated:
            counters[lead] = counters.get(lead, 0) + 1
            lead = f"{lead}_{counters[lead]}"
        unique.append(lead)
    return tuple(unique)


def _start_time(base_date: Optional[dt.date],
                base_time: Optional[dt.time]) -> Optional[dt.datetime]:
    """Combine the header's base date and time; WFDB has no zone, so UTC is assumed."""
    if base_date is None or base_time is None:
        return None
    return dt.datetime.combine(base_date, base_time).replace(tzinfo=dt.timezone.utc)


def _patient_id(comments: Sequence[str]) -> Optional[str]:
    """Return the identifier from a ``# mrn ...`` / ``# patient id: ...`` comment, if any."""
    for comment in comments:
        match = _PATIENT_COMMENT.match(comment)
        if match:
            return match.group(1)
    return None


def _metadata(header: wfdb.Record, units: Sequence[str],
              data_files: Sequence[str]) -> Dict[str, Any]:
    """Non-identifying facts about the source; header comments are left out on purpose."""
    metadata: Dict[str, Any] = {
        "units": sorted(set(units)),
        "original_lead_names": list(header.sig_name),
        "signal_formats": sorted(set(header.fmt)),
        "signal_files": list(data_files),
    }
    if header.base_date is not None and header.base_time is not None:
        metadata["start_time_zone"] = "not stored in WFDB; taken as UTC"
    for comment in header.comments:
        match = _DX_COMMENT.match(comment)
        if match:
            metadata["dx_snomed"] = [code.strip() for code in match.group(1).split(",")
                                     if code.strip()]
    return metadata


def _one_line(exc: BaseException) -> str:
    """A foreign exception as one short line (its type when it has no message)."""
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__
