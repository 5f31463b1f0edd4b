"""Binary and tabular readers (WFDB, CSV, NumPy .npz, DICOM, EDF) on real files and bad input."""
from __future__ import annotations

import datetime as dt
import io
import os
import shutil
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
from ecgd.records import edf_format, wfdb_format
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS

LIMIT_BYTES = 64 * 1024 * 1024


def _headers(folder: Path) -> List[Path]:
    return sorted(folder.glob("*.hea"))


# --- WFDB -------------------------------------------------------------------------------

def test_cinc2021_equals_wfdb_physical_read(shared_data: Path) -> None:
    """Every CinC 2021 record reads as 12 standard leads at 500 Hz equal to wfdb's own mV."""
    headers = _headers(shared_data / "cinc2021")
    assert len(headers) == 26
    for header in headers:
        recording = read_recording(header, LIMIT_BYTES)
        reference = wfdb.rdrecord(str(header.with_suffix(""))).p_signal.T
        assert recording.format == "wfdb"
        assert recording.fs_hz == 500.0
        assert recording.lead_names == STANDARD_LEADS
        assert recording.samples_mv.dtype == np.float32
        np.testing.assert_allclose(recording.samples_mv, reference, atol=1e-6)
        assert recording.metadata["dx_snomed"]


def test_cinc_lower_case_mv_unit_is_millivolts(shared_data: Path) -> None:
    """The HR* headers spell the unit 'mv'; amplitudes stay in the same mV range as 'mV'."""
    recording = read_recording(shared_data / "cinc2021" / "HR06000.hea", LIMIT_BYTES)
    peak_mv = np.percentile(np.abs(recording.samples_mv), 99.9)
    assert 0.2 < peak_mv < 5.0


def test_ludb_lead_ii_r_peak_plausible(shared_data: Path) -> None:
    """LUDB (lower-case names, per-lead gain and baseline) gives lead II R peaks of 0.3-4 mV."""
    for header in _headers(shared_data / "ludb" / "data")[:5]:
        recording = read_recording(header, LIMIT_BYTES)
        assert recording.lead_names == STANDARD_LEADS
        lead_ii = recording.samples_mv[STANDARD_LEADS.index("II")]
        r_peak_mv = float(np.max(np.abs(lead_ii - np.median(lead_ii))))
        assert 0.3 <= r_peak_mv <= 4.0, (header.name, r_peak_mv)


def test_mitdb_keeps_channel_order(shared_data: Path) -> None:
    """mitdb 100 is MLII then V5; 114 stores V5 first, and the reader keeps that order."""
    record_100 = read_recording(shared_data / "mitdb" / "100.hea", LIMIT_BYTES)
    record_114 = read_recording(shared_data / "mitdb" / "114.hea", LIMIT_BYTES)
    assert record_100.lead_names == ("MLII", "V5")
    assert record_114.lead_names == ("V5", "MLII")
    assert record_114.fs_hz == 360.0
    assert record_114.n_samples == 650000
    reference = wfdb.rdrecord(str(shared_data / "mitdb" / "114"), sampto=3600).p_signal.T
    np.testing.assert_allclose(record_114.samples_mv[:, :3600], reference, atol=1e-6)


def test_svdb_duplicate_ecg_channels_are_numbered(shared_data: Path) -> None:
    """svdb 800 (128 Hz) has two channels both called 'ECG'; they become ECG_1 and ECG_2."""
    recording = read_recording(shared_data / "svdb" / "800.hea", LIMIT_BYTES)
    assert recording.fs_hz == 128.0
    assert recording.lead_names == ("ECG_1", "ECG_2")
    assert recording.metadata["original_lead_names"] == ["ECG", "ECG"]


def test_ptbdb_reads_two_signal_files(shared_data: Path) -> None:
    """ptbdb s0010_re: 12 leads from .dat plus Frank vx/vy/vz from .xyz, 1000 Hz, 38.4 s."""
    recording = read_recording(shared_data / "ptbdb" / "s0010_re.hea", LIMIT_BYTES)
    assert recording.lead_names == STANDARD_LEADS + ("vx", "vy", "vz")
    assert recording.fs_hz == 1000.0
    assert recording.duration_s == pytest.approx(38.4)
    assert recording.metadata["signal_files"] == ["s0010_re.dat", "s0010_re.xyz"]


def test_nstdb_noise_channels_keep_their_names(shared_data: Path) -> None:
    """Noise records (uncalibrated gain 0 -> wfdb's 200/mV) and 118e00 read with their names."""
    names = {h.stem: read_recording(h, LIMIT_BYTES).lead_names
             for h in _headers(shared_data / "nstdb")}
    assert names == {"bw": ("noise1", "noise2"), "ma": ("noise1", "noise2"),
                     "118e00": ("MLII", "V1")}


