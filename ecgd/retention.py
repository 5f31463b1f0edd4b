"""Retention: the disk never fills with what may go, and nothing that may not go is deleted.

The daemon runs one ``Retention`` in its own thread. Every ``[retention] interval_s`` it:

1. deletes inputs in ``[spool] done_dir`` (their reports are durable) that are older than
   ``done_max_age_days``, then, oldest first, as many as it takes for the rest to fit in
   ``done_max_mib``;
2. does the same with delivered reports (``<reports dir>/delivered/``, see
   ``ecgd.report_store``) and ``delivered_max_*``;
3. compares the space available on the reports filesystem with ``min_free_mib``: below it,
   new spool inputs are not taken (``intake_paused``; they wait in the spool, unharmed), so
   the space left goes to the reports of live windows; intake resumes once free space is
   back above the floor by ``RESUME_MARGIN_FRACTION`` of it (so one input's reports do not
   flip it back and forth).

Nothing else is ever deleted: not a report waiting for delivery, not an input in
``failed_dir`` (it waits for a person) or in processing. An entry's age is the time since it
was moved into its folder: its status-change time (ctime), which a rename sets. The mtime of
a dropped input is the vendor's write time, which can be much older. Log lines carry
counts and sizes, never a file name (names may hold patient identifiers).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional, Set, Tuple

from ecgd.config import RetentionConfig
from ecgd.report_store import delivered_dir, list_reports

MIB = 1024 * 1024
SECONDS_PER_DAY = 86400.0
RESUME_MARGIN_FRACTION = 0.05
_JOIN_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class StoredItem:
    """One deletable unit: a done input (a file, or a folder holding one input's files) or
    a delivered report. ``stored_at_s`` is the POSIX time it was moved into its folder."""

    path: Path
    size_bytes: int
    stored_at_s: float


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What one sweep deleted, and whether intake is paused after it."""

    done_deleted: int = 0
    done_bytes: int = 0
    delivered_deleted: int = 0
    delivered_bytes: int = 0
    intake_paused: bool = False


def select_for_deletion(items: List[StoredItem], now_s: float, max_age_s: float,
                        max_bytes: float) -> List[StoredItem]:
    """The items to delete, oldest first: those older than ``max_age_s``, then the oldest
    of the rest until the remainder totals at most ``max_bytes`` (``inf`` = no limit)."""
    ordered = sorted(items, key=lambda item: (item.stored_at_s, item.path.name))
    expired = [item for item in ordered if now_s - item.stored_at_s > max_age_s]
    kept = [item for item in ordered if now_s - item.stored_at_s <= max_age_s]
    total = sum(item.size_bytes for item in kept)
    for item in kept:
        if total <= max_bytes:
            break
        expired.append(item)
        total -= item.size_bytes
    return expired


def done_items(done_dir: Path) -> List[StoredItem]:
    """Every input in ``done_dir``: plain files, and the folders the spool puts an input in
    when its names were taken (sized by the files inside)."""
    items = []
    with os.scandir(done_dir) as listing:
        for entry in listing:
            info = entry.stat(follow_symlinks=False)
            size = info.st_size
            if stat.S_ISDIR(info.st_mode):
                with os.scandir(entry.path) as children:
                    size = sum(child.stat(follow_symlinks=False).st_size for child in children)
            items.append(StoredItem(Path(entry.path), size, info.st_ctime))
    return items


def delivered_items(reports_dir: Path) -> List[StoredItem]:
    """Every delivered report (``<reports dir>/delivered/<uuid>.ecgr``)."""
    items = []
    for path in list_reports(delivered_dir(reports_dir)):
        info = path.lstat()
        items.append(StoredItem(path, info.st_size, info.st_ctime))
    return items


def available_bytes(folder: Path) -> int:
    """Bytes an unprivileged user may still write on the filesystem holding ``folder``."""
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def _remove(item: StoredItem) -> None:
    if item.path.is_dir() and not item.path.is_symlink():
        shutil.rmtree(item.path)
    else:
        os.unlink(item.path)


class Retention:
    """Deletes what the limits allow and guards the free-space floor (see the module doc).

    ``done_dir``: the spool's done folder; ``reports_dir``: ``[reports] dir``; ``log``: a
    structlog logger; ``wake``: set when intake resumes, so the daemon's prepare stage looks
    at the spool again at once. ``sweep()`` does one pass (the tests call it directly);
    ``start()``/``stop()`` run it every ``interval_s`` in a thread.
    """

    def __init__(self, config: RetentionConfig, done_dir: Path, reports_dir: Path, log: Any,
                 wake: Optional[threading.Event] = None) -> None:
        self.config = config
        self.done_dir = Path(done_dir)
        self.reports_dir = Path(reports_dir)
        self._log = log
        self._wake = wake
        self._floor_bytes = config.min_free_mib * MIB
        self._resume_bytes = self._floor_bytes * (1 + RESUME_MARGIN_FRACTION)
        self._paused = False
        self._available_bytes: Optional[int] = None
        self._failing: Set[str] = set()  # what could not be done in the last sweep (logged once)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecgd-retention")
        self.inputs_deleted = 0
        self.reports_deleted = 0

    @property
    def intake_paused(self) -> bool:
        """True while free space is below the floor: take no new spool input."""
        return self._paused

    def status_text(self) -> str:
        """For STATUS=: empty while intake runs, else why it is paused."""
        if not self._paused or self._available_bytes is None:
            return ""
        return (f"spool intake paused: {self._available_bytes / MIB:.0f} MiB free < "
                f"{self.config.min_free_mib:g} MiB floor")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the sweep in progress (a deletion is never cut short) and join."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(_JOIN_TIMEOUT_S)

    def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception as exc:  # a bug must not end retention for good: log, go on
                # The type and the code frames only: a message could hold a path under
                # done_dir, whose names may hold patient identifiers.
                self._log.error("retention_crashed", exception=type(exc).__qualname__,
                                frames="".join(traceback.format_tb(exc.__traceback__)))
            if self._stop.wait(self.config.interval_s):
                return

    def sweep(self, now_s: Optional[float] = None) -> SweepResult:
        """Delete what is past its limits, then check the free-space floor."""
        now = time.time() if now_s is None else now_s
        cfg = self.config
        done_n, done_bytes = self._delete("done", lambda: done_items(self.done_dir), now,
                                          cfg.done_max_age_days, cfg.done_max_mib)
        delivered_n, delivered_bytes = self._delete(
            "delivered", lambda: delivered_items(self.reports_dir), now,
            cfg.delivered_max_age_days, cfg.delivered_max_mib)
        self.inputs_deleted += done_n
        self.reports_deleted += delivered_n
        if done_n or delivered_n:
            self._log.info("retention_deleted", done_inputs=done_n,
                           done_mib=round(done_bytes / MIB, 3), delivered_reports=delivered_n,
                           delivered_mib=round(delivered_bytes / MIB, 3))
        self.check_free_space()
        return SweepResult(done_n, done_bytes, delivered_n, delivered_bytes, self._paused)

    def check_free_space(self) -> bool:
        """Pause or resume spool intake from the space left; returns ``intake_paused``."""
        try:
            available = available_bytes(self.reports_dir)
        except OSError as exc:
            self._failed("free_space", exc)
            return self._paused  # keep the last decision until the folder can be looked at
        self._recovered("free_space")
        self._available_bytes = available
        if not self._paused and available < self._floor_bytes:
            self._paused = True
            self._log.warning("intake_paused", free_mib=round(available / MIB, 1),
                              min_free_mib=self.config.min_free_mib)
        elif self._paused and available >= self._resume_bytes:
            self._paused = False
            self._log.info("intake_resumed", free_mib=round(available / MIB, 1),
                           min_free_mib=self.config.min_free_mib)
            if self._wake is not None:
                self._wake.set()
        return self._paused

    def _delete(self, what: str, list_items: Callable[[], List[StoredItem]], now_s: float, max_age_days: float,
                max_mib: float) -> Tuple[int, int]:
        """Delete the items of one folder past its limits: (count, bytes) deleted."""
        try:
            items = list_items()
        except FileNotFoundError:
            return 0, 0  # nothing was ever delivered (or done) yet
        except OSError as exc:
            self._failed(what, exc)
            return 0, 0
        count = size = 0
        failure: Optional[OSError] = None
        for item in select_for_deletion(items, now_s, max_age_days * SECONDS_PER_DAY,
                                        max_mib * MIB):
            try:
                _remove(item)
            except FileNotFoundError:
                continue  # removed meanwhile (an administrator): nothing to do
            except OSError as exc:
                failure = exc
                continue
            count += 1
            size += item.size_bytes
        if failure is not None:
            self._failed(what, failure)
        else:
            self._recovered(what)
        return count, size

    def _failed(self, what: str, exc: OSError) -> None:
        if what not in self._failing:
            self._failing.add(what)
            self._log.error("retention_failed", folder=what,
                            reason=errno.errorcode.get(exc.errno or 0, "OSError"))

    def _recovered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            self._log.info("retention_recovered", folder=what)
