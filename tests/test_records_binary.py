"""Binary and tabular readers (CSV, NumPy .npz, DICOM, EDF) on real files and bad input;
WFDB has its own file (test_records_wfdb.py)."""
from __future__ import annotations

import datetime as dt
import io
import os
import tracemalloc
import zipfile
from pathlib import Path
from typing import List

import numpy as np
import pydicom
import pytest
import wfdb
from wfdb.io.convert.edf import read_edf

from ecgd.errors import RecordError
from ecgd.records import edf_format
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS

LIMIT_BYTES = 64 * 1024 * 1024


# --- CSV and NumPy ----------------------------------------------------------------------

def _write_csv(path: Path, comment: str, header: str, rows: List[str]) -> Path:
    path.write_text("\n".join(([comment] if comment else []) + [header] + rows) + "\n")
    return path


def _ludb_rows(shared_data: Path, n_samples: int) -> np.ndarray:
    return wfdb.rdrecord(str(shared_data / "ludb" / "data" / "1"), sampto=n_samples).p_signal


def test_csv_round_trip_real_record(shared_data: Path, tmp_path: Path) -> None:
    """A real LUDB slice written as uV CSV with a time column reads back in mV, names normalized."""
    signal_mv = _ludb_rows(shared_data, 1000)
    rows = [f"{i / 500:.3f}," + ",".join(f"{v * 1000:.3f}" for v in row)
            for i, row in enumerate(signal_mv)]
    path = _write_csv(tmp_path / "ludb1.csv", "# fs_hz=500, units=uV",
                      "time_s,i,ii,iii,AVR,avl,Lead aVF,v1,v2,v3,v4,v5,v6", rows)
    recording = read_recording(path, LIMIT_BYTES)
    assert recording.format == "csv"
    assert recording.fs_hz == 500.0
    assert recording.lead_names == STANDARD_LEADS
    np.testing.assert_allclose(recording.samples_mv, signal_mv.T, atol=1e-5)


@pytest.mark.parametrize("comment, header, rows, reason", [
    ("# units=mV", "I,II", ["0.1,0.2"], r"no '# fs_hz=\.\.\.' comment"),
    ("# fs_hz=500", "I,II", ["0.1,0.2"], r"units are never assumed"),
    ("# fs_hz=0, units=mV", "I,II", ["0.1,0.2"], r"fs_hz= value is not a positive number"),
    ("# fs_hz=500, units=mV", "I,II", ["0.1,0.2", "0.1,nan"], r"NaN or Inf samples in II"),
    ("# fs_hz=500, units=mV", "I,II", ["0.1,0.2", "inf,0.1"], r"NaN or Inf samples in I"),
    ("# fs_hz=500, units=mV", "I,II,III", ["0.1,0.2,0.3", "0.1,0.2"],
     r"line 4: 2 values, header has 3 columns"),
    ("# fs_hz=500, units=mV", "I,II", ["0.1,"], r"line 3: a value is empty or not a number"),
    ("# fs_hz=500, units=mV", "I,II", [], r"header but no samples"),
    ("# fs_hz=500, units=V", "I,II", ["0.1,0.2"], r"units= value is not supported"),
    ("# fs_hz=500, units=mV", "II,ii", ["0.1,0.2"], r"lead II appears more than once"),
])
def test_csv_bad_input_refused(tmp_path: Path, comment: str, header: str, rows: List[str],
                               reason: str) -> None:
    """Each malformed CSV gives one RecordError naming the file and the reason."""
    path = _write_csv(tmp_path / "bad.csv", comment, header, rows)
    with pytest.raises(RecordError, match=r"^bad\.csv: .*" + reason):
        read_recording(path, LIMIT_BYTES)


