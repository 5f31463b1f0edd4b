"""``ecgd analyze`` end to end on real recordings: JSON Lines reports valid against the schema."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from ecgd.cli import main
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS, arrange_standard_leads
from ecgd.report import SCHEMA_PATH
from ecgd.report_waveform import decode_waveform
from ecgd.signal.resample import resample_to

jsonschema = pytest.importorskip("jsonschema")
wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def validator() -> "jsonschema.protocols.Validator":
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def analyze(capsys: pytest.CaptureFixture, *argv: object) -> Tuple[int, List[dict], List[str]]:
    code = main(["analyze", *[str(a) for a in argv]])
    captured = capsys.readouterr()
    reports = [json.loads(line) for line in captured.out.splitlines()]
    errors = [line for line in captured.err.splitlines() if line]
    return code, reports, errors


REAL_FILES = [
    ("cinc2021/E07500.hea", "wfdb", 1),
    ("ludb/data/1.hea", "wfdb", 1),
    ("ptbdb/s0010_re.hea", "wfdb", 3),
    ("dicom/example-DICOM1.dcm", "dicom", 1),
    ("dicom/waveform_ecg.dcm", "dicom", 1),
    ("hl7-aecg/Example aECG.xml", "hl7-aecg", 1),
    ("ge-muse-xml/BRAVEHEART/example1.xml", "ge-muse", 1),
    ("ge-cardiosoft-xml/example-XML1.xml", "ge-cardiosoft", 1),
    ("philips-xml/129DYPRG.XML", "philips", 1),
    ("edf/0000050.ECG.edf", "edf", 4),
]


@pytest.mark.parametrize("relative, fmt, n_windows", REAL_FILES)
def test_each_format_gives_valid_reports(capsys, validator, shared_data, reference_manifest,
                                         relative, fmt, n_windows) -> None:
    """Every supported format yields one schema-valid report per 10-s window."""
    code, reports, errors = analyze(capsys, "--model", reference_manifest,
                                    shared_data / relative)
    assert code == 0, errors
    assert len(reports) == n_windows
    for index, report in enumerate(reports):
        validator.validate(report)
        assert report["source"] == {**report["source"], "kind": "file",
                                    "file": Path(relative).name, "format": fmt}
        assert report["window"]["index"] == index
        assert report["window"]["n_samples"] == 5000
        assert report["window"]["fs_hz"] == 500
        # The reference model is untrained: never a valid interpretation.
        assert report["interpretation_valid"] is False
        assert "untrained" in report["warning"]


def test_accepted_window_has_findings_and_rhythm(capsys, validator, shared_data,
                                                 reference_manifest) -> None:
    """A clean 12-lead record is accepted: 150 findings sorted by probability, heart rate."""
    code, reports, _ = analyze(capsys, "--model", reference_manifest,
                               shared_data / "cinc2021" / "HR06004.hea")
    assert code == 0
    (report,) = reports
    assert report["qc"]["status"] == "accepted", report["qc"]
    probabilities = [f["probability"] for f in report["findings"]]
    assert len(probabilities) == 150
    assert probabilities == sorted(probabilities, reverse=True)
    assert {f["label"] for f in report["findings"]} == set(
        (shared_data / "ecgfounder" / "tasks.txt").read_text().splitlines())
    assert 30 < report["measurements"]["heart_rate_bpm"] < 200
    assert len(report["measurements"]["rr_ms"]) >= 5


def test_report_ids_are_deterministic_per_content_and_window(capsys, shared_data,
                                                             reference_manifest) -> None:
    """Analyzing the same file twice gives the same report ids; windows differ from each other."""
    path = shared_data / "ptbdb" / "s0010_re.hea"
    _, first, _ = analyze(capsys, "--model", reference_manifest, path)
    _, second, _ = analyze(capsys, "--model", reference_manifest, path)
    assert [r["report_id"] for r in first] == [r["report_id"] for r in second]
    assert len({r["report_id"] for r in first}) == len(first)


def test_eight_lead_export_derives_limb_leads(capsys, shared_data, reference_manifest) -> None:
    """GE MUSE stores 8 leads: III, aVR, aVL, aVF are derived and named in the report."""
    _, reports, _ = analyze(capsys, "--model", reference_manifest,
                            shared_data / "ge-muse-xml" / "BRAVEHEART" / "example2.xml")
    assert sorted(reports[0]["window"]["leads_derived"]) == ["III", "aVF", "aVL", "aVR"]


def test_two_lead_holter_record_is_measured_but_not_interpreted(capsys, validator, shared_data,
                                                                reference_manifest,
                                                                tmp_path) -> None:
    """A 2-lead MIT-BIH record gets QC, beats, rate and intervals from its leads; the
    network does not run, and the report names every missing lead and says why."""
    signal = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=360 * 20).p_signal.T
    path = tmp_path / "two-leads.npz"
    np.savez(path, signal=signal.astype(np.float32), fs_hz=360.0,
             lead_names=np.array(["MLII", "V1"]), units="mV")
    code, reports, _ = analyze(capsys, "--model", reference_manifest, path)
    assert code == 0 and len(reports) == 2
    for report in reports:
        validator.validate(report)
        assert report["qc"]["status"] == "accepted", report["qc"]
        assert report["findings"] == [] and report["interpretation_valid"] is False
        assert "missing_lead:V6" in report["model_not_run"]
        assert "missing_lead:V1" not in report["model_not_run"]
        assert 60 < report["measurements"]["heart_rate_bpm"] < 90
        assert report["measurements"]["qrs_ms"] is not None
        assert "MLII" not in json.dumps(report)


def _synthetic_npz(tmp_path: Path, rate_bpm: float, **kwargs) -> Tuple[Path, np.ndarray]:
    from test_beats import synthetic_ecg

    leads, truth = synthetic_ecg(rate_bpm, **kwargs)
    path = tmp_path / f"fast-{rate_bpm:.0f}.npz"
    np.savez(path, signal=leads.astype(np.float32), fs_hz=500.0,
             lead_names=np.array(STANDARD_LEADS), units="mV")
    return path, truth


@pytest.mark.parametrize("rate_bpm, small_every", [(220.0, 0), (210.0, 4)])
def test_fast_rhythm_through_analyze(capsys, validator, reference_manifest, tmp_path,
                                     rate_bpm: float, small_every: int) -> None:
    """A synthetic 12-lead ECG at 210-220 bpm (every 4th QRS at half amplitude in one case)
    is accepted and reported with every beat and its rate: a 350 ms refractory period or
    no search-back loses beats."""
    path, truth = _synthetic_npz(tmp_path, rate_bpm, small_every=small_every, small_gain=0.5)
    code, (report,), _ = analyze(capsys, "--model", reference_manifest, path)
    assert code == 0
    validator.validate(report)
    assert report["qc"]["status"] == "accepted", report["qc"]
    peaks_ms = np.array(report["measurements"]["r_peaks_ms"])
    assert peaks_ms.size == truth.size
    assert np.max(np.abs(peaks_ms - truth * 2.0)) <= 30.0
    assert report["measurements"]["heart_rate_bpm"] == pytest.approx(rate_bpm, abs=3.0)


def test_short_recording_is_rejected_too_short(capsys, validator, shared_data,
                                               reference_manifest, tmp_path) -> None:
    """A recording shorter than a window gets one rejected report, never a padded diagnosis."""
    import wfdb

    record = wfdb.rdrecord(str(shared_data / "ludb" / "data" / "1"))
    signal = record.p_signal[:2500].T.astype(np.float32)
    path = tmp_path / "short.npz"
    np.savez(path, signal=signal, fs_hz=500.0, lead_names=np.array(record.sig_name),
             units="mV")
    code, reports, _ = analyze(capsys, "--model", reference_manifest, path)
    assert code == 0
    (report,) = reports
    validator.validate(report)
    assert report["qc"] == {"status": "rejected", "score": None, "reasons": ["too_short"],
                            "saturation_rule": None}
    assert report["model_not_run"] == ["too_short"]
    assert report["window"]["n_samples"] == 2500


def test_overlapping_windows_from_config(capsys, shared_data, reference_manifest,
                                         tmp_path) -> None:
    """stride_s = 5 on a 38.4-s record gives windows starting every 5 s."""
    config = tmp_path / "ecgd.toml"
    config.write_text("[window]\nstride_s = 5.0\n[privacy]\n"
                      f"pseudonym_key_file = \"{tmp_path / 'pseudonym.key'}\"\n")
    (tmp_path / "pseudonym.key").write_text("ab" * 32 + "\n")
    _, reports, _ = analyze(capsys, "--model", reference_manifest, "--config", config,
                            shared_data / "ptbdb" / "s0010_re.hea")
    assert [r["window"]["start_s"] for r in reports] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]


def test_qtc_formula_from_config_reaches_the_report(capsys, shared_data, reference_manifest,
                                                    tmp_path) -> None:
    """[measurements] qtc_formula = "bazett" gives QT / RR^(1/2) in the report, not Fridericia."""
    (tmp_path / "pseudonym.key").write_text("ab" * 32 + "\n")
    path = shared_data / "cinc2021" / "HR06004.hea"
    measured = {}
    for formula in ("fridericia", "bazett"):
        config = tmp_path / f"{formula}.toml"
        config.write_text(f"[measurements]\nqtc_formula = \"{formula}\"\n[privacy]\n"
                          f"pseudonym_key_file = \"{tmp_path / 'pseudonym.key'}\"\n")
        _, (report,), _ = analyze(capsys, "--model", reference_manifest, "--config", config,
                                  path)
        measured[formula] = report["measurements"]
        assert measured[formula]["qtc_formula"] == formula
    qt_ms = measured["bazett"]["qt_ms"]
    assert qt_ms is not None and qt_ms == measured["fridericia"]["qt_ms"]
    rr_s = (qt_ms / measured["fridericia"]["qtc_ms"]) ** 3  # Fridericia: QTc = QT / RR^(1/3)
    assert measured["bazett"]["qtc_ms"] == pytest.approx(qt_ms / rr_s ** 0.5, abs=2.0)


def test_bad_files_get_one_line_each_and_exit_1(capsys, shared_data, reference_manifest,
                                                tmp_path) -> None:
    """Bad inputs each get one stderr line naming the file by the path given; good files are
    still analyzed."""
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 200)
    link = tmp_path / "link.hea"
    link.symlink_to(shared_data / "cinc2021" / "E07500.hea")
    code, reports, errors = analyze(capsys, "--model", reference_manifest, empty, garbage,
                                    link, tmp_path, shared_data / "cinc2021" / "E07501.hea")
    assert code == 1
    assert len(reports) == 1
    assert len(errors) == 4
    for path, line in zip([empty, garbage, link, tmp_path], errors):
        assert line.startswith(f"ecgd: {path}: ")
        assert "Traceback" not in line


def test_pseudonym_replaces_patient_identifier(capsys, shared_data, reference_manifest,
                                               tmp_path) -> None:
    """With a pseudonym key, a DICOM's patient id appears only as its HMAC pseudonym."""
    import hmac
    import hashlib
    import pydicom

    key = bytes(range(32))
    (tmp_path / "pseudonym.key").write_text(key.hex() + "\n")
    config = tmp_path / "ecgd.toml"
    config.write_text(f"[privacy]\npseudonym_key_file = \"{tmp_path / 'pseudonym.key'}\"\n")
    path = shared_data / "dicom" / "waveform_ecg.dcm"
    patient_id = str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)
    _, reports, _ = analyze(capsys, "--model", reference_manifest, "--config", config, path)
    expected = hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
    assert reports[0]["patient"]["pseudonym"] == expected
    assert patient_id not in json.dumps(reports)


