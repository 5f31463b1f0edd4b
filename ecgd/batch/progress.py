"""How far a batch is: a status line on a terminal, quiet structured lines otherwise.

On a terminal one line on stderr is redrawn at most 4 times a second: inputs done of those
found, windows, errors, windows per second and the time left. Otherwise (a log file, a
scheduler) a ``batch_progress`` event every ``interval_s`` seconds. A dozen lines of our own
do this; a progress-bar library would be one more dependency for the same line.
"""
from __future__ import annotations

import time
from typing import Any, Optional, TextIO

from ecgd.batch.run import Counts

_REDRAW_S = 0.25


class Progress:
    """Tracks ``Counts`` against the number of inputs found (``total``, once known)."""

    def __init__(self, stream: TextIO, log: Any, interval_s: float = 30.0) -> None:
        self._stream = stream
        self._log = log
        self._tty = stream.isatty()
        self._interval_s = _REDRAW_S if self._tty else interval_s
        self._started = time.monotonic()
        self._shown = self._started
        self.total: Optional[int] = None
        self.found = 0

    def update(self, counts: Counts, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._shown < self._interval_s:
            return
        self._shown = now
        done = counts.analysed + counts.skipped + counts.duplicates
        elapsed_s = max(now - self._started, 1e-9)
        rate = counts.windows / elapsed_s
        eta_s = None
        if self.total is not None and counts.analysed:
            eta_s = (self.total - done) * elapsed_s / max(done, 1)
        if self._tty:
            total = str(self.total) if self.total is not None else f">={self.found}"
            eta = _clock(eta_s) if eta_s is not None else "?"
            self._stream.write(f"\r\x1b[Kfiles {done}/{total}  windows {counts.windows}  "
                               f"errors {counts.failed}  {rate:.1f} windows/s  ETA {eta}")
            self._stream.flush()
        else:
            self._log.info("batch_progress", inputs_done=done, inputs_found=self.found,
                           inputs_total=self.total, windows=counts.windows,
                           errors=counts.failed, skipped=counts.skipped,
                           windows_per_s=round(rate, 2),
                           eta_s=None if eta_s is None else round(eta_s))

    def finish(self) -> float:
        """End the status line; returns the seconds since the start."""
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
        return time.monotonic() - self._started


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
