"""Plain arrays: CSV text and NumPy ``.npz`` archives, with a fixed convention for rate,
leads and units (neither format stores them by itself, and ecgd never assumes them).

CSV convention (UTF-8 text, comma-separated)::

    # fs_hz=500, units=mV
    time_s,I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6
    0.000,0.012,-0.034,...
    0.002,0.015,-0.030,...

- Lines starting with ``#`` before the header are comments; ``key=value`` pairs in them
  (separated by commas or spaces) set ``fs_hz`` (samples per second, required) and
  ``units`` (``mV`` or ``uV``, required). A file without either is refused.
- The first other line is the header: one lead name per column, any spelling (``aVR``,
  ``AVR``, ``avr``, ``Lead aVR``). An optional first column named ``time_s`` is ignored.
- Every following non-empty line holds one sample per lead, as a decimal number; a row
  with a different number of values than the header, an empty or non-numeric value, NaN
  or Inf is refused with its line number.

NumPy convention: an ``.npz`` archive (``numpy.savez``) holding

- ``signal``: numeric array ``[leads, n_samples]``,
- ``fs_hz``: scalar sampling rate in Hz,
- ``lead_names``: string array with one name per row of ``signal``,
- ``units``: string scalar, ``"mV"`` or ``"uV"``.

Archives are opened with ``allow_pickle=False`` and refused when their uncompressed
members exceed the input size limit. A bare ``.npy`` array is refused: it cannot carry the
sampling rate, lead names or units.
"""
from __future__ import annotations

import array
import math
import re
import zipfile
from pathlib import Path
from tokenize import TokenError
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, Recording, check_sample_budget,
                                    lead_label, normalize_lead_name, read_record_bytes,
                                    refuse_repeated_leads)

_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3}
_TIME_COLUMN = "time_s"
_KEY_VALUE = re.compile(r"([A-Za-z_]+)\s*=\s*([^,\s]+)")
_NPZ_KEYS = ("signal", "fs_hz", "lead_names", "units")


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read a CSV or ``.npz`` recording (see the module docstring) as millivolts; more than
    ``max_samples`` leads x samples are refused before they are parsed or loaded."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, max_bytes, max_samples)
    if suffix == ".npz":
        return read_npz(path, max_bytes, max_samples)
    if suffix == ".npy":
        raise RecordError(f"{path.name}: a bare .npy array stores no sampling rate, lead "
                          f"names or units; save an .npz with signal, fs_hz, lead_names, units")
    raise RecordError(f"{path.name}: not a CSV or NumPy .npz file")


