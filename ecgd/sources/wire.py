"""Pure decoders and encoders of the three serial wire formats (shared/docs/WIRE.md).

A decoder turns bytes into events: ``SampleBlock`` (samples in millivolts at the device's
own rate, device lead order, with the digital range the format declares) and ``Gap``
(samples that are missing or cannot be trusted). A gap whose size a sequence counter gives
is ``counted``: the windower may bridge it when it is short; any other gap closes the
segment. Decoders keep partial bytes between ``feed`` calls, scan forward after garbage,
count what they dropped, and never raise on bad bytes: the wire is untrusted input and a
broken byte must not stop acquisition. Bytes skipped before the first good packet are the
receiver joining a running stream mid-packet, not a fault: they are counted apart.

Encoders produce exactly the documented bytes; the simulator and the tests use them.
"""
from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ecgd.records.recording import STANDARD_LEADS

EIGHT_LEADS: Tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
FORMATS: Tuple[str, ...] = ("openbci-cyton", "ecgd-frame", "text")

CYTON_FS_HZ = 250.0
CYTON_PACKET_BYTES = 33
CYTON_START = 0xA0
CYTON_STOP_MIN = 0xC0
CYTON_STOP_MAX = 0xC6
CYTON_CHANNELS = 8
_CYTON_COUNTER_MODULO = 256

FRAME_MAGIC = b"\xec\xd1"
FRAME_VERSION = 1
FRAME_HEADER_BYTES = 20
FRAME_CRC_BYTES = 4
FRAME_MAX_SAMPLES = 1000
_FRAME_HEADER = struct.Struct("<2sBBIHHIHH")
_FRAME_SEQUENCE_MODULO = 2 ** 32
# A backwards jump of the sequence (more than half the counter space) is a device restart,
# not four billion lost frames: its loss is unknown, so it is reported as a resync.
_FRAME_RESTART_DELTA = 2 ** 31
_INT32_RANGE = (-2 ** 31, 2 ** 31 - 1)
_INT24_RANGE = (-2 ** 23, 2 ** 23 - 1)

TEXT_MAX_LINE_BYTES = 1024
_TEXT_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3}


@dataclasses.dataclass(frozen=True)
class SampleBlock:
    """Consecutive samples: float32 ``[n_leads, n]`` millivolts at ``fs_hz``.

    ``lead_off`` has one flag per lead (electrode reported off) when the format carries
    lead-off bits, else None. ``rails_mv`` is float64 ``[n_leads, 2]``: per lead the lowest
    and highest value the wire's integer width and scale can carry (``Recording.rails_mv``),
    None when the format has no integer width (``text``).
    """

    samples: np.ndarray
    fs_hz: float
    lead_names: Tuple[str, ...]
    lead_off: Optional[Tuple[bool, ...]] = None
    rails_mv: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class Gap:
    """A break in the stream: ``lost`` (sequence jump), ``resync`` (garbage skipped) or
    ``malformed`` (a text line dropped). ``lost_samples`` per lead, 0 when unknown.

    ``counted``: ``lost_samples`` is what the device's sequence counter says is missing, so
    the samples after the gap are known to follow exactly that many later. A gap that is
    not counted (a device restart, a dropped text line) can never be bridged.
    ``counter_period_samples``: the counter wraps after this many samples (Cyton: 256), so
    the gap may also be that many samples longer; None when the counter never wraps in
    practice (``ecgd-frame``'s 32 bits).
    """

    reason: str
    lost_samples: int
    counted: bool = False
    counter_period_samples: Optional[int] = None


Event = Union[SampleBlock, Gap]


def cyton_volts_per_count(gain: int) -> float:
    """ADS1299 scale: volts per 24-bit count at programmable ``gain``."""
    return 4.5 / gain / (2 ** 23 - 1)


def frame_lead_names(n_leads: int) -> Tuple[str, ...]:
    """Lead order of an ``ecgd-frame`` with ``n_leads`` (8 or 12)."""
    return EIGHT_LEADS if n_leads == 8 else STANDARD_LEADS


def integer_rails_mv(n_leads: int, count_range: Tuple[int, int],
                     mv_per_count: float) -> np.ndarray:
    """``[n_leads, 2]`` lowest and highest millivolts of a signed integer sample width."""
    low, high = count_range
    return np.tile(np.array([[low * mv_per_count, high * mv_per_count]]), (n_leads, 1))