def test_missing_pseudonym_key_is_a_warning_naming_each_file(capsys, shared_data,
                                                              reference_manifest) -> None:
    """Without a pseudonym key, each file that carries a patient identifier is named in a
    warning (the reports are still printed, with no pseudonym)."""
    dicom = shared_data / "dicom" / "waveform_ecg.dcm"
    aecg = shared_data / "hl7-aecg" / "Example aECG.xml"
    code, reports, errors = analyze(capsys, "--model", reference_manifest, dicom, aecg)
    assert code == 0 and len(reports) == 2
    assert [report["patient"]["pseudonym"] for report in reports] == [None, None]
    assert errors == [f"ecgd: warning: {path}: carries a patient identifier, but no "
                      f"pseudonym key is configured (--config): its reports carry no pseudonym"
                      for path in (dicom, aecg)]


def _read_terminal(master: int, process: subprocess.Popen) -> str:
    """Everything written to the terminal whose other end ``process`` holds, until it
    exits and the terminal is drained."""
    data = b""
    while True:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif process.poll() is not None:
            break
    return data.decode("utf-8", "replace")


def test_progress_shows_on_a_terminal_and_nowhere_else(shared_data, reference_manifest,
                                                       tmp_path) -> None:
    """With stderr on a terminal, analyze shows files and windows done and the rate, the
    reports still going to stdout; with stderr on a pipe, stderr stays empty."""
    files = [shared_data / "cinc2021" / "E07500.hea", shared_data / "ptbdb" / "s0010_re.hea"]
    argv = [sys.executable, "-m", "ecgd", "analyze", "--model", str(reference_manifest),
            *map(str, files)]
    master, slave = os.openpty()
    with open(tmp_path / "stdout", "wb") as stdout:
        process = subprocess.Popen(argv, stdout=stdout, stderr=slave)
        os.close(slave)
        try:
            terminal = _read_terminal(master, process)
        finally:
            os.close(master)
        assert process.wait(120) == 0
    assert len((tmp_path / "stdout").read_text().splitlines()) == 4
    assert "ecgd: 2/2 files, 4 windows, " in terminal and " windows/s" in terminal
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 4


