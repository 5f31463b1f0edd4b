"""The bridged-signal QC rule (ecgd.signal.bridged) and where it plugs in: Analyzer.prepare."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ecgd.config import QcConfig, WindowConfig
from ecgd.model.session import ModelSession
from ecgd.pipeline import Analyzer, SourceInfo
from ecgd.records.reader import read_recording
from ecgd.signal.bridged import BridgedStretches


def test_samples_in_clips_gaps_to_the_window():
    """Only the part of each gap inside [start, stop) counts."""
    stretches = BridgedStretches(((90, 110), (300, 310), (990, 1010)), 0.02)
    assert stretches.samples_in(100, 1000) == 10 + 10 + 10
    assert stretches.samples_in(0, 50) == 0


def test_reason_only_above_the_limit():
    """Exactly max_fraction filled in is accepted; one sample more is 'bridged'."""
    at_limit = BridgedStretches(((0, 50), (200, 250)), 0.02)
    assert at_limit.reasons(0, 5000) == ()
    over = BridgedStretches(((0, 50), (200, 251)), 0.02)
    assert over.reasons(0, 5000) == ("bridged",)


@pytest.fixture(scope="module")
def analyzer(reference_manifest: Path) -> Analyzer:
    session = ModelSession.open(reference_manifest, threads=1)
    return Analyzer(session, WindowConfig(), QcConfig(), 50, batch_max=1)


def _bridged_like_the_windower(samples: np.ndarray, gaps) -> np.ndarray:
    """``samples`` with each gap replaced by the straight line the windower draws."""
    out = samples.copy()
    for start, end in gaps:
        steps = np.arange(1, end - start + 1) / (end - start + 1)
        out[:, start:end] = (samples[:, start - 1, None]
                             + (samples[:, end] - samples[:, start - 1])[:, None] * steps)
    return out


def test_prepare_rejects_a_window_with_too_much_bridged_signal(analyzer, shared_data):
    """A clean real window with 5 bridged gaps of 20 samples (2 %) is interpreted; one
    more sample bridged and QC rejects it as 'bridged', with no model input."""
    recording = read_recording(shared_data / "cinc2021" / "E07502.hea", 10 ** 8)
    source = SourceInfo({"kind": "serial"}, "test")
    verdicts = []
    for gaps in ([(500 + 900 * k, 520 + 900 * k) for k in range(5)],
                 [(500 + 900 * k, 520 + 900 * k) for k in range(4)] + [(4100, 4121)]):
        live = dataclasses.replace(
            recording, samples_mv=_bridged_like_the_windower(recording.samples_mv, gaps))
        prepared = analyzer.prepare(live, source, None,
                                    bridged=BridgedStretches(tuple(gaps), 0.02))
        (window,) = prepared.windows
        verdicts.append((window.qc_status, window.qc_reasons, window.model_input is not None))
    assert verdicts == [("accepted", (), True), ("rejected", ("bridged",), False)]
