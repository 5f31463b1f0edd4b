"""Philips PageWriter / HeartStart XML reader (SierraECG 1.03, PhilipsECG 1.04 / 1.04.01).

``parsedwaveforms`` is base64 of XLI-compressed int16 counts (see :mod:`ecgd.records.xli`),
one chunk per lead, scaled by the file's resolution (microvolts per LSB, 5 in the files
seen). In these versions leads III, aVR, aVL and aVF are stored as residuals against what
I and II predict; they are rebuilt exactly as Philips' C decoder does (int arithmetic,
division truncating toward zero, results wrapped to 16 bits)::

    III = II - I - r3
    aVR = -((I + II) / 2) - r4
    aVL = ((I - III) / 2) - r5
    aVF = ((II + III) / 2) - r6

Calibration rule: each lead holds ``durationperchannel`` ms (11 s); the 1 mV calibration
pulse sits in the last second (samples 5350-5449 at 500 Hz, all leads at exactly 1 mV).
The reader locates that pulse, refuses the file if it starts inside the first 10 s, and
returns the first 10 s (5000 samples at 500 Hz) as the rhythm.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.etree.ElementTree import Element

import numpy as np

from ecgd.errors import RecordError
from ecgd.records import xli
from ecgd.records.recording import (DEFAULT_MAX_SAMPLES, STANDARD_LEADS, Recording,
                                    check_sample_budget, normalize_lead_name)
from ecgd.records.timestamps import StartTime, acquisition_start, time_problem
from ecgd.records.xml_safety import (decode_base64, optional_text, parse_number, parse_xml,
                                     required, required_text)

_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2})$")
_VERSIONS = ("1.03", "1.04", "1.04.01")
_RHYTHM_S = 10.0
_CALIBRATION_MV = 1.0
_CALIBRATION_MIN_S = 0.05


def read(path: Path, max_bytes: int, max_samples: int = DEFAULT_MAX_SAMPLES) -> Recording:
    """Read the 10-s rhythm of a Philips SierraECG/PhilipsECG XML file as millivolts; leads
    x ``durationperchannel`` over ``max_samples`` are refused before XLI expands them."""
    path = Path(path)
    source = path.name
    root = parse_xml(path, max_bytes)
    ns = _namespace(root)
    version = _version(root, ns, source)
    signal = required(root, f"{ns}dataacquisition/{ns}signalcharacteristics", source)
    waveforms = required(root, f"{ns}waveforms/{ns}parsedwaveforms", source)
    fs_hz = _sampling_rate(signal, waveforms, ns, source)
    resolution_uv = _resolution_uv(signal, waveforms, ns, source)
    names = _lead_names(signal, waveforms, ns, source)
    duration_ms = parse_number(waveforms.get("durationperchannel"), "durationperchannel", source)
    samples_per_lead = duration_ms * fs_hz / 1000.0
    # the decoded int16 leads may not outgrow the input limit (XLI expands ~600x)
    if not 2 <= samples_per_lead <= max_bytes / (2 * len(names)):
        raise RecordError(f"{source}: durationperchannel at the sampling rate is not a "
                          f"plausible lead length; refused")
    n_samples = int(round(samples_per_lead))
    check_sample_budget(len(names), n_samples, max_samples, source)
    counts = _decode(waveforms, len(names), n_samples, source)
    samples_mv = (_rebuild_limb_leads(counts) * (resolution_uv * 1e-3)).astype(np.float32)
    samples_mv, calibration = _trim_calibration(samples_mv, fs_hz, resolution_uv, source)
    start_time, notes = _start(root, ns)
    metadata: Dict[str, Any] = dict(notes)
    metadata.update(_description(root, ns, version))
    metadata["resolution_uv"] = resolution_uv
    metadata["calibration_pulse_samples"] = calibration
    return Recording(samples_mv=samples_mv, fs_hz=fs_hz, lead_names=tuple(names),
                     format="philips", start_time=start_time,
                     patient_id=optional_text(
                         root, f"{ns}patient/{ns}generalpatientdata/{ns}patientid"),
                     metadata=metadata)


def _namespace(root: Element) -> str:
    """The root's namespace as an ElementTree prefix: Philips' own in exports, none in the
    de-identified files some tools write."""
    return root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def _version(root: Element, ns: str, source: str) -> str:
    """documentversion, refusing versions whose waveform layout is not known."""
    version = required_text(root, f"{ns}documentinfo/{ns}documentversion", source)
    if version not in _VERSIONS:
        raise RecordError(f"{source}: Philips XML documentversion is not supported "
                          f"(supported: {', '.join(_VERSIONS)})")
    return version


def _sampling_rate(signal: Element, waveforms: Element, ns: str, source: str) -> float:
    """samplespersecond (1.04) or signalcharacteristics/samplingrate (both versions)."""
    text = waveforms.get("samplespersecond") or optional_text(signal, f"{ns}samplingrate")
    if text is None:
        raise RecordError(f"{source}: no sampling rate (samplingrate/samplespersecond)")
    return parse_number(text, "sampling rate", source)


def _resolution_uv(signal: Element, waveforms: Element, ns: str, source: str) -> float:
    """Microvolts per LSB: parsedwaveforms@resolution, resolution or signalresolution."""
    text = (waveforms.get("resolution") or optional_text(signal, f"{ns}resolution")
            or optional_text(signal, f"{ns}signalresolution"))
    if text is None:
        raise RecordError(f"{source}: no signal resolution (resolution/signalresolution)")
    value = parse_number(text, "signal resolution", source)
    if value <= 0:
        raise RecordError(f"{source}: signal resolution is not positive")
    return value


def _lead_names(signal: Element, waveforms: Element, ns: str, source: str) -> List[str]:
    """The valid leads; the first six must be the limb leads in Philips' standard order."""
    labels = (waveforms.get("leadlabels") or "").split()
    count_text = waveforms.get("numberofleads") or optional_text(
        signal, f"{ns}numberchannelsvalid")
    if count_text is None:
        raise RecordError(f"{source}: number of valid leads not stated")
    n_leads = int(parse_number(count_text, "number of leads", source))
    if not labels:
        lead_set = optional_text(signal, f"{ns}leadset") or optional_text(
            signal, f"{ns}acquisitiontype")
        if lead_set not in ("STD-12", "10-WIRE"):
            raise RecordError(f"{source}: lead set is not STD-12 or 10-WIRE, the ones "
                              f"supported")
        labels = list(STANDARD_LEADS)
    if not 6 <= n_leads <= len(labels):
        raise RecordError(f"{source}: the number of leads stated is not between 6 and the "
                          f"{len(labels)} labels")
    names = [normalize_lead_name(label) for label in labels[:n_leads]]
    if tuple(names[:6]) != STANDARD_LEADS[:6]:
        raise RecordError(f"{source}: the first six leads are not I, II, III, aVR, aVL, aVF; "
                          f"the residual limb-lead coding cannot be undone")
    return names