def test_egm_reads_as_header_says_with_start_and_patient(shared_data: Path) -> None:
    """EGM muse-af: upper-case odd lead order normalized, base date/time, MRN as patient_id."""
    recording = read_recording(shared_data / "ge-muse-xml" / "EGM" / "muse-af.hea", LIMIT_BYTES)
    assert recording.lead_names[3:6] == ("aVF", "aVL", "aVR")
    assert recording.start_time == dt.datetime(2010, 1, 4, 11, 10, 4, tzinfo=dt.timezone.utc)
    assert recording.patient_id is not None and recording.patient_id.isdigit()
    assert recording.patient_id not in repr(recording.metadata)
    reference = wfdb.rdrecord(str(shared_data / "ge-muse-xml" / "EGM" / "muse-af")).p_signal.T
    np.testing.assert_allclose(recording.samples_mv, reference, atol=1e-6)
    flat = read_recording(shared_data / "ge-muse-xml" / "EGM" / "bad-ecg.hea", LIMIT_BYTES)
    assert not np.any(flat.samples_mv)


def test_every_shared_wfdb_record_reads(shared_data: Path) -> None:
    """Every WFDB header in ../shared/data gives a finite float32 Recording."""
    headers = sorted(shared_data.rglob("*.hea"))
    assert len(headers) > 100
    for header in headers:
        recording = read_recording(header, LIMIT_BYTES)
        assert recording.samples_mv.dtype == np.float32
        assert np.all(np.isfinite(recording.samples_mv))