class _Decoder:
    """What every decoder keeps: unconsumed bytes and the counters the source reports.

    ``join_bytes`` were skipped before the first good packet (the receiver joined mid-packet);
    ``garbage_bytes`` were skipped after it (a fault of the link).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._joined = False  # a good packet was seen: later skips are garbage
        self._skipped = 0  # garbage bytes since the last good packet (a resync pending)
        self.join_bytes = 0
        self.garbage_bytes = 0
        self.dropped_frames = 0
        self.malformed_lines = 0
        self.lost_samples = 0

    def _skip(self, n_bytes: int) -> None:
        if not self._joined:
            self.join_bytes += n_bytes
            return
        self.garbage_bytes += n_bytes
        self._skipped += n_bytes


class CytonDecoder(_Decoder):
    """OpenBCI Cyton 33-byte packets -> 8-channel blocks at 250 Hz (millivolts).

    Counters: ``garbage_bytes`` skipped while scanning for a packet, ``dropped_frames``
    (packets lost per the 8-bit counter; 256 or more in a row cannot be seen),
    ``lost_samples``.
    """

    def __init__(self, lead_names: Sequence[str] = EIGHT_LEADS, gain: int = 24) -> None:
        if len(lead_names) != CYTON_CHANNELS:
            raise ValueError(f"openbci-cyton needs {CYTON_CHANNELS} lead names")
        super().__init__()
        self.lead_names = tuple(lead_names)
        self._mv_per_count = cyton_volts_per_count(gain) * 1000.0
        self._rails_mv = integer_rails_mv(CYTON_CHANNELS, _INT24_RANGE, self._mv_per_count)
        self._last_counter: Optional[int] = None

    def feed(self, data: bytes) -> List[Event]:
        """Decode ``data`` appended to any partial packet kept from the previous call."""
        self._buffer += data
        buf = self._buffer
        events: List[Event] = []
        run: List[int] = []  # offsets of consecutive good packets, decoded in one go
        pos = 0
        while True:
            start = buf.find(CYTON_START, pos)
            if start < 0:
                self._skip(len(buf) - pos)
                pos = len(buf)
                break
            if start + CYTON_PACKET_BYTES > len(buf):
                self._skip(start - pos)
                pos = start
                break
            stop = buf[start + CYTON_PACKET_BYTES - 1]
            if not CYTON_STOP_MIN <= stop <= CYTON_STOP_MAX:
                self._skip(start + 1 - pos)
                pos = start + 1
                continue
            self._skip(start - pos)
            gap = self._gap_before(buf[start + 1])
            if gap is not None:
                self._flush(buf, run, events)
                events.append(gap)
            run.append(start)
            pos = start + CYTON_PACKET_BYTES
        self._flush(buf, run, events)
        del buf[:pos]
        return events

    def _gap_before(self, counter: int) -> Optional[Gap]:
        last, skipped = self._last_counter, self._skipped
        self._last_counter, self._skipped, self._joined = counter, 0, True
        if last is None:
            return None
        lost = (counter - last - 1) % _CYTON_COUNTER_MODULO
        self.dropped_frames += lost
        self.lost_samples += lost
        # Reported even when nothing seems lost after garbage: the 8-bit counter may have
        # wrapped under it, which only the windower's clock can tell.
        if skipped or lost:
            return Gap("resync" if skipped else "lost", lost, counted=True,
                       counter_period_samples=_CYTON_COUNTER_MODULO)
        return None

    def _flush(self, buf: bytearray, run: List[int], events: List[Event]) -> None:
        if not run:
            return
        raw = np.frombuffer(bytes(buf), dtype=np.uint8)
        rows = raw[np.asarray(run)[:, None] + np.arange(2, 2 + 3 * CYTON_CHANNELS)]
        triplets = rows.reshape(len(run), CYTON_CHANNELS, 3).astype(np.int32)
        counts = (triplets[..., 0] << 16) | (triplets[..., 1] << 8) | triplets[..., 2]
        counts -= (counts & 0x800000) << 1  # 24-bit two's complement sign extension
        samples = (counts.T * self._mv_per_count).astype(np.float32)
        events.append(SampleBlock(samples, CYTON_FS_HZ, self.lead_names, None, self._rails_mv))
        run.clear()


class FrameDecoder(_Decoder):
    """``ecgd-frame`` binary frames -> blocks in millivolts with lead-off flags.

    Counters: ``garbage_bytes`` skipped (bad CRC, impossible header, noise),
    ``dropped_frames`` (per the 32-bit sequence), ``lost_samples``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_sequence: Optional[int] = None

    def feed(self, data: bytes) -> List[Event]:
        """Decode ``data`` appended to any partial frame kept from the previous call."""
        self._buffer += data
        buf = self._buffer
        events: List[Event] = []
        run: List[np.ndarray] = []
        run_key: Optional[Tuple[int, int, int, int]] = None
        pos = 0
        while True:
            start = buf.find(FRAME_MAGIC, pos)
            if start < 0:
                # keep a trailing first magic byte not yet consumed: the second may come in
                # the next read
                keep = 1 if len(buf) > pos and buf.endswith(FRAME_MAGIC[:1]) else 0
                self._skip(len(buf) - keep - pos)
                pos = len(buf) - keep
                break
            if start + FRAME_HEADER_BYTES > len(buf):
                self._skip(start - pos)
                pos = start
                break
            (_, version, n_leads, sequence, n_samples, fs_hz, nv_per_lsb, lead_off_bits,
             reserved) = _FRAME_HEADER.unpack_from(buf, start)
            if (version != FRAME_VERSION or n_leads not in (8, 12)
                    or not 1 <= n_samples <= FRAME_MAX_SAMPLES or fs_hz == 0
                    or nv_per_lsb == 0 or reserved != 0):
                self._skip(start + 1 - pos)
                pos = start + 1
                continue
            payload_end = start + FRAME_HEADER_BYTES + 4 * n_samples * n_leads
            frame_end = payload_end + FRAME_CRC_BYTES
            if frame_end > len(buf):
                self._skip(start - pos)
                pos = start
                break
            (crc,) = struct.unpack_from("<I", buf, payload_end)
            if zlib.crc32(memoryview(buf)[start:payload_end]) != crc:
                self._skip(start + 1 - pos)
                pos = start + 1
                continue
            self._skip(start - pos)
            key = (n_leads, fs_hz, nv_per_lsb, lead_off_bits)
            gap = self._gap_before(sequence, n_samples)
            if gap is not None or key != run_key:
                self._flush(run, run_key, events)
                run_key = key
            if gap is not None:
                events.append(gap)
            counts = np.frombuffer(bytes(buf[start + FRAME_HEADER_BYTES:payload_end]),
                                   dtype="<i4").reshape(n_samples, n_leads)
            run.append(counts)
            pos = frame_end
        self._flush(run, run_key, events)
        del buf[:pos]
        return events

    def _gap_before(self, sequence: int, n_samples: int) -> Optional[Gap]:
        last, skipped = self._last_sequence, self._skipped
        self._last_sequence, self._skipped, self._joined = sequence, 0, True
        if last is None:
            return None
        lost_frames = (sequence - last - 1) % _FRAME_SEQUENCE_MODULO
        if lost_frames >= _FRAME_RESTART_DELTA:
            return Gap("resync", 0)
        lost = lost_frames * n_samples
        self.dropped_frames += lost_frames
        self.lost_samples += lost
        # Garbage between two frames whose sequence numbers follow on cost no sample (every
        # frame is CRC-checked): no gap at all.
        return Gap("resync" if skipped else "lost", lost, counted=True) if lost else None

    @staticmethod
    def _flush(run: List[np.ndarray], key: Optional[Tuple[int, int, int, int]],
               events: List[Event]) -> None:
        if not run or key is None:
            return
        n_leads, fs_hz, nv_per_lsb, lead_off_bits = key
        counts = run[0] if len(run) == 1 else np.concatenate(run)
        mv_per_count = nv_per_lsb * 1e-6
        samples = (counts.T * mv_per_count).astype(np.float32)
        lead_off = tuple(bool(lead_off_bits >> i & 1) for i in range(n_leads))
        events.append(SampleBlock(samples, float(fs_hz), frame_lead_names(n_leads), lead_off,
                                  integer_rails_mv(n_leads, _INT32_RANGE, mv_per_count)))
        run.clear()


