"""The analysed window inside a report: every lead's samples, exact to 1 uV, in ~40 KiB.

The reader at the reading station must see the tracing QC and the network saw, so a report
carries the window's 12 leads after lead derivation, in the model's rate and lead order,
before the model's normalisation. Encoding ``ecgd-wave-1`` (lead-major, documented in
``ecgd/schemas/report.schema.json`` under ``waveform``):

1. samples rounded to integer microvolts (at most 0.5 uV from the analysed float32 mV);
2. where I and II are present, III, aVR, aVL and aVF are replaced by their residual against
   the Einthoven/Goldberger prediction, in integer arithmetic with floor division:
   ``III - (II - I)``, ``aVR + floor((I + II) / 2)``, ``aVL - (I - floor(II / 2))``,
   ``aVF - (II - floor(I / 2))``; derived limb leads then cost almost nothing and recorded
   ones little;
3. per lead, the first difference along time (the first sample kept as it is);
4. zigzag (0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...), then unsigned LEB128 varints, so the
   many small steps of an ECG take one byte each;
5. zlib, then base64 (the report is JSON).

Lossless on the integer microvolts. Why this and not raw integers through a compressor:
over 126 real 10-s windows (``tools/bench_station.py``) this takes a median 39 KiB per
window against 72 KiB for zlib level 6 over the int32 samples, at a fifth of its CPU time;
zlib over int32 first differences took 61 KiB, bz2 or xz over the varints 5-15 % less than
this at 5-15 times the time (25 windows).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ecgd.errors import TamperedError

ENCODING = "ecgd-wave-1"
UNIT = "uV"
# zlib level 1: level 6 saves about a tenth of the size for several times the time, and the
# appliance encodes every window on its inference thread.
_ZLIB_LEVEL = 1
# Beyond +-2^31 uV (2 kV) no electrode signal exists: such a window holds a broken gain and
# its samples are not kept (the report says so by having no waveform).
_MAX_ABS_UV = 2**31 - 1
# A zigzagged first difference of int32 values fits 33 bits: at most 5 LEB128 bytes.
_MAX_VARINT_BYTES = 5
_LIMB_LEADS = ("III", "aVR", "aVL", "aVF")


@dataclasses.dataclass(frozen=True)
class Waveform:
    """A decoded report waveform: ``samples_uv`` int64 ``[leads, n]`` in ``lead_names`` order."""

    lead_names: Tuple[str, ...]
    fs_hz: float
    samples_uv: np.ndarray

    @property
    def samples_mv(self) -> np.ndarray:
        """The samples in millivolts (float64)."""
        return self.samples_uv / 1000.0

    @property
    def n_samples(self) -> int:
        return int(self.samples_uv.shape[1])

    def lead(self, name: str) -> np.ndarray:
        """One lead's samples in microvolts."""
        return self.samples_uv[self.lead_names.index(name)]


