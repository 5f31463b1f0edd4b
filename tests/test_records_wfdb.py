"""The WFDB reader (ecgd/records/wfdb_format.py, wfdb_header.py) against the ``wfdb`` package
on every WFDB record in ../shared/data and on files of every storage format, plus bad
headers and signal files."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import wfdb

from ecgd.cli import main
from ecgd.errors import RecordError
from ecgd.records import wfdb_format
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS

LIMIT_BYTES = 64 * 1024 * 1024
_MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3}


def _headers(folder: Path) -> List[Path]:
    return sorted(folder.glob("*.hea"))


def _wfdb_float32_mv(header: Path) -> np.ndarray:
    """What ecgd returned while it read WFDB through ``wfdb``: its float64 physical values,
    scaled to mV by the header unit, as float32."""
    record = wfdb.rdrecord(str(header.with_suffix("")), physical=True, return_res=64)
    scale = np.array([_MV_PER_UNIT[(unit or "mV").lower()] for unit in record.units])
    return (record.p_signal.T * scale[:, np.newaxis]).astype(np.float32)


# --- every real record, against wfdb -----------------------------------------------------

def test_every_shared_record_equals_wfdb(shared_data: Path) -> None:
    """All 147 WFDB records of the shared data (formats 16, 212, the .mat variant, two signal
    files, gain 0, baselines) give wfdb's samples bit for bit (so within 1e-6 mV)."""
    headers = sorted(shared_data.rglob("*.hea"))
    assert len(headers) == 147
    for header in headers:
        recording = read_recording(header, LIMIT_BYTES)
        np.testing.assert_array_equal(recording.samples_mv, _wfdb_float32_mv(header),
                                      err_msg=str(header))
        assert recording.samples_mv.dtype == np.float32
        assert recording.fs_hz == wfdb.rdheader(str(header.with_suffix(""))).fs


