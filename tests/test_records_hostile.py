"""Every reader against hostile input: a value read from a file never reaches the error line,
and the sample limit ([limits] max_input_samples) is enforced before the samples exist."""
from __future__ import annotations

import re
import tracemalloc
from pathlib import Path
from typing import Callable, List

import numpy as np
import pydicom
import pytest

from ecgd.errors import RecordError
from ecgd.records.reader import read_recording

LIMIT_BYTES = 64 * 1024 * 1024
SENTINEL = "Q7Z3"


def _edit(source: Path, target: Path, pattern: str, replacement: str,
          encoding: str = "latin-1") -> Path:
    """A copy of ``source`` with one regex substitution (it must match)."""
    text, n = re.subn(pattern, replacement, source.read_text(encoding=encoding), count=1,
                      flags=re.S)
    assert n == 1, pattern
    target.write_text(text, encoding=encoding)
    return target


def _csv(target: Path, comment: str, header: str, rows: List[str]) -> Path:
    target.write_text("\n".join([comment, header, *rows]) + "\n")
    return target


def _npz(target: Path, **overrides) -> Path:
    arrays = {"signal": np.zeros((2, 500)), "fs_hz": 500.0,
              "lead_names": np.array(["I", "II"]), "units": "mV", **overrides}
    np.savez(target, **arrays)
    return target


def _dicom_channel_edit(shared_data: Path, target: Path, edit: Callable) -> Path:
    dataset = pydicom.dcmread(str(shared_data / "dicom" / "example-DICOM1.dcm"))
    for group in dataset.WaveformSequence:
        edit(group.ChannelDefinitionSequence[0])
    dataset.save_as(str(target))
    return target


def _edf(target: Path, label: str, unit: str, digital_min: str) -> Path:
    def field(value: str, width: int) -> str:
        return value.ljust(width)[:width]

    header = ("0".ljust(8) + "X".ljust(80) + "X".ljust(80) + "02.03.21" + "10.20.30"
              + "512".ljust(8) + "".ljust(44) + "100".ljust(8) + "0.002".ljust(8) + "1".ljust(4)
              + field(label, 16) + field("", 80) + field(unit, 8) + field("-32.768", 8)
              + field("32.767", 8) + field(digital_min, 8) + field("32767", 8) + field("", 80)
              + field("1", 8) + field("", 32))
    target.write_bytes(header.encode("ascii") + bytes(200))
    return target


HL7 = "hl7-aecg/Example aECG.xml"
MUSE = "ge-muse-xml/EGM/muse-sinus.xml"
CARDIOSOFT = "ge-cardiosoft-xml/example-XML1.xml"
PHILIPS = "philips-xml/129DYPRG.XML"

# Text edits of real files: (source, pattern, replacement, encoding); {s} is the sentinel.
TEXT_EDITS = {
    "hl7 unit": (HL7, r'(<origin value="[^"]*" unit=")[^"]*', r"\g<1>{s}", "utf-8"),
    "hl7 digit": (HL7, r"(<digits>\s*)", r"\g<1>{s} ", "utf-8"),
    "hl7 increment": (HL7, r'(<increment value=")[^"]*', r"\g<1>{s}", "utf-8"),
    "hl7 lead code": (HL7, r'code="MDC_ECG_LEAD_I"(.*?<digits>\s*)',
                      r'code="MDC_ECG_LEAD_{s}"\g<1>x ', "utf-8"),
    "muse units": (MUSE, r"(<WaveformType>Rhythm.*?<LeadAmplitudeUnits>)[^<]*", r"\g<1>{s}",
                   "latin-1"),
    "muse sample base": (MUSE, r"(<WaveformType>Rhythm.*?<SampleBase>)[^<]*", r"\g<1>{s}",
                         "latin-1"),
    "muse lead id": (MUSE, r"(<WaveformType>Rhythm.*?<LeadID>)[^<]*(.*?"
                           r"<LeadAmplitudeUnitsPerBit>)[^<]*", r"\g<1>{s}\g<2>x", "latin-1"),
    "cardiosoft rate": (CARDIOSOFT, r"(<StripData>.*?<SampleRate[^>]*>)[^<]*", r"\g<1>{s}",
                        "latin-1"),
    "cardiosoft units": (CARDIOSOFT, r'(<StripData>.*?<Resolution units=")[^"]*', r"\g<1>{s}",
                         "latin-1"),
    "cardiosoft lead": (CARDIOSOFT, r'(<StripData>.*?<WaveformData lead=")I(">)',
                        r"\g<1>{s}\g<2>x,", "latin-1"),
    "philips version": (PHILIPS, r"(<documentversion>)[^<]*", r"\g<1>{s}", "utf-8"),
    "philips encoding": (PHILIPS, r'(dataencoding=")[^"]*', r"\g<1>{s}", "utf-8"),
}

