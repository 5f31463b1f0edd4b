"""FHIR R4 Bundles and DICOM 12-lead ECG instances: valid, coded, exact to 1 uV."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pydicom
import pytest

from ecgd.errors import ExportError
from ecgd.records import dicom_format
from ecgd.records.recording import STANDARD_LEADS
from ecgd.station.dicom import dicom_bytes
from ecgd.station.fhir import fhir_bundle
from report_helpers import PSEUDONYM, UNTRAINED, make_report, view_of, window_mv

fhir_r4b = pytest.importorskip("fhir.resources.R4B")

# MDC_ECG_ELEC_POTL_<lead> (ISO/IEEE 11073-10101), as the FHIR R4 ECG example codes them.
MDC_CODES = {"I": "131329", "II": "131330", "III": "131389", "aVR": "131390",
             "aVL": "131391", "aVF": "131392", "V1": "131331", "V2": "131332",
             "V3": "131333", "V4": "131334", "V5": "131335", "V6": "131336"}
LOINC = {"8867-4": 61.5, "8625-6": 162.0, "8633-0": 94.0, "8634-8": 398.0,
         "76635-2": 401.0, "8626-4": 48.0, "8632-2": 31.0, "8638-1": 40.0}


@pytest.fixture(scope="module")
def signal_mv(shared_data: Path) -> np.ndarray:
    return window_mv(shared_data / "cinc2021" / "HR06004.hea")


def validate_bundle(bundle: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every resource of the Bundle, each validated by the FHIR models; the resources."""
    fhir_r4b.get_fhir_model_class("Bundle").model_validate(bundle)
    resources = [entry["resource"] for entry in bundle["entry"]]
    for resource in resources:
        fhir_r4b.get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        # Bindings the models leave unchecked: R4's status codes.
        assert resource["status"] == "preliminary"
    return resources


def sampled_data_uv(resources: List[Dict[str, Any]]) -> Dict[str, np.ndarray]:
    """Each lead's samples from the waveform Observation, in microvolts."""
    (waveform,) = [r for r in resources if r["code"]["coding"][0]["code"] == "131328"]
    leads = {}
    for component in waveform["component"]:
        data = component["valueSampledData"]
        values = np.array(data["data"].split(), dtype=float)
        leads[component["code"]["text"]] = (data["origin"]["value"] + data["factor"] * values
                                            ) * 1000.0
        assert component["code"]["coding"][0]["code"] == MDC_CODES[component["code"]["text"]]
        assert data["period"] == 2.0 and data["origin"]["code"] == "mV"
    return leads


def test_fhir_bundle_validates_and_codes_every_measurement(signal_mv) -> None:
    """DiagnosticReport + one LOINC Observation per measurement + findings + waveform."""
    bundle = fhir_bundle(view_of(make_report(signal_mv)))
    resources = validate_bundle(bundle)
    report = resources[0]
    assert report["resourceType"] == "DiagnosticReport"
    assert report["code"]["coding"][0]["code"] == "11524-6"
    assert report["subject"]["identifier"]["value"] == PSEUDONYM
    assert {ref["reference"] for ref in report["result"]} == {
        f"urn:uuid:{r['id']}" for r in resources[1:]}
    measured = {r["code"]["coding"][0]["code"]: r["valueQuantity"]["value"]
                for r in resources if r["code"]["coding"][0]["system"] == "http://loinc.org"
                and r["resourceType"] == "Observation"}
    assert measured == LOINC
    findings = [r["code"]["text"] for r in resources if "note" in r]
    assert findings == ["SINUS RHYTHM", "NORMAL ECG", "LEFT AXIS DEVIATION"]
    assert "SINUS RHYTHM (93 %)" in report["conclusion"]
    leads = sampled_data_uv(resources)
    assert list(leads) == list(STANDARD_LEADS)
    for row, lead in enumerate(STANDARD_LEADS):
        assert np.abs(leads[lead] - signal_mv[row] * 1000.0).max() <= 0.5 + 1e-6
    # Ids come from the report id: exporting the same window again gives the same resources.
    again = fhir_bundle(view_of(make_report(signal_mv)))
    assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in bundle["entry"]]


