"""XML readers (HL7 aECG, GE MUSE, GE CardioSoft, Philips XLI) on the real files in
../shared/data, plus hostile and broken XML."""
from __future__ import annotations

import base64
import re
import struct
import sys
import tracemalloc
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pytest

from ecgd.errors import RecordError
from ecgd.records import ge_cardiosoft, ge_muse, hl7_aecg, philips, xli
from ecgd.records.reader import _XML_ROOT_PATTERN, read_recording
from ecgd.records.recording import STANDARD_LEADS, Recording, arrange_standard_leads
from ecgd.records.xml_safety import parse_xml, xml_head_as_utf8

MAX_BYTES = 16 * 1024 * 1024
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
PHILIPS_FILES = ["129DYPRG.XML", "3191723_ZZDEMOPTONLY_1-04_orig.xml",
                 "ad4d3d80-d165_1-04_orig.xml", "repbeats_example.xml"]
MUSE_FILES = ["BRAVEHEART/example1.xml", "BRAVEHEART/example2.xml",
              "BRAVEHEART/example3.xml", "EGM/muse-sinus.xml"]

# Paths opened by Python code while a test watches (audit events; see `opened_paths`).
_WATCH: Dict[str, Optional[List[str]]] = {"opened": None}


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCH["opened"] is not None:
        _WATCH["opened"].append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def opened_paths() -> Iterator[List[str]]:
    """Every path Python opens while the test body runs."""
    _WATCH["opened"] = []
    try:
        yield _WATCH["opened"]
    finally:
        _WATCH["opened"] = None


def _lead(recording: Recording, name: str) -> np.ndarray:
    return recording.samples_mv[recording.lead_names.index(name)]


def _einthoven_error_mv(recording: Recording) -> float:
    """max |II - I - III| in millivolts."""
    return float(np.max(np.abs(_lead(recording, "II") - _lead(recording, "I")
                               - _lead(recording, "III"))))


def _assert_plausible(recording: Recording) -> None:
    """float32 millivolts, finite, lead II QRS peak-to-peak 0.3-5 mV."""
    assert recording.samples_mv.dtype == np.float32
    assert np.all(np.isfinite(recording.samples_mv))
    assert 0.3 <= float(np.ptp(_lead(recording, "II"))) <= 5.0


def _edited_copy(source: Path, tmp_path: Path, pattern: str, replacement: str,
                 count: int = 1, encoding: str = "latin-1") -> Path:
    """A copy of a real file with one regex substitution applied (it must match)."""
    text = source.read_text(encoding=encoding)
    edited, n = re.subn(pattern, replacement, text, count=count, flags=re.S)
    assert n == count, f"pattern {pattern!r} matched {n} times"
    target = tmp_path / source.name
    target.write_text(edited, encoding=encoding)
    return target


# ---------------------------------------------------------------- HL7 aECG

def test_hl7_example_reads_rhythm_in_file_lead_order(shared_data: Path) -> None:
    """The HL7 example gives 12 leads in its own order (I, II, V1-V6, III, aVR...), 500 Hz, 10 s."""
    recording = hl7_aecg.read(shared_data / "hl7-aecg" / "Example aECG.xml", MAX_BYTES)
    assert recording.lead_names == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6",
                                    "III", "aVR", "aVL", "aVF")
    assert recording.fs_hz == 500.0
    assert recording.samples_mv.shape == (12, 5000)
    assert recording.format == "hl7-aecg"
    assert recording.metadata["resolution_uv"] == 2.5
    assert _einthoven_error_mv(recording) < 0.01
    _assert_plausible(recording)
    assert isinstance(recording.patient_id, str) and recording.patient_id


def test_hl7_local_time_is_kept_as_text_not_guessed(shared_data: Path) -> None:
    """A timestamp without zone gives start_time None and the local time in metadata."""
    recording = hl7_aecg.read(shared_data / "hl7-aecg" / "Example aECG.xml", MAX_BYTES)
    assert recording.start_time is None
    assert recording.metadata["start_time_local"] == "2002-11-22T09:10:00"
    assert "start_time_error" not in recording.metadata


