"""A lossy device link in the journal: a few lines per fault episode, never one per frame.

The serial source's counters only grow (lost samples, bridged gaps, segments closed, garbage
bytes, malformed lines, format changes). ``LinkLog`` watches them and logs:

- ``link_degraded`` (warning) at the first fault after a quiet link, with what went wrong;
- ``link_faults`` (warning) while the episode lasts, at most once per ``interval_s``, with
  the counts since the previous line;
- ``link_recovered`` (info) once a whole ``interval_s`` passed without a fault, with the
  episode's totals and its duration.

So a marginal cable that loses a frame every second shows up in ``journalctl`` at once and
then once per interval, and an admin can tell when it got better. Counts only: never a
sample value or a byte read from the device.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

# The counters of SerialSource.stats() that mean the link misbehaved.
FAULT_COUNTERS = ("lost_samples", "bridged_gaps", "bridged_samples", "segments_closed",
                  "garbage_bytes", "malformed_lines", "format_changes")


class LinkLog:
    """Fault episodes of one device from its cumulative counters; time is passed in."""

    def __init__(self, log: Any, device: str, interval_s: float,
                 counters: Mapping[str, int]) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._log = log
        self._device = device
        self._interval_s = interval_s
        self._seen = {name: counters[name] for name in FAULT_COUNTERS}
        self._episode_start_s: Optional[float] = None
        self._last_fault_s = 0.0
        self._last_line_s = 0.0
        self._since_line: Dict[str, int] = {}
        self._episode: Dict[str, int] = {}

    @property
    def degraded(self) -> bool:
        """True while a fault episode lasts."""
        return self._episode_start_s is not None

    def observe(self, counters: Mapping[str, int], now_s: float) -> None:
        """Take the current counters (monotonic ``now_s``); log what the episode rules say."""
        delta = {name: counters[name] - self._seen[name] for name in FAULT_COUNTERS
                 if counters[name] != self._seen[name]}
        self._seen = {name: counters[name] for name in FAULT_COUNTERS}
        if self._episode_start_s is None:
            if delta:
                self._log.warning("link_degraded", device=self._device, **delta)
                self._episode_start_s = self._last_fault_s = self._last_line_s = now_s
                self._episode = dict(delta)
                self._since_line = {}
            return
        if delta:
            self._last_fault_s = now_s
            for name, count in delta.items():
                self._since_line[name] = self._since_line.get(name, 0) + count
                self._episode[name] = self._episode.get(name, 0) + count
        if now_s - self._last_line_s < self._interval_s:
            return
        if self._since_line:
            self._log.warning("link_faults", device=self._device,
                              interval_s=round(now_s - self._last_line_s, 1), **self._since_line)
            self._since_line = {}
            self._last_line_s = now_s
        elif now_s - self._last_fault_s >= self._interval_s:
            self._log.info("link_recovered", device=self._device,
                           duration_s=round(self._last_fault_s - self._episode_start_s, 1),
                           **self._episode)
            self._episode_start_s = None
