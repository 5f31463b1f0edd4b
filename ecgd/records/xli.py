"""Philips XLI waveform decompression (SierraECG 1.03 / PhilipsECG 1.04 ``parsedwaveforms``).

The base64-decoded payload is a run of chunks, one per lead::

    int32 LE  n_bytes     size of the LZW stream that follows the 8-byte header
    int16 LE  (unused)    always 1 in the files seen
    int16 LE  first_delta seeds the delta decoder
    n_bytes   LZW stream  10-bit codes, MSB first; 256 literal codes, no clear code,
                          the table stops growing at code 1022, code 1023 ends the stream

The LZW output holds 16-bit delta codes split into planes: all high bytes, then all low
bytes. Each sample is a linear prediction from the two before it, corrected by the
previous delta code less a bias of 64. Philips' decoder keeps every value in a C
``short``, so sums wrap modulo 2**16; some real files depend on that wrap.

Written from the format description in sixlettervariables/sierra-ecg-tools (MIT).
"""
from __future__ import annotations

import math

import struct
from typing import List, Optional

import numpy as np

_CODE_BITS = 10
_END_CODE = (1 << _CODE_BITS) - 1           # 1023 ends the stream
_LAST_TABLE_CODE = _END_CODE - 1            # 1022: the table is full after this code
_HEADER = struct.Struct("<ihh")
_DELTA_BIAS = 64


class XliError(ValueError):
    """The XLI payload is truncated or corrupt (callers add the file name)."""


def decode_leads(payload: bytes, n_leads: int, n_samples: int) -> np.ndarray:
    """Decode the first ``n_leads`` XLI chunks of ``payload`` into int16 ``[n_leads, n_samples]``.

    Values are the file's raw counts (multiply by its resolution for microvolts). Chunks
    after ``n_leads`` (recorders may append unused channels) are ignored.
    """
    if n_samples < 2:
        raise XliError("fewer than 2 samples per lead declared")
    leads = np.empty((n_leads, n_samples), dtype=np.int16)
    offset = 0
    for lead in range(n_leads):
        if offset + _HEADER.size > len(payload):
            raise XliError(f"payload ends after {lead} of {n_leads} leads")
        n_bytes, _unused, first_delta = _HEADER.unpack_from(payload, offset)
        offset += _HEADER.size
        if n_bytes <= 0 or offset + n_bytes > len(payload):
            raise XliError(f"lead {lead + 1}: its chunk's stated size overruns the payload")
        stream = payload[offset:offset + n_bytes]
        offset += n_bytes
        # LZW expands up to ~600x: never expand past what the lead needs
        codes = expand_lzw(stream, max_bytes=2 * n_samples)
        if len(codes) < 2 * n_samples:
            raise XliError(f"lead {lead + 1}: {len(codes) // 2} samples decoded, "
                           f"{n_samples} expected")
        deltas = _interleave_planes(codes, n_samples)
        leads[lead] = undelta(deltas, first_delta)
    return leads


def expand_lzw(stream: bytes, max_bytes: Optional[int] = None) -> bytes:
    """Expand a 10-bit, MSB-first LZW stream (no clear code; code 1023 ends it).

    With ``max_bytes``, expansion stops once that many bytes are out (the result may run
    up to one table entry, at most 1023 bytes, past it).
    """
    if max_bytes is not None:
        # every code yields at least one byte: codes past the first max_bytes are never used
        stream = stream[:(max_bytes * _CODE_BITS + 7) // 8 + 2]
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))
    n_codes = len(bits) // _CODE_BITS
    weights = 1 << np.arange(_CODE_BITS - 1, -1, -1)
    codes = bits[:n_codes * _CODE_BITS].reshape(n_codes, _CODE_BITS) @ weights
    if n_codes == 0 or codes[0] > 255:
        raise XliError("LZW stream does not start with a literal code")
    table: List[bytes] = [bytes((value,)) for value in range(256)]
    table_size = len(table)  # kept in a local: this loop runs once per code
    limit_bytes = max_bytes if max_bytes is not None else math.inf
    previous = table[int(codes[0])]
    out = [previous]
    out_bytes = len(previous)
    for code in codes[1:].tolist():
        if code == _END_CODE or out_bytes >= limit_bytes:
            break
        if code < table_size:
            entry = table[code]
        elif code == table_size:
            # the code being defined right now: previous string + its own first byte
            entry = previous + previous[:1]
        else:
            raise XliError(f"an LZW code refers past the table ({table_size} entries)")
        if table_size <= _LAST_TABLE_CODE:
            table.append(previous + entry[:1])
            table_size += 1
        out.append(entry)
        out_bytes += len(entry)
        previous = entry
    return b"".join(out)


def _interleave_planes(planes: bytes, n_samples: int) -> np.ndarray:
    """Join the high-byte plane and the low-byte plane into int16 delta codes."""
    raw = np.frombuffer(planes, dtype=np.uint8)
    # Philips' decoder splits at the expected sample count, not at half the output
    high = raw[:n_samples].astype(np.uint16)
    low = raw[n_samples:2 * n_samples].astype(np.uint16)
    return ((high << 8) | low).view(np.int16)


def undelta(deltas: np.ndarray, first_delta: int) -> np.ndarray:
    """Invert XLI's second-order delta coding, wrapping to int16 exactly as C ``short`` does.

    Sample ``k >= 2`` is ``2*s[k-1] - s[k-2] - c[k]`` with ``c[2] = first_delta`` and
    ``c[k] = delta[k-1] - 64``; samples 0 and 1 are stored as they are. The recurrence is
    linear, so it is solved with two cumulative sums in int64 and wrapped once at the end,
    which equals wrapping after every step.
    """
    codes = deltas.astype(np.int64)
    n = len(codes)
    if n < 2:
        raise XliError(f"{n} samples; at least 2 are needed")
    corrections = np.empty(n, dtype=np.int64)
    corrections[:2] = 0
    corrections[2:3] = first_delta
    corrections[3:] = codes[2:-1] - _DELTA_BIAS
    steps = np.empty(n, dtype=np.int64)
    steps[0] = codes[0]
    steps[1:] = (codes[1] - codes[0]) - np.cumsum(corrections[1:])
    samples = np.cumsum(steps)
    return ((samples + 32768) % 65536 - 32768).astype(np.int16)