def test_hl7_zoned_time_becomes_utc(shared_data: Path, tmp_path: Path) -> None:
    """An HL7 timestamp with a +0100 offset becomes a tz-aware UTC start_time."""
    path = _edited_copy(shared_data / "hl7-aecg" / "Example aECG.xml", tmp_path,
                        r'<head value="20021122091000\.000"',
                        '<head value="20021122091000.000+0100"',
                        encoding="utf-8")
    recording = hl7_aecg.read(path, MAX_BYTES)
    assert recording.start_time is not None
    assert recording.start_time.utcoffset().total_seconds() == 0
    assert (recording.start_time.hour, recording.start_time.minute) == (8, 10)


@pytest.mark.parametrize("head, reason", [
    ("20021122091000.000+9999", "UTC offset of a day or more"),
    ("00010101000000.000+0100", "outside years 1-9999 in UTC"),
    ("20021131091000.000", "not a valid calendar date"),
    ("XXXXXXXXXXXXXX", "not an HL7 timestamp"),
    ("99991231235959.000+0000", "passes year 9999"),
])
def test_hl7_bad_acquisition_time_keeps_the_signal(shared_data: Path, tmp_path: Path,
                                                  head: str, reason: str) -> None:
    """An impossible or masked HL7 time (zone +9999, year 1 at +0100, 31 November, XXXX, or
    a last sample past year 9999) is noted in the metadata; the signal is read as usual."""
    path = _edited_copy(shared_data / "hl7-aecg" / "Example aECG.xml", tmp_path,
                        r'<head value="20021122091000\.000"', f'<head value="{head}"',
                        encoding="utf-8")
    recording = read_recording(path, MAX_BYTES)
    assert recording.start_time is None
    assert reason in recording.metadata["start_time_error"]
    assert head not in recording.metadata["start_time_error"]
    assert recording.samples_mv.shape == (12, 5000)


def test_hl7_mindray_100_hz(shared_data: Path) -> None:
    """The Mindray aECG reads at its own 100 Hz: 12 leads x 1000 samples (10 s)."""
    recording = hl7_aecg.read(shared_data / "hl7-aecg" / "hl7aecg_example.xml", MAX_BYTES)
    assert recording.fs_hz == pytest.approx(100.0)
    assert recording.lead_names == STANDARD_LEADS
    assert recording.duration_s == pytest.approx(10.0)
    assert recording.metadata["device"] == "BeneHeart R12"
    _assert_plausible(recording)
    assert isinstance(recording.patient_id, str) and recording.patient_id


# ---------------------------------------------------------------- GE MUSE

@pytest.mark.parametrize("name", MUSE_FILES)
def test_muse_reads_eight_rhythm_leads(shared_data: Path, name: str) -> None:
    """MUSE gives the 8 stored rhythm leads (not the 600-sample median) at 4.88 uV/bit."""
    recording = ge_muse.read(shared_data / "ge-muse-xml" / name, MAX_BYTES)
    assert recording.lead_names == EIGHT_LEADS
    assert recording.fs_hz == 500.0
    assert recording.samples_mv.shape == (8, 5000)
    assert recording.metadata["units_per_bit_uv"] == pytest.approx(4.88)
    _assert_plausible(recording)
    arranged = arrange_standard_leads(recording)
    assert arranged.missing == () and arranged.derived == ("III", "aVR", "aVL", "aVF")


