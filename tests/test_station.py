"""The reading station end to end: daemon -> sealed reports -> decrypt, render, export."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List

import numpy as np
import pydicom
import pytest

from daemon_harness import REPO_ROOT, DaemonProcess, wait_for
from ecgd.cli import main
from ecgd.records import dicom_format
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS, arrange_standard_leads
from ecgd.security.keys import generate_keys, load_recipients, load_signing_key
from ecgd.security.seal import seal_report
from ecgd.security.unseal import open_sealed_report
from ecgd.signal.resample import resample_to
from test_daemon import Appliance
from test_station_export import sampled_data_uv, validate_bundle

PHI_ID = "ECGD-TEST-ID-4711"
PHI_NAME = "Doeverdonck^Janneke"
PHI_FILE = "Doeverdonck_Janneke_4711.dcm"


class Station:
    """Reports a real daemon sealed from real recordings, and what they were made from."""

    def __init__(self, appliance: Appliance, sources: Dict[str, Path],
                 identifiers: List[str]) -> None:
        self.appliance = appliance
        # What every station command opens reports with: identity and enrolled appliances.
        self.keys = ["--key", appliance.keys["private"],
                     "--appliances", appliance.root / "appliance"]
        self.reports = appliance.report_files()
        self.sources = sources          # dropped file name -> the original recording
        self.identifiers = identifiers  # plain identifiers in the inputs, names included
        self.decrypted = {path: open_sealed_report(path.read_bytes(), appliance.identity,
                                                   appliance.enrolled).report
                          for path in self.reports}

    def expected_window_uv(self, report_path: Path) -> np.ndarray:
        """The window the daemon analysed, recomputed from the recording: 12 standard leads
        (limb leads derived where missing), resampled to 500 Hz, first 10 s, microvolts."""
        source = self.sources[self.decrypted[report_path]["source"]["file"]]
        recording = read_recording(source, 10**8)
        standard = arrange_standard_leads(recording).samples_mv
        assert standard is not None
        return resample_to(standard, recording.fs_hz, 500.0)[:, :5000] * 1000.0


@pytest.fixture(scope="module")
def station(tmp_path_factory, reference_manifest, shared_data) -> Station:
    """Three inputs through ``ecgd run``: a 500-Hz WFDB record, a 1000-Hz DICOM carrying a
    patient id and name dropped under a name made of them, and an 8-lead MUSE XML."""
    root = tmp_path_factory.mktemp("station")
    appliance = Appliance(root / "appliance", reference_manifest)
    dicom = pydicom.dcmread(shared_data / "dicom" / "waveform_ecg.dcm")
    dicom.PatientID, dicom.PatientName = PHI_ID, PHI_NAME
    phi_dicom = root / "phi.dcm"
    dicom.save_as(phi_dicom)
    muse = shared_data / "ge-muse-xml" / "EGM" / "muse-sinus.xml"
    muse_id = muse.read_text(errors="replace").split("<PatientID>", 1)[1].split("<", 1)[0]
    sources = {"HR06004.hea": shared_data / "cinc2021" / "HR06004.hea", PHI_FILE: phi_dicom,
               "muse-sinus.xml": muse}
    daemon = DaemonProcess(appliance.config, root)
    try:
        daemon.wait_ready()
        appliance.drop(shared_data / "cinc2021" / "HR06004.mat")
        appliance.drop(shared_data / "cinc2021" / "HR06004.hea")
        appliance.drop(phi_dicom, PHI_FILE)
        appliance.drop(muse)
        wait_for(lambda: len(appliance.names_in(appliance.done)) == 4, 60, "4 inputs done")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    # Long enough that compressed bytes (PNG, PDF) cannot hold one by chance.
    identifiers = [PHI_ID, "Doeverdonck", "Janneke", PHI_FILE.rsplit(".", 1)[0], muse_id.strip()]
    return Station(appliance, sources, identifiers)


def run_cli(capsys, *argv: object):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_appliance_never_imports_the_station(reference_manifest, shared_data) -> None:
    """The daemon's imports plus a whole `ecgd analyze` load no station code, no matplotlib,
    no FHIR library: the appliance runs without the [station] extra."""
    script = f"""
import sys
import ecgd.daemon
from ecgd.cli import main
code = main(["analyze", "--model", {str(reference_manifest)!r},
             {str(shared_data / "cinc2021" / "HR06004.hea")!r}])
assert code == 0, code
loaded = [m for m in sys.modules
          if m.split(".")[0] in ("matplotlib", "fhir", "PIL") or m.startswith("ecgd.station")]