class TextDecoder(_Decoder):
    """ASCII lines of comma-separated values, one sample per line -> blocks in millivolts.

    ``units`` is ``mv``, ``uv`` or ``counts`` (``lsb_uv`` microvolts per count). Bytes up to
    the first newline are skipped (joining mid-line would yield a truncated, plausible
    value). A malformed line is counted in ``malformed_lines``, dropped, and reported as a
    one-sample ``Gap`` that is not counted: without a sequence counter nobody knows how many
    samples garbage cost (a stray newline splits one line into two), so it is never bridged.
    """

    def __init__(self, lead_names: Sequence[str], fs_hz: float, units: str = "mv",
                 lsb_uv: float = 1.0) -> None:
        if len(lead_names) not in (8, 12):
            raise ValueError("text format needs 8 or 12 lead names")
        super().__init__()
        self.lead_names = tuple(lead_names)
        self.fs_hz = float(fs_hz)
        self._mv_per_unit = lsb_uv * 1e-3 if units == "counts" else _TEXT_UNIT_TO_MV[units]
        self._synced = False

    def feed(self, data: bytes) -> List[Event]:
        """Decode the complete lines in ``data`` plus any partial line kept from before."""
        self._buffer += data
        buf = self._buffer
        events: List[Event] = []
        rows: List[List[float]] = []
        pos = 0
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) - pos > TEXT_MAX_LINE_BYTES:
                    self._flush(rows, events)
                    self._reject(events)
                    self._synced = False
                    self._skip(len(buf) - pos)
                    pos = len(buf)
                break
            line = bytes(buf[pos:end])
            pos = end + 1
            if not self._synced:
                self._skip(len(line) + 1)
                self._synced = True
                continue
            self._joined = True
            row = self._parse(line)
            if row is None:
                self._flush(rows, events)
                self._reject(events)
            elif row:
                rows.append(row)
        self._flush(rows, events)
        del buf[:pos]
        return events

    def _parse(self, line: bytes) -> Optional[List[float]]:
        """Values of one line; [] for a comment or blank line; None when malformed."""
        text = line.rstrip(b"\r")
        if not text.strip() or text.startswith(b"#"):
            return []
        fields = text.split(b",")
        if len(fields) != len(self.lead_names):
            return None
        try:
            values = [float(field) for field in fields]
        except ValueError:
            return None
        if not all(math.isfinite(value) for value in values):
            return None
        return values

    def _reject(self, events: List[Event]) -> None:
        self.malformed_lines += 1
        self.lost_samples += 1
        events.append(Gap("malformed", 1))

    def _flush(self, rows: List[List[float]], events: List[Event]) -> None:
        if not rows:
            return
        samples = (np.asarray(rows, dtype=np.float64).T * self._mv_per_unit).astype(np.float32)
        events.append(SampleBlock(samples, self.fs_hz, self.lead_names, None))
        rows.clear()