def test_muse_identifier_statements_and_local_time(shared_data: Path) -> None:
    """muse-sinus carries a PatientID, MUSE's statements and a zone-less acquisition time."""
    recording = ge_muse.read(shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml", MAX_BYTES)
    assert isinstance(recording.patient_id, str) and recording.patient_id
    assert recording.metadata["statements"][0] == "Normal Sinus rhythm"
    assert recording.metadata["device"] == "MV360"
    assert recording.start_time is None
    assert recording.metadata["start_time_local"] == "2023-04-29T22:41:16"


def _muse_digital_values(text: str) -> Dict[str, np.ndarray]:
    """Each rhythm lead's stored int16 values, decoded here with struct (not numpy views)."""
    rhythm = text[text.index("<WaveformType>Rhythm</WaveformType>"):]
    values = {}
    for block in re.findall(r"<LeadData>(.*?)</LeadData>", rhythm, flags=re.S):
        lead = re.search(r"<LeadID>\s*(\S+)\s*</LeadID>", block).group(1)
        raw = base64.b64decode("".join(re.search(r"<WaveFormData>([^<]*)</WaveFormData>",
                                                 block).group(1).split()))
        values[lead] = np.array(struct.unpack(f"<{len(raw) // 2}h", raw), dtype=np.float64)
    return values


@pytest.mark.parametrize("name", MUSE_FILES)
def test_muse_samples_are_the_files_digits_times_its_own_lsb(shared_data: Path,
                                                             name: str) -> None:
    """Every MUSE sample equals the stored integer times the file's LeadAmplitudeUnitsPerBit
    (4.88 uV here; a reader using a round 5 uV is 2.5 % off and fails)."""
    path = shared_data / "ge-muse-xml" / name
    text = path.read_text(encoding="latin-1")
    per_bit_uv = {float(v) for v in re.findall(
        r"<LeadAmplitudeUnitsPerBit>\s*([^<\s]+)\s*<", text)}
    assert per_bit_uv == {4.88}
    recording = ge_muse.read(path, MAX_BYTES)
    digits = _muse_digital_values(text)
    assert set(digits) == set(recording.lead_names)
    for lead, values in digits.items():
        expected_mv = (values * 4.88e-3).astype(np.float32)
        np.testing.assert_array_equal(_lead(recording, lead), expected_mv)


def test_muse_sample_exponent_out_of_range_is_one_line(shared_data: Path,
                                                       tmp_path: Path) -> None:
    """SampleExponent 400 (a rate of 500e400 Hz) is one RecordError line, not an overflow."""
    source = shared_data / "ge-muse-xml" / "BRAVEHEART" / "example1.xml"
    path = _edited_copy(source, tmp_path,
                        r"(<WaveformType>Rhythm</WaveformType>.*?<SampleExponent>)0<",
                        r"\g<1>400<")
    with pytest.raises(RecordError, match=r"^example1\.xml: .*sampling rate"):
        read_recording(path, MAX_BYTES)


@pytest.mark.parametrize("date, clock, reason", [
    ("XX-XX-XXXX", "XX:XX:XX", "not MM-DD-YYYY HH:MM:SS"),
    ("02-30-2023", "10:00:00", "not a valid calendar date"),
])
def test_muse_bad_acquisition_time_keeps_the_signal(shared_data: Path, tmp_path: Path,
                                                   date: str, clock: str, reason: str) -> None:
    """A masked or impossible MUSE acquisition date/time is noted; the 8 leads are read."""
    path = _edited_copy(shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml", tmp_path,
                        r"<AcquisitionTime>[^<]*</AcquisitionTime>(\s*)"
                        r"<AcquisitionDate>[^<]*</AcquisitionDate>",
                        f"<AcquisitionTime>{clock}</AcquisitionTime>\\g<1>"
                        f"<AcquisitionDate>{date}</AcquisitionDate>")
    recording = read_recording(path, MAX_BYTES)
    assert recording.start_time is None
    assert reason in recording.metadata["start_time_error"]
    assert recording.samples_mv.shape == (8, 5000)


def test_muse_deidentified_export_has_no_identifier(shared_data: Path) -> None:
    """A MUSE export without PatientDemographics gives patient_id None, not an empty string."""
    recording = ge_muse.read(shared_data / "ge-muse-xml" / "BRAVEHEART" / "example1.xml",
                             MAX_BYTES)
    assert recording.patient_id is None


def test_muse_sample_count_mismatch_is_refused(shared_data: Path, tmp_path: Path) -> None:
    """A lead whose stated sample count disagrees with its data is refused, naming the lead."""
    source = shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml"
    text = source.read_text(encoding="latin-1")
    rhythm_at = text.index("<WaveformType>Rhythm</WaveformType>")
    v3_at = text.index("<LeadID>V3</LeadID>", rhythm_at)
    block_at = text.rindex("<LeadSampleCountTotal>5000</LeadSampleCountTotal>", rhythm_at, v3_at)
    edited = (text[:block_at] + "<LeadSampleCountTotal>4999</LeadSampleCountTotal>"
              + text[block_at + len("<LeadSampleCountTotal>5000</LeadSampleCountTotal>"):])
    path = tmp_path / source.name
    path.write_text(edited, encoding="latin-1")
    with pytest.raises(RecordError, match=r"muse-sinus\.xml: lead V3 holds 5000 samples, not "
                                          r"the LeadSampleCountTotal stated"):
        ge_muse.read(path, MAX_BYTES)


def test_muse_leads_of_different_length_are_refused(shared_data: Path, tmp_path: Path) -> None:
    """A consistent but shorter lead (counts, bytes and data agree) is refused, not padded."""
    source = shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml"
    text = source.read_text(encoding="latin-1")
    rhythm_at = text.index("<WaveformType>Rhythm</WaveformType>")
    v6_id = text.index("<LeadID>V6</LeadID>", rhythm_at)
    start = text.rindex("<LeadData>", rhythm_at, v6_id)
    stop = text.index("</LeadData>", v6_id)
    block = text[start:stop]
    data = re.search(r"<WaveFormData>([^<]*)</WaveFormData>", block).group(1)
    short = base64.b64encode(base64.b64decode("".join(data.split()))[:9000]).decode()
    block = re.sub(r"<WaveFormData>[^<]*</WaveFormData>",
                   f"<WaveFormData>{short}</WaveFormData>", block)
    block = block.replace("<LeadByteCountTotal>10000<", "<LeadByteCountTotal>9000<")
    block = block.replace("<LeadSampleCountTotal>5000<", "<LeadSampleCountTotal>4500<")
    block = re.sub(r"<LeadDataCRC32>\d+</LeadDataCRC32>", "", block)
    path = tmp_path / source.name
    path.write_text(text[:start] + block + text[stop:], encoding="latin-1")
    with pytest.raises(RecordError, match=r"lead V6 has 4500 samples, lead I has 5000"):
        ge_muse.read(path, MAX_BYTES)


def test_muse_truncated_base64_is_refused(shared_data: Path, tmp_path: Path) -> None:
    """A rhythm lead whose base64 is cut mid-quantum is refused as invalid base64."""
    source = shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml"
    text = source.read_text(encoding="latin-1")
    rhythm_at = text.index("<WaveformType>Rhythm</WaveformType>")
    data_at = text.index("<WaveFormData>", rhythm_at) + len("<WaveFormData>")
    end_at = text.index("</WaveFormData>", data_at)
    cut = text[data_at:end_at].rstrip()[:-3]  # three base64 characters short
    path = tmp_path / source.name
    path.write_text(text[:data_at] + cut + text[end_at:], encoding="latin-1")
    with pytest.raises(RecordError,
                       match=r"muse-sinus\.xml: lead I WaveFormData is not valid base64"):
        ge_muse.read(path, MAX_BYTES)


def test_muse_corrupted_sample_fails_crc(shared_data: Path, tmp_path: Path) -> None:
    """One altered base64 character (still valid base64) is caught by the lead's CRC-32."""
    source = shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml"
    text = source.read_text(encoding="latin-1")
    rhythm_at = text.index("<WaveformType>Rhythm</WaveformType>")
    data_at = text.index("<WaveFormData>", rhythm_at) + len("<WaveFormData>") + 40
    while not text[data_at].isalnum():
        data_at += 1
    replacement = "B" if text[data_at] != "B" else "C"
    path = tmp_path / source.name
    path.write_text(text[:data_at] + replacement + text[data_at + 1:], encoding="latin-1")
    with pytest.raises(RecordError, match=r"lead I fails its CRC-32 check"):
        ge_muse.read(path, MAX_BYTES)


# ---------------------------------------------------------------- GE CardioSoft

def test_cardiosoft_reads_strip_data(shared_data: Path) -> None:
    """CardioSoft gives the 12-lead 10-s StripData at 5 uV/LSB (not median, not full disclosure)."""
    recording = ge_cardiosoft.read(shared_data / "ge-cardiosoft-xml" / "example-XML1.xml",
                                   MAX_BYTES)
    assert recording.lead_names == STANDARD_LEADS
    assert recording.fs_hz == 500.0
    assert recording.samples_mv.shape == (12, 5000)
    assert recording.metadata["resolution_uv"] == 5.0
    assert recording.metadata["statements"][:2] == ["Sinus bradycardia", "Otherwise normal ECG"]
    assert _einthoven_error_mv(recording) < 0.011
    _assert_plausible(recording)
    assert isinstance(recording.patient_id, str) and recording.patient_id
    assert recording.metadata["start_time_local"] == "2018-07-19T14:19:39"


@pytest.mark.parametrize("day, reason", [
    ("99999999999999999999", "not a valid calendar date"),
    ("XX", "not a valid calendar date"),
    ("31", "not a valid calendar date"),
])
def test_cardiosoft_bad_observation_time_keeps_the_signal(shared_data: Path, tmp_path: Path,
                                                         day: str, reason: str) -> None:
    """A huge, masked or impossible day (July has 31, so the file's month is changed to
    June for the last case) is noted; StripData is read as usual."""
    source = shared_data / "ge-cardiosoft-xml" / "example-XML1.xml"
    path = _edited_copy(source, tmp_path,
                        r"(<ObservationDateTime>.*?<Day>)19(</Day>\s*<Month>)7<",
                        rf"\g<1>{day}\g<2>6<")
    recording = read_recording(path, MAX_BYTES)
    assert recording.start_time is None
    assert reason in recording.metadata["start_time_error"]
    assert recording.samples_mv.shape == (12, 5000)


def test_cardiosoft_resolution_comes_from_the_file(shared_data: Path, tmp_path: Path) -> None:
    """Doubling StripData's stated resolution doubles every amplitude."""
    source = shared_data / "ge-cardiosoft-xml" / "example-XML1.xml"
    original = ge_cardiosoft.read(source, MAX_BYTES)
    path = _edited_copy(source, tmp_path,
                        r'(<StripData>.*?<Resolution units="uVperLsb">)5(</Resolution>)',
                        r"\g<1>10\g<2>")
    doubled = ge_cardiosoft.read(path, MAX_BYTES)
    np.testing.assert_allclose(doubled.samples_mv, 2 * original.samples_mv, rtol=1e-6)


@pytest.mark.parametrize("module, relative, pattern, message", [
    (hl7_aecg, "hl7-aecg/Example aECG.xml", r"(<digits>\s*-?\d+)",
     r"lead \S+ digits are not all integers"),
    (ge_cardiosoft, "ge-cardiosoft-xml/example-XML1.xml",
     r'(<StripData>.*?<WaveformData lead="I">\s*-?\d+)', r"lead I samples are not all integers"),
])
@pytest.mark.parametrize("bad_token", ["1.5", "x", "99999999999999999999999"])
def test_non_integer_or_out_of_range_samples_are_refused(shared_data: Path, tmp_path: Path,
                                                         module: object, relative: str,
                                                         pattern: str, message: str,
                                                         bad_token: str) -> None:
    """One bad sample token among thousands refuses the file with one line naming the lead."""
    source = shared_data / relative
    separator = " " if module is hl7_aecg else ","
    path = _edited_copy(source, tmp_path, pattern, r"\g<1>" + separator + bad_token)
    with pytest.raises(RecordError, match=rf"^{re.escape(source.name)}: {message}"):
        module.read(path, MAX_BYTES)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- Philips

@pytest.mark.parametrize("name", PHILIPS_FILES)
def test_philips_reads_ten_seconds_with_rebuilt_limb_leads(shared_data: Path, name: str) -> None:
    """Philips XLI decodes to 12 x 5000 at 500 Hz, limb leads obey Einthoven and Goldberger."""
    recording = philips.read(shared_data / "philips-xml" / name, MAX_BYTES)
    assert recording.lead_names == STANDARD_LEADS
    assert recording.fs_hz == 500.0
    assert recording.samples_mv.shape == (12, 5000)
    lsb_mv = recording.metadata["resolution_uv"] * 1e-3
    assert lsb_mv == pytest.approx(0.005)
    # rounding in Philips' integer reconstruction leaves at most a couple of LSB
    assert _einthoven_error_mv(recording) <= 2 * lsb_mv + 1e-6
    goldberger = sum(_lead(recording, name) for name in ("aVR", "aVL", "aVF"))
    assert float(np.max(np.abs(goldberger))) <= 2 * lsb_mv + 1e-6
    expected_avr = -(_lead(recording, "I") + _lead(recording, "II")) / 2
    assert float(np.max(np.abs(_lead(recording, "aVR") - expected_avr))) <= 2 * lsb_mv + 1e-6
    _assert_plausible(recording)
    assert isinstance(recording.patient_id, str) and recording.patient_id


@pytest.mark.parametrize("name", PHILIPS_FILES)
def test_philips_calibration_pulse_is_trimmed(shared_data: Path, name: str) -> None:
    """The 1 mV pulse found at samples 5350-5449 is outside the returned rhythm."""
    recording = philips.read(shared_data / "philips-xml" / name, MAX_BYTES)
    assert recording.metadata["calibration_pulse_samples"] == [5350, 5450]
    all_at_one_mv = np.all(np.abs(recording.samples_mv - 1.0) < 0.0025, axis=0)
    assert not np.any(all_at_one_mv)


def test_philips_statements_and_device(shared_data: Path) -> None:
    """The vendor's interpretation and machine are kept in metadata."""
    recording = philips.read(shared_data / "philips-xml" / "129DYPRG.XML", MAX_BYTES)
    assert "Sinus bradycardia" in recording.metadata["statements"]
    assert ">>> Acute MI <<<" in recording.metadata["statements"]
    assert recording.metadata["device"] == "HeartstartMRx"


def test_philips_deidentified_export_without_namespace_is_read(shared_data: Path,
                                                              tmp_path: Path) -> None:
    """A de-identified Philips export (no default XML namespace, acquisition date and time
    masked as XXXX) reads like the original, with the masked time noted."""
    source = shared_data / "philips-xml" / "129DYPRG.XML"
    text = source.read_text(encoding="utf-8")
    text = text.replace(' xmlns="http://www3.medical.philips.com"', "", 1)
    text, masked = re.subn(r'(<dataacquisition) date="[^"]*" time="[^"]*"',
                           r'\g<1> date="XXXX" time="XXXX"', text)
    assert masked == 1
    path = tmp_path / "deidentified.xml"
    path.write_text(text, encoding="utf-8")
    recording = read_recording(path, MAX_BYTES)
    original = read_recording(source, MAX_BYTES)
    np.testing.assert_array_equal(recording.samples_mv, original.samples_mv)
    assert recording.lead_names == STANDARD_LEADS
    assert recording.start_time is None
    assert "not YYYY-MM-DD HH:MM:SS" in recording.metadata["start_time_error"]
    assert original.metadata["start_time_local"] == "2011-12-01T07:27:34"


def test_philips_truncated_waveform_is_refused(shared_data: Path, tmp_path: Path) -> None:
    """A parsedwaveforms payload cut in half (still valid base64) is refused as corrupt XLI."""
    source = shared_data / "philips-xml" / "129DYPRG.XML"
    text = source.read_text(encoding="utf-8")
    match = re.search(r"(<parsedwaveforms[^>]*>)([^<]*)(</parsedwaveforms>)", text)
    payload = "".join(match.group(2).split())
    cut = payload[:len(payload) // 8 * 4]
    path = tmp_path / source.name
    path.write_text(text[:match.start(2)] + cut + text[match.end(2):], encoding="utf-8")
    with pytest.raises(RecordError, match=r"129DYPRG\.XML: XLI waveform is corrupt"):
        philips.read(path, MAX_BYTES)


def test_philips_invalid_base64_is_refused(shared_data: Path, tmp_path: Path) -> None:
    """Characters outside the base64 alphabet in parsedwaveforms are refused, not skipped."""
    path = _edited_copy(shared_data / "philips-xml" / "129DYPRG.XML", tmp_path,
                        r"(<parsedwaveforms[^>]*>)(\S{8})", r"\g<1>!!!!\g<2>", encoding="utf-8")
    with pytest.raises(RecordError, match=r"parsedwaveforms is not valid base64"):
        philips.read(path, MAX_BYTES)


@pytest.mark.parametrize("duration", ["-11000", "0", "1e12", "1e300"])
def test_philips_implausible_lead_length_is_refused(shared_data: Path, tmp_path: Path,
                                                   duration: str) -> None:
    """A hostile durationperchannel is a RecordError, not a huge or negative allocation."""
    path = _edited_copy(shared_data / "philips-xml" / "129DYPRG.XML", tmp_path,
                        r'durationperchannel="11000"', f'durationperchannel="{duration}"',
                        encoding="utf-8")
    with pytest.raises(RecordError, match=r"129DYPRG\.XML: .*(durationperchannel|XLI)"):
        philips.read(path, MAX_BYTES)


# ---------------------------------------------------------------- XLI internals

def _undelta_like_c(deltas: np.ndarray, first_delta: int) -> np.ndarray:
    """Philips' C loop, step by step, every value kept in a 16-bit short."""
    def short(value: int) -> int:
        return (value + 32768) % 65536 - 32768
    out = [int(d) for d in deltas]
    x, y, last = out[0], out[1], first_delta
    for j in range(2, len(out)):
        z = 2 * y - x - last
        last = short(out[j] - 64)
        out[j] = short(z)
        x, y = y, short(z)
    return np.array(out, dtype=np.int16)


def test_undelta_wraps_like_c_short() -> None:
    """The vectorized delta decoder equals the C short recurrence, overflow wraps included."""
    rng = np.random.default_rng(7)
    deltas = rng.integers(-3000, 3000, size=5500).astype(np.int16)
    expected = _undelta_like_c(deltas, first_delta=1234)
    unwrapped = np.cumsum(np.cumsum(-(deltas.astype(np.int64) - 64)))
    assert np.abs(unwrapped).max() > 32767  # the input really does overflow int16
    np.testing.assert_array_equal(xli.undelta(deltas, 1234), expected)


def _compress_lzw(data: bytes) -> bytes:
    """A plain 10-bit LZW encoder (table frozen at 1022, code 1023 = end), MSB-first."""
    table = {bytes((value,)): value for value in range(256)}
    codes: List[int] = []
    current = b""
    for value in data:
        candidate = current + bytes((value,))
        if candidate in table:
            current = candidate
            continue
        codes.append(table[current])
        if len(table) <= 1022:
            table[candidate] = len(table)
        current = bytes((value,))
    codes.extend([table[current], 1023])
    bits = "".join(format(code, "010b") for code in codes)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def test_lzw_expands_what_an_encoder_compressed() -> None:
    """expand_lzw inverts LZW, including the KwKwK case and a full (frozen) table."""
    rng = np.random.default_rng(3)
    data = b"a" * 50 + rng.integers(0, 40, size=6000).astype(np.uint8).tobytes()
    assert xli.expand_lzw(_compress_lzw(data)) == data


def test_lzw_bomb_expands_only_what_the_lead_needs() -> None:
    """A chunk of repeated longest-entry codes (~600x expansion) is not expanded past the
    2 * n_samples bytes the lead needs."""
    codes = [65] + list(range(256, 1023)) + [1022] * 100_000 + [1023]
    bits = np.array([int(b) for code in codes[:800] for b in format(code, "010b")]
                    + [int(b) for b in format(1022, "010b")] * (len(codes) - 801)
                    + [int(b) for b in format(1023, "010b")], dtype=np.uint8)
    stream = np.packbits(bits).tobytes()
    payload = xli._HEADER.pack(len(stream), 1, 0) + stream
    tracemalloc.start()
    try:
        leads = xli.decode_leads(payload, n_leads=1, n_samples=5500)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert leads.shape == (1, 5500)
    assert peak_bytes < 8 * 1024 * 1024


def test_lzw_code_past_the_table_is_corrupt() -> None:
    """A code naming an entry that cannot exist yet is an XliError, not garbage output."""
    bits = format(65, "010b") + format(900, "010b") + format(1023, "010b")
    bits += "0" * (-len(bits) % 8)
    stream = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    with pytest.raises(xli.XliError, match="refers past the table"):
        xli.expand_lzw(stream)


# ---------------------------------------------------------------- hostile / broken XML

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE RestingECG [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<RestingECG><PatientDemographics><PatientID>&lol9;</PatientID></PatientDemographics></RestingECG>
"""


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    """An entity bomb is refused with a RecordError naming the file, before any expansion."""
    path = tmp_path / "laughs.xml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(RecordError, match=r"^laughs\.xml: XML declares an internal DTD subset"):
        read_recording(path, MAX_BYTES)


def test_external_entity_file_is_never_opened(tmp_path: Path, opened_paths: List[str]) -> None:
    """An external entity naming a local file is refused and that file is never opened."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-read")
    path = tmp_path / "xxe.xml"
    path.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE RestingECG [ <!ENTITY xxe SYSTEM '
                    f'"file://{secret}"> ]>\n<RestingECG><PatientDemographics><PatientID>'
                    f'&xxe;</PatientID></PatientDemographics></RestingECG>\n')
    opened_paths.clear()  # forget the setup's own writes
    with pytest.raises(RecordError, match=r"^xxe\.xml: "):
        ge_muse.read(path, MAX_BYTES)
    assert str(path) in opened_paths  # the watch works: the input itself was opened
    assert not any("secret" in opened for opened in opened_paths)


def test_external_dtd_is_never_fetched(tmp_path: Path, opened_paths: List[str]) -> None:
    """A DOCTYPE naming an external DTD that declares an entity: DTD unread, entity refused."""
    (tmp_path / "evil.dtd").write_text('<!ENTITY xxe SYSTEM "secret.txt">')
    (tmp_path / "secret.txt").write_text("do-not-read")
    path = tmp_path / "dtd.xml"
    path.write_text('<?xml version="1.0"?>\n<!DOCTYPE RestingECG SYSTEM "evil.dtd">\n'
                    '<RestingECG><MuseInfo>&xxe;</MuseInfo></RestingECG>\n')
    opened_paths.clear()  # forget the setup's own writes
    with pytest.raises(RecordError, match=r"^dtd\.xml: "):
        parse_xml(path, MAX_BYTES)
    assert str(path) in opened_paths
    assert not any("evil.dtd" in opened or "secret" in opened for opened in opened_paths)


def test_unknown_dialect_is_refused(tmp_path: Path) -> None:
    """Well-formed XML that is no known ECG dialect is refused, naming the file."""
    path = tmp_path / "other.xml"
    path.write_text('<?xml version="1.0"?><SomeOtherECG><Lead>1 2 3</Lead></SomeOtherECG>')
    with pytest.raises(RecordError, match=r"^other\.xml: XML of an unknown ECG dialect"):
        read_recording(path, MAX_BYTES)


def test_unknown_xml_encoding_is_one_line(shared_data: Path, tmp_path: Path) -> None:
    """An XML declaration naming an encoding Python does not know is a RecordError naming
    the declaration (not the encoding's name), not a LookupError."""
    path = _edited_copy(shared_data / "ge-muse-xml" / "BRAVEHEART" / "example1.xml", tmp_path,
                        r'encoding="[^"]*"', 'encoding="x-q7z3-bogus"')
    with pytest.raises(RecordError, match=r"^example1\.xml: .*encoding") as raised:
        read_recording(path, MAX_BYTES)
    assert "q7z3" not in str(raised.value)


def test_malformed_xml_is_refused(tmp_path: Path) -> None:
    """A truncated XML document is a RecordError naming the file, not an expat traceback."""
    path = tmp_path / "cut.xml"
    path.write_text('<?xml version="1.0"?><RestingECG><Waveform><WaveformType>Rhy')
    with pytest.raises(RecordError, match=r"^cut\.xml: not well-formed XML"):
        ge_muse.read(path, MAX_BYTES)


@pytest.mark.parametrize("module, relative", [
    (hl7_aecg, "hl7-aecg/Example aECG.xml"),
    (ge_muse, "ge-muse-xml/EGM/muse-sinus.xml"),
    (ge_cardiosoft, "ge-cardiosoft-xml/example-XML1.xml"),
    (philips, "philips-xml/129DYPRG.XML"),
])
def test_file_over_size_limit_is_refused_unread(shared_data: Path, module: object,
                                                relative: str, opened_paths: List[str]) -> None:
    """Each reader refuses a file over max_bytes without opening it."""
    path = shared_data / relative
    with pytest.raises(RecordError, match=r"exceeds the limit of 1000 bytes; refused unread"):
        module.read(path, 1000)  # type: ignore[attr-defined]
    assert str(path) not in opened_paths


def test_utf16_head_can_be_sniffed(shared_data: Path) -> None:
    """A UTF-16 Philips export's head, converted, matches the reader's root pattern."""
    head = (shared_data / "philips-xml" / "ad4d3d80-d165_1-04_orig.xml").read_bytes()[:4096]
    assert _XML_ROOT_PATTERN.search(head) is None
    match = _XML_ROOT_PATTERN.search(xml_head_as_utf8(head))
    assert match is not None and match.group(1) == b"restingecgdata"


@pytest.mark.parametrize("relative", [
    "hl7-aecg/Example aECG.xml", "hl7-aecg/hl7aecg_example.xml",
    "ge-muse-xml/BRAVEHEART/example2.xml", "ge-cardiosoft-xml/example-XML1.xml",
    "philips-xml/129DYPRG.XML", "philips-xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
    "philips-xml/ad4d3d80-d165_1-04_orig.xml",
])
def test_read_recording_routes_xml_to_its_reader(shared_data: Path, relative: str) -> None:
    """read_recording detects each XML dialect and returns a validated recording."""
    recording = read_recording(shared_data / relative, MAX_BYTES)
    assert recording.format in ("hl7-aecg", "ge-muse", "ge-cardiosoft", "philips")
    assert recording.duration_s == pytest.approx(10.0)