def _every_recording_file(shared_data: Path) -> List[Path]:
    """Every file in ../shared/data a user could hand to ecgd (WFDB signal and annotation
    files travel with their header; documentation files are not recordings)."""
    documents = {"SOURCES.md", "README", "LICENSE.txt", "ANNOTATORS", "RECORDS", "tasks.txt"}
    files = []
    for path in sorted(shared_data.rglob("*")):
        if not path.is_file() or path.name in documents:
            continue
        if path.suffix != ".hea" and path.with_suffix(".hea").exists():
            continue  # a WFDB signal or annotation file: read through its header
        files.append(path)
    return files


def test_every_shared_file_gives_reports_or_one_clear_error(capsys, validator, shared_data,
                                                            reference_manifest) -> None:
    """Every recording in ../shared/data yields valid reports or exactly one error line."""
    files = _every_recording_file(shared_data)
    assert len(files) > 150
    code, reports, errors = analyze(capsys, "--model", reference_manifest, *files)
    reported = {r["source"]["file"] for r in reports}
    for line in errors:
        assert line.startswith("ecgd: ") and "Traceback" not in line
    failed = [f for f in files if any(line.startswith(f"ecgd: {f}:") for line in errors)]
    for path in files:
        assert (path.name in reported) != (path in failed), path
    assert code == (1 if failed else 0)
    # The bad ones are the ones SOURCES.md says ecgd cannot know how to read.
    assert {f.suffix for f in failed} <= {".csv", ".mat", ".scp"}
    for report in reports[::25]:
        validator.validate(report)


