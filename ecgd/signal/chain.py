"""One window from a recording to its quality verdict and measurements, without the model.

The pipeline calls this for every window, files and live alike:

- :func:`cut_window` takes the window's samples from the source with ``CONTEXT_S`` of its
  neighbours on either side (where the recording has them), derives the limb leads and
  resamples only that stretch to the model rate. Memory and work per window are bounded
  whatever the recording's length or rate, and the R-peak detector and filters see real
  signal, not padding, at the window's edges (a lone window still has no neighbours).
- :class:`SignalChain` judges the window (``ecgd.signal.quality``), finds its beats
  (``ecgd.signal.beats``) and, when quality allows, measures rhythm, intervals and axes
  (``ecgd.signal.delineation``).

A recording without every lead the model needs is still judged and measured on the leads it
has; channels that are not standard leads are named ``ch<N>`` (their position in the file),
never by the name the file gives them.
"""
from __future__ import annotations

import dataclasses
import time
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ecgd.config import MeasurementConfig, QcConfig
from ecgd.records.recording import STANDARD_LEADS, Recording, arrange_standard_leads
from ecgd.signal.beats import detect_beats, rhythm_measurements
from ecgd.signal.delineation import FIELDS as INTERVAL_FIELDS, measure_intervals
from ecgd.signal.preprocess import Preprocessor
from ecgd.signal.quality import QualityVerdict, assess_window, samples_at_rails
from ecgd.signal.resample import MAX_RATIO_DENOMINATOR, resample_to

CONTEXT_S = 2.0
MEASUREMENT_FIELDS = ("heart_rate_bpm", "rr_irregularity") + INTERVAL_FIELDS
_LIMB_SOURCES = ("I", "II")


def rejected_qc(reasons: Sequence[str]) -> Dict[str, Any]:
    """The report's ``qc`` object of a window too short to judge."""
    return {"status": "rejected", "score": None, "reasons": list(reasons),
            "saturation_rule": None}


def unmeasured_fields(reason: str) -> Dict[str, Any]:
    """The report's ``measurements`` when nothing could be measured, all for ``reason``."""
    fields: Dict[str, Any] = {name: None for name in MEASUREMENT_FIELDS}
    fields.update(rr_ms=[], r_peaks_ms=[], qtc_formula=None,
                  unmeasured={name: reason for name in MEASUREMENT_FIELDS})
    return fields


@dataclasses.dataclass(frozen=True)
class WindowLayout:
    """The channels every window of a recording holds, in order.

    ``names``: the model's leads when all of them can be had (``complete``); otherwise the
    standard leads there are (present or derived), then the other channels as ``ch<N>``.
    ``channels``: per name, the recording's channel index, or -1 for a derived lead.
    """

    names: Tuple[str, ...]
    channels: Tuple[int, ...]
    derived: Tuple[str, ...]
    missing: Tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing

    @classmethod
    def of(cls, recording: Recording, model_leads: Sequence[str]) -> "WindowLayout":
        index = {name: i for i, name in enumerate(recording.lead_names)}
        derivable = all(lead in index for lead in _LIMB_SOURCES)
        names: List[str] = []
        channels: List[int] = []
        derived: List[str] = []
        missing: List[str] = []
        for lead in model_leads:
            if lead in index:
                names.append(lead)
                channels.append(index[lead])
            elif derivable and lead in ("III", "aVR", "aVL", "aVF"):
                names.append(lead)
                channels.append(-1)
                derived.append(lead)
            else:
                missing.append(lead)
        if missing:
            for position, name in enumerate(recording.lead_names):
                if name not in STANDARD_LEADS:
                    names.append(f"ch{position + 1}")
                    channels.append(position)
        return cls(tuple(names), tuple(channels), tuple(derived), tuple(missing))


@dataclasses.dataclass(frozen=True)
class WindowCut:
    """One window and its context, at the model rate, in ``layout.names`` order.

    ``context_mv``: float32 ``[leads, m]``; the window is ``[offset, offset + n)`` of it.
    ``raw_mv``: the window's own samples at the source rate (``raw_fs_hz``), where clipping
    and stuck inputs are judged before resampling smooths them. ``at_rails``: per raw
    sample, whether it sits at the declared digital range (None when the format declares
    none).
    """

    names: Tuple[str, ...]
    context_mv: np.ndarray
    offset: int
    n: int
    fs_hz: float
    raw_mv: np.ndarray
    raw_fs_hz: float
    at_rails: Optional[np.ndarray]

    @property
    def window_mv(self) -> np.ndarray:
        return self.context_mv[:, self.offset:self.offset + self.n]


def _arrange(recording: Recording, layout: WindowLayout, start: int, stop: int) -> np.ndarray:
    """Source samples ``[start, stop)`` of every channel of ``layout`` (float32)."""
    part = dataclasses.replace(recording, samples_mv=recording.samples_mv[:, start:stop],
                               rails_mv=None)
    standard = [name for name, channel in zip(layout.names, layout.channels)
                if name in STANDARD_LEADS]
    arranged = arrange_standard_leads(part, standard).samples_mv
    rows = [] if arranged is None else list(arranged)
    rows += [part.samples_mv[channel] for name, channel in zip(layout.names, layout.channels)
             if name not in STANDARD_LEADS]
    return np.asarray(rows, dtype=np.float32).reshape(len(layout.names), stop - start)