print("LOADED", loaded, file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert '"waveform"' in result.stdout  # the report was made, samples included
    assert "LOADED []" in result.stderr


def test_round_trip_exports_hold_the_analysed_window(station, capsys, tmp_path) -> None:
    """Daemon -> sealed report -> DICOM and FHIR: every lead of every window equals the
    recomputed analysed window within 1 uV, in ecgd's reader, pydicom and the FHIR data."""
    code, out, err = run_cli(capsys, "export", *station.keys, "--format", "dicom",
                             "--out", tmp_path / "dicom", *station.reports)
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", *station.keys, "--format", "fhir",
                             "--out", tmp_path / "fhir", *station.reports)
    assert code == 0, err
    assert len(station.reports) == 3
    for report_path in station.reports:
        report_id = station.decrypted[report_path]["report_id"]
        expected_uv = station.expected_window_uv(report_path)
        dicom_path = tmp_path / "dicom" / f"{report_id}.dcm"
        from_pydicom = pydicom.dcmread(dicom_path).waveform_array(0).T
        from_ecgd = dicom_format.read(dicom_path, 10**8)
        assert from_ecgd.lead_names == STANDARD_LEADS
        bundle = json.loads((tmp_path / "fhir" / f"{report_id}.json").read_text())
        from_fhir = sampled_data_uv(validate_bundle(bundle))
        for row, lead in enumerate(STANDARD_LEADS):
            for decoded in (from_pydicom[row], from_ecgd.samples_mv[row] * 1000.0,
                            from_fhir[lead]):
                assert np.abs(decoded - expected_uv[row]).max() <= 1.0


def test_render_makes_one_pdf_page_per_report(station, capsys, tmp_path) -> None:
    """`ecgd render` of the three reports into a PDF writes one page per window."""
    out = tmp_path / "reports.pdf"
    code, printed, err = run_cli(capsys, "render", *station.keys, "--out", out,
                                 *station.reports)
    assert code == 0, err
    assert printed.strip() == str(out)
    assert out.read_bytes().count(b"/Type /Page\n") + out.read_bytes().count(
        b"/Type /Page ") + out.read_bytes().count(b"/Type /Page>") == 3


def test_no_plain_patient_identifier_in_any_artefact(station, capsys, tmp_path) -> None:
    """Pages (SVG text, PNG, PDF), FHIR, DICOM and summary lines hold no identifier or input
    file name; the pseudonym is what names the patient."""
    artefacts: List[str] = []
    for index, report_path in enumerate(station.reports):
        for suffix in (".svg", ".png", ".pdf"):
            out = tmp_path / f"page{index}{suffix}"
            assert run_cli(capsys, "render", *station.keys, "--out", out,
                           report_path)[0] == 0
            artefacts.append(out.read_bytes().decode("latin-1"))
        svg_text = "".join(ElementTree.parse(tmp_path / f"page{index}.svg").getroot().itertext())
        pseudonym = station.decrypted[report_path]["patient"]["pseudonym"]
        named = station.decrypted[report_path]["source"]["file"] != "HR06004.hea"
        assert (pseudonym is not None) is named  # the WFDB record names no patient
        assert pseudonym is None or pseudonym in svg_text
        artefacts.append(svg_text)
    for fmt in ("fhir", "dicom"):
        assert run_cli(capsys, "export", *station.keys, "--format", fmt, "--out",
                       tmp_path / fmt, *station.reports)[0] == 0
        artefacts += [p.read_bytes().decode("latin-1") for p in (tmp_path / fmt).iterdir()]
        artefacts += [p.name for p in (tmp_path / fmt).iterdir()]
    code, summary, _ = run_cli(capsys, "decrypt", *station.keys, "--summary",
                               *station.reports)
    artefacts.append(summary)
    assert code == 0 and len(artefacts) == 3 * 4 + 2 * 6 + 1
    for identifier in station.identifiers:
        assert len(identifier) >= 7
        for artefact in artefacts:
            assert identifier not in artefact


def test_summary_and_pretty(station, capsys) -> None:
    """--summary: one line per report with time, pseudonym prefix, verdict, rate, finding,
    id and signing appliance; --pretty: the signer and report as indented JSON."""
    code, out, _ = run_cli(capsys, "decrypt", *station.keys, "--summary",
                           *station.reports)
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(station.reports)
    for line, report_path in zip(lines, station.reports):
        report = station.decrypted[report_path]
        fields = line.split("  ")
        assert fields[1] == (report["patient"]["pseudonym"] or "--------")[:8]
        assert fields[2].split(" ")[0] == report["qc"]["status"]
        rate = report["measurements"]["heart_rate_bpm"]
        assert fields[3] == ("- bpm" if rate is None else f"{rate:.0f} bpm")
        if report["qc"]["status"] == "accepted":
            top = next(f for f in report["findings"] if f["above_threshold"])
            assert fields[4] == f"NOT VALID: {top['label']} {top['probability']:.2f}"
        assert fields[-2:] == [f"id {report['report_id'][:8]}", "from appliance-signing"]
    code, out, _ = run_cli(capsys, "decrypt", *station.keys, "--pretty",
                           station.reports[0])
    assert code == 0 and out.startswith('{\n  "signer": {\n    "appliance": "appliance-signing"')
    assert json.loads(out)["report"] == station.decrypted[station.reports[0]]