def test_csv_peak_memory_stays_proportionate(tmp_path: Path) -> None:
    """An 8 MiB CSV of short values reads with a peak well under 16x its size (a list of
    Python floats per row costs ~30x)."""
    row = ",".join(["0"] * 12) + "\n"
    path = tmp_path / "dense.csv"
    path.write_text("# fs_hz=500, units=mV\n" + ",".join(STANDARD_LEADS) + "\n"
                    + row * (8 * 1024 * 1024 // len(row)))
    tracemalloc.start()
    try:
        recording = read_recording(path, LIMIT_BYTES)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert recording.samples_mv.shape == (12, 8 * 1024 * 1024 // len(row))
    assert peak_bytes < 16 * path.stat().st_size


def test_npz_declaring_a_huge_shape_is_refused_unread(tmp_path: Path) -> None:
    """A .npy header declaring terabytes over a few hundred bytes of data is a RecordError,
    not a MemoryError from allocating the declared shape."""
    path = tmp_path / "forged.npz"
    np.savez(path, signal=np.zeros((12, 50)), fs_hz=np.array(500.0),
             lead_names=np.array(list(STANDARD_LEADS)), units=np.array("mV"))
    with zipfile.ZipFile(path) as archive:
        members = {member: archive.read(member) for member in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (12, 10 ** 11)})
    members["signal.npy"] = header.getvalue() + bytes(12 * 50 * 8)
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    with pytest.raises(RecordError, match=r"^forged\.npz: a member's header declares more "
                                          r"bytes of data than the member holds"):
        read_recording(path, LIMIT_BYTES)


def test_csv_absurd_rate_refused(tmp_path: Path) -> None:
    """fs_hz=1e6 passes parsing but is refused by validation with the file name."""
    path = _write_csv(tmp_path / "fast.csv", "# fs_hz=1e6, units=mV", "I", ["0.1", "0.2"])
    with pytest.raises(RecordError, match=r"^fast\.csv: sampling rate outside 100-10000 Hz"):
        read_recording(path, LIMIT_BYTES)


def test_empty_files_refused(tmp_path: Path) -> None:
    """Empty .csv, .npz, .hea, .dcm and .edf files are refused with their names."""
    for name in ("e.csv", "e.npz", "e.hea", "e.dcm", "e.edf"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(RecordError, match=rf"^{name.replace('.', '[.]')}: is empty"):
            read_recording(tmp_path / name, LIMIT_BYTES)


def test_npz_round_trip_real_record(shared_data: Path, tmp_path: Path) -> None:
    """A real LUDB slice saved as npz in uV (int16 counts would do too) reads back in mV."""
    signal_mv = _ludb_rows(shared_data, 1000).T
    path = tmp_path / "ludb1.npz"
    np.savez(path, signal=signal_mv * 1000.0, fs_hz=500.0,
             lead_names=np.array(["i", "ii", "iii", "avr", "avl", "avf",
                                  "v1", "v2", "v3", "v4", "v5", "v6"]), units="uV")
    recording = read_recording(path, LIMIT_BYTES)
    assert recording.format == "numpy"
    assert recording.lead_names == STANDARD_LEADS
    np.testing.assert_allclose(recording.samples_mv, signal_mv, atol=1e-5)


def _save_npz(path: Path, **overrides) -> Path:
    arrays = {"signal": np.zeros((2, 100)), "fs_hz": 500.0,
              "lead_names": np.array(["I", "II"]), "units": "mV"}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("overrides, reason", [
    ({"signal": np.array([[0.0, np.nan], [0.0, 0.0]])}, r"NaN or Inf samples in I"),
    ({"signal": np.array([[0.0, 0.0], [np.inf, 0.0]])}, r"NaN or Inf samples in II"),
    ({"lead_names": np.array(["I", "II", "III"])}, r"3 lead names for 2 rows"),
    ({"fs_hz": None}, r"lacks fs_hz"),
    ({"units": "counts"}, r"units= value is not supported"),
    ({"fs_hz": 0.0}, r"fs_hz= value is not a positive number"),
    ({"signal": np.array([{"a": 1}], dtype=object)}, r"object arrays are refused"),
])
def test_npz_bad_input_refused(tmp_path: Path, overrides, reason: str) -> None:
    """Each malformed npz gives one RecordError naming the file and the reason."""
    path = _save_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(RecordError, match=r"^bad\.npz: .*" + reason):
        read_recording(path, LIMIT_BYTES)


def test_npz_absurd_rate_refused(tmp_path: Path) -> None:
    """An npz at 1 MHz is refused by validation with the file name."""
    path = _save_npz(tmp_path / "fast.npz", fs_hz=1e6)
    with pytest.raises(RecordError, match=r"^fast\.npz: sampling rate outside 100-10000 Hz"):
        read_recording(path, LIMIT_BYTES)


def test_npz_zip_bomb_refused(tmp_path: Path) -> None:
    """A small compressed npz that unpacks past the limit is refused before loading."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, signal=np.zeros((12, 500000)), fs_hz=500.0,
                        lead_names=np.array(list(STANDARD_LEADS)), units="mV")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(RecordError, match=r"^bomb\.npz: archive unpacks to \d+ bytes"):
        read_recording(path, 1_000_000)


def test_bare_npy_refused(tmp_path: Path) -> None:
    """A bare .npy cannot carry rate, leads or units and is refused saying so."""
    np.save(tmp_path / "x.npy", np.zeros((12, 10)))
    with pytest.raises(RecordError, match=r"^x\.npy: a bare \.npy array stores no sampling"):
        read_recording(tmp_path / "x.npy", LIMIT_BYTES)


# --- DICOM ------------------------------------------------------------------------------

@pytest.mark.parametrize("file_name, fs_hz, n_samples", [
    ("waveform_ecg.dcm", 1000.0, 10000),
    ("example-DICOM1.dcm", 500.0, 5000),
])
def test_dicom_rhythm_group(shared_data: Path, file_name: str, fs_hz: float,
                            n_samples: int) -> None:
    """The 10-s rhythm group (not the median beat) gives 12 standard leads in plausible mV."""
    path = shared_data / "dicom" / file_name
    recording = read_recording(path, LIMIT_BYTES)
    assert recording.format == "dicom"
    assert recording.lead_names == STANDARD_LEADS
    assert recording.fs_hz == fs_hz
    assert recording.n_samples == n_samples
    assert recording.patient_id
    peak_mv = np.max(np.abs(recording.samples_mv), axis=1)
    assert np.all(peak_mv > 0.1) and np.all(peak_mv < 5.0)
    # Independent scaling: pydicom's own conversion (baseline 0 in both files) is in uV.
    reference_uv = pydicom.dcmread(str(path)).waveform_array(0).T
    np.testing.assert_allclose(recording.samples_mv * 1000.0, reference_uv, rtol=1e-5,
                               atol=1e-3)


def test_dicom_time_zone_applied(shared_data: Path) -> None:
    """example-DICOM1 carries +0100, so 08:58:44 local is 07:58:44 UTC."""
    recording = read_recording(shared_data / "dicom" / "example-DICOM1.dcm", LIMIT_BYTES)
    assert recording.start_time == dt.datetime(2023, 1, 4, 7, 58, 44, tzinfo=dt.timezone.utc)


def test_dicom_without_zone_keeps_local_time(shared_data: Path) -> None:
    """waveform_ecg states no offset: its time is kept as local time, never guessed as UTC."""
    recording = read_recording(shared_data / "dicom" / "waveform_ecg.dcm", LIMIT_BYTES)
    assert recording.start_time is None
    assert recording.metadata["start_time_local"] == "2013-01-25T10:59:19"


@pytest.mark.parametrize("value, reason", [
    ("00010101000000+0100", "outside years 1-9999 in UTC"),
    ("20230231085844+0100", "not a valid calendar date"),
    ("20230104085844+9999", "UTC offset of a day or more"),
    ("XXXXXXXXXXXXXX", "not a DICOM date and time"),
])
def test_dicom_bad_acquisition_time_keeps_the_signal(shared_data: Path, tmp_path: Path,
                                                    value: str, reason: str) -> None:
    """Year 1 at +0100, 31 February, an offset of +9999 or a masked AcquisitionDateTime is
    noted; the waveform is read as usual."""
    dataset = pydicom.dcmread(str(shared_data / "dicom" / "example-DICOM1.dcm"))
    dataset.AcquisitionDateTime = value
    dataset.save_as(str(tmp_path / "time.dcm"))
    recording = read_recording(tmp_path / "time.dcm", LIMIT_BYTES)
    assert recording.start_time is None
    assert reason in recording.metadata["start_time_error"]
    assert recording.samples_mv.shape == (12, 5000)


@pytest.mark.parametrize("vr", [b"ZZ", b"FD"])
def test_dicom_bad_vr_found_late_is_one_line(shared_data: Path, tmp_path: Path,
                                             vr: bytes) -> None:
    """Manufacturer (read after the waveform) re-labelled with an unknown VR, or with a VR
    its length does not fit, is one RecordError line that does not quote the value."""
    data = (shared_data / "dicom" / "example-DICOM1.dcm").read_bytes()
    at = data.index(b"\x08\x00\x70\x00LO")  # (0008,0070) Manufacturer, explicit VR LO
    (tmp_path / "vr.dcm").write_bytes(data[:at + 4] + vr + data[at + 6:])
    with pytest.raises(RecordError, match=r"^vr\.dcm: not a readable DICOM ECG: a malformed "
                                          r"element") as raised:
        read_recording(tmp_path / "vr.dcm", LIMIT_BYTES)
    assert "Healthcare" not in str(raised.value)


def test_dicom_rails_follow_bits_stored(shared_data: Path, tmp_path: Path) -> None:
    """16 bits stored at 4.88 uV: +-160 mV rails; 12 bits stored: +-10 mV."""
    path = shared_data / "dicom" / "example-DICOM1.dcm"
    recording = read_recording(path, LIMIT_BYTES)
    np.testing.assert_allclose(recording.rails_mv,
                               np.tile([-32768 * 4.88e-3, 32767 * 4.88e-3], (12, 1)))
    dataset = pydicom.dcmread(str(path))
    for group in dataset.WaveformSequence:
        for channel in group.ChannelDefinitionSequence:
            channel.WaveformBitsStored = 12
    dataset.save_as(str(tmp_path / "bits12.dcm"))
    narrow = read_recording(tmp_path / "bits12.dcm", LIMIT_BYTES)
    np.testing.assert_allclose(narrow.rails_mv, np.tile([-2048 * 4.88e-3, 2047 * 4.88e-3],
                                                        (12, 1)))


def test_dicom_without_waveform_refused(shared_data: Path, tmp_path: Path) -> None:
    """A valid DICOM file whose WaveformSequence was removed is refused by name."""
    dataset = pydicom.dcmread(str(shared_data / "dicom" / "example-DICOM1.dcm"))
    del dataset.WaveformSequence
    dataset.save_as(str(tmp_path / "nowave.dcm"))
    with pytest.raises(RecordError, match=r"^nowave\.dcm: DICOM without a WaveformSequence"):
        read_recording(tmp_path / "nowave.dcm", LIMIT_BYTES)


def test_dicom_missing_sensitivity_refused(shared_data: Path, tmp_path: Path) -> None:
    """A channel without sensitivity has no known amplitude and is refused."""
    dataset = pydicom.dcmread(str(shared_data / "dicom" / "example-DICOM1.dcm"))
    for group in dataset.WaveformSequence:
        del group.ChannelDefinitionSequence[0].ChannelSensitivity
    dataset.save_as(str(tmp_path / "nosens.dcm"))
    with pytest.raises(RecordError, match=r"^nosens\.dcm: channel I has no sensitivity"):
        read_recording(tmp_path / "nosens.dcm", LIMIT_BYTES)


def test_dicom_garbage_refused(tmp_path: Path) -> None:
    """Bytes that are not DICOM, named .dcm, give one RecordError line."""
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(64))
    with pytest.raises(RecordError, match=r"^junk\.dcm: "):
        read_recording(tmp_path / "junk.dcm", LIMIT_BYTES)


# --- EDF --------------------------------------------------------------------------------

def test_edf_real_file(shared_data: Path) -> None:
    """The Contec EDF: 12 leads at 800 Hz, 47.3 s, start time, placeholder patient ignored."""
    path = shared_data / "edf" / "0000050.ECG.edf"
    recording = read_recording(path, LIMIT_BYTES)
    assert recording.format == "edf"
    assert recording.lead_names == STANDARD_LEADS
    assert recording.fs_hz == 800.0
    assert recording.n_samples == 37855
    assert recording.start_time is None  # EDF states no zone: local time, not guessed
    assert recording.metadata["start_time_local"] == "2020-11-16T21:44:39"
    np.testing.assert_allclose(recording.rails_mv, np.tile([-1000.0, 1000.0], (12, 1)),
                               rtol=1e-3)
    assert recording.patient_id is None
    assert np.all(np.ptp(recording.samples_mv[6:], axis=1) == 0)  # V1-V6 are flat
    # wfdb rounds the EDF baseline to an integer: agreement within one digital step.
    step_mv = 2000.0 / 65535.0
    reference = read_edf(str(path)).p_signal.T
    assert np.max(np.abs(recording.samples_mv - reference)) <= step_mv


def _write_edf(path: Path, patient: str, reserved: str, n_records: int,
               digital: np.ndarray, labels: List[str], unit: str = "mV") -> Path:
    """Write a plain EDF with 1 sample per record per signal (like the Contec file)."""
    n_signals = len(labels)

    def field(values: List[str], width: int) -> str:
        return "".join(v.ljust(width)[:width] for v in values)

    header = ("0".ljust(8) + patient.ljust(80) + "Startdate 02-MAR-2021 X X X".ljust(80)
              + "02.03.21" + "10.20.30" + str(256 * (n_signals + 1)).ljust(8)
              + reserved.ljust(44) + str(n_records).ljust(8) + "0.002".ljust(8)
              + str(n_signals).ljust(4))
    header += (field(labels, 16) + field(["AgAgCl"] * n_signals, 80)
               + field([unit] * n_signals, 8) + field(["-32.768"] * n_signals, 8)
               + field(["32.767"] * n_signals, 8) + field(["-32768"] * n_signals, 8)
               + field(["32767"] * n_signals, 8) + field([""] * n_signals, 80)
               + field(["1"] * n_signals, 8) + field([""] * n_signals, 32))
    path.write_bytes(header.encode("ascii") + digital.astype("<i2").tobytes())
    return path


def test_edf_written_values_and_patient(tmp_path: Path) -> None:
    """Known digital values scale to mV (1 uV/LSB), 500 Hz, EDF+ patient code taken."""
    digital = np.arange(200, dtype=np.int16).reshape(100, 2) - 100
    path = _write_edf(tmp_path / "w.edf", "MCH-0234567 F 02-MAY-1951 Haagse_Harry", "EDF+C",
                      100, digital, ["ECG I", "ECG II"])
    recording = edf_format.read(path, LIMIT_BYTES)
    assert recording.lead_names == ("I", "II")
    assert recording.fs_hz == 500.0
    assert recording.patient_id == "MCH-0234567"
    np.testing.assert_allclose(recording.samples_mv, digital.T / 1000.0, atol=1e-6)
    assert recording.metadata["start_time_local"] == "2021-03-02T10:20:30"
    np.testing.assert_allclose(recording.rails_mv, [[-32.768, 32.767]] * 2)


@pytest.mark.parametrize("date, clock, reason", [
    ("31.02.21", "10.20.30", "not a valid calendar date"),
    ("XX.XX.XX", "XX.XX.XX", "not dd.mm.yy hh.mm.ss"),
])
def test_edf_bad_start_time_keeps_the_signal(tmp_path: Path, date: str, clock: str,
                                             reason: str) -> None:
    """An impossible or masked EDF start date/time is noted; the samples are read."""
    digital = np.arange(200, dtype=np.int16).reshape(100, 2) - 100
    path = _write_edf(tmp_path / "w.edf", "X", "", 100, digital, ["I", "II"])
    data = path.read_bytes()
    path.write_bytes(data[:168] + (date + clock).encode("ascii") + data[184:])
    recording = read_recording(path, LIMIT_BYTES)
    assert recording.start_time is None
    assert reason in recording.metadata["start_time_error"]
    assert recording.samples_mv.shape == (2, 100)


def test_edf_truncated_refused(tmp_path: Path) -> None:
    """An EDF whose data section is shorter than its declared record count is refused."""
    path = _write_edf(tmp_path / "t.edf", "X", "", 100, np.zeros((60, 2)), ["I", "II"])
    with pytest.raises(RecordError, match=r"^t\.edf: truncated: its 240 data bytes hold 60 "
                                          r"data records, fewer than the header declares"):
        read_recording(path, LIMIT_BYTES)


def test_edf_extra_data_refused(tmp_path: Path) -> None:
    """An EDF with more data than the header's record count is a length mismatch."""
    path = _write_edf(tmp_path / "x.edf", "X", "", 50, np.zeros((60, 2)), ["I", "II"])
    with pytest.raises(RecordError, match=r"^x\.edf: header/data length mismatch"):
        read_recording(path, LIMIT_BYTES)


def test_edf_non_voltage_refused(tmp_path: Path) -> None:
    """A signal in degC is not an ECG lead and is refused."""
    path = _write_edf(tmp_path / "u.edf", "X", "", 10, np.zeros((10, 1)), ["Temp"], unit="degC")
    with pytest.raises(RecordError, match=r"^u\.edf: signal channel 1 has a physical "
                                          r"dimension that is not a voltage"):
        read_recording(path, LIMIT_BYTES)


# --- read_recording path checks and unsupported files -----------------------------------

def test_file_over_limit_refused_unread(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """A file larger than the limit is refused from its size; its format reader never runs."""
    def fail(*args, **kwargs):
        raise AssertionError("reader called")

    monkeypatch.setattr(edf_format, "read", fail)
    path = shared_data / "edf" / "0000050.ECG.edf"
    with pytest.raises(RecordError, match=r"^0000050\.ECG\.edf: \d+ bytes exceeds the limit"):
        read_recording(path, path.stat().st_size - 1)


def test_directory_and_symlink_refused(shared_data: Path, tmp_path: Path) -> None:
    """A directory or a symlink given as a recording is refused with its name."""
    (tmp_path / "rec.hea").mkdir()
    with pytest.raises(RecordError, match=r"^rec\.hea: is a directory"):
        read_recording(tmp_path / "rec.hea", LIMIT_BYTES)
    (tmp_path / "link.hea").symlink_to(shared_data / "cinc2021" / "E07500.hea")
    with pytest.raises(RecordError, match=r"^link\.hea: is a symbolic link"):
        read_recording(tmp_path / "link.hea", LIMIT_BYTES)


def test_unsupported_files_named(shared_data: Path) -> None:
    """SCP-ECG and a header-less MATLAB file are refused with the reason."""
    with pytest.raises(RecordError, match=r"^Example\.scp: SCP-ECG is not supported"):
        read_recording(shared_data / "scp-ecg" / "Example.scp", LIMIT_BYTES)
    with pytest.raises(RecordError, match=r"^A1980\.mat: .*sampling rate and lead names are "
                                          r"not stored"):
        read_recording(shared_data / "cpsc2018" / "A1980.mat", LIMIT_BYTES)