# Files made in the test: name -> builder(shared data, temp folder) -> path.
BUILT = {
    "csv fs_hz": lambda d, t: _csv(t / "a.csv", f"# fs_hz={SENTINEL}, units=mV", "I", ["0"]),
    "csv units": lambda d, t: _csv(t / "a.csv", f"# fs_hz=500, units={SENTINEL}", "I", ["0"]),
    "csv repeated lead": lambda d, t: _csv(t / "a.csv", "# fs_hz=500, units=mV",
                                           f"{SENTINEL},{SENTINEL}", ["0,0"]),
    "csv NaN lead": lambda d, t: _csv(t / "a.csv", "# fs_hz=500, units=mV", f"I,{SENTINEL}",
                                      ["0,0", "0,nan"]),
    "npz units": lambda d, t: _npz(t / "a.npz", units=SENTINEL),
    "npz NaN lead": lambda d, t: _npz(t / "a.npz", lead_names=np.array(["I", SENTINEL]),
                                      signal=np.full((2, 500), np.nan)),
    "xml entity": lambda d, t: _write(t / "a.xml", f'<?xml version="1.0"?><RestingECG>'
                                      f'&{SENTINEL};</RestingECG>'),
    "dicom unit": lambda d, t: _dicom_channel_edit(
        d, t / "a.dcm", lambda ch: setattr(ch.ChannelSensitivityUnitsSequence[0],
                                           "CodeValue", SENTINEL)),
    "dicom channel name": lambda d, t: _dicom_channel_edit(
        d, t / "a.dcm", lambda ch: (setattr(ch.ChannelSourceSequence[0], "CodeMeaning",
                                            SENTINEL), delattr(ch, "ChannelSensitivity"))),
    "edf dimension": lambda d, t: _edf(t / "a.edf", SENTINEL, SENTINEL, "-32768"),
    "edf digital minimum": lambda d, t: _edf(t / "a.edf", "I", "mV", SENTINEL),
}


def _hostile_file(case: str, shared_data: Path, tmp_path: Path) -> Path:
    if case in BUILT:
        return BUILT[case](shared_data, tmp_path)
    source, pattern, replacement, encoding = TEXT_EDITS[case]
    return _edit(shared_data / source, tmp_path / "a.xml", pattern,
                 replacement.replace("{s}", SENTINEL), encoding)


def _write(target: Path, text: str) -> Path:
    target.write_text(text)
    return target


@pytest.mark.parametrize("case", sorted([*TEXT_EDITS, *BUILT]))
def test_values_read_from_a_file_never_reach_the_error_line(shared_data: Path, tmp_path: Path,
                                                            case: str) -> None:
    """A bad unit, rate, lead name, token or version is refused in one line that names the
    field, never quoting the value the file holds."""
    path = _hostile_file(case, shared_data, tmp_path)
    with pytest.raises(RecordError) as raised:
        read_recording(path, LIMIT_BYTES)
    message = str(raised.value)
    assert message.startswith(f"{path.name}: ")
    assert "\n" not in message
    assert SENTINEL.lower() not in message.lower(), message


@pytest.mark.parametrize("relative, size", [
    ("cinc2021/E07500.hea", 12 * 5000), ("dicom/example-DICOM1.dcm", 12 * 5000),
    ("edf/0000050.ECG.edf", 12 * 37855), (HL7, 12 * 5000), (MUSE, 8 * 5000),
    (CARDIOSOFT, 12 * 5000), (PHILIPS, 12 * 5500),  # Philips decodes 11 s, keeps 10
])
def test_every_reader_enforces_the_sample_limit(shared_data: Path, relative: str,
                                                size: int) -> None:
    """A file decoding to exactly the limit reads; one sample fewer allowed refuses it."""
    path = shared_data / relative
    assert read_recording(path, LIMIT_BYTES, max_samples=size).samples_mv.size <= size
    with pytest.raises(RecordError, match=rf"^{re.escape(path.name)}: decodes to more than "
                                          rf"{size - 1} samples"):
        read_recording(path, LIMIT_BYTES, max_samples=size - 1)


def _traced_peak_bytes(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(RecordError, match="decodes to more than"):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_csv_is_refused_before_its_lines_are_split(tmp_path: Path) -> None:
    """8 million one-sample lines against a limit of 1 million: refused from the line count,
    with a peak under 4x the file (splitting it costs over 60 bytes a line, 30x)."""
    path = tmp_path / "long.csv"
    path.write_text("# fs_hz=500, units=mV\nI\n" + "0\n" * 8_000_000)
    peak = _traced_peak_bytes(lambda: read_recording(path, LIMIT_BYTES, max_samples=1_000_000))
    assert peak < 4 * path.stat().st_size


def test_long_hl7_lead_is_refused_as_it_is_parsed(shared_data: Path, tmp_path: Path) -> None:
    """An HL7 lead of 2 million digits against a limit of 200,000 is refused after about
    that many tokens, with a peak under 4x the file (splitting it whole costs 30x)."""
    path = _edit(shared_data / HL7, tmp_path / "long.xml", r"(<digits>)[^<]*",
                 r"\g<1>" + "0 " * 2_000_000, "utf-8")
    peak = _traced_peak_bytes(lambda: read_recording(path, LIMIT_BYTES, max_samples=200_000))
    assert peak < 4 * path.stat().st_size
