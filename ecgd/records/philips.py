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

import datetime as dt
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.etree.ElementTree import Element

import numpy as np

from ecgd.errors import RecordError
from ecgd.records import xli
from ecgd.records.recording import STANDARD_LEADS, Recording, normalize_lead_name
from ecgd.records.xml_safety import (acquisition_time, decode_base64, optional_text,
                                     parse_number, parse_xml, required, required_text)

_NS = "{http://www3.medical.philips.com}"
_VERSIONS = ("1.03", "1.04", "1.04.01")
_RHYTHM_S = 10.0
_CALIBRATION_MV = 1.0
_CALIBRATION_MIN_S = 0.05


def read(path: Path, max_bytes: int) -> Recording:
    """Read the 10-s rhythm of a Philips SierraECG/PhilipsECG XML file as millivolts."""
    path = Path(path)
    source = path.name
    root = parse_xml(path, max_bytes)
    version = _version(root, source)
    signal = required(root, f"{_NS}dataacquisition/{_NS}signalcharacteristics", source)
    waveforms = required(root, f"{_NS}waveforms/{_NS}parsedwaveforms", source)
    fs_hz = _sampling_rate(signal, waveforms, source)
    resolution_uv = _resolution_uv(signal, waveforms, source)
    names = _lead_names(signal, waveforms, version, source)
    duration_ms = parse_number(waveforms.get("durationperchannel"), "durationperchannel", source)
    samples_per_lead = duration_ms * fs_hz / 1000.0
    # the decoded int16 leads may not outgrow the input limit (XLI expands ~600x)
    if not 2 <= samples_per_lead <= max_bytes / (2 * len(names)):
        raise RecordError(f"{source}: durationperchannel {duration_ms:g} ms at {fs_hz:g} Hz "
                          f"is not a plausible lead length; refused")
    n_samples = int(round(samples_per_lead))
    counts = _decode(waveforms, len(names), n_samples, source)
    samples_mv = (_rebuild_limb_leads(counts) * (resolution_uv * 1e-3)).astype(np.float32)
    samples_mv, calibration = _trim_calibration(samples_mv, fs_hz, resolution_uv, source)
    start_time, metadata = _start(root, source)
    metadata.update(_description(root, version))
    metadata["resolution_uv"] = resolution_uv
    metadata["calibration_pulse_samples"] = calibration
    return Recording(samples_mv=samples_mv, fs_hz=fs_hz, lead_names=tuple(names),
                     format="philips", start_time=start_time,
                     patient_id=optional_text(
                         root, f"{_NS}patient/{_NS}generalpatientdata/{_NS}patientid"),
                     metadata=metadata)


def _version(root: Element, source: str) -> str:
    """documentversion, refusing versions whose waveform layout is not known."""
    version = required_text(root, f"{_NS}documentinfo/{_NS}documentversion", source)
    if version not in _VERSIONS:
        raise RecordError(f"{source}: Philips XML version {version!r} is not supported "
                          f"(supported: {', '.join(_VERSIONS)})")
    return version


def _sampling_rate(signal: Element, waveforms: Element, source: str) -> float:
    """samplespersecond (1.04) or signalcharacteristics/samplingrate (both versions)."""
    text = waveforms.get("samplespersecond") or optional_text(signal, f"{_NS}samplingrate")
    if text is None:
        raise RecordError(f"{source}: no sampling rate (samplingrate/samplespersecond)")
    return parse_number(text, "sampling rate", source)


def _resolution_uv(signal: Element, waveforms: Element, source: str) -> float:
    """Microvolts per LSB: parsedwaveforms@resolution, resolution or signalresolution."""
    text = (waveforms.get("resolution") or optional_text(signal, f"{_NS}resolution")
            or optional_text(signal, f"{_NS}signalresolution"))
    if text is None:
        raise RecordError(f"{source}: no signal resolution (resolution/signalresolution)")
    value = parse_number(text, "signal resolution", source)
    if value <= 0:
        raise RecordError(f"{source}: signal resolution {value:g} uV is not positive")
    return value


def _lead_names(signal: Element, waveforms: Element, version: str, source: str) -> List[str]:
    """The valid leads; the first six must be the limb leads in Philips' standard order."""
    labels = (waveforms.get("leadlabels") or "").split()
    count_text = waveforms.get("numberofleads") or optional_text(
        signal, f"{_NS}numberchannelsvalid")
    if count_text is None:
        raise RecordError(f"{source}: number of valid leads not stated")
    n_leads = int(parse_number(count_text, "number of leads", source))
    if not labels:
        lead_set = optional_text(signal, f"{_NS}leadset") or optional_text(
            signal, f"{_NS}acquisitiontype")
        if lead_set not in ("STD-12", "10-WIRE"):
            raise RecordError(f"{source}: lead set {lead_set!r} is not supported "
                              f"(version {version})")
        labels = list(STANDARD_LEADS)
    if n_leads > len(labels):
        raise RecordError(f"{source}: {n_leads} leads stated but only {len(labels)} labels")
    names = [normalize_lead_name(label) for label in labels[:n_leads]]
    if tuple(names[:6]) != STANDARD_LEADS[:6]:
        raise RecordError(f"{source}: leads {names[:6]} are not I, II, III, aVR, aVL, aVF; "
                          f"the residual limb-lead coding cannot be undone")
    return names


def _decode(waveforms: Element, n_leads: int, n_samples: int, source: str) -> np.ndarray:
    """Base64 + XLI -> int16 counts ``[n_leads, n_samples]``."""
    encoding = waveforms.get("dataencoding")
    compression = waveforms.get("compression") or (
        waveforms.get("compressmethod") if waveforms.get("compressflag") == "True" else None)
    if encoding != "Base64" or compression != "XLI":
        raise RecordError(f"{source}: waveform encoding {encoding!r} / compression "
                          f"{compression!r} is not supported (only Base64 + XLI)")
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


def _start(root: Element, source: str) -> Tuple[Optional[dt.datetime], Dict[str, Any]]:
    """dataacquisition@date + @time (local wall-clock time, no zone)."""
    acquisition = root.find(f"{_NS}dataacquisition")
    if acquisition is None or not acquisition.get("date"):
        return None, {}
    text = f"{acquisition.get('date')} {acquisition.get('time') or '00:00:00'}"
    try:
        moment = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError as exc:
        raise RecordError(f"{source}: acquisition time {text!r} is not YYYY-MM-DD HH:MM:SS") \
            from exc
    start_time, metadata = acquisition_time(moment, text)
    return start_time, dict(metadata)


def _description(root: Element, version: str) -> Dict[str, Any]:
    """Machine, document version and the interpretation statements (non-identifying)."""
    found: Dict[str, Any] = {
        "device": optional_text(root, f"{_NS}dataacquisition/{_NS}machine"),
        "document_version": version,
    }
    statements: List[str] = []
    interpretation = root.find(f"{_NS}interpretations/{_NS}interpretation")
    if interpretation is not None:
        deleted = {id(inner) for element in interpretation.iter()
                   if element.get("deleted") == "True" for inner in element.iter()}
        for element in interpretation.iter():
            if element.tag in (f"{_NS}leftstatement", f"{_NS}lhsstatement") \
                    and id(element) not in deleted:
                text = (element.text or "").strip()
                if text and text not in statements:
                    statements.append(text)
    if statements:
        found["statements"] = statements
    return {key: value for key, value in found.items() if value}
