"""``ecgd simulate``: stream a real recording as a serial acquisition device would.

Vendors use it to check an integration, the tests use it with real pseudo-terminals. The
record (any format the readers accept) is arranged into the format's leads (8: I, II, V1-V6
for ``openbci-cyton`` or 8-lead frames; 12 otherwise), resampled to 250 Hz for the Cyton,
encoded with ``ecgd.sources.wire`` and written at real-time pace times ``--speed``.

``--port`` writes to an existing device or pyserial URL; ``--pty-link PATH`` creates a
pseudo-terminal and points the symlink PATH at it, so ``ecgd run`` can read PATH as its
``[serial] port`` without hardware. Fault injection is seeded: ``--drop-rate`` (frames not
sent; a text line dropped cannot be detected by any receiver), ``--garbage-rate`` (random
bytes before a frame), ``--disconnect-after S`` (close the port after S seconds of signal).
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import select
import struct
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import serial

from ecgd.config import LimitsConfig
from ecgd.errors import RecordError, SourceError
from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS, Recording, arrange_standard_leads
from ecgd.signal.resample import resample_to
from ecgd.sources import wire

CYTON_BANNER = (b"OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\n"
                b"LIS3DH Device ID: 0x33\nFirmware: v3.1.2 (ecgd simulate)\n$$$")
FRAME_NV_PER_LSB = 1000
_GARBAGE_MAX_BYTES = 64
_TEXT_DECIMALS = {"mv": 4, "uv": 1, "counts": 0}


class PtyDevice:
    """The device end of a new pseudo-terminal; ``link`` points at the reader's end.

    The link is replaced atomically (as udev does on re-enumeration); ``close()`` hangs up
    the reader and removes the link if it still points here.
    """

    def __init__(self, link: Path) -> None:
        self.link = Path(link)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary frames must pass untouched by the line discipline
        self.slave_path = os.ttyname(self._slave)
        tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(self.slave_path, tmp)
        os.replace(tmp, self.link)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view):]

    def read_available(self) -> bytes:
        ready, _, _ = select.select([self._master], [], [], 0)
        return os.read(self._master, 4096) if ready else b""

    def close(self, drain_s: float = 2.0) -> None:
        """Hang up, after the reader took what was written (a hang-up discards unread
        input), waiting at most ``drain_s``."""
        deadline = time.monotonic() + drain_s
        quiet_polls = 0
        # the kernel moves written bytes to the reader's queue asynchronously, so an empty
        # queue counts only once it stays empty for a few polls
        while quiet_polls < 5 and time.monotonic() < deadline:
            quiet_polls = 0 if _unread_bytes(self._slave) else quiet_polls + 1
            time.sleep(0.02)
        if self.link.is_symlink() and os.readlink(self.link) == self.slave_path:
            self.link.unlink()
        os.close(self._master)
        os.close(self._slave)


def _unread_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class SerialDevice:
    """An existing port or pyserial URL opened for writing (a cross-wired adapter, a
    ``socket://`` listener)."""

    def __init__(self, url: str, baudrate: int) -> None:
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"{url}: cannot open: {exc}") from exc
        self._url = url

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise SourceError(f"{self._url}: write failed: {exc}") from exc

    def read_available(self) -> bytes:
        try:
            return self._port.read(self._port.in_waiting)
        except (serial.SerialException, OSError) as exc:
            raise SourceError(f"{self._url}: read failed: {exc}") from exc

    def close(self) -> None:
        self._port.close()


@dataclasses.dataclass(frozen=True)
class Signal:
    """What the simulated device acquires: float32 ``[leads, n]`` mV at ``fs_hz``."""

    samples_mv: np.ndarray
    fs_hz: float
    lead_names: Tuple[str, ...]


@dataclasses.dataclass
class SimulationResult:
    """What was sent. ``dropped`` are the ``[start, end)`` stream sample ranges of frames not
    sent (in order); ``garbage_before`` the stream sample indices before which garbage was
    sent."""

    frames_sent: int = 0
    frames_dropped: int = 0
    garbage_bytes: int = 0
    samples_streamed: int = 0
    dropped: List[Tuple[int, int]] = dataclasses.field(default_factory=list)
    garbage_before: List[int] = dataclasses.field(default_factory=list)
    disconnected: bool = False

    def dropped_runs(self) -> List[Tuple[int, int]]:
        """``dropped`` with back-to-back ranges merged: each run is one gap to a receiver."""
        runs: List[Tuple[int, int]] = []
        for start, end in self.dropped:
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
        return runs