def _npz_recording(path: Path, signal_mv: np.ndarray, fs_hz: float = 500.0) -> Path:
    np.savez(path, signal=signal_mv, fs_hz=fs_hz, lead_names=np.array(STANDARD_LEADS),
             units="mV")
    return path


def test_each_report_carries_its_own_window_exactly(capsys, validator, shared_data,
                                                    reference_manifest, tmp_path) -> None:
    """Two 10-s windows at the model rate: each report decodes to its own samples +-0.5 uV,
    the rejected window (a flat V3) included."""
    first = read_recording(shared_data / "cinc2021" / "HR06004.hea", 10**8).samples_mv
    second = read_recording(shared_data / "cinc2021" / "E07501.hea", 10**8).samples_mv.copy()
    second[8] = 0.0
    signal_mv = np.concatenate([first, second], axis=1)
    code, reports, _ = analyze(capsys, "--model", reference_manifest,
                               _npz_recording(tmp_path / "two.npz", signal_mv))
    assert code == 0
    assert [r["qc"]["status"] for r in reports] == ["accepted", "rejected"]
    for report, window_mv in zip(reports, (first, second)):
        validator.validate(report)
        assert report["schema_version"] == "2.0"
        decoded = decode_waveform(report["waveform"])
        assert decoded.lead_names == STANDARD_LEADS and decoded.fs_hz == 500.0
        assert np.abs(decoded.samples_mv - window_mv).max() * 1000.0 <= 0.5 + 1e-6