def _rails_per_lead(recording: Recording, layout: WindowLayout, start: int,
                    stop: int) -> Optional[np.ndarray]:
    """Per window lead and raw sample: at its declared rail. A derived lead is at a rail
    where I or II is (it is computed from them)."""
    if recording.rails_mv is None:
        return None
    at_rails = samples_at_rails(recording.samples_mv[:, start:stop], recording.rails_mv)
    index = {name: i for i, name in enumerate(recording.lead_names)}
    if not layout.derived:
        return at_rails[list(layout.channels)]
    limbs = at_rails[index["I"]] | at_rails[index["II"]]
    return np.stack([at_rails[channel] if channel >= 0 else limbs
                     for channel in layout.channels])


def cut_window(recording: Recording, layout: WindowLayout, start: int, n: int,
               fs_hz: float, context_s: float = CONTEXT_S) -> WindowCut:
    """Window ``[start, start + n)`` (model-rate samples) of ``recording`` with context.

    The source stretch starts on a sample that falls on the model's sample grid, so the
    window's samples are those a resampling of the whole recording would give.
    """
    ratio = Fraction(fs_hz / recording.fs_hz).limit_denominator(MAX_RATIO_DENOMINATOR)
    up, down = ratio.numerator, ratio.denominator
    context = int(round(context_s * fs_hz))
    first = max(0, start - context) // up            # grid points: source down*k = model up*k
    source_start = first * down
    offset = start - first * up
    source_stop = min(recording.n_samples,
                      -(-(start + n + context) * down // up))
    samples = _arrange(recording, layout, source_start, source_stop)
    context_mv = resample_to(samples, recording.fs_hz, fs_hz)
    if context_mv.shape[1] < offset + n:  # the recording ends inside the last window's grid step
        pad = np.repeat(context_mv[:, -1:], offset + n - context_mv.shape[1], axis=1)
        context_mv = np.concatenate([context_mv, pad], axis=1)
    raw_start = int(round(start * down / up))
    raw_stop = min(recording.n_samples, int(round((start + n) * down / up)))
    raw_mv = samples[:, raw_start - source_start:raw_stop - source_start]
    return WindowCut(layout.names, context_mv, offset, n, fs_hz, raw_mv, recording.fs_hz,
                     _rails_per_lead(recording, layout, raw_start, raw_stop))


@dataclasses.dataclass(frozen=True)
class WindowResult:
    """What one window yields before the model: the verdict, the report's ``measurements``
    fields and, when the preprocessing ran for QC, the model's input (None otherwise)."""

    verdict: QualityVerdict
    measurements: Dict[str, Any]
    model_view: Optional[np.ndarray]
    preprocess_ms: float = 0.0

    def qc_fields(self) -> Dict[str, Any]:
        """The report's ``qc`` object."""
        return self.verdict.as_report()


class SignalChain:
    """QC, beats and measurements of one window; filters designed once, here."""

    def __init__(self, qc: QcConfig, measurement: MeasurementConfig,
                 preprocess: Preprocessor, mains_hz: int) -> None:
        self.qc = qc
        self.measurement = measurement
        self.preprocess = preprocess
        self.mains_hz = mains_hz

    def judge(self, cut: WindowCut, lead_off: Optional[Sequence[bool]] = None) -> WindowResult:
        """Verdict and measurements of ``cut``; ``lead_off`` in ``cut.names`` order."""
        beats = detect_beats(cut.context_mv, cut.fs_hz)
        inside = (beats.r_peaks >= cut.offset) & (beats.r_peaks < cut.offset + cut.n)
        r_peaks = beats.r_peaks[inside] - cut.offset
        window_mv = cut.window_mv
        t0 = time.perf_counter()
        model_view = self.preprocess(window_mv)
        preprocess_ms = (time.perf_counter() - t0) * 1000.0
        verdict = assess_window(
            window_mv, cut.fs_hz, cut.names, self.qc, mains_hz=self.mains_hz,
            lead_off=lead_off, r_peaks=r_peaks, raw_mv=cut.raw_mv, raw_fs_hz=cut.raw_fs_hz,
            at_rails=cut.at_rails, model_view=model_view,
            lead_envelopes=beats.lead_envelopes[:, cut.offset:cut.offset + cut.n])
        if not verdict.ok:
            return WindowResult(verdict, unmeasured_fields("qc_rejected"), None, preprocess_ms)
        return WindowResult(verdict, self.measure(window_mv, r_peaks, cut.names, cut.fs_hz),
                            model_view, preprocess_ms)

    def measure(self, window_mv: np.ndarray, r_peaks: np.ndarray, names: Sequence[str],
                fs_hz: float) -> Dict[str, Any]:
        """Rhythm, beat times, intervals and axes of an accepted window."""
        rhythm = rhythm_measurements(r_peaks, fs_hz)
        intervals = measure_intervals(window_mv, r_peaks, fs_hz, names,
                                      self.measurement.qtc_formula)
        unmeasured = dict(intervals.unmeasured)
        if rhythm["heart_rate_bpm"] is None:
            unmeasured["heart_rate_bpm"] = "too_few_beats"
        if rhythm["rr_irregularity"] is None:
            unmeasured["rr_irregularity"] = "too_few_beats"
        fields: Dict[str, Any] = dict(rhythm)
        fields["r_peaks_ms"] = [round(float(p) * 1000.0 / fs_hz, 1) for p in r_peaks]
        fields.update(intervals.as_fields())
        fields["qtc_formula"] = self.measurement.qtc_formula if intervals.qtc_ms is not None \
            else None
        fields["unmeasured"] = unmeasured
        return fields
