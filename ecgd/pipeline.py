"""Recording -> windows -> quality control -> measurements -> inference -> reports.

The same code serves ``ecgd analyze`` and the daemon. Work is split in two halves so a
caller can batch inference across inputs: :meth:`Analyzer.prepare` does everything up to
the model input, one window at a time (cut with context, resampled, judged, measured and
preprocessed: ``ecgd.signal.chain``), and :meth:`Analyzer.finish` turns logits into reports.
A window the model cannot see (QC rejected it, or the recording lacks leads) still gets its
QC verdict and whatever measurements its leads allow.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.special import expit

from ecgd.config import MeasurementConfig, QcConfig, WindowConfig
from ecgd.errors import ModelError, RecordError
from ecgd.model.manifest import Manifest
from ecgd.model.session import ModelSession
from ecgd.preflight import model_window_samples
from ecgd.records.recording import Recording
from ecgd.report import (ModelInfo, build_report, findings_from_probabilities, make_report_id,
                         readable_text, utc_timestamp)
from ecgd.report_waveform import encode_waveform
from ecgd.signal.bridged import BridgedStretches
from ecgd.signal.chain import (SignalChain, WindowLayout, cut_window, rejected_qc,
                               unmeasured_fields)
from ecgd.signal.preprocess import make_preprocessor


@dataclasses.dataclass
class WorkBudget:
    """How long one input may take in :meth:`Analyzer.prepare` before it is failed with a reason.

    ``time_s`` of wall time since the budget was made, checked between windows, so one slow
    step still runs to its end. Memory needs no budget here: prepare works one window at a
    time, and ``[limits] max_input_samples`` bounds the recording before it is decoded.
    ``on_progress`` is called at every check: the daemon counts it as progress for the
    watchdog, so a long input that keeps moving is not taken for a hang.
    """

    time_s: float = math.inf
    on_progress: Optional[Callable[[], None]] = None
    started_s: float = dataclasses.field(default_factory=time.monotonic)

    def check_time(self) -> None:
        """RecordError once ``time_s`` has passed."""
        if self.on_progress is not None:
            self.on_progress()
        if time.monotonic() - self.started_s > self.time_s:
            raise RecordError(f"not interpreted: processing took longer than the per-input "
                              f"time budget of {self.time_s:g} s ([limits] input_time_budget_s)")


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """Where a recording came from: the report's ``source`` fields and the report-id seed.

    ``id_seed`` must be the same whenever the input is the same (a file's content digest;
    a live stream's device and position) so that report ids are deterministic.
    """

    fields: Mapping[str, Any]
    id_seed: str


def file_source(name: str, recording_format: str, content_sha256: str) -> SourceInfo:
    """The source of a recording read from a file (base name ``name``): the same fields and
    report-id seed whether the daemon, ``ecgd analyze`` or ``ecgd batch`` reads it. A name
    that is not valid UTF-8 is shown with its undecodable bytes as ``\\xNN``."""
    return SourceInfo(fields={"kind": "file", "file": readable_text(name),
                              "format": recording_format,
                              "content_sha256": content_sha256},
                      id_seed=f"file:{content_sha256}")


@dataclasses.dataclass
class PreparedWindow:
    """One window after QC and measurements.

    ``model_not_run``: why the network will not see this window (``qc_rejected``,
    ``missing_lead:V3``, ``too_short``); empty when it will, and then ``model_input`` is
    the preprocessed window. ``signal_mv``: the 12-lead window in mV at the model rate, after
    lead derivation and before preprocessing, in the model's lead order: what QC and the
    network judged, and what the report's ``waveform`` carries (None when leads are missing
    or the analyzer keeps no waveform).
    """

    index: int
    window: Dict[str, Any]
    qc: Dict[str, Any]
    measurements: Dict[str, Any]
    qc_ms: float
    model_not_run: Tuple[str, ...]
    model_input: Optional[np.ndarray] = None
    signal_mv: Optional[np.ndarray] = None
    preprocess_ms: float = 0.0


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
    """Interprets recordings with one model session; filters are designed once, here.

    ``session`` may be None, with ``manifest`` given instead, for an analyzer that only
    prepares windows and builds reports (``ecgd batch`` on Ray prepares windows in tasks
    that hold no model); :meth:`infer` then refuses.
    """

    def __init__(self, session: Optional[ModelSession], window: WindowConfig, qc: QcConfig,
                 mains_hz: int, batch_max: int = 16,
                 measurement: MeasurementConfig = MeasurementConfig(),
                 keep_waveform: bool = True, *, manifest: Optional[Manifest] = None) -> None:
        if session is not None:
            manifest = session.manifest
        if manifest is None:
            raise ModelError("an analyzer needs a model session or its manifest")
        window_samples = model_window_samples(window, manifest)
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
        self.chain = SignalChain(qc, measurement, self.preprocess, mains_hz)
        self.model_info = ModelInfo(name=manifest.name, sha256=manifest.onnx_sha256,
                                    precision=manifest.precision, trained=manifest.trained,
                                    preprocessing=manifest.preprocessing_profile)

    # -- first half: everything up to the model input ---------------------------------
    def prepare(self, recording: Recording, source: SourceInfo, pseudonym: Optional[str],
                read_ms: float = 0.0, lead_off: Optional[Sequence[bool]] = None,
                host: Optional[Mapping[str, Any]] = None,
                first_window_index: int = 0,
                bridged: Optional[BridgedStretches] = None,
                budget: Optional[WorkBudget] = None) -> PreparedRecording:
        """Cut windows; per window: resample, QC, R peaks, measurements, preprocessing.

        Each window is cut from the source with ``CONTEXT_S`` of its neighbours on either
        side (where the recording has them), resampled to the model rate and judged on its
        own, so the work and memory per window do not grow with the recording.
        ``lead_off`` holds the front end's electrode-off bits in ``recording.lead_names``
        order (live sources); they are fed to QC as ``lead_off`` reasons. Windows are
        numbered from ``first_window_index`` (a live stream numbers its windows itself).
        ``bridged`` says which samples a live source filled in; a window with too many is
        rejected as ``bridged`` (ecgd.signal.bridged).
        ``budget`` bounds the work (RecordError when exceeded); none by default.
        """
        budget = budget or WorkBudget()
        fs_model = self.manifest.fs_hz
        layout = WindowLayout.of(recording, self.manifest.lead_names)
        n_model = int(round(recording.n_samples * fs_model / recording.fs_hz))
        starts = list(range(0, n_model - self.window_samples + 1, self.stride_samples))
        base: Dict[str, Any] = {"fs_hz": fs_model, "source_fs_hz": recording.fs_hz,
                                "leads_derived": list(layout.derived)}
        if layout.missing:
            base["leads_missing"] = list(layout.missing)
        if not starts:
            window = dict(base, index=first_window_index, start_s=0.0, n_samples=n_model)
            return PreparedRecording(source, pseudonym, [PreparedWindow(
                first_window_index, window, rejected_qc(("too_short",)),
                unmeasured_fields("too_short"), 0.0, ("too_short",))],
                read_ms, 0.0, host)
        channel_lead_off = self._lead_off_per_channel(recording, layout, lead_off)
        prepared = []
        preprocess_ms = 0.0
        for index, start in enumerate(starts, start=first_window_index):
            budget.check_time()
            window = dict(base, index=index, start_s=round(start / fs_model, 6),
                          n_samples=self.window_samples)
            if recording.start_time is not None:
                window["start_time"] = utc_timestamp(
                    recording.start_time + dt.timedelta(seconds=start / fs_model))
            item = self._prepare_window(recording, layout, start, index, window,
                                        channel_lead_off, bridged)
            prepared.append(item)
            preprocess_ms += item.preprocess_ms
        return PreparedRecording(source, pseudonym, prepared, read_ms, preprocess_ms, host)

    def _prepare_window(self, recording: Recording, layout: WindowLayout, start: int,
                        index: int, window: Dict[str, Any],
                        lead_off: Optional[List[bool]],
                        bridged: Optional[BridgedStretches]) -> PreparedWindow:
        """QC, beats, measurements and (if it may run) the model input of one window."""
        t0 = time.perf_counter()
        cut = cut_window(recording, layout, start, self.window_samples, self.manifest.fs_hz)
        result = self.chain.judge(cut, lead_off)
        qc_ms = (time.perf_counter() - t0) * 1000.0 - result.preprocess_ms
        qc_fields, measurements = result.qc_fields(), result.measurements
        if bridged is not None:
            source_start = int(round(start * recording.fs_hz / self.manifest.fs_hz))
            source_stop = source_start + cut.raw_mv.shape[1]
            bridged_reasons = bridged.reasons(source_start, source_stop)
            if bridged_reasons:
                qc_fields = dict(qc_fields, status="rejected",
                                 reasons=list(qc_fields["reasons"]) + list(bridged_reasons))
                measurements = unmeasured_fields("qc_rejected")
        not_run: Tuple[str, ...] = tuple(f"missing_lead:{lead}" for lead in layout.missing)
        if qc_fields["status"] != "accepted":
            not_run = ("qc_rejected",) + not_run
        item = PreparedWindow(index, window, qc_fields, measurements, qc_ms,
                              not_run, preprocess_ms=result.preprocess_ms)
        if layout.complete:
            if self.keep_waveform:
                item.signal_mv = cut.window_mv
            if not not_run:
                item.model_input = result.model_view
        return item

    @staticmethod
    def _lead_off_per_channel(recording: Recording, layout: WindowLayout,
                              lead_off: Optional[Sequence[bool]]) -> Optional[List[bool]]:
        """The front end's electrode-off bits in ``layout.names`` order."""
        if lead_off is None:
            return None
        # A derived limb lead is off when either of its source electrodes (I, II) is off.
        limb_off = any(bit for name, bit in zip(recording.lead_names, lead_off)
                       if name in ("I", "II"))
        return [bool(lead_off[channel]) if channel >= 0 else limb_off
                for channel in layout.channels]

    # -- inference ------------------------------------------------------------------
    def infer(self, model_inputs: Sequence[np.ndarray],
              on_progress: Optional[Callable[[], None]] = None) -> Tuple[np.ndarray, float]:
        """Logits ``[len(inputs), n_labels]`` in chunks of ``batch_max``; total time in ms.
        ``on_progress`` is called after each chunk (progress for the daemon's watchdog)."""
        n_labels = len(self.manifest.labels)
        if not model_inputs:
            return np.empty((0, n_labels), dtype=np.float32), 0.0
        if self.session is None:
            raise ModelError(f"{self.manifest.name}: this analyzer prepares windows only; "
                             f"it holds no model session to infer with")
        t0 = time.perf_counter()
        chunks = []
        for begin in range(0, len(model_inputs), self.batch_max):
            batch = np.ascontiguousarray(np.stack(model_inputs[begin:begin + self.batch_max]),
                                         dtype=np.float32)
            chunks.append(self.session.predict_logits(batch))
            if on_progress is not None:
                on_progress()
        return np.concatenate(chunks), (time.perf_counter() - t0) * 1000.0

    def infer_recordings(self, prepared: Sequence[PreparedRecording],
                         on_progress: Optional[Callable[[], None]] = None
                         ) -> List[Tuple[np.ndarray, float]]:
        """Infer the accepted windows of several recordings together, in shared batches of
        up to ``batch_max`` windows (a backlog of one-window inputs then runs at batch speed).

        Returns, per recording, its logit rows and its share of the inference time in ms
        (proportional to its number of accepted windows).
        """
        counts = [len(item.model_inputs()) for item in prepared]
        logits, total_ms = self.infer([x for item in prepared for x in item.model_inputs()],
                                      on_progress)
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
        rows = iter(probabilities)
        reports = []
        for item in prepared.windows:
            findings: List[Dict[str, Any]] = []
            accepted_window = item.model_input is not None
            if accepted_window:
                findings = findings_from_probabilities(self.manifest.labels, next(rows),
                                                       self.manifest.thresholds)
            waveform = None
            if self.keep_waveform and item.signal_mv is not None:
                waveform = encode_waveform(item.signal_mv, self.manifest.lead_names,
                                           self.manifest.fs_hz)
            reports.append(build_report(
                report_id=make_report_id(prepared.source.id_seed, item.index),
                source=prepared.source.fields,
                pseudonym=prepared.pseudonym,
                window=item.window,
                qc=item.qc,
                measurements=item.measurements,
                model=self.model_info,
                model_not_run=item.model_not_run,
                findings=findings,
                timing_ms={"read": prepared.read_ms, "qc": item.qc_ms,
                           "preprocess": item.preprocess_ms,
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