def read_csv(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read a CSV file following the convention in the module docstring."""
    name = path.name
    text = _read_text(path, max_bytes)
    head, data_start = _head_lines(text)
    settings: Dict[str, str] = {}
    for line in head[:-1]:
        settings.update((k.lower(), v) for k, v in _KEY_VALUE.findall(line))
    if "fs_hz" not in settings:
        raise RecordError(f"{name}: no '# fs_hz=...' comment before the header; the sampling "
                          f"rate is never assumed")
    if "units" not in settings:
        raise RecordError(f"{name}: no 'units=mV' or 'units=uV' in the comment before the "
                          f"header; units are never assumed")
    fs_hz = _parse_rate(settings["fs_hz"], name)
    scale_mv = _mv_per_unit(settings["units"], name)
    if not head[-1].strip() or head[-1].lstrip().startswith("#"):
        raise RecordError(f"{name}: no header line of lead names")
    columns = [cell.strip() for cell in head[-1].split(",")]
    skip_time = columns[0].lower() == _TIME_COLUMN
    raw_names = columns[1:] if skip_time else columns
    if not raw_names or any(not cell for cell in raw_names):
        raise RecordError(f"{name}: line {len(head)}: header has an empty lead name")
    # a data line is one sample of every lead: refuse from the line count, before the lines
    # become Python strings (about 60 bytes each)
    check_sample_budget(len(raw_names), text.count("\n", data_start) + 1, max_samples, name)
    values = _parse_rows(text[data_start:].split("\n"), first_line=len(head) + 1,
                         n_columns=len(columns), name=name)
    if values.shape[0] == 0:
        raise RecordError(f"{name}: header but no samples")
    samples = values[:, 1:] if skip_time else values
    _refuse_non_finite(samples.T, raw_names, name)
    return Recording(
        samples_mv=(samples.T * scale_mv).astype(np.float32),
        fs_hz=fs_hz,
        lead_names=_lead_names(raw_names, name),
        format="csv",
        metadata={"units": settings["units"], "original_lead_names": list(raw_names)},
    )


def _head_lines(text: str) -> Tuple[List[str], int]:
    """The comment and blank lines up to and including the header line (the first other
    line; the last one returned, blank when there is none), and where the data starts."""
    head: List[str] = []
    position = 0
    while position <= len(text):
        end = text.find("\n", position)
        end = len(text) if end < 0 else end
        line = text[position:end]
        head.append(line)
        position = end + 1
        if line.strip() and not line.lstrip().startswith("#"):
            break
    return head, min(position, len(text))


def read_npz(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read an ``.npz`` archive following the convention in the module docstring."""
    name = path.name
    arrays = _load_npz(path, max_bytes, max_samples)
    signal = arrays["signal"]
    if signal.ndim != 2 or not (np.issubdtype(signal.dtype, np.integer)
                                or np.issubdtype(signal.dtype, np.floating)):
        raise RecordError(f"{name}: 'signal' must be a numeric [leads, n_samples] array")
    raw_names = _string_list(arrays["lead_names"], "lead_names", name)
    if len(raw_names) != signal.shape[0]:
        raise RecordError(f"{name}: {len(raw_names)} lead names for {signal.shape[0]} rows of "
                          f"'signal' (expected [leads, n_samples])")
    if signal.shape[1] == 0:
        raise RecordError(f"{name}: 'signal' holds no samples")
    units = _string_list(arrays["units"], "units", name)
    if len(units) != 1:
        raise RecordError(f"{name}: 'units' must be one string, mV or uV")
    fs_array = arrays["fs_hz"]
    if fs_array.size != 1 or not np.issubdtype(fs_array.dtype, np.number):
        raise RecordError(f"{name}: 'fs_hz' must be one number")
    fs_hz = _parse_rate(str(fs_array.reshape(-1)[0].item()), name)
    samples = signal.astype(np.float64)
    _refuse_non_finite(samples, raw_names, name)
    return Recording(
        samples_mv=(samples * _mv_per_unit(units[0], name)).astype(np.float32),
        fs_hz=fs_hz,
        lead_names=_lead_names(raw_names, name),
        format="numpy",
        metadata={"units": units[0], "original_lead_names": raw_names},
    )


def _read_text(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of ``path``, refused when it holds more than ``max_bytes``."""
    data = read_record_bytes(path, max_bytes)
    if not data.strip():
        raise RecordError(f"{path.name}: is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path.name}: not UTF-8 text (byte {exc.start})") from exc


def _parse_rows(lines: Sequence[str], first_line: int, n_columns: int, name: str) -> np.ndarray:
    """Parse data lines into float64 ``[n, n_columns]``; blank lines are skipped."""
    # packed doubles, 8 bytes a value: a list of float objects costs ~30x the text
    values = array.array("d")
    n_rows = 0
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        cells = line.split(",")
        line_no = first_line + offset
        if len(cells) != n_columns:
            raise RecordError(f"{name}: line {line_no}: {len(cells)} values, header has "
                              f"{n_columns} columns")
        try:
            values.extend([float(cell) for cell in cells])
        except ValueError as exc:
            raise RecordError(f"{name}: line {line_no}: a value is empty or not a number") from exc
        n_rows += 1
    return np.frombuffer(values, dtype=np.float64).reshape(n_rows, n_columns)


def _load_npz(path: Path, max_bytes: int, max_samples: int) -> Dict[str, np.ndarray]:
    """Load the four convention arrays, refusing pickles, oversized members and a signal
    declaring more than ``max_samples`` values."""
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked_bytes = sum(member.file_size for member in archive.infolist())
            if unpacked_bytes <= max_bytes:
                _check_declared_sizes(archive, name, max_samples)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        # zipfile's messages can quote member names; say what failed, not what it read
        raise RecordError(f"{name}: not a readable NumPy .npz archive "
                          f"({type(exc).__name__})") from exc
    if unpacked_bytes > max_bytes:
        raise RecordError(f"{name}: archive unpacks to {unpacked_bytes} bytes, over the limit "
                          f"of {max_bytes} bytes; refused")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in _NPZ_KEYS if key not in archive.files]
            if missing:
                raise RecordError(f"{name}: .npz lacks {', '.join(missing)} (needs "
                                  f"{', '.join(_NPZ_KEYS)})")
            return {key: archive[key] for key in _NPZ_KEYS}
    except RecordError:
        raise
    except (ValueError, TokenError) as exc:
        # numpy raises ValueError for object (pickled) arrays and malformed members, and
        # tokenize's TokenError for a header that is not a Python literal.
        raise RecordError(f"{name}: unreadable .npz member (object arrays are "
                          f"refused)") from exc
    except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        raise RecordError(f"{name}: unreadable .npz archive ({type(exc).__name__})") from exc


def _check_declared_sizes(archive: zipfile.ZipFile, name: str, max_samples: int) -> None:
    """Refuse a member whose .npy header declares more bytes than the member holds (numpy
    allocates the declared shape before it reads a byte), and a signal declaring more
    than ``max_samples`` values."""
    for member in archive.infolist():
        if not member.filename.endswith(".npy"):
            continue
        try:
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _fortran_order, dtype = read_header(handle)
        except (ValueError, TokenError) as exc:
            raise RecordError(f"{name}: unreadable .npz member header") from exc
        declared_bytes = math.prod(shape) * dtype.itemsize
        if declared_bytes > member.file_size:
            raise RecordError(f"{name}: a member's header declares more bytes of data than "
                              f"the member holds; refused")
        if member.filename == "signal.npy":
            check_sample_budget(1, math.prod(shape), max_samples, name)


def _string_list(array: np.ndarray, key: str, name: str) -> List[str]:
    """A string array (or scalar) as a list of str."""
    if array.dtype.kind not in ("U", "S"):
        raise RecordError(f"{name}: '{key}' must hold strings")
    flat = array.reshape(-1)
    if array.dtype.kind == "S":
        return [item.decode("ascii", errors="replace") for item in flat]
    # numpy builds str objects from raw UTF-32 without checking it: a code point past
    # U+10FFFF or a surrogate makes a str that crashes Python's string methods
    code_points = np.ascontiguousarray(flat).view(np.uint32)
    if np.any(code_points > 0x10FFFF) or np.any((code_points >= 0xD800)
                                                & (code_points <= 0xDFFF)):
        raise RecordError(f"{name}: '{key}' holds characters that are not Unicode")
    return [str(item) for item in flat]


def _parse_rate(text: str, name: str) -> float:
    """A sampling rate in Hz: a finite positive number (the range is checked later)."""
    try:
        fs_hz = float(text)
    except ValueError as exc:
        raise RecordError(f"{name}: fs_hz= value is not a number") from exc
    if not math.isfinite(fs_hz) or fs_hz <= 0:
        raise RecordError(f"{name}: fs_hz= value is not a positive number")
    return fs_hz


def _mv_per_unit(unit: str, name: str) -> float:
    """Millivolts per unit for ``mV``/``uV``; anything else is refused."""
    factor = _MV_PER_UNIT.get(unit.strip().lower())
    if factor is None:
        raise RecordError(f"{name}: units= value is not supported (mV or uV)")
    return factor


def _refuse_non_finite(samples: np.ndarray, raw_names: Sequence[str], name: str) -> None:
    """Name the leads holding NaN or Inf; ``samples`` is ``[leads, n]``."""
    bad = [lead_label(lead, index) for index, (lead, row) in enumerate(zip(raw_names, samples))
           if not np.all(np.isfinite(row))]
    if bad:
        raise RecordError(f"{name}: NaN or Inf samples in {', '.join(bad)}")


def _lead_names(raw_names: Sequence[str], name: str) -> Tuple[str, ...]:
    """Normalized lead names, refusing repeats."""
    names = tuple(normalize_lead_name(raw) for raw in raw_names)
    refuse_repeated_leads(names, name)
    return names