@pytest.fixture()
def ludb_copy(shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of LUDB record 1 (header + .dat) in a temp dir."""
    for suffix in (".hea", ".dat"):
        shutil.copyfile(shared_data / "ludb" / "data" / f"1{suffix}", tmp_path / f"1{suffix}")
    return tmp_path / "1.hea"


def _edit_header_length(header: Path, n_samples: int) -> None:
    lines = header.read_text().splitlines()
    fields = lines[0].split()
    fields[3] = str(n_samples)
    header.write_text("\n".join([" ".join(fields)] + lines[1:]) + "\n")


def test_truncated_dat_refused(ludb_copy: Path) -> None:
    """A .dat cut short (on a frame boundary, which wfdb would not notice) is refused."""
    data = ludb_copy.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:24000 * 2])
    with pytest.raises(RecordError, match=r"^1\.hea: .*truncated.*2000 of the 5000"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_header_shorter_than_data_refused(ludb_copy: Path) -> None:
    """A header declaring fewer samples than the .dat holds is a length mismatch."""
    _edit_header_length(ludb_copy, 4000)
    with pytest.raises(RecordError, match=r"^1\.hea: header/data length mismatch"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_header_without_signal_lines_refused(ludb_copy: Path) -> None:
    """A record line declaring 12 signals with no signal lines is a RecordError, not a crash."""
    ludb_copy.write_text(ludb_copy.read_text().splitlines()[0] + "\n")
    with pytest.raises(RecordError, match=r"^1\.hea: header declares 12 signals but has 0"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_header_longer_than_data_refused(ludb_copy: Path) -> None:
    """A header declaring more samples than the .dat holds is refused as truncated."""
    _edit_header_length(ludb_copy, 6000)
    with pytest.raises(RecordError, match=r"^1\.hea: .*truncated"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_missing_dat_refused(ludb_copy: Path) -> None:
    """A header whose signal file is absent names that file."""
    ludb_copy.with_suffix(".dat").unlink()
    with pytest.raises(RecordError, match=r"^1\.hea: signal file 1\.dat cannot be opened"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_signal_file_path_outside_folder_refused(ludb_copy: Path) -> None:
    """A header naming a signal file in another directory is refused (wfdb's grammar or ours)."""
    (ludb_copy.parent / "sub").mkdir()
    shutil.copyfile(ludb_copy.with_suffix(".dat"), ludb_copy.parent / "sub" / "1.dat")
    ludb_copy.write_text(ludb_copy.read_text().replace("1.dat", "sub/1.dat"))
    with pytest.raises(RecordError, match=r"^1\.hea: (not a readable WFDB header|signal file)"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_unknown_unit_refused(ludb_copy: Path) -> None:
    """A channel whose unit is not a voltage (mmHg) is refused."""
    lines = ludb_copy.read_text().splitlines()
    lines[1] = lines[1].replace("/mV", "/mmHg")
    ludb_copy.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"^1\.hea: channel i has unit 'mmHg'"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_microvolt_unit_converted(ludb_copy: Path) -> None:
    """The same digital values under a uV header come out 1000x smaller in mV."""
    original = read_recording(ludb_copy, LIMIT_BYTES).samples_mv
    ludb_copy.write_text(ludb_copy.read_text().replace("/mV", "/uV"))
    converted = read_recording(ludb_copy, LIMIT_BYTES).samples_mv
    np.testing.assert_allclose(converted * 1000.0, original, rtol=1e-5, atol=1e-6)


def test_invalid_sample_marker_refused(ludb_copy: Path) -> None:
    """A WFDB invalid-sample value (-32768 in format 16) becomes NaN and is refused."""
    data = bytearray(ludb_copy.with_suffix(".dat").read_bytes())
    data[100:102] = np.int16(-32768).tobytes()
    ludb_copy.with_suffix(".dat").write_bytes(bytes(data))
    with pytest.raises(RecordError, match=r"^1\.hea: missing or non-finite samples"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_wfdb_over_limit_refused_before_reading(ludb_copy: Path, monkeypatch) -> None:
    """Header + data over the limit is refused from sizes alone: wfdb.rdrecord never runs."""
    def fail(*args, **kwargs):
        raise AssertionError("rdrecord called")

    monkeypatch.setattr(wfdb_format.wfdb, "rdrecord", fail)
    with pytest.raises(RecordError, match=r"^1\.hea: .*over the limit of 100000 bytes"):
        read_recording(ludb_copy, 100000)


def test_absurd_sampling_rate_refused(ludb_copy: Path) -> None:
    """A header rate of 1 MHz is refused by validation with the file name."""
    lines = ludb_copy.read_text().splitlines()
    lines[0] = lines[0].replace(" 500 ", " 1000000 ")
    ludb_copy.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"^1\.hea: implausible sampling rate"):
        read_recording(ludb_copy, LIMIT_BYTES)


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
    ("# fs_hz=0, units=mV", "I,II", ["0.1,0.2"], r"sampling rate 0 Hz is not a positive"),
    ("# fs_hz=500, units=mV", "I,II", ["0.1,0.2", "0.1,nan"], r"NaN or Inf samples in II"),
    ("# fs_hz=500, units=mV", "I,II", ["0.1,0.2", "inf,0.1"], r"NaN or Inf samples in I"),
    ("# fs_hz=500, units=mV", "I,II,III", ["0.1,0.2,0.3", "0.1,0.2"],
     r"line 4: 2 values, header has 3 columns"),
    ("# fs_hz=500, units=mV", "I,II", ["0.1,"], r"line 3: a value is empty or not a number"),
    ("# fs_hz=500, units=mV", "I,II", [], r"header but no samples"),
    ("# fs_hz=500, units=V", "I,II", ["0.1,0.2"], r"units 'V' not supported"),
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
    with pytest.raises(RecordError, match=r"^forged\.npz: member signal\.npy declares"):
        read_recording(path, LIMIT_BYTES)


def test_csv_absurd_rate_refused(tmp_path: Path) -> None:
    """fs_hz=1e6 passes parsing but is refused by validation with the file name."""
    path = _write_csv(tmp_path / "fast.csv", "# fs_hz=1e6, units=mV", "I", ["0.1", "0.2"])
    with pytest.raises(RecordError, match=r"^fast\.csv: implausible sampling rate"):
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
    ({"units": "counts"}, r"units 'counts' not supported"),
    ({"fs_hz": 0.0}, r"sampling rate 0\.0 Hz is not a positive"),
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
    with pytest.raises(RecordError, match=r"^fast\.npz: implausible sampling rate"):
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
    assert recording.start_time is not None and recording.start_time.tzinfo is not None
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
    assert recording.start_time == dt.datetime(2020, 11, 16, 21, 44, 39, tzinfo=dt.timezone.utc)
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
    assert recording.start_time == dt.datetime(2021, 3, 2, 10, 20, 30, tzinfo=dt.timezone.utc)


def test_edf_truncated_refused(tmp_path: Path) -> None:
    """An EDF whose data section is shorter than its declared record count is refused."""
    path = _write_edf(tmp_path / "t.edf", "X", "", 100, np.zeros((60, 2)), ["I", "II"])
    with pytest.raises(RecordError, match=r"^t\.edf: truncated: .* 60 of the 100 data records"):
        read_recording(path, LIMIT_BYTES)


def test_edf_extra_data_refused(tmp_path: Path) -> None:
    """An EDF with more data than the header's record count is a length mismatch."""
    path = _write_edf(tmp_path / "x.edf", "X", "", 50, np.zeros((60, 2)), ["I", "II"])
    with pytest.raises(RecordError, match=r"^x\.edf: header/data length mismatch"):
        read_recording(path, LIMIT_BYTES)


def test_edf_non_voltage_refused(tmp_path: Path) -> None:
    """A signal in degC is not an ECG lead and is refused."""
    path = _write_edf(tmp_path / "u.edf", "X", "", 10, np.zeros((10, 1)), ["Temp"], unit="degC")
    with pytest.raises(RecordError, match=r"^u\.edf: signal Temp has physical dimension"):
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

