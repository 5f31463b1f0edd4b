"""One report as an HL7 FHIR R4 Bundle (type ``collection``) for a hospital's EHR.

The Bundle holds a DiagnosticReport (LOINC 11524-6 "EKG study") whose ``result`` lists one
Observation per measurement the report holds (LOINC-coded), one per finding above its
threshold when the interpretation is valid, and the waveform: an Observation with one
SampledData component per lead (MDC ``MDC_ECG_ELEC_POTL_<lead>``), integer microvolts with
``factor`` 0.001 on a millivolt ``origin``, so the samples stay exact to 1 uV.

Everything is preliminary: a machine reading awaits the cardiologist's overread. The patient
appears only as the pseudonym, a logical reference by identifier (no Patient resource).
Resource ids derive from the report id, so exporting a report twice gives the same Bundle.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ecgd.station.codes import (LOINC_SYSTEM, MDC_ECG_ELEC_POTL, QTC_LOINC_BY_FORMULA,
                                UCUM_SYSTEM, Measure, mdc_potential_code)
from ecgd.station.view import ReportView

MDC_SYSTEM = "urn:oid:2.16.840.1.113883.6.24"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
URI_SYSTEM = "urn:ietf:rfc:3986"
# Not real hosts (.invalid): a hospital maps these to its own naming systems.
PSEUDONYM_SYSTEM = "https://ecgd.invalid/fhir/sid/patient-pseudonym"
FINDING_SYSTEM = "https://ecgd.invalid/fhir/CodeSystem/model-label"
ECG_STUDY_LOINC = ("11524-6", "EKG study")
STATUS = "preliminary"


def fhir_bundle(view: ReportView) -> Dict[str, Any]:
    """The Bundle of one report, as JSON-ready dicts."""
    builder = _Builder(view)
    waveform = builder.waveform_observation()
    derived_from = [waveform["id"]] if waveform else []
    observations = [builder.measure_observation(measure, value, derived_from)
                    for measure, value in view.present_measures()]
    if view.interpretation_valid:
        observations += [builder.finding_observation(index, finding, derived_from)
                         for index, finding in enumerate(view.above_threshold())]
    if waveform:
        observations.append(waveform)
    report = builder.diagnostic_report(observations)
    return {
        "resourceType": "Bundle",
        "id": view.report_id,
        "identifier": {"system": URI_SYSTEM, "value": f"urn:uuid:{view.report_id}"},
        "type": "collection",
        "timestamp": view.created_at,
        "entry": [{"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
                  for resource in [report] + observations],
    }


def conclusion(view: ReportView) -> str:
    """The DiagnosticReport's text: the findings, or why there is no valid interpretation."""
    if not view.interpretation_valid:
        return f"NOT A VALID INTERPRETATION: {view.warning}"
    present = view.above_threshold()
    if not present:
        return f"Machine interpretation ({view.model_name}): no finding above its threshold."
    listed = "; ".join(f"{f['label']} ({f['probability'] * 100:.0f} %)" for f in present)
    return f"Machine interpretation ({view.model_name}), to be overread: {listed}."


