"""``ecgd analyze`` end to end on real recordings: JSON Lines reports valid against the schema."""
from __future__ import annotations

import json
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


def test_missing_leads_are_named_and_not_interpreted(capsys, validator, shared_data,
                                                     reference_manifest, tmp_path) -> None:
    """A 2-lead Holter record cannot be interpreted: each missing lead is named, no findings."""
    signal = np.random.default_rng(0).normal(0, 0.1, (2, 5000)).astype(np.float32)
    path = tmp_path / "two-leads.npz"
    np.savez(path, signal=signal, fs_hz=500.0, lead_names=np.array(["II", "V1"]), units="mV")
    code, reports, _ = analyze(capsys, "--model", reference_manifest, path)
    assert code == 0
    (report,) = reports
    validator.validate(report)
    assert report["qc"]["status"] == "rejected"
    assert "missing_lead:V6" in report["qc"]["reasons"]
    assert report["findings"] == []


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
    assert report["qc"] == {"status": "rejected", "score": None, "reasons": ["too_short"]}
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


def test_bad_files_get_one_line_each_and_exit_1(capsys, shared_data, reference_manifest,
                                                tmp_path) -> None:
    """Bad inputs each get one stderr line naming the file; good files are still analyzed."""
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
    for name, line in zip(["empty.xml", "garbage.dcm", "link.hea", tmp_path.name], errors):
        assert name in line
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
    failed = [f for f in files if any(line.startswith(f"ecgd: {f.name}:") for line in errors)]
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
