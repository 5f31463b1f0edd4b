"""The 12 standard lead names, in the order models, reports and the wire formats use.

Plain data, kept apart from ``ecgd.records.recording`` (which needs numpy), so that a
model manifest is checked without importing numpy and ``ecgd check`` starts fast.
"""
from __future__ import annotations

from typing import Tuple

STANDARD_LEADS: Tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