Decoder = Union[CytonDecoder, FrameDecoder, TextDecoder]


def make_decoder(fmt: str, lead_names: Sequence[str] = (), gain: int = 24,
                 fs_hz: float = 500.0, units: str = "mv", lsb_uv: float = 1.0) -> Decoder:
    """A fresh decoder for wire format ``fmt``; ``lead_names`` () means the format default
    (I, II, V1-V6 for the Cyton, the 12 standard leads for text)."""
    if fmt == "openbci-cyton":
        return CytonDecoder(tuple(lead_names) or EIGHT_LEADS, gain)
    if fmt == "ecgd-frame":
        return FrameDecoder()
    if fmt == "text":
        return TextDecoder(tuple(lead_names) or STANDARD_LEADS, fs_hz, units, lsb_uv)
    raise ValueError(f"unknown wire format {fmt!r}")


def encode_cyton_packet(counts: Sequence[int], counter: int, aux: bytes = b"\x00" * 6,
                        stop: int = CYTON_STOP_MIN) -> bytes:
    """One 33-byte Cyton packet: 8 signed 24-bit counts, big-endian, counter mod 256."""
    if len(counts) != CYTON_CHANNELS or len(aux) != 6:
        raise ValueError("a Cyton packet has 8 channels and 6 aux bytes")
    body = b"".join((int(c) & 0xFFFFFF).to_bytes(3, "big") for c in counts)
    return bytes((CYTON_START, counter % _CYTON_COUNTER_MODULO)) + body + aux + bytes((stop,))


def encode_ecgd_frame(counts: np.ndarray, sequence: int, fs_hz: int, nv_per_lsb: int,
                      lead_off_bits: int = 0) -> bytes:
    """One ``ecgd-frame``: ``counts`` int32 ``[n_leads, n_samples]`` (8 or 12 leads)."""
    n_leads, n_samples = counts.shape
    header = _FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, n_leads,
                                sequence % _FRAME_SEQUENCE_MODULO, n_samples, fs_hz,
                                nv_per_lsb, lead_off_bits, 0)
    body = header + np.ascontiguousarray(counts.T, dtype="<i4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def encode_text_line(values: Sequence[float], decimals: int = 4) -> bytes:
    """One ``text`` line: values joined by commas, ``decimals`` places, ``\\n`` ended."""
    return (",".join(f"{value:.{decimals}f}" for value in values) + "\n").encode("ascii")
