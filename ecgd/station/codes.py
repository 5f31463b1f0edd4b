"""The coded vocabulary the station's outputs share: what each measurement is called, in
which unit, under which LOINC code, and each lead's ISO/IEEE 11073 (MDC) term."""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"


@dataclasses.dataclass(frozen=True)
class Measure:
    """A measurement a report may hold: its report key, how it is shown, how it is coded."""

    key: str
    label: str
    unit: str          # as printed
    ucum: str          # UCUM code
    loinc: str
    loinc_display: str


# Heart rate from ecgd's R-peaks; the rest when the report holds them (delineation).
MEASURES: Tuple[Measure, ...] = (
    Measure("heart_rate_bpm", "Rate", "bpm", "/min", "8867-4", "Heart rate"),
    Measure("pr_ms", "PR", "ms", "ms", "8625-6", "P-R Interval"),
    Measure("qrs_ms", "QRS", "ms", "ms", "8633-0", "QRS duration"),
    Measure("qt_ms", "QT", "ms", "ms", "8634-8", "Q-T interval"),
    Measure("qtc_ms", "QTc", "ms", "ms", "8636-3", "Q-T interval corrected"),
    Measure("p_axis_deg", "P axis", "deg", "deg", "8626-4", "P wave axis"),
    Measure("qrs_axis_deg", "QRS axis", "deg", "deg", "8632-2", "QRS axis"),
    Measure("t_axis_deg", "T axis", "deg", "deg", "8638-1", "T wave axis"),
)

# LOINC has codes for QTc by a named formula; any other formula keeps 8636-3 and names it.
QTC_LOINC_BY_FORMULA: Dict[str, Tuple[str, str]] = {
    "bazett": ("76635-2", "Q-T interval corrected based on Bazett formula"),
    "fridericia": ("76634-5", "Q-T interval corrected based on Fridericia formula"),
}

# ISO/IEEE 11073-10101 lead terms (partition 2, MDC_ECG_LEAD_*). DICOM codes a lead as
# "2:<term>"; FHIR codes its electrical potential, MDC_ECG_ELEC_POTL_<lead>, as the
# context-free code 2 * 65536 + 256 + term.
MDC_LEAD_TERMS: Dict[str, int] = {
    "I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
    "III": 61, "aVR": 62, "aVL": 63, "aVF": 64,
}
MDC_ECG_ELEC_POTL = 2 * 65536 + 256


def mdc_potential_code(lead: str) -> Tuple[str, str]:
    """FHIR (code, display) of a lead's electrical potential: ``131329``, ``MDC_ECG_ELEC_POTL_I``."""
    return str(MDC_ECG_ELEC_POTL + MDC_LEAD_TERMS[lead]), f"MDC_ECG_ELEC_POTL_{lead.upper()}"
