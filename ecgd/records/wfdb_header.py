"""WFDB header files (PhysioNet ``.hea``), parsed as the WFDB ``header(5)`` page words them.

The first line that is not blank or a ``#`` comment is the record line::

    RECORD[/SEGMENTS] N_SIGNALS [FS[/COUNTER_FS[(BASE_COUNTER)]] [N_SAMPLES [BASE_TIME [BASE_DATE]]]]

and each following one a signal line::

    FILE FORMAT[xSAMPLES_PER_FRAME][:SKEW][+BYTE_OFFSET] [GAIN[(BASELINE)][/UNITS]
        [ADC_RES [ADC_ZERO [INIT_VALUE [CHECKSUM [BLOCK_SIZE [DESCRIPTION]]]]]]]

Every field after the format is optional and takes the documented default: gain 200 ADC
units per mV when absent or 0 (WFDB's "uncalibrated"), baseline = ADC zero, units mV, ADC
zero 0, initial value = ADC zero, no description. The sampling rate is the one default
ecgd does not take (250 Hz): a header without it is refused. ``BASE_TIME`` is
``[[HH:]MM:]SS[.fff]`` and ``BASE_DATE`` ``DD/MM/YYYY``; they are kept as text for
:mod:`ecgd.records.timestamps`. Errors name the line and the field, never its value.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import List, Optional, Tuple

from ecgd.errors import RecordError

DEFAULT_GAIN_PER_MV = 200.0
DEFAULT_UNITS = "mV"

_FORMAT_FIELD = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_FIELD = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?"
                         r"(?:/(\S*))?$")
_RATE_FIELD = re.compile(r"^((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:/[^(]*(?:\(.*\))?)?$")
_INTEGER_FIELDS = ("ADC resolution", "ADC zero", "initial value", "checksum", "block size")


@dataclasses.dataclass(frozen=True)
class SignalSpec:
    """One signal line. ``adc_gain`` is ADC units per physical unit (never 0: the default
    applies); ``adc_resolution_bits`` is 0 when the header does not state it."""

    line_no: int
    file_name: str
    format: str
    samples_per_frame: int
    skew: int
    byte_offset: int
    adc_gain: float
    gain_stated: bool
    baseline: int
    units: str
    adc_resolution_bits: int
    adc_zero: int
    initial_value: int
    description: Optional[str]


@dataclasses.dataclass(frozen=True)
class WfdbHeader:
    """A parsed single-segment header; ``n_samples`` is None when the record line omits it."""

    record_name: str
    fs_hz: float
    n_samples: Optional[int]
    base_time: Optional[str]
    base_date: Optional[str]
    signals: Tuple[SignalSpec, ...]
    comments: Tuple[str, ...]


def header_lines(text: str) -> Tuple[List[Tuple[int, str]], List[str]]:
    """``([(line number, line)], comments)``: the non-blank, non-comment lines with their
    1-based numbers, and the comment lines without their ``#``."""
    lines: List[Tuple[int, str]] = []
    comments: List[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line:
            lines.append((number, line))
    return lines, comments


def parse_header(text: str, source: str) -> WfdbHeader:
    """Parse header text; RecordError naming ``source``, the line and the field otherwise."""
    lines, comments = header_lines(text)
    if not lines:
        raise RecordError(f"{source}: no WFDB record line")
    record_no, record_line = lines[0]
    fields = record_line.split()
    if "/" in fields[0]:
        raise RecordError(f"{source}: multi-segment WFDB records are not supported")
    if len(fields) < 2:
        raise RecordError(f"{source}: line {record_no}: the record line states no number of "
                          f"signals")
    n_signals = _natural(fields[1], f"line {record_no}: number of signals", source)
    if len(fields) < 3:
        raise RecordError(f"{source}: line {record_no}: the record line states no sampling "
                          f"rate (WFDB's default of 250 Hz is never assumed)")
    rate = _RATE_FIELD.match(fields[2])
    fs_hz = float(rate.group(1)) if rate else math.nan
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise RecordError(f"{source}: line {record_no}: sampling rate is not a positive number")
    n_samples = (_natural(fields[3], f"line {record_no}: number of samples", source)
                 if len(fields) > 3 else None)
    signal_lines = lines[1:]
    if n_signals == 0:
        raise RecordError(f"{source}: header declares no signals")
    if len(signal_lines) != n_signals:
        raise RecordError(f"{source}: the record line's number of signals disagrees with the "
                          f"{len(signal_lines)} signal lines")
    return WfdbHeader(
        record_name=fields[0],
        fs_hz=fs_hz,
        n_samples=n_samples,
        base_time=fields[4] if len(fields) > 4 else None,
        base_date=fields[5] if len(fields) > 5 else None,
        signals=tuple(_signal_spec(number, line, source) for number, line in signal_lines),
        comments=tuple(comments),
    )


def _signal_spec(line_no: int, line: str, source: str) -> SignalSpec:
    """One signal line with the documented defaults filled in."""
    where = f"line {line_no}"
    fields = line.split(None, 8)
    if len(fields) < 2:
        raise RecordError(f"{source}: {where}: signal line states no storage format")
    storage = _FORMAT_FIELD.match(fields[1])
    if not storage:
        raise RecordError(f"{source}: {where}: storage format field is not "
                          f"FORMAT[xN][:SKEW][+OFFSET]")
    fmt, per_frame, skew, offset = storage.groups()
    gain_per_unit, baseline, units = DEFAULT_GAIN_PER_MV, None, DEFAULT_UNITS
    gain_stated = False
    if len(fields) > 2:
        gain = _GAIN_FIELD.match(fields[2])
        if not gain:
            raise RecordError(f"{source}: {where}: gain field is not GAIN[(BASELINE)][/UNITS]")
        gain_per_unit = float(gain.group(1))
        if not math.isfinite(gain_per_unit):
            raise RecordError(f"{source}: {where}: gain is not a finite number")
        gain_stated = gain_per_unit != 0
        gain_per_unit = gain_per_unit or DEFAULT_GAIN_PER_MV
        if gain.group(2) is not None:
            baseline = _integer(gain.group(2), f"{where}: baseline", source)
        units = gain.group(3) or DEFAULT_UNITS
    integers: List[Optional[int]] = [_integer(value, f"{where}: {what}", source)
                                     for value, what in zip(fields[3:8], _INTEGER_FIELDS)]
    integers += [None] * (len(_INTEGER_FIELDS) - len(integers))
    adc_resolution, adc_zero, initial_value = integers[0] or 0, integers[1] or 0, integers[2]
    return SignalSpec(
        line_no=line_no,
        file_name=fields[0],
        format=fmt,
        samples_per_frame=int(per_frame) if per_frame else 1,
        skew=int(skew) if skew else 0,
        byte_offset=int(offset) if offset else 0,
        adc_gain=gain_per_unit,
        gain_stated=gain_stated,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        adc_resolution_bits=adc_resolution,
        adc_zero=adc_zero,
        initial_value=adc_zero if initial_value is None else initial_value,
        description=fields[8].strip() if len(fields) > 8 and fields[8].strip() else None,
    )


def _natural(text: str, what: str, source: str) -> int:
    """A non-negative decimal integer field."""
    value = _integer(text, what, source)
    if value < 0:
        raise RecordError(f"{source}: {what} is negative")
    return value


def _integer(text: str, what: str, source: str) -> int:
    """A decimal integer field, optionally signed, that fits 64 bits (so numpy and float
    arithmetic on it cannot overflow)."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > 18:
        raise RecordError(f"{source}: {what} is not an integer of at most 18 digits")
    return int(text)