@pytest.fixture
def bad_reports(station, tmp_path) -> Dict[str, Path]:
    """A tampered report, one sealed to another station, one the appliance did not sign, and
    signed JSON that is no report."""
    import pyrage

    tampered = bytearray(station.reports[0].read_bytes())
    tampered[-5] ^= 0x01
    other_station = generate_keys(tmp_path / "other")
    own = load_recipients([station.appliance.keys["public"]])
    signing_key = load_signing_key(station.appliance.signing_keys["private"])
    not_a_report = {"report_id": str(uuid.uuid4()), "hello": "world"}
    files = {"tampered": bytes(tampered),
             "foreign": seal_report(station.decrypted[station.reports[1]],
                                    load_recipients([other_station["public"]]), signing_key),
             "unsigned": pyrage.encrypt(b"{}", [pyrage.x25519.Recipient.from_str(
                 own[0].recipient)]),
             "not-a-report": seal_report(not_a_report, own, signing_key)}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.ecgr"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("command", [["decrypt", "--summary"], ["render", "--out", "{tmp}/p.pdf"],
                                     ["export", "--format", "fhir", "--out", "{tmp}/fhir"],
                                     ["export", "--format", "dicom", "--out", "{tmp}/dicom"]])
def test_tampered_foreign_or_non_reports_exit_65_and_the_rest_still_work(
        station, bad_reports, capsys, tmp_path, command) -> None:
    """Each bad file is one stderr line naming it (as decrypt refuses it), the good report
    is still handled, and the exit code is 65."""
    argv = [part.replace("{tmp}", str(tmp_path)) for part in command]
    names = ["tampered", "foreign", "unsigned", "not-a-report"]
    files = [bad_reports[names[0]], station.reports[1], *[bad_reports[n] for n in names[1:]]]
    code, out, err = run_cli(capsys, *argv[:1], *station.keys, *argv[1:], *files)
    assert code == 65
    lines = err.splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [str(bad_reports[n]) for n in names]
    checks = [line.split(": ", 2)[2] for line in lines]
    assert checks[0].startswith("signature mismatch")
    assert checks[1].startswith("decryption failed")
    assert checks[2].startswith("unsigned")
    assert checks[3] == "decrypted, but the report has no window"
    assert len(out.splitlines()) == 1  # the good report: a summary line or a written file


def test_missing_report_file_exits_1(station, capsys, tmp_path) -> None:
    """A report file that is not there is named on stderr, exit 1, the others rendered."""
    code, _, err = run_cli(capsys, "render", *station.keys, "--out",
                           tmp_path / "p.pdf", tmp_path / "gone.ecgr", station.reports[0])
    assert code == 1 and err.startswith(f"ecgd: {tmp_path / 'gone.ecgr'}: cannot read")
    assert (tmp_path / "p.pdf").is_file()


def test_usage_errors_exit_2(station, capsys, tmp_path) -> None:
    """Unknown --format, an unknown page suffix, or several reports into one PNG: exit 2."""
    with pytest.raises(SystemExit) as exc_info:
        main(["export", *[str(a) for a in station.keys], "--format", "hl7", "--out",
              str(tmp_path), str(station.reports[0])])
    assert exc_info.value.code == 2
    assert "invalid choice: 'hl7'" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "render", *station.keys, "--out", tmp_path / "p.txt",
                           station.reports[0])
    assert code == 2 and ".pdf, .png, .svg" in err
    code, _, err = run_cli(capsys, "render", *station.keys, "--out", tmp_path / "p.png",
                           *station.reports[:2])
    assert code == 2 and "holds one page" in err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_exits_74(station, capsys, tmp_path) -> None:
    """A page into a missing folder, or an export folder that is a file: exit 74, named."""
    code, _, err = run_cli(capsys, "render", *station.keys, "--out",
                           tmp_path / "missing" / "p.pdf", station.reports[0])
    assert code == 74 and "cannot write" in err
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "export", *station.keys, "--format", "fhir",
                           "--out", tmp_path / "file", station.reports[0])
    assert code == 74 and f"{tmp_path / 'file'}: cannot create the output folder" in err