def test_reading_wfdb_never_imports_the_wfdb_package(shared_data: Path) -> None:
    """The appliance reads WFDB without the wfdb package (it is a test-only dependency)."""
    code = ("import sys; from ecgd.records.reader import read_recording; "
            f"read_recording({str(shared_data / 'mitdb' / '100.hea')!r}, 1 << 26); "
            "print(sorted(m for m in ('wfdb', 'pandas', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_cinc2021_reads_twelve_standard_leads_with_labels(shared_data: Path) -> None:
    """CinC 2021 (.mat signal files): 12 standard leads at 500 Hz, SNOMED codes kept."""
    for header in _headers(shared_data / "cinc2021"):
        recording = read_recording(header, LIMIT_BYTES)
        assert recording.format == "wfdb"
        assert recording.fs_hz == 500.0
        assert recording.lead_names == STANDARD_LEADS
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
    """Noise records (gain 0: WFDB's uncalibrated 200/mV, noted) and 118e00 keep names."""
    recordings = {h.stem: read_recording(h, LIMIT_BYTES) for h in _headers(shared_data / "nstdb")}
    assert {stem: r.lead_names for stem, r in recordings.items()} == {
        "bw": ("noise1", "noise2"), "ma": ("noise1", "noise2"), "118e00": ("MLII", "V1")}
    assert recordings["bw"].metadata["uncalibrated_signals"] == [1, 2]
    assert "uncalibrated_signals" not in recordings["118e00"].metadata


def test_egm_reads_as_header_says_with_local_start_and_patient(shared_data: Path) -> None:
    """EGM muse-af: upper-case odd lead order normalized, the zone-less base date/time kept
    as local time (never guessed as UTC), MRN as patient_id; bad-ecg is all zero."""
    recording = read_recording(shared_data / "ge-muse-xml" / "EGM" / "muse-af.hea", LIMIT_BYTES)
    assert recording.lead_names[3:6] == ("aVF", "aVL", "aVR")
    assert recording.start_time is None
    assert recording.metadata["start_time_local"] == "2010-01-04T11:10:04"
    assert recording.patient_id is not None and recording.patient_id.isdigit()
    assert recording.patient_id not in repr(recording.metadata)
    flat = read_recording(shared_data / "ge-muse-xml" / "EGM" / "bad-ecg.hea", LIMIT_BYTES)
    assert not np.any(flat.samples_mv)


def test_rails_come_from_adc_resolution_or_format(shared_data: Path) -> None:
    """mitdb 100 (212, 11-bit ADC, zero 1024, gain 200): rails -5.12..5.115 mV; CinC (16,
    16-bit, gain 1000): the int16 range less the invalid value, in mV."""
    mitdb = read_recording(shared_data / "mitdb" / "100.hea", LIMIT_BYTES)
    np.testing.assert_allclose(mitdb.rails_mv, [[-5.12, 5.115], [-5.12, 5.115]])
    cinc = read_recording(shared_data / "cinc2021" / "E07500.hea", LIMIT_BYTES)
    np.testing.assert_allclose(cinc.rails_mv, np.tile([-32.767, 32.767], (12, 1)))
    for recording in (mitdb, cinc):
        assert np.all(recording.samples_mv >= recording.rails_mv[:, :1] - 1e-6)
        assert np.all(recording.samples_mv <= recording.rails_mv[:, 1:] + 1e-6)


# --- every storage format, against wfdb --------------------------------------------------

_BITS = {"8": 8, "80": 8, "16": 16, "61": 16, "160": 16, "24": 24, "32": 32, "212": 12,
         "310": 10, "311": 10}


def _encode(fmt: str, digital: np.ndarray, initial: Sequence[int]) -> bytes:
    """``digital`` ``[n, signals]`` in WFDB format ``fmt``, written value by value from the
    signal(5) page (independently of the reader's vectorized decoder)."""
    frames = [int(v) for v in digital.reshape(-1)]
    if fmt == "8":
        previous = list(initial)
        out = bytearray()
        for row in digital.tolist():
            for channel, value in enumerate(row):
                out.append((value - previous[channel]) & 0xFF)
                previous[channel] = value
        return bytes(out)
    if fmt in ("80", "16", "61", "160", "24", "32"):
        width = {"80": 1, "16": 2, "61": 2, "160": 2, "24": 3, "32": 4}[fmt]
        order = "big" if fmt == "61" else "little"
        offset = {"80": 128, "160": 32768}.get(fmt, 0)
        return b"".join((v + offset).to_bytes(width, order, signed=not offset)
                        for v in frames)
    unsigned = [v & ((1 << _BITS[fmt]) - 1) for v in frames]
    per_group = 2 if fmt == "212" else 3
    unsigned += [0] * (-len(unsigned) % per_group)
    out = bytearray()
    for i in range(0, len(unsigned), per_group):
        if fmt == "212":
            a, b = unsigned[i:i + 2]
            out += bytes([a & 0xFF, (a >> 8) | ((b >> 8) << 4), b & 0xFF])
        elif fmt == "310":
            a, b, c = unsigned[i:i + 3]
            first = (a << 1) | ((c & 0x1F) << 11)
            second = (b << 1) | ((c >> 5) << 11)
            out += first.to_bytes(2, "little") + second.to_bytes(2, "little")
        else:
            a, b, c = unsigned[i:i + 3]
            out += (a | (b << 10) | (c << 20)).to_bytes(4, "little")
    if fmt == "212" and len(frames) % 2:
        out = out[:-1]  # an odd count ends mid-group: WFDB writes only the bytes it needs
    return bytes(out)


@pytest.mark.parametrize("fmt", sorted(_BITS, key=int))
@pytest.mark.parametrize("n_samples", [1000, 1001])
def test_every_storage_format_equals_wfdb(tmp_path: Path, fmt: str, n_samples: int) -> None:
    """Each format the field uses (8, 16, 24, 32, 61, 80, 160, 212, 310, 311), with a length
    that ends mid-group too, decodes to the values written and to wfdb's physical values."""
    rng = np.random.default_rng(int(fmt) + n_samples)
    bits = _BITS[fmt]
    initial = [5, -7, 0]
    if fmt == "8":
        steps = rng.integers(-100, 100, size=(n_samples, 3))
        digital = np.array(initial) + np.cumsum(steps, axis=0)
    else:
        digital = rng.integers(-(1 << (bits - 1)) + 1, 1 << (bits - 1), size=(n_samples, 3))
        digital[:3] = [[-(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1, 0]] * 3  # extremes
    (tmp_path / "rec.dat").write_bytes(_encode(fmt, digital, initial))
    lines = [f"rec 3 500 {n_samples}"] + [
        f"rec.dat {fmt} 400({-3 * i})/mV {bits} 0 {initial[i]} 0 0 {name}"
        for i, name in enumerate(("I", "II", "V1"))]
    (tmp_path / "rec.hea").write_text("\n".join(lines) + "\n")
    recording = read_recording(tmp_path / "rec.hea", LIMIT_BYTES)
    expected_mv = ((digital.T + 3.0 * np.arange(3)[:, np.newaxis]) / 400.0).astype(np.float32)
    np.testing.assert_array_equal(recording.samples_mv, expected_mv)
    np.testing.assert_array_equal(recording.samples_mv, _wfdb_float32_mv(tmp_path / "rec.hea"))


@pytest.mark.parametrize("fmt", ["80", "16", "24", "32", "212"])
def test_files_written_by_wfdb_read_back(tmp_path: Path, fmt: str) -> None:
    """Records written by wfdb's own writer (the formats it writes) read back exactly."""
    rng = np.random.default_rng(3)
    bits = _BITS[fmt]
    digital = rng.integers(-(1 << (bits - 1)) + 1, 1 << (bits - 1), size=(777, 2))
    wfdb.wrsamp("w", fs=250, units=["uV", "mV"], sig_name=["V2", "V3"], d_signal=digital,
                fmt=[fmt, fmt], adc_gain=[2.5, 200.0], baseline=[7, -1], write_dir=str(tmp_path))
    recording = read_recording(tmp_path / "w.hea", LIMIT_BYTES)
    np.testing.assert_array_equal(recording.samples_mv, _wfdb_float32_mv(tmp_path / "w.hea"))
    assert recording.lead_names == ("V2", "V3")


# --- headers that are valid but unusual --------------------------------------------------

@pytest.fixture()
def mitdb_copy(shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of mitdb record 100 (format 212) in a temp dir."""
    for suffix in (".hea", ".dat"):
        shutil.copyfile(shared_data / "mitdb" / f"100{suffix}", tmp_path / f"100{suffix}")
    return tmp_path / "100.hea"


@pytest.fixture()
def ludb_copy(shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of LUDB record 1 (header + .dat) in a temp dir."""
    for suffix in (".hea", ".dat"):
        shutil.copyfile(shared_data / "ludb" / "data" / f"1{suffix}", tmp_path / f"1{suffix}")
    return tmp_path / "1.hea"


def _edit_lines(header: Path, edit) -> None:
    lines = header.read_text().splitlines()
    header.write_text("\n".join(edit(lines)) + "\n")


def test_signal_lines_without_description_are_read(mitdb_copy: Path) -> None:
    """A signal line ending after the block size (no description: valid WFDB) reads, its
    channels named by position."""
    original = read_recording(mitdb_copy, LIMIT_BYTES)
    _edit_lines(mitdb_copy, lambda lines: [lines[0]] + [
        line.rsplit(" ", 1)[0] for line in lines[1:3]])
    recording = read_recording(mitdb_copy, LIMIT_BYTES)
    assert recording.lead_names == ("channel1", "channel2")
    np.testing.assert_array_equal(recording.samples_mv, original.samples_mv)


def test_signal_lines_with_only_file_and_format_take_the_defaults(mitdb_copy: Path) -> None:
    """'100.dat 212' alone means gain 200/mV, baseline = ADC zero = 0, unit mV."""
    _edit_lines(mitdb_copy, lambda lines: [lines[0], "100.dat 212", "100.dat 212"])
    recording = read_recording(mitdb_copy, LIMIT_BYTES)
    np.testing.assert_array_equal(recording.samples_mv, _wfdb_float32_mv(mitdb_copy))
    assert recording.metadata["uncalibrated_signals"] == [1, 2]


def test_base_date_9999_keeps_the_signal_and_analyze_succeeds(
        mitdb_copy: Path, capsys: pytest.CaptureFixture, reference_manifest: Path) -> None:
    """Base time 23:59:59 on 31/12/9999 (30 min of signal would pass year 9999) is local
    time, never an overflow: analyze writes every window's report and exits 0."""
    _edit_lines(mitdb_copy, lambda lines: [
        "100 2 360 21600 23:59:59 31/12/9999", *lines[1:3]])
    (mitdb_copy.parent / "100.dat").write_bytes(
        (mitdb_copy.parent / "100.dat").read_bytes()[:21600 * 3])
    recording = read_recording(mitdb_copy, LIMIT_BYTES)
    assert recording.start_time is None
    assert recording.metadata["start_time_local"] == "9999-12-31T23:59:59"
    code = main(["analyze", "--model", str(reference_manifest), str(mitdb_copy)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(out.splitlines()) == 6


@pytest.mark.parametrize("clock_date, reason", [
    ("25:61:00 01/01/2020", "not a valid calendar date"),
    ("10:00:00 31/02/2020", "not a valid calendar date"),
    ("XX:XX:XX XX/XX/XXXX", "not HH:MM:SS DD/MM/YYYY"),
])
def test_bad_base_date_keeps_the_signal(mitdb_copy: Path, clock_date: str,
                                        reason: str) -> None:
    """An impossible or masked base time/date is noted; the samples are read as usual."""
    _edit_lines(mitdb_copy, lambda lines: [lines[0] + " " + clock_date, *lines[1:]])
    recording = read_recording(mitdb_copy, LIMIT_BYTES)
    assert recording.start_time is None
    assert reason in recording.metadata["start_time_error"]
    assert recording.n_samples == 650000


# --- headers and signal files that are refused -------------------------------------------

def test_header_naming_itself_as_its_signal_file_is_refused(mitdb_copy: Path) -> None:
    """A header whose signal lines name the header itself is refused with that reason."""
    _edit_lines(mitdb_copy, lambda lines: [lines[0]] + [
        line.replace("100.dat", "100.hea") for line in lines[1:]])
    with pytest.raises(RecordError, match=r"^100\.hea: line 2: the header names itself as "
                                          r"its signal file"):
        read_recording(mitdb_copy, LIMIT_BYTES)


@pytest.mark.parametrize("edit, reason", [
    (lambda lines: ["100/2 2 360 650000", *lines[1:]], r"multi-segment WFDB records"),
    (lambda lines: ["100 2", *lines[1:]], r"states no sampling rate"),
    (lambda lines: ["100 2 0 650000", *lines[1:]], r"sampling rate is not a positive number"),
    (lambda lines: [lines[0], *[line.replace(" 212 ", " 516 ") for line in lines[1:]]],
     r"line 2: the WFDB signal format is not supported"),
    (lambda lines: [lines[0], *[line.replace(" 212 ", " 212x2 ") for line in lines[1:]]],
     r"multi-frequency"),
    (lambda lines: [lines[0], *[line.replace(" 212 ", " 212:3 ") for line in lines[1:]]],
     r"skewed"),
    (lambda lines: [lines[0], lines[1].replace(" 200 ", " 2x0 "), lines[2]],
     r"line 2: gain field is not"),
    (lambda lines: [lines[0], lines[1].replace(" 1024 ", " 10q4 "), lines[2]],
     r"line 2: ADC zero is not an integer"),
    (lambda lines: [lines[0]], r"number of signals disagrees with the 0 signal lines"),
])
def test_bad_headers_are_refused_with_line_and_field(mitdb_copy: Path, edit,
                                                     reason: str) -> None:
    """Unsupported layouts and malformed fields give one line naming the field."""
    _edit_lines(mitdb_copy, edit)
    with pytest.raises(RecordError, match=r"^100\.hea: .*" + reason):
        read_recording(mitdb_copy, LIMIT_BYTES)


@pytest.mark.parametrize("replacements, sentinel, reason", [
    ((("200", "200/Q7Z3mmHg"), ("MLII", "Q7Z3NAME")), "Q7Z3",
     r"channel 1 \(line 2\) has a unit that is not a voltage"),
    ((("100.dat", "Q7Z3.dat"),), "Q7Z3", r"the signal file of line 2 cannot be opened"),
    (((" 212 ", " 074747981 "),), "074747981", r"line 2: the WFDB signal format is not supported"),
])
def test_header_values_are_never_echoed(mitdb_copy: Path, replacements, sentinel: str,
                                        reason: str) -> None:
    """Values read from the header (a unit, a description, a file name, a format code
    that could be an MRN) stay out of the error line: it names the line and the field."""
    def edit(lines: List[str]) -> List[str]:
        first_signal_line = lines[1]
        for old, new in replacements:
            first_signal_line = first_signal_line.replace(old, new)
        return [lines[0], first_signal_line, *lines[2:]]

    _edit_lines(mitdb_copy, edit)
    with pytest.raises(RecordError, match=r"^100\.hea: .*" + reason) as raised:
        read_recording(mitdb_copy, LIMIT_BYTES)
    assert sentinel not in str(raised.value)


def test_truncated_dat_refused(ludb_copy: Path) -> None:
    """A .dat cut short (on a frame boundary) is refused as truncated."""
    data = ludb_copy.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:24000 * 2])
    with pytest.raises(RecordError, match=r"^1\.hea: the signal file of line 2 is truncated: "
                                          r"its 48000 bytes hold 2000 samples per signal"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_header_shorter_than_data_refused(ludb_copy: Path) -> None:
    """A header declaring fewer samples than the .dat holds is a length mismatch."""
    _edit_lines(ludb_copy, lambda lines: [lines[0].replace(" 5000", " 4000"), *lines[1:]])
    with pytest.raises(RecordError, match=r"^1\.hea: header/data length mismatch"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_header_longer_than_data_refused(ludb_copy: Path) -> None:
    """A header declaring more samples than the .dat holds is refused as truncated."""
    _edit_lines(ludb_copy, lambda lines: [lines[0].replace(" 5000", " 6000"), *lines[1:]])
    with pytest.raises(RecordError, match=r"^1\.hea: .*truncated"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_header_without_length_takes_it_from_the_file(ludb_copy: Path) -> None:
    """A record line without a sample count reads every whole frame the file holds."""
    original = read_recording(ludb_copy, LIMIT_BYTES)
    _edit_lines(ludb_copy, lambda lines: [lines[0].replace(" 5000", ""), *lines[1:]])
    np.testing.assert_array_equal(read_recording(ludb_copy, LIMIT_BYTES).samples_mv,
                                  original.samples_mv)


def test_missing_dat_refused(ludb_copy: Path) -> None:
    """A header whose signal file is absent says which line names it."""
    ludb_copy.with_suffix(".dat").unlink()
    with pytest.raises(RecordError, match=r"^1\.hea: the signal file of line 2 cannot be "
                                          r"opened"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_signal_file_path_outside_folder_refused(ludb_copy: Path) -> None:
    """A header naming a signal file in another directory is refused."""
    (ludb_copy.parent / "sub").mkdir()
    shutil.copyfile(ludb_copy.with_suffix(".dat"), ludb_copy.parent / "sub" / "1.dat")
    ludb_copy.write_text(ludb_copy.read_text().replace("1.dat", "sub/1.dat"))
    with pytest.raises(RecordError, match=r"^1\.hea: line 2: the signal file is not a plain "
                                          r"file name beside the header"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_unknown_unit_refused(ludb_copy: Path) -> None:
    """A channel whose unit is not a voltage (mmHg) is refused, naming the lead."""
    _edit_lines(ludb_copy, lambda lines: [lines[0], lines[1].replace("/mV", "/mmHg"),
                                          *lines[2:]])
    with pytest.raises(RecordError, match=r"^1\.hea: I \(line 2\) has a unit that is not a "
                                          r"voltage"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_microvolt_unit_converted(ludb_copy: Path) -> None:
    """The same digital values under a uV header come out 1000x smaller in mV."""
    original = read_recording(ludb_copy, LIMIT_BYTES).samples_mv
    ludb_copy.write_text(ludb_copy.read_text().replace("/mV", "/uV"))
    converted = read_recording(ludb_copy, LIMIT_BYTES).samples_mv
    np.testing.assert_allclose(converted * 1000.0, original, rtol=1e-5, atol=1e-6)


def test_invalid_sample_marker_refused(ludb_copy: Path) -> None:
    """A WFDB invalid-sample value (-32768 in format 16) is refused, naming the lead."""
    data = bytearray(ludb_copy.with_suffix(".dat").read_bytes())
    data[100:102] = np.int16(-32768).tobytes()
    ludb_copy.with_suffix(".dat").write_bytes(bytes(data))
    with pytest.raises(RecordError, match=r"^1\.hea: missing samples \(WFDB invalid-sample "
                                          r"markers\) in III"):
        read_recording(ludb_copy, LIMIT_BYTES)


def test_wfdb_over_limit_refused_before_reading(ludb_copy: Path, monkeypatch) -> None:
    """Header + data over the byte limit is refused from sizes alone: nothing is decoded."""
    def fail(*args, **kwargs):
        raise AssertionError("signal files decoded")

    monkeypatch.setattr(wfdb_format, "_decode_files", fail)
    with pytest.raises(RecordError, match=r"^1\.hea: .*over the limit of 100000 bytes"):
        read_recording(ludb_copy, 100000)


def test_wfdb_over_sample_limit_refused_before_decoding(ludb_copy: Path, monkeypatch) -> None:
    """12 x 5000 samples against a limit of 59999 is refused before any sample is decoded."""
    def fail(*args, **kwargs):
        raise AssertionError("signal files decoded")

    monkeypatch.setattr(wfdb_format, "_decode_files", fail)
    with pytest.raises(RecordError, match=r"^1\.hea: decodes to more than 59999 samples"):
        read_recording(ludb_copy, LIMIT_BYTES, max_samples=59999)
