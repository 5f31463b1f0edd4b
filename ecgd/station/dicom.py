"""One report as a DICOM 12-lead ECG Waveform Storage instance, for a hospital's PACS or ECG
management system.

One instance per window: one multiplex group ("RHYTHM", DERIVED: resampled to the model
rate, limb leads possibly derived) of 16-bit samples, 1 uV per step, so the samples are
exact to 1 uV (a window beyond +-32.767 mV, which QC never accepts, gets the smallest whole
number of microvolts per step that fits, and says so). Leads are coded with their MDC terms
(``2:1`` "Lead I" ...). The patient is named only by the pseudonym (Patient ID); every other
patient attribute is present and empty, as the IOD requires. The interpretation travels as
waveform annotations: the QC verdict, the measurements, and the findings above threshold or
why there is no valid interpretation. UIDs derive from the report id (instance) and from the
input (study and series), so exporting again gives the same instance.
"""
from __future__ import annotations

import datetime as dt
import io
import math
import uuid
from typing import List, Tuple

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from ecgd import __version__
from ecgd.errors import ExportError
from ecgd.station.codes import MDC_LEAD_TERMS
from ecgd.station.fhir import conclusion
from ecgd.station.view import ReportView

TWELVE_LEAD_ECG_STORAGE = "1.2.840.10008.5.1.4.1.1.9.1.1"
# UIDs under the UUID-derived root (PS3.5 B.2), from fixed names: no registered root needed.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://ecgd.invalid/dicom")
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(_UID_NAMESPACE, 'implementation').int}"
# PS3.3 A.34.3: 12-lead ECG waveforms are 200-1000 Hz, at most 16384 samples per channel.
_FS_RANGE_HZ = (200.0, 1000.0)
_MAX_SAMPLES = 16384
_INT16_MAX = 32767


def uid_from(value: uuid.UUID) -> str:
    """A DICOM UID from a UUID: ``2.25.`` and the UUID as one decimal integer."""
    return f"2.25.{value.int}"


def dicom_bytes(view: ReportView) -> bytes:
    """The DICOM file (Part 10, explicit VR little endian) of one report; ExportError if the
    report holds no tracing or one outside the 12-lead ECG IOD's limits."""
    waveform = view.waveform
    if waveform is None:
        raise ExportError(f"no tracing in this report ({view.tracing_absent_reason()}); "
                          "a DICOM ECG needs one")
    low_hz, high_hz = _FS_RANGE_HZ
    if not low_hz <= waveform.fs_hz <= high_hz or waveform.n_samples > _MAX_SAMPLES:
        raise ExportError(f"{waveform.fs_hz:g} Hz x {waveform.n_samples} samples is outside "
                          f"the DICOM 12-lead ECG limits ({low_hz:g}-{high_hz:g} Hz, at most "
                          f"{_MAX_SAMPLES} samples)")
    instance_uid = uid_from(uuid.UUID(view.report_id))
    dataset = Dataset()
    dataset.file_meta = _file_meta(instance_uid)
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = TWELVE_LEAD_ECG_STORAGE
    dataset.SOPInstanceUID = instance_uid
    acquired = _moment(view.acquired_at or view.created_at)
    created = _moment(view.created_at)
    # Patient: the pseudonym alone; the rest is type 2 (present, empty).
    dataset.PatientName = ""
    dataset.PatientID = view.pseudonym or ""
    dataset.PatientBirthDate = ""
    dataset.PatientSex = ""
    # Study and series: every window of one input together.
    study = uuid.uuid5(_UID_NAMESPACE, f"study:{view.input_key}")
    dataset.StudyInstanceUID = uid_from(study)
    dataset.SeriesInstanceUID = uid_from(uuid.uuid5(study, "series"))
    dataset.StudyDate, dataset.StudyTime = acquired.strftime("%Y%m%d"), acquired.strftime("%H%M%S")
    dataset.StudyID = study.hex[:16]
    dataset.AccessionNumber = ""
    dataset.ReferringPhysicianName = ""
    dataset.Modality = "ECG"
    dataset.SeriesNumber = 1
    dataset.Manufacturer = "ecgd"
    dataset.SoftwareVersions = __version__
    dataset.InstanceNumber = view.window_index + 1
    dataset.ContentDate, dataset.ContentTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    dataset.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S.%f+0000")
    dataset.TimezoneOffsetFromUTC = "+0000"
    dataset.AcquisitionContextSequence = Sequence()
    samples_uv = np.stack([waveform.lead(lead) for lead in waveform.lead_names])
    step_uv = max(1, math.ceil(float(np.abs(samples_uv).max(initial=0)) / _INT16_MAX))
    dataset.WaveformSequence = Sequence([_multiplex_group(waveform.lead_names, samples_uv,
                                                          step_uv, waveform.fs_hz)])
    dataset.WaveformAnnotationSequence = Sequence(
        [_annotation(text) for text in _statements(view, step_uv)])
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _file_meta(instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(TWELVE_LEAD_ECG_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = f"ECGD_{__version__}"[:16]
    return meta


def _moment(text: str) -> dt.datetime:
    """A report's ISO 8601 time as a UTC datetime (``Z`` spelled out for Python 3.10)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def _multiplex_group(lead_names: Tuple[str, ...], samples_uv: np.ndarray, step_uv: int,
                     fs_hz: float) -> Dataset:
    group = Dataset()
    group.WaveformOriginality = "DERIVED"
    group.NumberOfWaveformChannels = len(lead_names)
    group.NumberOfWaveformSamples = int(samples_uv.shape[1])
    group.SamplingFrequency = f"{fs_hz:g}"
    group.MultiplexGroupLabel = "RHYTHM"
    group.ChannelDefinitionSequence = Sequence([_channel(lead, step_uv) for lead in lead_names])
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    stored = np.rint(samples_uv / step_uv).astype("<i2")
    group.WaveformData = np.ascontiguousarray(stored.T).tobytes()  # interleaved per sample
    return group


def _channel(lead: str, step_uv: int) -> Dataset:
    source = Dataset()
    source.CodeValue = f"2:{MDC_LEAD_TERMS[lead]}"
    source.CodingSchemeDesignator = "MDC"
    source.CodeMeaning = f"Lead {lead}"
    unit = Dataset()
    unit.CodeValue = "uV"
    unit.CodingSchemeDesignator = "UCUM"
    unit.CodeMeaning = "microvolt"
    channel = Dataset()
    channel.ChannelSourceSequence = Sequence([source])
    channel.ChannelSensitivity = str(step_uv)
    channel.ChannelSensitivityUnitsSequence = Sequence([unit])
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = "0"
    channel.ChannelSampleSkew = "0"
    channel.WaveformBitsStored = 16
    return channel


def _statements(view: ReportView, step_uv: int) -> List[str]:
    """What a reader of the instance must know, one annotation each."""
    statements = [conclusion(view)]
    verdict = "accepted" if view.qc_status == "accepted" else "rejected (" + ", ".join(
        view.qc_reasons) + ")"
    statements.append(f"Quality control: {verdict}")
    statements += [f"{m.label} {value:g} {m.unit}" for m, value in view.present_measures()]
    if view.acquired_at is None:
        statements.append("Acquisition time not stated by the source: the time of analysis "
                          "is given instead")
    if step_uv > 1:
        statements.append(f"Samples stored at {step_uv} uV per step (amplitude beyond "
                          "+-32.767 mV)")
    return statements


def _annotation(text: str) -> Dataset:
    annotation = Dataset()
    annotation.UnformattedTextValue = text
    annotation.ReferencedWaveformChannels = [1, 0]  # multiplex group 1, all channels
    return annotation