def _limb_predictions(samples_uv: np.ndarray, lead_names: Sequence[str]
                      ) -> Dict[int, np.ndarray]:
    """Row index -> integer prediction of that limb lead from I and II (empty without them)."""
    if "I" not in lead_names or "II" not in lead_names:
        return {}
    lead_i = samples_uv[lead_names.index("I")]
    lead_ii = samples_uv[lead_names.index("II")]
    predictions = {"III": lead_ii - lead_i, "aVR": -((lead_i + lead_ii) // 2),
                   "aVL": lead_i - lead_ii // 2, "aVF": lead_ii - lead_i // 2}
    return {lead_names.index(name): predictions[name] for name in _LIMB_LEADS
            if name in lead_names}


def encode_waveform(signal_mv: np.ndarray, lead_names: Sequence[str],
                    fs_hz: float) -> Optional[Dict[str, Any]]:
    """The report's ``waveform`` object for ``signal_mv`` ``[leads, n]`` (mV).

    None when a sample lies beyond +-2 kV: no electrode produces that, the recording's gain
    is broken, and QC rejects the window for its amplitude anyway.
    """
    samples_uv = np.rint(np.asarray(signal_mv, dtype=np.float64) * 1000.0)
    if samples_uv.size and not np.abs(samples_uv).max() <= _MAX_ABS_UV:
        return None
    samples_uv = samples_uv.astype(np.int64)
    residual = samples_uv.copy()
    for row, prediction in _limb_predictions(samples_uv, lead_names).items():
        residual[row] -= prediction
    steps = np.diff(residual, axis=1, prepend=0).ravel()
    zigzag = ((steps << 1) ^ (steps >> 63)).astype(np.uint64)
    data = zlib.compress(_leb128(zigzag), _ZLIB_LEVEL)
    return {"encoding": ENCODING, "unit": UNIT, "fs_hz": float(fs_hz),
            "n_samples": int(samples_uv.shape[1]), "lead_names": list(lead_names),
            "data": base64.b64encode(data).decode("ascii")}


def _leb128(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of every value (each < 2^35): 7 bits per byte, high bit = more."""
    n_bytes = np.ones(values.size, dtype=np.int64)
    for k in range(1, _MAX_VARINT_BYTES):
        n_bytes += values >= np.uint64(1 << (7 * k))
    positions = np.cumsum(n_bytes) - n_bytes
    out = np.empty(int(n_bytes.sum()), dtype=np.uint8)
    for k in range(int(n_bytes.max(initial=0))):
        rows = np.flatnonzero(n_bytes > k)
        more = (n_bytes[rows] > k + 1).astype(np.uint8) << 7
        out[positions[rows] + k] = ((values[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)
                                    ).astype(np.uint8) | more
    return out.tobytes()


def _un_leb128(data: bytes, count: int) -> np.ndarray:
    """``count`` unsigned LEB128 values from ``data``; ValueError if it holds anything else."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if len(ends) != count or (raw.size and raw[-1] >= 0x80):
        raise ValueError(f"holds {len(ends)} values, expected {count}")
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    lengths = ends - starts + 1
    if lengths.size and lengths.max() > _MAX_VARINT_BYTES:
        raise ValueError("a value is longer than 5 bytes")
    values = np.zeros(count, dtype=np.uint64)
    for k in range(int(lengths.max(initial=0))):
        rows = np.flatnonzero(lengths > k)
        values[rows] |= (raw[starts[rows] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    return values


def decode_waveform(waveform: Any) -> Waveform:
    """The samples of a report's ``waveform`` object; TamperedError if it is malformed.

    The report was authenticated before this is called, so a malformed waveform means a
    writer other than ecgd's: it is refused like a report that is not JSON.
    """
    try:
        if not isinstance(waveform, dict) or waveform.get("encoding") != ENCODING:
            raise ValueError(f"encoding is not {ENCODING}")
        if waveform.get("unit") != UNIT:
            raise ValueError(f"unit is not {UNIT}")
        lead_names = tuple(str(name) for name in waveform["lead_names"])
        n_samples = int(waveform["n_samples"])
        fs_hz = float(waveform["fs_hz"])
        if not lead_names or n_samples <= 0 or not fs_hz > 0:
            raise ValueError("no leads, samples or rate")
        count = len(lead_names) * n_samples
        packed = base64.b64decode(waveform["data"], validate=True)
        decompressor = zlib.decompressobj()
        varints = decompressor.decompress(packed, count * _MAX_VARINT_BYTES + 1)
        if len(varints) > count * _MAX_VARINT_BYTES or not decompressor.eof:
            raise ValueError("data is longer than its samples allow, or truncated")
        zigzag = _un_leb128(varints, count)
    except (KeyError, TypeError, ValueError, binascii.Error, zlib.error) as exc:
        raise TamperedError(f"report waveform is malformed: {exc}") from exc
    steps = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(np.int64)
    samples_uv = np.cumsum(steps.reshape(len(lead_names), n_samples), axis=1)
    for row, prediction in _limb_predictions(samples_uv, lead_names).items():
        samples_uv[row] += prediction
    return Waveform(lead_names, fs_hz, samples_uv)