def _decode(waveforms: Element, n_leads: int, n_samples: int, source: str) -> np.ndarray:
    """Base64 + XLI -> int16 counts ``[n_leads, n_samples]``."""
    encoding = waveforms.get("dataencoding")
    compression = waveforms.get("compression") or (
        waveforms.get("compressmethod") if waveforms.get("compressflag") == "True" else None)
    if encoding != "Base64" or compression != "XLI":
        raise RecordError(f"{source}: waveform encoding / compression is not supported "
                          f"(only Base64 + XLI)")
    payload = decode_base64(waveforms.text, "parsedwaveforms", source)
    try:
        return xli.decode_leads(payload, n_leads, n_samples)
    except xli.XliError as exc:
        raise RecordError(f"{source}: XLI waveform is corrupt: {exc}") from exc


def _rebuild_limb_leads(counts: np.ndarray) -> np.ndarray:
    """Undo the residual coding of III, aVR, aVL, aVF (int16 in, int16 out, C semantics)."""
    wide = counts.astype(np.int32)
    lead_i, lead_ii = wide[0], wide[1]
    out = counts.copy()
    out[2] = (lead_ii - lead_i - wide[2]).astype(np.int16)
    lead_iii = out[2].astype(np.int32)
    out[3] = (-_halve_toward_zero(lead_i + lead_ii) - wide[3]).astype(np.int16)
    out[4] = (_halve_toward_zero(lead_i - lead_iii) - wide[4]).astype(np.int16)
    out[5] = (_halve_toward_zero(lead_ii + lead_iii) - wide[5]).astype(np.int16)
    return out