def test_window_is_kept_at_the_model_rate(capsys, shared_data, reference_manifest) -> None:
    """A 1000-Hz DICOM's report holds the 500-Hz window the model saw, not the source rate."""
    path = shared_data / "dicom" / "waveform_ecg.dcm"
    _, (report,), _ = analyze(capsys, "--model", reference_manifest, path)
    decoded = decode_waveform(report["waveform"])
    expected = resample_to(arrange_standard_leads(read_recording(path, 10**8)).samples_mv,
                           1000.0, 500.0)[:, :5000]
    assert decoded.samples_uv.shape == (12, 5000)
    assert np.abs(decoded.samples_mv - expected).max() * 1000.0 <= 0.5 + 1e-6


def test_waveform_false_keeps_no_samples(capsys, validator, shared_data, reference_manifest,
                                         tmp_path) -> None:
    """[reports] waveform = false: the report is valid and holds no waveform."""
    config = tmp_path / "ecgd.toml"
    config.write_text("[reports]\nwaveform = false\n[privacy]\n"
                      f"pseudonym_key_file = \"{tmp_path / 'pseudonym.key'}\"\n")
    (tmp_path / "pseudonym.key").write_text("ab" * 32 + "\n")
    _, (report,), _ = analyze(capsys, "--model", reference_manifest, "--config", config,
                              shared_data / "cinc2021" / "HR06004.hea")
    validator.validate(report)
    assert "waveform" not in report


def test_no_waveform_without_a_twelve_lead_signal(capsys, reference_manifest, tmp_path) -> None:
    """Missing leads and too-short recordings have no analysed window, so no waveform."""
    two_leads = tmp_path / "two-leads.npz"
    np.savez(two_leads, signal=np.zeros((2, 5000), dtype=np.float32), fs_hz=500.0,
             lead_names=np.array(["II", "V1"]), units="mV")
    short = _npz_recording(tmp_path / "short.npz", np.ones((12, 2500), dtype=np.float32))
    _, reports, _ = analyze(capsys, "--model", reference_manifest, two_leads, short)
    assert len(reports) == 2
    assert all("waveform" not in report for report in reports)


def test_timestamp_at_the_end_of_time_still_gives_reports(capsys, validator, shared_data,
                                                          reference_manifest, tmp_path) -> None:
    """An HL7 file acquired at 9999-12-31 23:59:59 UTC (its windows' start times would pass
    year 9999) gives its report with a null start time, not an internal error (exit 70)."""
    source = shared_data / "hl7-aecg" / "Example aECG.xml"
    text = source.read_text(encoding="utf-8").replace(
        '<head value="20021122091000.000"', '<head value="99991231235959.000+0000"', 1)
    path = tmp_path / "late.xml"
    path.write_text(text, encoding="utf-8")
    code, reports, errors = analyze(capsys, "--model", reference_manifest, path)
    assert code == 0, errors
    (report,) = reports
    validator.validate(report)
    assert report["window"].get("start_time") is None


def test_two_hertz_input_is_one_line_refusal(capsys, reference_manifest, tmp_path) -> None:
    """A 2-Hz .npz (the poison input that once took 34 s and 7.3 GB to resample) is refused
    with one line and exit 1; the good file after it still gets its report."""
    slow = _npz_recording(tmp_path / "slow.npz", np.zeros((12, 20000), np.float32), fs_hz=2.0)
    good = _npz_recording(tmp_path / "good.npz", np.zeros((12, 5000), np.float32))
    code, reports, errors = analyze(capsys, "--model", reference_manifest, slow, good)
    assert code == 1
    assert errors == [f"ecgd: {slow}: sampling rate outside 100-10000 Hz, the rates an ECG "
                      f"is read at; refused"]
    assert [r["source"]["file"] for r in reports] == ["good.npz"]
