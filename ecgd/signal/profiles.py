"""The preprocessing profiles a model manifest may name, with their parameters' defaults.

Plain data, kept apart from ``ecgd.signal.preprocess`` (which applies the profiles with
scipy), so that a manifest is checked without importing scipy and ``ecgd check`` starts fast.
"""
from __future__ import annotations

from typing import Any, Dict

PROFILE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ecgfounder": {
        "notch_q": 30.0,
        "bandpass_hz": [0.67, 40.0],
        "bandpass_order": 4,
        "baseline_median_s": 0.4,
        "zscore": "global",
        "zscore_eps": 1e-8,
    },
    "edge-cds": {
        "bandpass_hz": [0.5, 50.0],
        "bandpass_order": 2,
        "notch_q": 30.0,
        "notch_min_snr_db": 10.0,
        "zscore": "per_lead",
        "zscore_eps": 1e-8,
    },
}
