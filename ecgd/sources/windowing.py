"""Cut a live sample stream into analysis windows, and hand them over on a bounded queue.

The ``Windower`` consumes decoder events (``SampleBlock``/``Gap``) and cuts windows of
``window_s`` every ``stride_s`` within a segment: a run of samples in which nothing is
missing except short gaps it bridged.

A gap whose size the device's sequence counter gives (``Gap.counted``) and that lasts at
most ``max_bridge_ms`` is bridged: the missing samples are filled by a straight line from
the last sample before the gap to the first one after it, on every lead. A line, not a
hold of the last value: a hold leaves a step at the far end of the gap, which the
band-pass turns into a spike that an R-peak detector can count as a beat; a line has no
step. Each window says how many of its samples were filled, and where. Any other gap (too
long, or not counted), a change of rate, leads or scale, and a reconnect
(``new_segment()``) close the segment: the next window starts at the first sample after
it, so a window never spans a gap it did not bridge.

Windows hold samples at the DEVICE rate in millivolts with the device's lead names, as the
ring buffer does; the pipeline resamples each window to the model's rate and derives the
missing limb leads (``arrange_standard_leads``) afterwards.

Sample indices are absolute in the stream of one source: received samples plus samples the
wire format reported lost (sequence jumps), so ``index / fs_hz`` is device time. Samples
lost across a reconnect cannot be counted and are not.

``WindowQueue`` is the hand-over to inference: bounded; when full the OLDEST window is
dropped and counted, and the count rides on the next window the consumer gets
(``dropped_windows``), so acquisition never waits for a slow model.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import threading
import time
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np

from ecgd.records.recording import Recording
from ecgd.sources.ringbuffer import RingBuffer
from ecgd.sources.wire import Event, Gap, SampleBlock

# Why a segment was closed (the keys of ``Windower.segments_closed``).
CLOSED_BY_GAP = "gap"
CLOSED_BY_LAYOUT = "layout_change"
CLOSED_BY_RECONNECT = "reconnect"


@dataclasses.dataclass(frozen=True)
class LiveWindow:
    """One analysis window from a live device.

    ``recording`` holds the window's samples (device rate, mV, device lead names, format
    ``serial:<format>``, ``start_time`` = UTC arrival time of its first sample, ``rails_mv``
    from the wire format). ``device`` is the port (never a patient identifier).
    ``sample_start``/``sample_end`` are absolute stream indices ``[start, end)``;
    ``lost_samples`` were lost in the stream since the previous window (bridged ones
    included); ``bridged_gaps`` are the ``[start, end)`` stream ranges inside the window that
    were filled in, ``bridged_samples`` their total; ``lead_off`` ORs the electrode-off
    flags seen in the window (None when the format has none); ``dropped_windows`` counts
    windows the queue dropped just before this one.
    """

    recording: Recording
    device: str
    segment: int
    sample_start: int
    sample_end: int
    lost_samples: int
    lead_off: Optional[Tuple[bool, ...]]
    dropped_windows: int = 0
    bridged_gaps: Tuple[Tuple[int, int], ...] = ()

    @property
    def bridged_samples(self) -> int:
        return sum(end - start for start, end in self.bridged_gaps)


@dataclasses.dataclass
class _BlockRecord:
    """Where a pushed block landed in the ring, when its last sample arrived, lead-off."""

    ring_start: int
    ring_end: int
    arrival_s: float  # POSIX seconds, UTC wall clock, of the block's last sample
    lead_off: Optional[Tuple[bool, ...]]


_Layout = Tuple[float, Tuple[str, ...], Optional[bytes]]


def _layout(block: SampleBlock) -> _Layout:
    """What must stay the same within a segment: rate, leads and declared range (scale)."""
    rails = None if block.rails_mv is None else block.rails_mv.tobytes()
    return (float(block.fs_hz), tuple(block.lead_names), rails)


class Windower:
    """Turns decoder events into ``LiveWindow`` objects; pure apart from the wall clock.

    ``feed(event, arrival_s)`` takes the POSIX time the event's bytes arrived (now when
    omitted). A block whose rate, leads or scale differ from the current ones (device
    reconfigured) closes the segment and the windower adopts the new layout. Counters for
    the link's health: ``bridged_gaps``/``bridged_samples`` filled in, ``segments_closed``
    by cause (``CLOSED_BY_*``), ``format_changes``.
    """

    def __init__(self, fs_hz: float, lead_names: Sequence[str], window_s: float,
                 stride_s: float, *, device: str = "", wire_format: str = "",
                 max_bridge_ms: float = 0.0) -> None:
        if window_s <= 0 or not 0 < stride_s <= window_s:
            raise ValueError("window_s must be positive and stride_s in (0, window_s]")
        if max_bridge_ms < 0:
            raise ValueError("max_bridge_ms must be >= 0")
        self.device = device
        self.wire_format = wire_format
        self.window_s = window_s
        self.stride_s = stride_s
        self.max_bridge_ms = max_bridge_ms
        self.segment = -1
        self.windows = 0
        self.format_changes = 0
        self.bridged_gaps = 0
        self.bridged_samples = 0
        self.segments_closed = dict.fromkeys((CLOSED_BY_GAP, CLOSED_BY_LAYOUT,
                                              CLOSED_BY_RECONNECT), 0)
        self._lost_pending = 0
        self._next_start = 0
        self._bridge_pending_n = 0  # lost samples to fill in before the next block
        self._last_arrival_s: Optional[float] = None
        self._configure((float(fs_hz), tuple(lead_names), None), stream_end=0)

    def _configure(self, layout: _Layout, stream_end: int) -> None:
        """Allocate the ring for this layout; the stream index continues at ``stream_end``."""
        self._layout = layout
        self.fs_hz, self.lead_names, _ = layout
        self._window_n = int(round(self.window_s * self.fs_hz))
        self._stride_n = max(1, int(round(self.stride_s * self.fs_hz)))
        self._max_bridge_n = int(self.max_bridge_ms * self.fs_hz / 1000.0 + 1e-9)
        if self._window_n < 1:
            raise ValueError(f"a {self.window_s} s window at {self.fs_hz} Hz has no samples")
        self._ring = RingBuffer(len(self.lead_names), 2 * self._window_n + self._stride_n)
        self._rails_mv: Optional[np.ndarray] = None
        self._stream_offset = stream_end  # stream index minus ring index
        self._blocks: Deque[_BlockRecord] = collections.deque()
        self._bridges: Deque[Tuple[int, int]] = collections.deque()  # ring [start, end)
        self._open = False

    @property
    def stream_end(self) -> int:
        """Absolute stream index one past the newest received sample."""
        return self._ring.end + self._stream_offset

    def new_segment(self) -> None:
        """Close the current segment (reconnect, stall): no window spans this point."""
        self._close(CLOSED_BY_RECONNECT)

    def _close(self, cause: str) -> None:
        # Samples waiting to be bridged become a plain loss: the segment ends before them.
        self._stream_offset += self._bridge_pending_n
        self._bridge_pending_n = 0
        if self._open:
            self.segments_closed[cause] += 1
        self._open = False

    def feed(self, event: Event, arrival_s: Optional[float] = None) -> List[LiveWindow]:
        """Consume one event; return the windows it completed (oldest first)."""
        arrival = time.time() if arrival_s is None else arrival_s
        if isinstance(event, Gap):
            self._lost_pending += event.lost_samples
            if self._bridgeable(event, arrival):
                self._bridge_pending_n += event.lost_samples
            else:
                self._stream_offset += event.lost_samples
                self._close(CLOSED_BY_GAP)
            return []
        return self._push(event, arrival)

    def _bridgeable(self, gap: Gap, arrival_s: float) -> bool:
        """A short gap of known size inside an open segment (with a wrapping counter: one
        the clock says cannot hide a whole counter period)."""
        if not (self._open and gap.counted
                and self._bridge_pending_n + gap.lost_samples <= self._max_bridge_n):
            return False
        if gap.counter_period_samples is None or self._last_arrival_s is None:
            return True
        elapsed_s = arrival_s - self._last_arrival_s
        return elapsed_s < gap.counter_period_samples / self.fs_hz / 2

    def _push(self, block: SampleBlock, arrival_s: float) -> List[LiveWindow]:
        layout = _layout(block)
        if layout[:2] != self._layout[:2] or (self._open and layout != self._layout):
            self.format_changes += 1
            self._close(CLOSED_BY_LAYOUT)
            self._configure(layout, self.stream_end)
        self._layout = layout
        self._last_arrival_s = arrival_s
        if not self._open:
            self.segment += 1
            self._open = True
            self._next_start = self._ring.end
            self._rails_mv = block.rails_mv
        samples = block.samples
        if self._bridge_pending_n:
            fill = self._line_to(samples[:, 0], self._bridge_pending_n)
            self._bridges.append((self._ring.end, self._ring.end + fill.shape[1]))
            self.bridged_gaps += 1
            self.bridged_samples += fill.shape[1]
            self._bridge_pending_n = 0
            samples = np.concatenate([fill, samples], axis=1)
        windows: List[LiveWindow] = []
        n = samples.shape[1]
        # chunks small enough that no sample is overwritten before its window is cut
        chunk_n = self._ring.capacity - self._window_n
        for offset in range(0, n, chunk_n):
            chunk = samples[:, offset:offset + chunk_n]
            ring_start = self._ring.end
            self._ring.push(chunk)
            late_n = n - (offset + chunk.shape[1])
            self._blocks.append(_BlockRecord(ring_start, self._ring.end,
                                             arrival_s - late_n / self.fs_hz, block.lead_off))
            self._cut(windows)
        while self._blocks and self._blocks[0].ring_end <= self._ring.start:
            self._blocks.popleft()
        while self._bridges and self._bridges[0][1] <= self._ring.start:
            self._bridges.popleft()
        return windows

    def _line_to(self, first_after: np.ndarray, n: int) -> np.ndarray:
        """``n`` samples on the straight line from the newest ring sample to ``first_after``
        (both excluded), per lead."""
        last_before = self._ring.read(self._ring.end - 1, self._ring.end)[:, 0]
        steps = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        line = last_before[:, None] + (first_after - last_before)[:, None] * steps
        return line.astype(np.float32)

    def _cut(self, windows: List[LiveWindow]) -> None:
        while self._next_start + self._window_n <= self._ring.end:
            start = self._next_start
            stop = start + self._window_n
            windows.append(self._window(start, stop))
            self._next_start += self._stride_n

    def _window(self, ring_start: int, ring_stop: int) -> LiveWindow:
        records = [b for b in self._blocks if b.ring_end > ring_start and b.ring_start < ring_stop]
        first = records[0]
        first_arrival_s = first.arrival_s - (first.ring_end - 1 - ring_start) / self.fs_hz
        flags = [b.lead_off for b in records if b.lead_off is not None]
        lead_off = (tuple(bool(any(f[i] for f in flags)) for i in range(len(self.lead_names)))
                    if flags else None)
        bridged = tuple((max(start, ring_start) + self._stream_offset,
                         min(end, ring_stop) + self._stream_offset)
                        for start, end in self._bridges if end > ring_start and start < ring_stop)
        recording = Recording(
            samples_mv=self._ring.read(ring_start, ring_stop),
            fs_hz=self.fs_hz,
            lead_names=self.lead_names,
            format=f"serial:{self.wire_format}",
            start_time=dt.datetime.fromtimestamp(first_arrival_s, dt.timezone.utc),
            metadata={"device": self.device},
            rails_mv=self._rails_mv,
        )
        lost, self._lost_pending = self._lost_pending, 0
        self.windows += 1
        return LiveWindow(recording=recording, device=self.device, segment=self.segment,
                          sample_start=ring_start + self._stream_offset,
                          sample_end=ring_stop + self._stream_offset, lost_samples=lost,
                          lead_off=lead_off, bridged_gaps=bridged)


class WindowQueue:
    """Bounded hand-over from acquisition to inference; ``put`` never blocks.

    Full queue: the oldest window is dropped and counted (``dropped_total``); the next
    window ``get`` returns carries the count in ``dropped_windows``. ``close()`` wakes a
    blocked ``get``; after it, ``get`` drains what is left and then returns None at once.
    """

    def __init__(self, max_windows: int) -> None:
        if max_windows < 1:
            raise ValueError("a window queue holds at least one window")
        self.max_windows = max_windows
        self._items: Deque[LiveWindow] = collections.deque()
        self._ready = threading.Condition()
        self._dropped_pending = 0
        self.dropped_total = 0
        self._closed = False

    def put(self, window: LiveWindow) -> None:
        """Enqueue ``window``, dropping the oldest one when full."""
        with self._ready:
            if self._closed:
                return
            if len(self._items) >= self.max_windows:
                self._items.popleft()
                self._dropped_pending += 1
                self.dropped_total += 1
            self._items.append(window)
            self._ready.notify()

    def get(self, timeout_s: Optional[float] = None) -> Optional[LiveWindow]:
        """The oldest window, waiting up to ``timeout_s``; None on timeout or when closed
        and empty."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._ready:
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._ready.wait(remaining)
            if not self._items:
                return None
            window = self._items.popleft()
            if self._dropped_pending:
                window = dataclasses.replace(window, dropped_windows=self._dropped_pending)
                self._dropped_pending = 0
            return window

    def close(self) -> None:
        """No more windows will come: wake every waiting ``get``."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)