def prepare_signal(recording: Recording, fmt: str, n_leads: int) -> Signal:
    """Arrange ``recording`` in the format's leads and rate (Cyton: 8 leads at 250 Hz)."""
    order = wire.EIGHT_LEADS if n_leads == 8 else STANDARD_LEADS
    arranged = arrange_standard_leads(recording, order)
    if arranged.samples_mv is None:
        raise RecordError(f"record lacks leads {', '.join(arranged.missing)} needed for "
                          f"{n_leads}-lead {fmt}")
    samples, fs_hz = arranged.samples_mv, float(recording.fs_hz)
    if fmt == "openbci-cyton":
        samples, fs_hz = resample_to(samples, fs_hz, wire.CYTON_FS_HZ), wire.CYTON_FS_HZ
    elif fmt == "ecgd-frame" and fs_hz != int(fs_hz):
        raise RecordError(f"record rate {fs_hz:g} Hz is not a whole number of Hz, which "
                          f"ecgd-frame headers need")
    return Signal(np.ascontiguousarray(samples, dtype=np.float32), fs_hz, tuple(order))


def encode_frames(sig: Signal, fmt: str, *, frame_samples: int = 10, gain: int = 24,
                  units: str = "mv", lsb_uv: float = 1.0, loop: bool = False
                  ) -> Iterator[Tuple[int, int, bytes]]:
    """``(stream_start, n_samples, bytes)`` per wire unit (frame, packet or line), looping
    the signal when ``loop`` with continuous sequence numbers."""
    n_total = sig.samples_mv.shape[1]
    per_unit = frame_samples if fmt == "ecgd-frame" else 1
    if fmt == "openbci-cyton":
        counts = np.clip(np.round(sig.samples_mv * 1e-3 / wire.cyton_volts_per_count(gain)),
                         -(2 ** 23 - 1), 2 ** 23 - 1).astype(np.int64)
    elif fmt == "ecgd-frame":
        counts = np.round(sig.samples_mv * (1e6 / FRAME_NV_PER_LSB)).astype(np.int32)
    else:
        scale = {"mv": 1.0, "uv": 1e3, "counts": 1e3 / lsb_uv}[units]
        values = sig.samples_mv.astype(np.float64) * scale
    unit_index = 0
    stream_start = 0
    while True:
        for start in range(0, n_total - per_unit + 1, per_unit):
            if fmt == "openbci-cyton":
                data = wire.encode_cyton_packet(counts[:, start].tolist(), unit_index)
            elif fmt == "ecgd-frame":
                data = wire.encode_ecgd_frame(counts[:, start:start + per_unit], unit_index,
                                              int(sig.fs_hz), FRAME_NV_PER_LSB)
            else:
                data = wire.encode_text_line(values[:, start].tolist(), _TEXT_DECIMALS[units])
            yield stream_start, per_unit, data
            unit_index += 1
            stream_start += per_unit
        if not loop:
            return


def stream(device, sig: Signal, fmt: str, *, speed: float = 1.0, loop: bool = False,
           drop_rate: float = 0.0, garbage_rate: float = 0.0,
           disconnect_after_s: Optional[float] = None, seed: int = 0, frame_samples: int = 10,
           gain: int = 24, units: str = "mv", lsb_uv: float = 1.0,
           stop: Optional[threading.Event] = None) -> SimulationResult:
    """Write ``sig`` to ``device`` (``write``/``read_available``/``close``) at real-time pace
    times ``speed``, injecting seeded faults. Closes the device when done."""
    stop = stop or threading.Event()
    rng = np.random.default_rng(seed)
    result = SimulationResult()
    cyton = _CytonProtocol(device) if fmt == "openbci-cyton" else None
    try:
        if cyton is not None and not cyton.wait_for_start(stop):
            return result
        t0 = time.monotonic()
        pending: List[bytes] = []
        for start, n, data in encode_frames(sig, fmt, frame_samples=frame_samples, gain=gain,
                                            units=units, lsb_uv=lsb_uv, loop=loop):
            if disconnect_after_s is not None and start >= disconnect_after_s * sig.fs_hz:
                result.disconnected = True
                break
            due_s = t0 + (start + n) / sig.fs_hz / speed
            wait_s = due_s - time.monotonic()
            if wait_s > 0:
                device.write(b"".join(pending))
                pending.clear()
                if stop.wait(wait_s):
                    break
            if cyton is not None and cyton.paused(stop):
                break
            if garbage_rate and rng.random() < garbage_rate:
                junk = rng.bytes(int(rng.integers(1, _GARBAGE_MAX_BYTES + 1)))
                pending.append(junk)
                result.garbage_bytes += len(junk)
                result.garbage_before.append(start)
            if drop_rate and rng.random() < drop_rate:
                result.frames_dropped += 1
                result.dropped.append((start, start + n))
            else:
                pending.append(data)
                result.frames_sent += 1
            result.samples_streamed = start + n
        device.write(b"".join(pending))
    finally:
        device.close()
    return result