def test_fhir_invalid_interpretation_exports_no_findings(signal_mv) -> None:
    """Untrained model: the conclusion says it is not valid, and no finding is exported."""
    resources = validate_bundle(fhir_bundle(view_of(make_report(signal_mv, UNTRAINED))))
    assert resources[0]["conclusion"].startswith("NOT A VALID INTERPRETATION: ")
    assert not [r for r in resources if "note" in r]


def test_fhir_without_waveform_or_patient_still_validates() -> None:
    """No samples and no pseudonym: a valid Bundle without waveform or subject."""
    resources = validate_bundle(fhir_bundle(view_of(make_report(None, pseudonym=None))))
    assert all("subject" not in r for r in resources)
    assert not [r for r in resources if r["code"]["coding"][0]["code"] == "131328"]


def read_back(data: bytes, tmp_path: Path) -> Dict[str, Any]:
    """A DICOM export as pydicom decodes it and as ecgd's own reader reads it."""
    path = tmp_path / "export.dcm"
    path.write_bytes(data)
    dataset = pydicom.dcmread(path)
    return {"dataset": dataset, "pydicom_uv": dataset.waveform_array(0).T,
            "ecgd": dicom_format.read(path, 10**8)}


def test_dicom_reads_back_identically_in_ecgd_and_pydicom(signal_mv, tmp_path) -> None:
    """The 12-lead ECG instance decodes to the window +-0.5 uV in both readers."""
    data = dicom_bytes(view_of(make_report(signal_mv)))
    back = read_back(data, tmp_path)
    dataset = back["dataset"]
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.9.1.1"
    assert dataset.PatientID == PSEUDONYM and str(dataset.PatientName) == ""
    assert back["ecgd"].lead_names == STANDARD_LEADS and back["ecgd"].fs_hz == 500.0
    # The same samples in both readers (ecgd's is float32 mV: equal to 1e-3 uV).
    np.testing.assert_allclose(back["ecgd"].samples_mv * 1000.0, back["pydicom_uv"], atol=1e-3)
    assert np.abs(back["pydicom_uv"] - signal_mv * 1000.0).max() <= 0.5 + 1e-6
    texts = [a.UnformattedTextValue for a in dataset.WaveformAnnotationSequence]
    assert any("SINUS RHYTHM (93 %)" in text for text in texts)
    assert "QTc 401 ms" in texts and "Quality control: accepted" in texts


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dicom_passes_the_standard_iod_checker(signal_mv, tmp_path) -> None:
    """dicom3tools' dciodvfy finds no error against the 12-lead ECG IOD."""
    path = tmp_path / "export.dcm"
    path.write_bytes(dicom_bytes(view_of(make_report(signal_mv))))
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                            check=False)
    output = result.stdout + result.stderr
    assert "TwelveLeadECG" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == []


def test_dicom_beyond_int16_microvolts_scales_and_says_so(tmp_path) -> None:
    """A +-40 mV window (never accepted by QC) is stored at 2 uV per step, annotated."""
    signal_mv = np.zeros((12, 5000), dtype=np.float32)
    signal_mv[:, ::2] = 40.0
    back = read_back(dicom_bytes(view_of(make_report(signal_mv, qc_status="rejected",
                                                     qc_reasons=("amplitude:I",)))), tmp_path)
    assert back["dataset"].WaveformSequence[0].ChannelDefinitionSequence[0]. \
        ChannelSensitivity == 2
    assert np.abs(back["pydicom_uv"] - signal_mv * 1000.0).max() <= 1.0
    texts = [a.UnformattedTextValue for a in back["dataset"].WaveformAnnotationSequence]
    assert "Samples stored at 2 uV per step (amplitude beyond +-32.767 mV)" in texts


def test_dicom_without_waveform_is_refused() -> None:
    """A report without samples cannot be a DICOM ECG: ExportError says why."""
    with pytest.raises(ExportError, match="no tracing in this report"):
        dicom_bytes(view_of(make_report(None)))


def test_dicom_outside_the_twelve_lead_limits_is_refused() -> None:
    """A 100-Hz window is outside the 12-lead ECG IOD (200-1000 Hz): ExportError."""
    report = make_report(np.zeros((12, 1000), dtype=np.float32))
    report["waveform"]["fs_hz"] = 100.0
    with pytest.raises(ExportError, match="outside the DICOM 12-lead ECG limits"):
        dicom_bytes(view_of(report))