class _Builder:
    """The resources of one report; what they share (subject, times, ids) is set once."""

    def __init__(self, view: ReportView) -> None:
        self.view = view
        self.report_uuid = uuid.UUID(view.report_id)
        self.common: Dict[str, Any] = {"status": STATUS}
        if view.pseudonym is not None:
            self.common["subject"] = {"identifier": {"system": PSEUDONYM_SYSTEM,
                                                     "value": view.pseudonym}}
        if view.acquired_at is not None:
            self.common["effectiveDateTime"] = view.acquired_at
        self.common["issued"] = view.created_at

    def resource_id(self, name: str) -> str:
        return str(uuid.uuid5(self.report_uuid, name))

    def observation(self, name: str, category: str, code: Dict[str, Any],
                    derived_from: List[str]) -> Dict[str, Any]:
        resource: Dict[str, Any] = {
            "resourceType": "Observation", "id": self.resource_id(name), "status": STATUS,
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": category}]}],
            "code": code}
        resource.update(self.common)
        if derived_from:
            resource["derivedFrom"] = [{"reference": f"urn:uuid:{ref}"} for ref in derived_from]
        return resource

    def measure_observation(self, measure: Measure, value: float,
                            derived_from: List[str]) -> Dict[str, Any]:
        code, display = measure.loinc, measure.loinc_display
        formula = self.view.qtc_formula if measure.key == "qtc_ms" else None
        if formula and formula.lower() in QTC_LOINC_BY_FORMULA:
            code, display = QTC_LOINC_BY_FORMULA[formula.lower()]
        # Heart rate is a vital sign in FHIR's own profile; intervals and axes are ECG results.
        category = "vital-signs" if measure.key == "heart_rate_bpm" else "procedure"
        resource = self.observation(
            f"measure/{measure.key}", category,
            {"coding": [{"system": LOINC_SYSTEM, "code": code, "display": display}],
             "text": measure.label}, derived_from)
        resource["valueQuantity"] = {"value": value, "unit": measure.unit,
                                     "system": UCUM_SYSTEM, "code": measure.ucum}
        if formula:
            resource["method"] = {"text": f"QTc by the {formula} formula"}
        return resource

    def finding_observation(self, index: int, finding: Mapping[str, Any],
                            derived_from: List[str]) -> Dict[str, Any]:
        label = finding["label"]
        resource = self.observation(
            f"finding/{index}", "procedure",
            {"coding": [{"system": FINDING_SYSTEM, "code": label, "display": label}],
             "text": label}, derived_from)
        resource["valueQuantity"] = {"value": finding["probability"], "unit": "probability",
                                     "system": UCUM_SYSTEM, "code": "1"}
        resource["note"] = [{"text": f"model {self.view.model_name}, threshold "
                                     f"{finding['threshold']:g}"}]
        return resource

    def waveform_observation(self) -> Optional[Dict[str, Any]]:
        waveform = self.view.waveform
        if waveform is None:
            return None
        resource = self.observation(
            "waveform", "procedure",
            {"coding": [{"system": MDC_SYSTEM, "code": str(MDC_ECG_ELEC_POTL),
                         "display": "MDC_ECG_ELEC_POTL"}],
             "text": "12-lead ECG, the window as analysed"}, [])
        period_ms = 1000.0 / waveform.fs_hz
        resource["component"] = [_lead_component(lead, waveform.lead(lead), period_ms)
                                 for lead in waveform.lead_names]
        return resource

    def diagnostic_report(self, observations: List[Dict[str, Any]]) -> Dict[str, Any]:
        resource: Dict[str, Any] = {
            "resourceType": "DiagnosticReport", "id": self.resource_id("diagnostic-report"),
            "identifier": [{"system": URI_SYSTEM, "value": f"urn:uuid:{self.view.report_id}"}],
            "status": STATUS,
            "category": [{"coding": [{"system": DIAGNOSTIC_SERVICE_SYSTEM, "code": "EC",
                                      "display": "Electrocardiac (e.g., EKG, EEC, Holter)"}]}],
            "code": {"coding": [{"system": LOINC_SYSTEM, "code": ECG_STUDY_LOINC[0],
                                 "display": ECG_STUDY_LOINC[1]}],
                     "text": "12-lead ECG, machine interpretation"}}
        resource.update(self.common)
        resource["result"] = [{"reference": f"urn:uuid:{o['id']}"} for o in observations]
        resource["conclusion"] = conclusion(self.view)
        return resource


def _lead_component(lead: str, samples_uv: np.ndarray, period_ms: float) -> Dict[str, Any]:
    """One lead as SampledData: integer microvolts (``data``) x 0.001 + 0 mV."""
    code, display = mdc_potential_code(lead)
    return {"code": {"coding": [{"system": MDC_SYSTEM, "code": code, "display": display}],
                     "text": lead},
            "valueSampledData": {
                "origin": {"value": 0, "unit": "mV", "system": UCUM_SYSTEM, "code": "mV"},
                "period": period_ms, "factor": 0.001, "dimensions": 1,
                "data": " ".join(map(str, samples_uv.tolist()))}}