class _CytonProtocol:
    """The board's side of the handshake: ``v`` -> banner ending ``$$$``; ``b`` starts,
    ``s`` stops streaming."""

    def __init__(self, device) -> None:
        self._device = device
        self._streaming = False

    def _poll(self) -> None:
        for command in self._device.read_available():
            if command == ord("v"):
                self._streaming = False
                self._device.write(CYTON_BANNER)
            elif command == ord("b"):
                self._streaming = True
            elif command == ord("s"):
                self._streaming = False

    def wait_for_start(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            self._poll()
            if self._streaming:
                return True
            stop.wait(0.01)
        return False

    def paused(self, stop: threading.Event) -> bool:
        """Handle commands; if streaming was stopped, wait for ``b``. True = give up."""
        self._poll()
        return not self._streaming and not self.wait_for_start(stop)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="stream a recording as a serial ECG device would",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--port", metavar="PATH_OR_URL",
                        help="device path or pyserial URL to write to")
    target.add_argument("--pty-link", type=Path, metavar="PATH",
                        help="create a pseudo-terminal and a symlink PATH to it")
    parser.add_argument("--format", required=True, choices=wire.FORMATS)
    parser.add_argument("--record", required=True, type=Path, metavar="FILE")
    parser.add_argument("--speed", type=float, default=1.0, help="pace factor (default 1)")
    parser.add_argument("--loop", action="store_true", help="repeat the record forever")
    parser.add_argument("--drop-rate", type=float, default=0.0, metavar="P")
    parser.add_argument("--garbage-rate", type=float, default=0.0, metavar="P")
    parser.add_argument("--disconnect-after", type=float, metavar="S",
                        help="close the port after S seconds of signal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leads", type=int, choices=(8, 12),
                        help="leads sent (default 8 for openbci-cyton, else 12)")
    parser.add_argument("--frame-samples", type=int, default=10,
                        help="samples per ecgd-frame (1-1000, default 10)")
    parser.add_argument("--units", choices=("mv", "uv", "counts"), default="mv",
                        help="text values (default mv)")
    parser.add_argument("--lsb-uv", type=float, default=1.0, help="text counts: uV per count")
    parser.add_argument("--gain", type=int, default=24, help="Cyton ADS1299 gain")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    fmt = args.format
    n_leads = args.leads or (8 if fmt == "openbci-cyton" else 12)
    checks = [
        (args.speed > 0, "--speed must be positive"),
        (0 <= args.drop_rate < 1, "--drop-rate must be in [0, 1)"),
        (0 <= args.garbage_rate < 1, "--garbage-rate must be in [0, 1)"),
        (args.disconnect_after is None or args.disconnect_after > 0,
         "--disconnect-after must be positive"),
        (1 <= args.frame_samples <= wire.FRAME_MAX_SAMPLES, "--frame-samples must be 1-1000"),
        (args.lsb_uv > 0, "--lsb-uv must be positive"),
        (fmt != "openbci-cyton" or n_leads == 8, "openbci-cyton sends 8 leads"),
    ]
    for ok, message in checks:
        if not ok:
            raise SourceError(f"simulate: {message}")
    sig = prepare_signal(read_recording(args.record, LimitsConfig().max_input_bytes), fmt,
                         n_leads)
    device: Union[PtyDevice, SerialDevice]
    if args.pty_link:
        device = PtyDevice(args.pty_link)
        print(f"simulating {fmt} on {args.pty_link} -> {device.slave_path}", flush=True)
    else:
        device = SerialDevice(args.port, args.baudrate)
    try:
        result = stream(device, sig, fmt, speed=args.speed, loop=args.loop,
                        drop_rate=args.drop_rate, garbage_rate=args.garbage_rate,
                        disconnect_after_s=args.disconnect_after, seed=args.seed,
                        frame_samples=args.frame_samples, gain=args.gain, units=args.units,
                        lsb_uv=args.lsb_uv)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        raise SourceError(f"simulate: device write failed: {exc}") from exc
    print(f"sent {result.frames_sent} frames ({result.samples_streamed} samples at "
          f"{sig.fs_hz:g} Hz), dropped {result.frames_dropped}, "
          f"{result.garbage_bytes} garbage bytes"
          + (", then disconnected" if result.disconnected else ""), flush=True)
    return 0
