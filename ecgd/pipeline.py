"""Recording -> windows -> quality control -> preprocessing -> inference -> reports.

The same code serves ``ecgd analyze`` and the daemon. Work is split in two halves so a
caller can batch inference across inputs: :meth:`Analyzer.prepare` does everything up to
the model input (QC on the raw millivolt signal at the source rate, R-peaks, resampling,
preprocessing of accepted windows) and :meth:`Analyzer.finish` turns logits into reports.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.special import expit

from ecgd.config import QcConfig, WindowConfig
from ecgd.errors import ConfigError
from ecgd.model.session import ModelSession
from ecgd.signal.preprocess import make_preprocessor
from ecgd.signal.quality import assess_window
from ecgd.records.recording import Recording, arrange_standard_leads
from ecgd.report import (ModelInfo, build_report, findings_from_probabilities, make_report_id,
                         utc_timestamp)
from ecgd.report_waveform import encode_waveform
from ecgd.signal.resample import resample_to
from ecgd.signal.beats import detect_r_peaks, rhythm_measurements

_NO_MEASUREMENTS: Dict[str, Any] = {"heart_rate_bpm": None, "rr_ms": [],
                                    "rr_irregularity": None}


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """Where a recording came from: the report's ``source`` fields and the report-id seed.

    ``id_seed`` must be the same whenever the input is the same (a file's content digest;
    a live stream's device and position) so that report ids are deterministic.
    """

    fields: Mapping[str, Any]
    id_seed: str


@dataclasses.dataclass
class PreparedWindow:
    """One window after QC; ``model_input`` is set only for accepted windows.

    ``signal_mv`` is the window QC and the network judged: float32 ``[12, n]`` mV in the
    model's lead order and rate, before the model's normalisation; None when the recording
    has no 12-lead signal (missing leads, too short).
    """

    index: int
    window: Dict[str, Any]
    qc_status: str
    qc_score: Optional[float]
    qc_reasons: Tuple[str, ...]
    measurements: Dict[str, Any]
    qc_ms: float
    model_input: Optional[np.ndarray] = None
    signal_mv: Optional[np.ndarray] = None


@dataclasses.dataclass
class PreparedRecording:
    """All windows of one input, ready for (batched) inference."""

    source: SourceInfo
    pseudonym: Optional[str]
    windows: List[PreparedWindow]
    read_ms: float
    preprocess_ms: float
    host: Optional[Mapping[str, Any]] = None

    def model_inputs(self) -> List[np.ndarray]:
        """Preprocessed ``[12, n]`` arrays of the accepted windows, in window order."""
        return [w.model_input for w in self.windows if w.model_input is not None]


class Analyzer:
    """Interprets recordings with one model session; filters are designed once, here."""

    def __init__(self, session: ModelSession, window: WindowConfig, qc: QcConfig,
                 mains_hz: int, batch_max: int = 16, keep_waveform: bool = True) -> None:
        manifest = session.manifest
        window_samples = int(round(window.seconds * manifest.fs_hz))
        if window_samples != manifest.n_samples:
            raise ConfigError(f"[window] seconds: {window.seconds:g} s at {manifest.fs_hz:g} Hz "
                              f"is {window_samples} samples but model {manifest.name} takes "
                              f"{manifest.n_samples}")
        self.session = session
        self.manifest = manifest
        self.qc = qc
        self.mains_hz = mains_hz
        self.batch_max = batch_max
        self.keep_waveform = keep_waveform
        self.window_samples = window_samples
        self.stride_samples = int(round(window.stride_s * manifest.fs_hz))
        self.preprocess = make_preprocessor(manifest.preprocessing_profile,
                                            manifest.preprocessing_params, manifest.fs_hz,
                                            mains_hz)
        self.model_info = ModelInfo(name=manifest.name, sha256=manifest.onnx_sha256,
                                    precision=manifest.precision, trained=manifest.trained,
                                    preprocessing=manifest.preprocessing_profile)

    # -- first half: everything up to the model input ---------------------------------
    def prepare(self, recording: Recording, source: SourceInfo, pseudonym: Optional[str],
                read_ms: float = 0.0, lead_off: Optional[Sequence[bool]] = None,
                host: Optional[Mapping[str, Any]] = None,
                first_window_index: int = 0) -> PreparedRecording:
        """Cut windows, run QC and R-peak detection, preprocess the accepted windows.

        ``lead_off`` holds the front end's electrode-off bits in ``recording.lead_names``
        order (live sources); they are fed to QC as ``lead_off`` reasons. Windows are
        numbered from ``first_window_index`` (a live stream numbers its windows itself).
        """
        fs_model = self.manifest.fs_hz
        fs_source = recording.fs_hz
        standard = arrange_standard_leads(recording, self.manifest.lead_names)
        n_model = int(round(recording.n_samples * fs_model / fs_source))
        starts = list(range(0, n_model - self.window_samples + 1, self.stride_samples))
        base = {"fs_hz": fs_model, "source_fs_hz": fs_source,
                "leads_derived": list(standard.derived)}
        if standard.missing:
            base["leads_missing"] = list(standard.missing)

        if not starts:
            window = dict(base, index=first_window_index, start_s=0.0, n_samples=n_model)
            reasons = ("too_short",) + tuple(f"missing_lead:{lead}" for lead in standard.missing)
            prepared = [PreparedWindow(first_window_index, window, "rejected", None, reasons,
                                       dict(_NO_MEASUREMENTS), 0.0)]
            return PreparedRecording(source, pseudonym, prepared, read_ms, 0.0, host)

        model_lead_off = self._lead_off_in_model_order(recording, lead_off)
        model_mv = None
        source_mv = standard.samples_mv
        if source_mv is not None:
            model_mv = resample_to(source_mv, fs_source, fs_model)
        source_window = int(round(self.window_samples * fs_source / fs_model))
        prepared = []
        for index, start in enumerate(starts, start=first_window_index):
            window = dict(base, index=index, start_s=round(start / fs_model, 6),
                          n_samples=self.window_samples)
            if recording.start_time is not None:
                window["start_time"] = utc_timestamp(
                    recording.start_time + dt.timedelta(seconds=start / fs_model))
            if model_mv is None or source_mv is None:
                reasons = tuple(f"missing_lead:{lead}" for lead in standard.missing)
                prepared.append(PreparedWindow(index, window, "rejected", None, reasons,
                                               dict(_NO_MEASUREMENTS), 0.0))
                continue
            t0 = time.perf_counter()
            source_start = int(round(start * fs_source / fs_model))
            raw_mv = source_mv[:, source_start:source_start + source_window]
            r_peaks = detect_r_peaks(raw_mv, fs_source)
            verdict = assess_window(raw_mv, fs_source, self.manifest.lead_names, self.qc,
                                    mains_hz=self.mains_hz, lead_off=model_lead_off,
                                    r_peaks=r_peaks)
            qc_ms = (time.perf_counter() - t0) * 1000.0
            signal_mv = model_mv[:, start:start + self.window_samples]
            if verdict.ok:
                measurements = rhythm_measurements(r_peaks, fs_source)
                item = PreparedWindow(index, window, "accepted", verdict.score, (),
                                      measurements, qc_ms, signal_mv, signal_mv)
            else:
                item = PreparedWindow(index, window, "rejected", verdict.score,
                                      tuple(verdict.reasons), dict(_NO_MEASUREMENTS), qc_ms,
                                      signal_mv=signal_mv)
            prepared.append(item)

        t0 = time.perf_counter()
        accepted = [w for w in prepared if w.model_input is not None]
        if accepted:
            batch = self.preprocess(np.stack([w.model_input for w in accepted
                                              if w.model_input is not None]))
            for item, model_input in zip(accepted, batch):
                item.model_input = model_input
        preprocess_ms = (time.perf_counter() - t0) * 1000.0
        return PreparedRecording(source, pseudonym, prepared, read_ms, preprocess_ms, host)

    def _lead_off_in_model_order(self, recording: Recording,
                                 lead_off: Optional[Sequence[bool]]) -> Optional[List[bool]]:
        if lead_off is None:
            return None
        off = {name for name, bit in zip(recording.lead_names, lead_off) if bit}
        # A derived limb lead is off when either of its source electrodes (I, II) is off.
        limb_off = bool(off & {"I", "II"})
        return [name in off or (limb_off and name in ("III", "aVR", "aVL", "aVF")
                                and name not in recording.lead_names)
                for name in self.manifest.lead_names]

    # -- inference ------------------------------------------------------------------
    def infer(self, model_inputs: Sequence[np.ndarray]) -> Tuple[np.ndarray, float]:
        """Logits ``[len(inputs), n_labels]`` in chunks of ``batch_max``; total time in ms."""
        n_labels = len(self.manifest.labels)
        if not model_inputs:
            return np.empty((0, n_labels), dtype=np.float32), 0.0
        t0 = time.perf_counter()
        chunks = []
        for begin in range(0, len(model_inputs), self.batch_max):
            batch = np.ascontiguousarray(np.stack(model_inputs[begin:begin + self.batch_max]),
                                         dtype=np.float32)
            chunks.append(self.session.predict_logits(batch))
        return np.concatenate(chunks), (time.perf_counter() - t0) * 1000.0

    def infer_recordings(self, prepared: Sequence[PreparedRecording]
                         ) -> List[Tuple[np.ndarray, float]]:
        """Infer the accepted windows of several recordings together, in shared batches of
        up to ``batch_max`` windows (a backlog of one-window inputs then runs at batch speed).

        Returns, per recording, its logit rows and its share of the inference time in ms
        (proportional to its number of accepted windows).
        """
        counts = [len(item.model_inputs()) for item in prepared]
        logits, total_ms = self.infer([x for item in prepared for x in item.model_inputs()])
        total = sum(counts)
        results = []
        begin = 0
        for count in counts:
            share_ms = total_ms * count / total if total else 0.0
            results.append((logits[begin:begin + count], share_ms))
            begin += count
        return results

    # -- second half: logits -> reports ---------------------------------------------------
    def finish(self, prepared: PreparedRecording, logits: np.ndarray,
               inference_ms: float) -> List[Dict[str, Any]]:
        """Reports for every window of ``prepared``; ``logits`` rows follow accepted windows."""
        accepted = [w for w in prepared.windows if w.model_input is not None]
        if len(accepted) != len(logits):
            raise ValueError(f"{len(logits)} logit rows for {len(accepted)} accepted windows")
        probabilities = expit(logits.astype(np.float64))
        per_window_inference = inference_ms / len(accepted) if accepted else 0.0
        per_window_preprocess = prepared.preprocess_ms / len(accepted) if accepted else 0.0
        rows = iter(probabilities)
        reports = []
        for item in prepared.windows:
            findings: List[Dict[str, Any]] = []
            if item.model_input is not None:
                findings = findings_from_probabilities(self.manifest.labels, next(rows),
                                                       self.manifest.thresholds)
            accepted_window = item.model_input is not None
            waveform = None
            if self.keep_waveform and item.signal_mv is not None:
                waveform = encode_waveform(item.signal_mv, self.manifest.lead_names,
                                           self.manifest.fs_hz)
            reports.append(build_report(
                report_id=make_report_id(prepared.source.id_seed, item.index),
                source=prepared.source.fields,
                pseudonym=prepared.pseudonym,
                window=item.window,
                qc_status=item.qc_status,
                qc_score=item.qc_score,
                qc_reasons=item.qc_reasons,
                measurements=item.measurements,
                model=self.model_info,
                findings=findings,
                timing_ms={"read": prepared.read_ms, "qc": item.qc_ms,
                           "preprocess": per_window_preprocess if accepted_window else 0.0,
                           "inference": per_window_inference if accepted_window else 0.0},
                host=prepared.host,
                waveform=waveform,
            ))
        return reports

    def analyze(self, recording: Recording, source: SourceInfo, pseudonym: Optional[str],
                read_ms: float = 0.0, lead_off: Optional[Sequence[bool]] = None,
                host: Optional[Mapping[str, Any]] = None,
                first_window_index: int = 0) -> List[Dict[str, Any]]:
        """All reports of one recording, its accepted windows inferred in one batch."""
        prepared = self.prepare(recording, source, pseudonym, read_ms, lead_off, host,
                                first_window_index)
        logits, inference_ms = self.infer(prepared.model_inputs())
        return self.finish(prepared, logits, inference_ms)
