"""Open any supported recording: refuse unsafe paths, detect the format, call its reader.

Each format module exposes ``read(path: Path, max_bytes: int, max_samples: int) ->
Recording`` and raises ``RecordError`` (one line naming the file and the reason, never a
value read from the file) for anything it cannot decode; it checks ``max_samples`` against
the sizes the file declares before it allocates the samples.
"""
from __future__ import annotations

import importlib
import os
import re
import stat
from pathlib import Path

import numpy as np

from ecgd.errors import RecordError
from ecgd.records.recording import DEFAULT_MAX_SAMPLES, Recording, validate_recording
from ecgd.records.xml_safety import xml_head_as_utf8

# format name -> module implementing read(path) -> Recording
FORMAT_MODULES = {
    "wfdb": "ecgd.records.wfdb_format",
    "csv": "ecgd.records.array_formats",
    "numpy": "ecgd.records.array_formats",
    "dicom": "ecgd.records.dicom_format",
    "edf": "ecgd.records.edf_format",
    "hl7-aecg": "ecgd.records.hl7_aecg",
    "ge-muse": "ecgd.records.ge_muse",
    "ge-cardiosoft": "ecgd.records.ge_cardiosoft",
    "philips": "ecgd.records.philips",
}

_XML_ROOTS = {
    "AnnotatedECG": "hl7-aecg",
    "RestingECG": "ge-muse",
    "CardiologyXML": "ge-cardiosoft",
    "restingecgdata": "philips",
}
_XML_ROOT_PATTERN = re.compile(rb"<(?:[\w.-]+:)?(" + b"|".join(k.encode() for k in _XML_ROOTS)
                               + rb")[\s>/]")
_SNIFF_BYTES = 64 * 1024


def check_input_file(path: Path, max_bytes: int) -> os.stat_result:
    """Refuse symlinks, non-regular files, empty files and files over ``max_bytes``, unread."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise RecordError(f"{path.name}: cannot open: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise RecordError(f"{path.name}: is a symbolic link; refused")
    if stat.S_ISDIR(info.st_mode):
        raise RecordError(f"{path.name}: is a directory, not a recording")
    if not stat.S_ISREG(info.st_mode):
        raise RecordError(f"{path.name}: is not a regular file; refused")
    if info.st_size == 0:
        raise RecordError(f"{path.name}: is empty")
    if info.st_size > max_bytes:
        raise RecordError(f"{path.name}: {info.st_size} bytes exceeds the limit of "
                          f"{max_bytes} bytes; refused unread")
    return info


def detect_format(path: Path) -> str:
    """Name the format of ``path`` from its extension and, for XML, its root element."""
    suffix = path.suffix.lower()
    if suffix == ".hea":
        return "wfdb"
    if suffix == ".csv":
        return "csv"
    if suffix in (".npy", ".npz"):
        return "numpy"
    if suffix == ".edf":
        return "edf"
    if suffix == ".scp":
        raise RecordError(f"{path.name}: SCP-ECG is not supported; export the recording as "
                          f"DICOM, HL7 aECG XML, EDF or WFDB")
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if suffix == ".dcm" or head[128:132] == b"DICM":
        return "dicom"
    xml_head = xml_head_as_utf8(head)
    if suffix == ".xml" or xml_head.lstrip().startswith(b"<"):
        match = _XML_ROOT_PATTERN.search(xml_head)
        if match:
            return _XML_ROOTS[match.group(1).decode()]
        raise RecordError(f"{path.name}: XML of an unknown ECG dialect (expected one of "
                          f"{', '.join(sorted(_XML_ROOTS))})")
    if suffix in (".dat", ".mat") and path.with_suffix(".hea").exists():
        raise RecordError(f"{path.name}: is a WFDB signal file; give its header "
                          f"{path.with_suffix('.hea').name}")
    if suffix == ".mat":
        raise RecordError(f"{path.name}: MATLAB .mat without a WFDB header: sampling rate and "
                          f"lead names are not stored; add a .hea header or convert to .npz")
    raise RecordError(f"{path.name}: unsupported format (supported: WFDB .hea, CSV, NumPy "
                      f".npz, DICOM, EDF, HL7 aECG, GE MUSE, GE CardioSoft and Philips XML)")


def read_recording(path: Path, max_bytes: int,
                   max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read one recording file of any supported format, fully validated: at most
    ``max_bytes`` read and ``max_samples`` leads x samples decoded ([limits])."""
    path = Path(path)
    check_input_file(path, max_bytes)
    fmt = detect_format(path)
    module = importlib.import_module(FORMAT_MODULES[fmt])
    # A hostile gain or value overflows to Inf, which validate_recording refuses by name;
    # numpy's warning about it would only print the stack to stderr (the journal).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        recording = module.read(path, max_bytes=max_bytes, max_samples=max_samples)
    return validate_recording(recording, path.name, max_samples)
