"""The live serial source: one thread that reads a device, decodes it and queues windows.

The device is a pyserial URL (a device path such as ``/dev/serial/by-id/...``, a
pseudo-terminal, ``socket://host:port``, ``rfc2217://``, ``loop://``). The thread never
raises and never gives up: an unplugged device, a vanished port, a read error or a stream
with no samples for ``stall_s`` closes the port, logs once per state change
(``device_disconnected``, ``stream_stalled``, ``device_reconnected``), waits with capped
exponential backoff and reopens the SAME path (a udev symlink may point at a new device
node by then); the next samples start a new segment, so no window spans the outage.

Short gaps of known size are bridged by the windower (``[serial] max_bridge_ms``); what the
link loses is counted in ``stats()`` and logged per fault episode (``ecgd.sources.link_log``).

Windows go on a ``WindowQueue`` whose ``put`` never blocks: acquisition keeps its pace
whatever inference does.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional

import serial

from ecgd.config import SerialConfig, WindowConfig
from ecgd.errors import SourceError
from ecgd.records.recording import normalize_lead_name
from ecgd.sources.link_log import LinkLog
from ecgd.sources.wire import Decoder, SampleBlock, make_decoder
from ecgd.sources.windowing import CLOSED_BY_GAP, CLOSED_BY_LAYOUT, Windower, WindowQueue

CYTON_RESET = b"v"
CYTON_START_STREAM = b"b"
CYTON_STOP_STREAM = b"s"
CYTON_READY = b"$$$"
_COUNTERS = ("join_bytes", "garbage_bytes", "dropped_frames", "malformed_lines",
             "lost_samples")


class SerialSource:
    """Reads ``config.port`` in its own thread and puts ``LiveWindow`` objects on
    ``out_queue``. ``start()``, ``stop()``, ``stats()``; ``log`` is a structlog logger."""

    def __init__(self, config: SerialConfig, window_cfg: WindowConfig, out_queue: WindowQueue,
                 log: Any) -> None:
        self.config = config
        self.window_cfg = window_cfg
        self.queue = out_queue
        self.log = log
        self.device = config.port
        self._lead_names = tuple(normalize_lead_name(name) for name in config.lead_names)
        # short enough to notice a stall and a stop promptly; a read returns as soon as
        # bytes arrive, so it adds no latency to windows
        self._read_timeout_s = min(0.2, config.stall_s / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecgd-serial", daemon=False)
        self._port: Optional[serial.SerialBase] = None
        self._decoder: Optional[Decoder] = None
        self._windower: Optional[Windower] = None
        self._closed_totals = dict.fromkeys(_COUNTERS, 0)
        self._state = "starting"
        self.reconnects = 0
        self._link_log = LinkLog(log, self.device, config.link_log_s, self.stats())

    def start(self) -> None:
        """Start the acquisition thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop, wake a blocked read, and join it."""
        self._stop.set()
        port = self._port
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except (OSError, serial.SerialException):
                pass  # the port is going away anyway; the read times out within 0.2 s
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> Dict[str, Any]:
        """Counters for STATUS= and health: connection, segment, windows, losses, bridged
        gaps, segments closed by link faults (gaps, format changes), drops."""
        totals = dict(self._closed_totals)
        decoder = self._decoder
        if decoder is not None:
            for name in _COUNTERS:
                totals[name] += getattr(decoder, name)
        windower = self._windower
        closed = windower.segments_closed if windower is not None else {}
        return {
            "connected": self._state == "connected",
            "port_open": self._port is not None,
            "state": self._state,
            "segment": windower.segment if windower is not None else -1,
            "windows": windower.windows if windower is not None else 0,
            "dropped_windows": self.queue.dropped_total,
            "reconnects": self.reconnects,
            "bridged_gaps": windower.bridged_gaps if windower is not None else 0,
            "bridged_samples": windower.bridged_samples if windower is not None else 0,
            "segments_closed": closed.get(CLOSED_BY_GAP, 0) + closed.get(CLOSED_BY_LAYOUT, 0),
            "format_changes": windower.format_changes if windower is not None else 0,
            **totals,
        }

    def status_text(self) -> str:
        """The link's health for STATUS=: what was lost, bridged and cut so far."""
        stats = self.stats()
        degraded = " (degraded)" if self._link_log.degraded else ""
        return (f"link {stats['state']}{degraded}: lost {stats['lost_samples']} samples, "
                f"bridged {stats['bridged_gaps']} gaps, {stats['segments_closed']} segments "
                f"cut, {stats['reconnects']} reconnects")

    def _run(self) -> None:
        backoff_s = self.config.backoff_initial_s
        while not self._stop.is_set():
            try:
                delivered = self._session()
            except Exception as exc:  # the thread must outlive any bug in one session
                self.log.error("source_failed", device=self.device, error=repr(exc),
                               exc_info=True)
                delivered = False
            self._close_port()
            if delivered:
                backoff_s = self.config.backoff_initial_s
            if self._stop.wait(backoff_s):
                break
            backoff_s = min(2 * backoff_s, self.config.backoff_max_s)

    def _session(self) -> bool:
        """Open, read until the device fails, stalls or stop; True if samples arrived."""
        try:
            self._port = serial.serial_for_url(self.device, baudrate=self.config.baudrate,
                                               timeout=self._read_timeout_s, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._enter("disconnected", "device_disconnected", reason=_reason(exc))
            return False
        self._retire_decoder()
        self._decoder = make_decoder(self.config.format, self._lead_names, self.config.gain,
                                     self.config.fs_hz, self.config.units, self.config.lsb_uv)
        if self._windower is not None:
            self._windower.new_segment()
        delivered = False
        try:
            if self.config.format == "openbci-cyton":
                self._start_cyton(self._port)
            last_sample_s = time.monotonic()
            while not self._stop.is_set():
                data = self._port.read(max(1, self._port.in_waiting))
                had_samples = bool(data) and self._deliver(data, time.time())
                self._link_log.observe(self.stats(), time.monotonic())
                if had_samples:
                    last_sample_s = time.monotonic()
                    if not delivered:
                        delivered = True
                        self._enter("connected", "device_reconnected"
                                    if self._state != "starting" else "device_connected")
                elif time.monotonic() - last_sample_s > self.config.stall_s:
                    self._enter("stalled", "stream_stalled", stall_s=self.config.stall_s)
                    return delivered
            if self.config.format == "openbci-cyton":
                self._port.write(CYTON_STOP_STREAM)
        except (serial.SerialException, OSError, SourceError) as exc:
            self._enter("disconnected", "device_disconnected", reason=_reason(exc))
        return delivered

    def _start_cyton(self, port: serial.SerialBase) -> None:
        """Soft-reset the board, wait for its ``$$$``, then start streaming."""
        port.write(CYTON_RESET)
        reply = b""
        deadline = time.monotonic() + self.config.stall_s
        while CYTON_READY not in reply:
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                raise SourceError(f"{self.device}: no '$$$' within {self.config.stall_s:g} s "
                                  f"of the soft reset 'v'")
            reply = (reply + port.read(max(1, port.in_waiting)))[-256:]
        port.write(CYTON_START_STREAM)

    def _deliver(self, data: bytes, arrival_s: float) -> bool:
        """Decode ``data``, cut windows, queue them; True if it held any samples."""
        had_samples = False
        decoder = self._decoder
        if decoder is None:  # no session open: nothing can be decoded
            return had_samples
        for event in decoder.feed(data):
            if isinstance(event, SampleBlock):
                had_samples = True
                if self._windower is None:
                    self._windower = Windower(event.fs_hz, event.lead_names,
                                              self.window_cfg.seconds, self.window_cfg.stride_s,
                                              device=self.device, wire_format=self.config.format,
                                              max_bridge_ms=self.config.max_bridge_ms)
            if self._windower is None:
                continue  # a gap before the first sample ever: nothing to close
            for window in self._windower.feed(event, arrival_s):
                self.queue.put(window)
        return had_samples

    def _enter(self, state: str, event: str, **fields: Any) -> None:
        """Log ``event`` only when the state changes: a dead device logs once, not per retry."""
        if state == self._state:
            return
        if state == "connected" and self._state != "starting":
            self.reconnects += 1
        self._state = state
        log = self.log.info if state == "connected" else self.log.warning
        log(event, device=self.device, **fields)

    def _retire_decoder(self) -> None:
        if self._decoder is not None:
            for name in _COUNTERS:
                self._closed_totals[name] += getattr(self._decoder, name)
        self._decoder = None

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (OSError, serial.SerialException):
                pass  # closing a vanished device can fail; it is gone either way


def _reason(exc: BaseException) -> str:
    """One line for the log: the error text, never the bytes read."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