def _halve_toward_zero(values: np.ndarray) -> np.ndarray:
    """C integer division by 2 (truncates toward zero, unlike Python's floor division)."""
    return (values + (values < 0)) // 2


def _trim_calibration(samples_mv: np.ndarray, fs_hz: float, resolution_uv: float,
                      source: str) -> Tuple[np.ndarray, Optional[List[int]]]:
    """Return the first 10 s and the calibration pulse's [start, stop) samples (or None)."""
    rhythm_samples = int(round(_RHYTHM_S * fs_hz))
    pulse = _calibration_pulse(samples_mv, fs_hz, resolution_uv)
    if pulse is not None and pulse[0] < rhythm_samples:
        raise RecordError(f"{source}: calibration pulse at sample {pulse[0]} lies inside "
                          f"the first {_RHYTHM_S:g} s; layout not understood")
    return samples_mv[:, :rhythm_samples], pulse


def _calibration_pulse(samples_mv: np.ndarray, fs_hz: float,
                       resolution_uv: float) -> Optional[List[int]]:
    """The longest run where every lead sits at exactly 1 mV, if it lasts >= 50 ms."""
    tolerance_mv = resolution_uv * 1e-3 / 2
    on_pulse = np.all(np.abs(samples_mv - _CALIBRATION_MV) <= tolerance_mv, axis=0)
    edges = np.diff(np.concatenate(([0], on_pulse.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    if len(starts) == 0:
        return None
    longest = int(np.argmax(stops - starts))
    if stops[longest] - starts[longest] < _CALIBRATION_MIN_S * fs_hz:
        return None
    return [int(starts[longest]), int(stops[longest])]


def _start(root: Element, ns: str) -> StartTime:
    """dataacquisition@date + @time (local wall-clock time, no zone)."""
    acquisition = root.find(f"{ns}dataacquisition")
    if acquisition is None or not acquisition.get("date"):
        return None, {}
    date = _DATE.match(acquisition.get("date") or "")
    clock = _CLOCK.match(acquisition.get("time") or "00:00:00")
    if not date or not clock:
        return time_problem("dataacquisition date/time", "is not YYYY-MM-DD HH:MM:SS")
    return acquisition_start("dataacquisition date/time", *date.groups(), *clock.groups())


def _description(root: Element, ns: str, version: str) -> Dict[str, Any]:
    """Machine, document version and the interpretation statements (non-identifying)."""
    found: Dict[str, Any] = {
        "device": optional_text(root, f"{ns}dataacquisition/{ns}machine"),
        "document_version": version,
    }
    statements: List[str] = []
    interpretation = root.find(f"{ns}interpretations/{ns}interpretation")
    if interpretation is not None:
        deleted = {id(inner) for element in interpretation.iter()
                   if element.get("deleted") == "True" for inner in element.iter()}
        for element in interpretation.iter():
            if element.tag in (f"{ns}leftstatement", f"{ns}lhsstatement") \
                    and id(element) not in deleted:
                text = (element.text or "").strip()
                if text and text not in statements:
                    statements.append(text)
    if statements:
        found["statements"] = statements
    return {key: value for key, value in found.items() if value}
