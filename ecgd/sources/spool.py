"""Spool ingest: watch the drop folder, hand out complete inputs, claim / complete / fail them.

Device vendors drop recordings into ``[spool] dir``. Two threads feed one state table:

    watchdog Observer (inotify) --events--> bounded queue --> scanner thread --> ready heap
    scanner thread: drains the queue, rescans the folder every ``rescan_s``, settles files,
                    groups WFDB headers with their data files, refuses bad inputs
    daemon thread:  next_ready() -> claim() -> (read, infer, seal) -> complete() / fail()

Life of an input::

    dir/NAME  --claim (rename)-->  processing_dir/<name_hash>~<token>/NAME
              --complete-->        done_dir/NAME            (after the reports are durable)
              --fail / refuse-->   failed_dir/NAME + NAME.error.json

A file is ready when inotify saw it closed after writing (or renamed into the folder: from a
hidden name beside it or from another folder, both atomic, so ready at once), or when
its size and mtime have been stable for ``settle_s`` without inotify having seen a write in
progress (files written over NFS, or while ecgd was down). A file seen being written but never
closed (close event lost) is taken once stable for ``wfdb_wait_s``. A WFDB header waits for
every data file it names for ``wfdb_wait_s``; a ``.dat``/``.mat``/``.xyz`` no header names is
failed after the same time.

Names dropped by vendors may hold patient identifiers: they are never logged (logs carry
``name_hash``), and never used unsanitized to build a path. Memory stays bounded in a burst:
the state table holds names and stat results only, the event queue has a bound (overflow
triggers a rescan instead of growing).

Only ecgd writes into processing_dir, done_dir and failed_dir (created 0700), and only one
ecgd runs per spool: that is what makes "does the target exist?" followed by ``rename`` a
no-overwrite move there.
"""
from __future__ import annotations

import dataclasses
import errno
import heapq
import json
import math
import os
import queue
import secrets
import stat
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

import ecgd
from ecgd.config import SpoolConfig
from ecgd.durable import fsync_directory, write_durable
from ecgd.errors import ConfigError, RecordError, SourceError
from ecgd.records.companions import wfdb_header_lines, wfdb_signal_files
from ecgd.report import readable_text, utc_timestamp
from ecgd.security.pseudonym import NAME_HASH_HEX, hash_name, redact_names

ERROR_SUFFIX = ".error.json"
_IGNORED_SUFFIXES = (".tmp", ".part", ERROR_SUFFIX)
# WFDB signal files ecgd never reads without a header: MIT .dat, WFDB-MATLAB .mat (CinC),
# PTB's .xyz (Frank leads). Each waits for a header naming it, whatever the drop order.
_WFDB_DATA_SUFFIXES = (".dat", ".mat", ".xyz")
_MAX_NAME_BYTES = 255
# write_durable writes NAME.error.json under a temporary ".NAME.error.json.<16 hex>.tmp".
_ERROR_STEM_MAX_BYTES = _MAX_NAME_BYTES - len(ERROR_SUFFIX) - len("..0123456789abcdef.tmp")
_EVENT_QUEUE_MAX = 10000
# An attempt at processing a claimed input: an empty ".attempt-N" file in its claim folder
# (hidden, so never an input's sanitized name). One left behind is one crash.
_ATTEMPT_PREFIX = ".attempt-"
_CLAIM_BACKOFF_INITIAL_S = 1.0
_CLAIM_BACKOFF_MAX_S = 300.0
_JOIN_TIMEOUT_S = 10.0

# Event kinds the watchdog handler puts on the queue (the scanner thread interprets them).
_WRITTEN, _CLOSED, _APPEARED, _GONE = "written", "closed", "appeared", "gone"
_WAKE = "wake"
_SENTINEL = ("stop", "")

# Inputs the scanner refuses into failed_dir: (file names, reason, other names to redact).
_Refusals = List[Tuple[List[str], str, Tuple[str, ...]]]


def is_ignored_name(name: str) -> bool:
    """True for names the spool never takes: hidden, temporary, partial, our error files."""
    return name.startswith(".") or name.lower().endswith(_IGNORED_SUFFIXES)


def sanitize_name(name: str) -> str:
    """A single safe path component for ``name``; unchanged when ``name`` is already safe.

    ``/``, NUL, control and undecodable characters become ``_``; a leading dot (hidden,
    ``.``, ``..``) gets a ``_`` prefix; names over 255 UTF-8 bytes are shortened keeping the
    extension, so WFDB headers still find data files whose names were safe to begin with.
    """
    chars = []
    for char in name:
        unsafe = char in "/\0" or unicodedata.category(char) in ("Cc", "Cs")
        chars.append("_" if unsafe else char)
    safe = "".join(chars) or "_"
    if safe.startswith("."):
        safe = "_" + safe
    encoded = safe.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        stem, dot, suffix = safe.rpartition(".")
        suffix = (dot + suffix) if dot and len(suffix) <= 16 else ""
        budget = _MAX_NAME_BYTES - len(suffix.encode("utf-8"))
        stem_bytes = (stem if suffix else safe).encode("utf-8")[:budget]
        safe = stem_bytes.decode("utf-8", "ignore") + suffix
    return safe


@dataclasses.dataclass(frozen=True)
class SpoolItem:
    """One input that is ready: a primary file in the spool dir plus its companions.

    For a WFDB record the primary is the ``.hea`` and the companions are the data files it
    names; for every other format there are no companions.
    """

    primary: Path
    companions: Tuple[Path, ...]
    name_hash: str
    mtime_ns: int

    @property
    def files(self) -> Tuple[Path, ...]:
        """Every file of the input, primary first."""
        return (self.primary,) + self.companions


@dataclasses.dataclass(frozen=True)
class ClaimedInput:
    """An input moved into its own folder under processing_dir, ready to be read.

    ``original_name`` is the primary's name as dropped (may hold a patient identifier: never
    log it); ``name_hash`` is what logs show instead. ``crashes``: how many times the daemon
    died while processing it (counted by ``begin_attempt``, read back by ``recover``).
    """

    primary: Path
    files: Tuple[Path, ...]
    original_name: str
    name_hash: str
    crashes: int = 0


@dataclasses.dataclass
class _Entry:
    """What the scanner knows about one name in the spool dir: stat facts, never content."""

    name: str
    file_type: int               # stat.S_IFMT of its lstat mode
    size: int
    mtime_ns: int
    first_seen_s: float          # monotonic
    changed_s: float             # monotonic time the (size, mtime) signature last changed
    writing: bool = False        # inotify saw a write not yet followed by a close
    closed: bool = False         # inotify saw a close-after-write / rename-in since the change
    file_ready: bool = False
    queued: bool = False         # waiting in the ready queue
    arrival: int = 0             # when ecgd saw this version of the file (larger: newer)
    taken: bool = False          # handed out by next_ready or being moved by the scanner
    check_s: float = math.inf    # monotonic time this entry needs another look (on _due)
    data_names: Optional[Tuple[str, ...]] = None   # WFDB header: data files it names

    def signature(self) -> Tuple[int, int]:
        return (self.size, self.mtime_ns)

    @property
    def regular(self) -> bool:
        return self.file_type == stat.S_IFREG

    @property
    def directory(self) -> bool:
        return self.file_type == stat.S_IFDIR


class _EventForwarder(FileSystemEventHandler):
    """Runs on watchdog's thread: turns events into (kind, name) on a bounded queue."""

    def __init__(self, spool_dir: str, events: "queue.Queue[Tuple[str, str]]",
                 overflowed: threading.Event) -> None:
        self._dir = spool_dir
        self._events = events
        self._overflowed = overflowed

    def _put(self, kind: str, path: Any) -> None:
        if not path:  # the unwatched side of a rename into or out of the folder
            return
        path = os.fsdecode(path)
        if os.path.dirname(path) != self._dir:
            return
        try:
            self._events.put_nowait((kind, os.path.basename(path)))
        except queue.Full:
            # Dropping the event is safe: the scanner rescans the whole folder instead.
            self._overflowed.set()

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Folders are forwarded too: a folder dropped into the spool is refused (the scanner
        # tells them apart by lstat).
        if isinstance(event, FileSystemMovedEvent):
            self._put(_GONE, event.src_path)
            self._put(_CLOSED, event.dest_path)  # renamed into place: complete by convention
        elif isinstance(event, FileClosedEvent):
            self._put(_CLOSED, event.src_path)
        elif isinstance(event, FileModifiedEvent):
            self._put(_WRITTEN, event.src_path)
        elif isinstance(event, (FileCreatedEvent, DirCreatedEvent)):
            self._put(_APPEARED, event.src_path)
        elif isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
            self._put(_GONE, event.src_path)


class Spool:
    """The spool folder: watches it, hands out ready inputs oldest first, moves them along.

    ``max_input_bytes``: any single file larger than this is refused unread into failed_dir.
    ``log``: a structlog logger. ``name_key``: optional key for ``hash_name`` (pass the
    pseudonym key so name hashes in logs cannot be brute-forced). ``wake``: optional event
    set whenever an input becomes ready (or the scanner fails), so a consumer serving
    several sources can sleep on one event and poll ``next_ready(0)``.
    Call ``ensure_dirs()``, then ``recover()``, then ``start()``; ``stop()`` joins every thread.
    """

    def __init__(self, config: SpoolConfig, max_input_bytes: int, log: Any,
                 name_key: Optional[bytes] = None,
                 wake: Optional[threading.Event] = None) -> None:
        self._config = config
        self._max_input_bytes = max_input_bytes
        self._log = log
        self._name_key = name_key
        self._dir = Path(os.path.abspath(config.dir))
        # ecgd's own folders, should they be configured inside the drop folder: never inputs.
        self._own_dirs = {Path(os.path.abspath(folder)) for folder in (
            config.processing_dir, config.done_dir, config.failed_dir)}
        self._lock = threading.Lock()
        self._ready_changed = threading.Condition(self._lock)
        self._entries: Dict[str, _Entry] = {}
        self._owner: Dict[str, str] = {}           # WFDB data file name -> header name
        # The ready queue, one set of inputs in two orders (stale items skipped on pop):
        # oldest mtime first, and latest to arrive first. next_ready takes turns.
        self._oldest: List[Tuple[int, int, str]] = []  # heap of (0, mtime_ns, name)
        self._newest: List[Tuple[int, int, str]] = []  # heap of (-arrival, mtime_ns, name)
        self._arrivals = 0
        self._ready_total = 0
        self._newest_turn = False
        # When each entry needs another look: heap of (check_s, name), stale items skipped,
        # so an event costs the entries it concerns, not a pass over every entry.
        self._due: List[Tuple[float, str]] = []
        self._first_scan_s: Optional[float] = None
        self._initial_scan_settled = threading.Event()
        self._events: "queue.Queue[Tuple[str, str]]" = queue.Queue(maxsize=_EVENT_QUEUE_MAX)
        self._overflowed = threading.Event()
        # name -> (monotonic retry time, backoff) of inputs that could not be moved; kept
        # apart from the entries so it survives the name vanishing and reappearing mid-claim.
        self._backoff: Dict[str, Tuple[float, float]] = {}
        self._stopping = threading.Event()
        self._observer: Optional[Any] = None
        self._scanner: Optional[threading.Thread] = None
        self._scanner_error: Optional[BaseException] = None
        self._scan_error_logged = False
        self._wake = wake
        self._refused = 0

    # ----------------------------------------------------------------- setup and threads

    def ensure_dirs(self) -> None:
        """Create the four spool folders (0700 where ecgd creates them) on one filesystem.

        Raises ConfigError naming the folder when one cannot be created or is not a directory,
        or when they are on different filesystems (claims must be atomic renames).
        """
        devices = {}
        for key in ("dir", "processing_dir", "done_dir", "failed_dir"):
            path = Path(os.path.abspath(getattr(self._config, key)))
            missing = []
            probe = path
            while not probe.exists() and probe != probe.parent:
                missing.append(probe)
                probe = probe.parent
            for folder in reversed(missing):
                try:
                    folder.mkdir(mode=0o700)
                    os.chmod(folder, 0o700)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise ConfigError(f"[spool] {key}: cannot create {folder}: "
                                      f"{exc.strerror}") from exc
            try:
                info = os.stat(path)
            except OSError as exc:
                raise ConfigError(f"[spool] {key}: cannot open {path}: {exc.strerror}") from exc
            if not stat.S_ISDIR(info.st_mode):
                raise ConfigError(f"[spool] {key}: {path} is not a directory")
            devices[key] = info.st_dev
        if len(set(devices.values())) != 1:
            raise ConfigError("[spool] dir, processing_dir, done_dir, failed_dir: must be on one "
                              "filesystem (inputs are claimed by atomic rename)")

    def start(self) -> None:
        """Start watching (inotify) and the scanner thread, which scans the folder at once."""
        self._stopping.clear()
        try:
            self._observer = _make_observer()
            forwarder = _EventForwarder(str(self._dir), self._events, self._overflowed)
            self._observer.schedule(
                forwarder, str(self._dir), recursive=False,
                event_filter=[FileMovedEvent, FileClosedEvent, FileModifiedEvent,
                              FileCreatedEvent, FileDeletedEvent, DirCreatedEvent,
                              DirMovedEvent, DirDeletedEvent])
            self._observer.start()
        except OSError as exc:
            # Without inotify the periodic rescan still finds every file, only later.
            self._log.error("spool_watch_failed", reason=exc.strerror or str(exc),
                            rescan_s=self._config.rescan_s)
            self._observer = None
        self._scanner = threading.Thread(target=self._run_scanner, name="ecgd-spool-scanner")
        self._scanner.start()

    def stop(self) -> None:
        """Stop watching and scanning; join both threads; wake a blocked ``next_ready``."""
        self._stopping.set()
        try:
            self._events.put_nowait(_SENTINEL)
        except queue.Full:
            pass  # the scanner polls the stop event between batches anyway
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(_JOIN_TIMEOUT_S)
            self._observer = None
        if self._scanner is not None:
            self._scanner.join(_JOIN_TIMEOUT_S)
            self._scanner = None
        with self._ready_changed:
            self._ready_changed.notify_all()
        self._set_wake()

    def ready_count(self) -> int:
        """Inputs ready and waiting for ``next_ready`` (queue depth)."""
        with self._lock:
            return self._ready_total

    def initial_scan_settled(self) -> bool:
        """True once the files found by the first scan after ``start()`` have had their
        settle time and been looked at again: those already complete are then ready."""
        return self._initial_scan_settled.is_set()

    def refused_count(self) -> int:
        """Inputs the spool refused itself into failed_dir since it was made (symlinks,
        oversize files, headers that are not headers, data files without a header): the
        failures the consumer of ``next_ready`` never sees."""
        with self._lock:
            return self._refused

    # ----------------------------------------------------------------- daemon side

    def next_ready(self, timeout_s: float) -> Optional[SpoolItem]:
        """The next ready input, waiting up to ``timeout_s``; else None.

        Turns alternate between the oldest input waiting (mtime, then name) and the ready
        input that arrived last, so an input dropped behind a flood of thousands is taken
        within two turns of being ready while the flood drains from its oldest end, even when
        the flood is still settling. (Arrival is the order in which ecgd first saw a file, or
        saw it changed, which a dropper cannot forge the way it can set an mtime.)

        Raises SourceError if the scanner thread died (a bug), so the daemon cannot idle on a
        spool that no longer watches anything.
        """
        deadline_s = time.monotonic() + timeout_s
        with self._ready_changed:
            while True:
                if self._scanner_error is not None:
                    raise SourceError(f"spool {self._dir}: scanner thread failed: "
                                      f"{type(self._scanner_error).__name__}")
                lanes = [self._newest, self._oldest]
                if not self._newest_turn:
                    lanes.reverse()
                for lane in lanes:
                    entry = self._pop_handable(lane)
                    if entry is not None:
                        self._newest_turn = lane is self._oldest
                        return self._hand_out(entry)
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0 or self._stopping.is_set():
                    return None
                self._ready_changed.wait(remaining_s)

    def claim(self, item: SpoolItem) -> Optional[ClaimedInput]:
        """Move every file of ``item`` into a fresh folder under processing_dir by rename.

        Returns None, having dealt with the input, when it vanished, changed since it was
        found ready (it will be offered again), was refused unread into failed_dir (symlink,
        not a regular file, over max_input_bytes), or could not be moved (logged once, retried
        later with a growing backoff).
        """
        names = [path.name for path in item.files]
        refusal = self._refusal_reason(names)
        if refusal is not None:
            self._refuse(names, refusal, item.name_hash)
            return None
        with self._lock:
            entries = [self._entries.get(name) for name in names]
            changed = any(entry is None or not entry.file_ready or entry.writing
                          or entry.signature() != self._lstat_sig(name)
                          for name, entry in zip(names, entries))
            if changed:  # written to since it was handed out: settle again
                self._release(names, changed=True)
                return None
        folder: Optional[Path] = None
        moved: List[Tuple[Path, Path]] = []
        try:
            folder = self._make_unique_dir(Path(self._config.processing_dir), item.name_hash)
            # Header first: a crash mid-claim leaves a header whose missing data files
            # recover() fetches back from the spool dir.
            for name in names:
                target = self._unique_path(folder, sanitize_name(name))
                os.rename(self._dir / name, target)
                moved.append((self._dir / name, target))
        except OSError as exc:
            self._undo_claim(moved, folder, item.name_hash)
            vanished = [name for name in names if not os.path.lexists(self._dir / name)]
            if exc.errno == errno.ENOENT and vanished:
                with self._lock:
                    for name in vanished:
                        self._forget(name)
                    self._release([name for name in names if name not in vanished], changed=True)
                return None
            self._back_off(names, item.name_hash, exc, "input_claim_failed")
            return None
        with self._lock:
            for name in names:
                self._forget(name)
                self._backoff.pop(name, None)
        self._log.info("input_claimed", name_hash=item.name_hash, files=len(moved))
        targets = tuple(target for _, target in moved)
        return ClaimedInput(primary=targets[0], files=targets, original_name=names[0],
                            name_hash=item.name_hash)

    def complete(self, claimed: ClaimedInput) -> Tuple[Path, ...]:
        """Move a processed input to done_dir (call only once its reports are durable).

        Returns the new paths. Raises SourceError (naming the hash, not the input) if the move
        fails; the input then stays in processing_dir and is recovered at the next start.
        """
        try:
            placed = self._place([(path, path.name) for path in claimed.files],
                                 Path(self._config.done_dir), claimed.name_hash, ())
            self._remove_claim_dir(claimed)
            fsync_directory(Path(self._config.done_dir))
        except OSError as exc:
            raise SourceError(f"spool input {claimed.name_hash}: cannot move to done_dir: "
                              f"{exc.strerror}") from exc
        self._log.info("input_done", name_hash=claimed.name_hash)
        return placed

    def fail(self, claimed: ClaimedInput, reason: str) -> Tuple[Path, ...]:
        """Move an input that could not be read to failed_dir with ``NAME.error.json`` beside it.

        The reason goes into the error file as given; the log line carries it with every name
        of the input replaced by the name hash. Raises SourceError if the move fails.
        """
        names = [claimed.original_name] + [path.name for path in claimed.files]
        try:
            placed = self._place([(path, path.name) for path in claimed.files],
                                 Path(self._config.failed_dir), claimed.name_hash,
                                 (_error_file_name(claimed.files[0].name),))
            self._write_error_file(placed[0], reason, claimed.original_name, claimed.name_hash)
            self._remove_claim_dir(claimed)
        except OSError as exc:
            raise SourceError(f"spool input {claimed.name_hash}: cannot move to failed_dir: "
                              f"{exc.strerror}") from exc
        self._log.warning("input_failed", name_hash=claimed.name_hash,
                          reason=redact_names(reason, names, claimed.name_hash))
        return placed

    def begin_attempt(self, claimed: ClaimedInput) -> None:
        """Record that ``claimed`` is being processed, before it is read.

        If the daemon dies before the input is completed or failed, ``recover`` counts this
        attempt as a crash. The record survives a SIGKILL at once (it is an empty file).
        A retry's record is also fsynced, so it survives a power cut that the input may be
        causing (a brownout under load); a first attempt's is left to the next fsync, because
        losing it costs one more retry at most. Raises SourceError if it cannot be written.
        """
        folder = claimed.primary.parent
        marker = folder / f"{_ATTEMPT_PREFIX}{claimed.crashes + 1}"
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            os.close(fd)
            if claimed.crashes:
                fsync_directory(folder)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SourceError(f"spool input {claimed.name_hash}: cannot record its attempt: "
                              f"{exc.strerror}") from exc

    def end_attempt(self, claimed: ClaimedInput) -> None:
        """Withdraw ``begin_attempt``: ``claimed`` stays in processing_dir, but the daemon is
        stopping cleanly (not a crash). Raises SourceError if the record cannot be removed."""
        marker = claimed.primary.parent / f"{_ATTEMPT_PREFIX}{claimed.crashes + 1}"
        try:
            marker.unlink(missing_ok=True)
        except OSError as exc:
            raise SourceError(f"spool input {claimed.name_hash}: cannot withdraw its attempt: "
                              f"{exc.strerror}") from exc

    def recover(self) -> List[ClaimedInput]:
        """Inputs a crash left in processing_dir, oldest first, to be processed again.

        Call before ``start()``. A WFDB header whose data files were still in the spool dir
        when the claim was cut short gets them back; empty claim folders are removed. Each
        input's ``crashes`` is the number of attempts it was in hand at a crash.
        """
        processing = Path(self._config.processing_dir)
        try:
            return self._recover_all(processing)
        except OSError as exc:
            raise SourceError(f"spool processing_dir {processing}: cannot recover: "
                              f"{exc.strerror}") from exc

    def _recover_all(self, processing: Path) -> List[ClaimedInput]:
        recovered: List[Tuple[int, str, ClaimedInput]] = []
        for child in sorted(os.listdir(processing)):
            path = processing / child
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                # Not ours (we always claim into a folder): give it one.
                folder = self._make_unique_dir(processing, hash_name(child, self._name_key))
                os.rename(path, folder / child)
                path = folder
            elif not stat.S_ISDIR(info.st_mode):
                continue
            claimed = self._recover_folder(path)
            if claimed is None:
                continue
            mtime_ns = os.lstat(claimed.primary).st_mtime_ns
            recovered.append((mtime_ns, claimed.primary.name, claimed))
            self._log.info("input_recovered", name_hash=claimed.name_hash,
                           files=len(claimed.files), crashes=claimed.crashes)
        return [claimed for _, _, claimed in sorted(recovered, key=lambda row: row[:2])]

    # ----------------------------------------------------------------- scanner thread

    def _run_scanner(self) -> None:
        try:
            self._scan_loop()
        except BaseException as exc:  # a bug: make next_ready raise instead of idling
            self._log.exception("spool_scanner_crashed")
            with self._ready_changed:
                self._scanner_error = exc
                self._ready_changed.notify_all()
            self._set_wake()
            raise

    def _scan_loop(self) -> None:
        next_rescan_s = time.monotonic()
        while not self._stopping.is_set():
            now_s = time.monotonic()
            if now_s >= next_rescan_s:
                self._rescan(now_s)
                next_rescan_s = now_s + self._config.rescan_s
                if self._first_scan_s is None:
                    self._first_scan_s = now_s
            now_s = time.monotonic()
            self._evaluate_due(now_s)
            settled_s = math.inf
            if not self._initial_scan_settled.is_set() and self._first_scan_s is not None:
                settled_s = self._first_scan_s + self._config.settle_s
                if now_s >= settled_s:
                    self._initial_scan_settled.set()
                    self._set_wake()
                    settled_s = math.inf
            with self._lock:
                next_check_s = self._due[0][0] if self._due else math.inf
            wait_s = max(0.0, min(next_rescan_s, next_check_s, settled_s) - time.monotonic())
            try:
                batch = [self._events.get(timeout=wait_s)]
            except queue.Empty:
                continue
            while True:  # drain the burst, then evaluate once
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            if _SENTINEL in batch:
                return
            if self._overflowed.is_set():
                self._overflowed.clear()
                next_rescan_s = time.monotonic()
            self._apply_events(batch, time.monotonic())

    def _apply_events(self, batch: Sequence[Tuple[str, str]], now_s: float) -> None:
        with self._lock:
            for kind, name in batch:
                if kind == _WAKE or is_ignored_name(name):
                    continue
                if kind == _GONE:
                    self._forget(name)
                    continue
                # Taken entries are updated too, so claim() sees a write after the hand-out.
                entry = self._observe(name, now_s)
                if entry is None:
                    continue
                if kind == _WRITTEN:
                    entry.writing, entry.closed, entry.file_ready = True, False, False
                elif kind == _CLOSED:
                    entry.writing, entry.closed = False, True
                self._schedule(entry, now_s)

    def _rescan(self, now_s: float) -> None:
        try:
            with os.scandir(self._dir) as listing:
                seen = set()
                for dirent in listing:
                    if is_ignored_name(dirent.name):
                        continue
                    seen.add(dirent.name)
                    with self._lock:
                        if dirent.name not in self._entries:
                            entry = self._observe(dirent.name, now_s)
                            if entry is not None:
                                self._schedule(entry, now_s)
        except OSError as exc:
            if not self._scan_error_logged:
                self._log.error("spool_scan_failed", reason=exc.strerror or str(exc))
                self._scan_error_logged = True
            return
        if self._scan_error_logged:
            self._log.info("spool_scan_recovered")
            self._scan_error_logged = False
        with self._lock:
            for name in [name for name in self._entries if name not in seen]:
                self._forget(name)
            for name in [name for name in self._backoff if name not in seen]:
                del self._backoff[name]
            # Catch changes whose events were lost. Queued inputs are left alone (a flood of
            # them would make every rescan a pass over all): claim() checks them anyway.
            for entry in self._entries.values():
                if not entry.queued:
                    self._schedule(entry, now_s)

    def _observe(self, name: str, now_s: float) -> Optional[_Entry]:
        """lstat ``name`` into its entry (creating it); None for gone names and ecgd's own
        folders. Anything not a regular file (a folder, a symlink) becomes an entry that the
        scanner refuses."""
        try:
            info = os.lstat(self._dir / name)
        except OSError:
            self._forget(name)
            return None
        if stat.S_ISDIR(info.st_mode) and self._dir / name in self._own_dirs:
            return None
        entry = self._entries.get(name)
        if entry is None:
            self._arrivals += 1
            entry = _Entry(name=name, file_type=stat.S_IFMT(info.st_mode), size=info.st_size,
                           mtime_ns=info.st_mtime_ns, first_seen_s=now_s, changed_s=now_s,
                           arrival=self._arrivals)
            self._entries[name] = entry
        elif (info.st_size, info.st_mtime_ns) != entry.signature() or \
                stat.S_IFMT(info.st_mode) != entry.file_type:
            entry.size, entry.mtime_ns = info.st_size, info.st_mtime_ns
            entry.file_type = stat.S_IFMT(info.st_mode)
            entry.changed_s = now_s
            self._arrivals += 1
            entry.arrival = self._arrivals
            entry.closed = False
            entry.file_ready = False
            self._unqueue(entry)
            if entry.data_names is not None:  # a rewritten header is parsed again
                for data in entry.data_names:
                    if self._owner.get(data) == name:
                        del self._owner[data]
                entry.data_names = None
        return entry

    def _evaluate_due(self, now_s: float) -> None:
        """Settle files, group WFDB records, queue ready inputs, refuse bad ones."""
        refusals: _Refusals = []
        with self._lock:
            due = []
            while self._due and self._due[0][0] <= now_s:
                when_s, name = heapq.heappop(self._due)
                entry = self._entries.get(name)
                if entry is None or entry.check_s != when_s:
                    continue  # gone, or rescheduled since
                entry.check_s = math.inf
                if not entry.taken:  # a taken entry is scheduled again when released
                    due.append(entry)
            headers_to_check: Set[str] = set()
            for entry in due:
                retry_s = self._retry_s(entry.name)
                if now_s < retry_s:
                    self._schedule(entry, retry_s)
                    continue
                if not entry.regular and not entry.directory:  # never opened: refused at once
                    refusals.append(([entry.name], _not_regular_reason(self._dir / entry.name),
                                     ()))
                    continue
                self._settle(entry, now_s)
                if entry.directory:
                    # Refused once stable, not while a tool may still be filling it.
                    if entry.file_ready:
                        refusals.append(([entry.name],
                                         _not_regular_reason(self._dir / entry.name), ()))
                    continue
                if entry.file_ready and entry.size > self._max_input_bytes:
                    refusals.append(([entry.name], _oversize_reason(
                        entry.name, entry.size, self._max_input_bytes), ()))
                    continue
                if entry.name.lower().endswith(".hea"):
                    headers_to_check.add(entry.name)
                elif entry.name in self._owner:
                    headers_to_check.add(self._owner[entry.name])
                elif entry.file_ready:
                    self._place_standalone(entry, now_s, refusals)
            for header in headers_to_check:
                self._check_header(header, now_s, refusals)
            for names, _, _ in refusals:
                for name in names:
                    if name in self._entries:
                        self._entries[name].taken = True
            if self._ready_total:
                self._ready_changed.notify_all()
                self._set_wake()
        for names, reason, also_named in refusals:
            self._refuse(names, reason, hash_name(names[0], self._name_key), also_named)

    def _settle(self, entry: _Entry, now_s: float) -> None:
        if entry.file_ready:
            return
        if entry.closed:
            entry.file_ready = True
            return
        # A write seen in progress, or an empty file, may be an open writer: wait for its close
        # event; the long wait only covers a lost close event.
        wait_s = self._config.wfdb_wait_s if (entry.writing or entry.size == 0) \
            else self._config.settle_s
        if now_s - entry.changed_s < wait_s:
            self._schedule(entry, entry.changed_s + wait_s)
            return
        before = entry.signature()
        current = self._observe(entry.name, now_s)
        if current is None:
            return
        if current.signature() == before and (current.regular or current.directory):
            current.file_ready = True
        else:
            self._schedule(current, current.changed_s + wait_s)

    def _place_standalone(self, entry: _Entry, now_s: float,
                          refusals: _Refusals) -> None:
        if entry.name.lower().endswith(_WFDB_DATA_SUFFIXES):
            header = self._entries.get(os.path.splitext(entry.name)[0] + ".hea")
            if header is not None and header.data_names is None:
                # Its header is still being written: whether it names this file is unknown.
                self._schedule(entry, now_s + self._config.settle_s)
                return
            deadline_s = entry.first_seen_s + self._config.wfdb_wait_s
            if now_s < deadline_s:
                self._schedule(entry, deadline_s)
                return
            refusals.append(([entry.name], f"{entry.name}: WFDB data file without a header "
                                           f"naming it after {self._config.wfdb_wait_s:g} s", ()))
            return
        self._queue(entry, now_s)

    def _check_header(self, header: str, now_s: float,
                      refusals: _Refusals) -> None:
        entry = self._entries.get(header)
        if entry is None or entry.taken or not entry.file_ready:
            return
        if entry.data_names is None:
            try:
                entry.data_names = self._read_data_names(header)
            except RecordError as exc:
                refusals.append(([header], str(exc), ()))
                return
            for data in entry.data_names:
                self._owner.setdefault(data, header)
        present = [data for data in entry.data_names if data in self._entries
                   and self._owner.get(data) == header]
        waiting = [data for data in entry.data_names
                   if data not in present or not self._entries[data].file_ready]
        if not waiting:
            self._queue(entry, now_s)
            return
        deadline_s = entry.first_seen_s + self._config.wfdb_wait_s
        if now_s < deadline_s:
            self._schedule(entry, deadline_s)
            return
        refusals.append(([header] + present,
                         f"{header}: data files never arrived: {', '.join(waiting)}",
                         entry.data_names))

    def _read_data_names(self, header: str) -> Tuple[str, ...]:
        """The data file names a header needs; RecordError for names outside the spool dir."""
        path = self._dir / header
        if "/" in wfdb_header_lines(path)[0][1].split()[0]:
            return ()  # multi-segment: the reader refuses it with its own reason
        names = tuple(wfdb_signal_files(path))
        for name in names:
            if sanitize_name(name) != name or name in (".", ".."):
                raise RecordError(f"{header}: names a data file that is not a plain file "
                                  f"name beside it")
            if name.lower().endswith(".hea"):
                # Itself, or a header naming this one back: each would wait for the other.
                raise RecordError(f"{header}: names a WFDB header as its data file")
        return names

    def _queue(self, entry: _Entry, now_s: float) -> None:
        retry_s = self._retry_s(entry.name)
        if now_s < retry_s:
            self._schedule(entry, retry_s)  # a claim failed: wait out the backoff
            return
        if not entry.queued:
            entry.queued = True
            self._ready_total += 1
            heapq.heappush(self._oldest, (0, entry.mtime_ns, entry.name))
            heapq.heappush(self._newest, (-entry.arrival, entry.mtime_ns, entry.name))

    def _unqueue(self, entry: _Entry) -> None:
        if entry.queued:
            entry.queued = False
            self._ready_total -= 1

    def _pop_handable(self, lane: List[Tuple[int, int, str]]) -> Optional[_Entry]:
        """Pop ``lane`` down to its first input still queued and handable (None: empty).
        A queued input found not handable leaves the queue; the scanner queues it again."""
        while lane:
            _, mtime_ns, name = heapq.heappop(lane)
            entry = self._entries.get(name)
            if entry is None or not entry.queued or entry.mtime_ns != mtime_ns:
                continue  # taken through the other lane, gone, or rewritten since
            self._unqueue(entry)
            if self._is_handable(name):
                return entry
        return None

    def _schedule(self, entry: _Entry, when_s: float) -> None:
        """Have the scanner look at ``entry`` again at monotonic ``when_s`` (or earlier)."""
        if when_s < entry.check_s:
            entry.check_s = when_s
            heapq.heappush(self._due, (when_s, entry.name))

    # ----------------------------------------------------------------- state helpers (locked)

    def _is_handable(self, name: str) -> bool:
        entry = self._entries.get(name)
        if entry is None or entry.taken or not entry.file_ready or name in self._owner:
            return False
        if entry.data_names:
            return all(data in self._entries and self._entries[data].file_ready
                       and not self._entries[data].taken for data in entry.data_names)
        return True

    def _hand_out(self, entry: _Entry) -> SpoolItem:
        companions = tuple(self._dir / data for data in (entry.data_names or ()))
        entry.taken = True
        for data in entry.data_names or ():
            self._entries[data].taken = True
        return SpoolItem(primary=self._dir / entry.name, companions=companions,
                         name_hash=hash_name(entry.name, self._name_key),
                         mtime_ns=entry.mtime_ns)

    def _release(self, names: Sequence[str], changed: bool) -> None:
        """Give taken entries back to the scanner, to be looked at again."""
        now_s = time.monotonic()
        for name in names:
            entry = self._entries.get(name)
            if entry is None:
                continue
            entry.taken = False
            if changed:
                entry.file_ready = entry.closed = False
                entry.changed_s = now_s
            self._schedule(entry, max(now_s, self._retry_s(name)))
        self._wake_scanner()

    def _forget(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._unqueue(entry)
        if entry is not None and entry.data_names:
            for data in entry.data_names:
                if self._owner.get(data) == name:
                    del self._owner[data]
                    if data in self._entries:
                        self._schedule(self._entries[data], time.monotonic())

    def _lstat_sig(self, name: str) -> Optional[Tuple[int, int]]:
        try:
            info = os.lstat(self._dir / name)
        except OSError:
            return None
        return (info.st_size, info.st_mtime_ns)

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _wake_scanner(self) -> None:
        try:
            self._events.put_nowait((_WAKE, ""))
        except queue.Full:
            pass

    def _retry_s(self, name: str) -> float:
        return self._backoff.get(name, (0.0, 0.0))[0]

    def _back_off(self, names: Sequence[str], name_hash: str, exc: OSError, event: str) -> None:
        """Log a failed move once, then retry it after a doubling backoff."""
        with self._lock:
            _, backoff_s = self._backoff.get(names[0], (0.0, 0.0))
            if backoff_s == 0.0:
                self._log.error(event, name_hash=name_hash,
                                reason=errno.errorcode.get(exc.errno or 0, "OSError"))
            backoff_s = min(_CLAIM_BACKOFF_MAX_S, max(_CLAIM_BACKOFF_INITIAL_S, backoff_s * 2))
            for name in names:
                self._backoff[name] = (time.monotonic() + backoff_s, backoff_s)
            self._release(names, changed=False)

    # ----------------------------------------------------------------- moving files

    def _refusal_reason(self, names: Sequence[str]) -> Optional[str]:
        for name in names:
            path = self._dir / name
            try:
                info = os.lstat(path)
            except OSError:
                continue  # vanished: claim finds out and drops it
            if not stat.S_ISREG(info.st_mode):
                return _not_regular_reason(path)
            if info.st_size > self._max_input_bytes:
                return _oversize_reason(name, info.st_size, self._max_input_bytes)
        return None

    def _refuse(self, names: Sequence[str], reason: str, name_hash: str,
                also_named: Sequence[str] = ()) -> None:
        """Move spool files into failed_dir unread, with the reason beside them.

        Logged like an input the daemon fails (``input_claimed``, then ``input_failed``),
        and counted in ``refused_count()``.
        """
        pairs = [(self._dir / name, sanitize_name(name)) for name in names
                 if os.path.lexists(self._dir / name)]
        try:
            if pairs:
                placed = self._place(pairs, Path(self._config.failed_dir), name_hash,
                                     (_error_file_name(pairs[0][1]),))
                self._write_error_file(placed[0], reason, names[0], name_hash)
        except OSError as exc:
            self._back_off(names, name_hash, exc, "input_refuse_failed")
            return
        with self._lock:
            for name in names:
                self._forget(name)
                self._backoff.pop(name, None)
            if pairs:
                self._refused += 1
        if pairs:
            self._log.info("input_claimed", name_hash=name_hash, files=len(pairs))
        self._log.warning("input_failed", name_hash=name_hash,
                          reason=redact_names(reason, list(names) + list(also_named), name_hash))

    def _place(self, pairs: Sequence[Tuple[Path, str]], dest_dir: Path, name_hash: str,
               extra_names: Sequence[str]) -> Tuple[Path, ...]:
        """Rename ``(source, name)`` pairs into ``dest_dir``; never overwrite.

        Names that are all free go flat into ``dest_dir``; otherwise the whole input goes into
        a fresh folder ``<name>~<token>`` so its files keep their names (WFDB headers still
        find their data files).
        """
        names = [name for _, name in pairs] + list(extra_names)
        if len(set(names)) != len(names) or \
                any(os.path.lexists(dest_dir / name) for name in names):
            dest_dir = self._make_unique_dir(dest_dir, pairs[0][1])
        placed = []
        for source, name in pairs:
            target = self._unique_path(dest_dir, name)
            os.rename(source, target)
            placed.append(target)
        return tuple(placed)

    @staticmethod
    def _make_unique_dir(parent: Path, stem: str) -> Path:
        stem = sanitize_name(stem)[:200]
        while True:
            folder = parent / f"{stem}~{secrets.token_hex(4)}"
            try:
                folder.mkdir(mode=0o700)
                return folder
            except FileExistsError:
                continue

    @staticmethod
    def _unique_path(folder: Path, name: str) -> Path:
        target = folder / name
        while os.path.lexists(target):
            stem, suffix = os.path.splitext(name)
            target = folder / f"{stem}~{secrets.token_hex(4)}{suffix}"
        return target

    def _undo_claim(self, moved: Sequence[Tuple[Path, Path]], folder: Optional[Path],
                    name_hash: str) -> None:
        try:
            for source, target in reversed(moved):
                os.rename(target, source)
            if folder is not None:
                folder.rmdir()
        except OSError as exc:
            # Left for recover() at the next start: nothing is lost, only delayed.
            self._log.error("input_claim_undo_failed", name_hash=name_hash,
                            reason=errno.errorcode.get(exc.errno or 0, "OSError"))

    def _remove_claim_dir(self, claimed: ClaimedInput) -> None:
        """Remove the claim folder once its input has left, attempt records included."""
        folder = claimed.primary.parent
        if folder == Path(self._config.processing_dir):
            return
        for marker in _attempt_markers(folder):
            marker.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()

    def _write_error_file(self, placed_primary: Path, reason: str, original_name: str,
                          name_hash: str) -> None:
        """Write ``NAME.error.json`` beside the failed input durably (temp, fsync, rename)."""
        document = {
            "reason": readable_text(reason),
            "time": utc_timestamp(),
            "ecgd_version": ecgd.__version__,
            "input": readable_text(original_name),
            "name_hash": name_hash,
        }
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("ascii")
        write_durable(placed_primary.parent, _error_file_name(placed_primary.name), data)

    def _recover_folder(self, folder: Path) -> Optional[ClaimedInput]:
        markers = _attempt_markers(folder)
        files = sorted(child for child in folder.iterdir() if child.is_file()
                       and not child.is_symlink() and not child.name.startswith("."))
        if not files:  # the input left; a crash cut the clean-up short
            for marker in markers:
                marker.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
            return None
        headers = [path for path in files if path.suffix.lower() == ".hea"]
        primary = headers[0] if headers else files[0]
        data_names: List[str] = []
        if headers:
            try:
                data_names = [name for name in wfdb_signal_files(primary)
                              if sanitize_name(name) == name]
            except RecordError:
                data_names = []
            for name in data_names:
                target = folder / name
                source = self._dir / name
                if not target.exists() and source.is_file() and not source.is_symlink():
                    os.rename(source, target)
            files = sorted(child for child in folder.iterdir() if child.is_file()
                           and not child.name.startswith("."))
        # The header's order, as claim() made it: the daemon's content hash (and so the
        # report ids) must not change when an input is recovered.
        named = [folder / name for name in data_names if (folder / name) in files]
        companions = named + [path for path in files if path != primary and path not in named]
        stem = folder.name.split("~")[0]
        name_hash = stem if len(stem) == NAME_HASH_HEX else hash_name(primary.name,
                                                                        self._name_key)
        return ClaimedInput(primary=primary, files=(primary,) + tuple(companions),
                            original_name=primary.name, name_hash=name_hash,
                            crashes=len(markers))


def _make_observer() -> Any:
    """A watchdog observer that reports a rename into the folder at once, whatever its source.

    Measured with watchdog 7.1: the default observer reports a rename from another folder
    as a plain creation (indistinguishable from an open writer), and holds every unpaired
    IN_MOVED_FROM for 0.5 s waiting for its partner, blocking all later events behind it;
    each claim is such a rename out of the folder, so a file dropped within 0.5 s of a
    claim waited for it. The spool needs no pairing (it treats the two sides of a rename
    independently: the old name is gone, the new one is complete), so pairing is switched
    off (watchdog's class-wide delay: ecgd watches no other folder) and unpaired renames are
    reported as moves ("full events").
    """
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:  # not Linux: no inotify, the default observer and settling
        return Observer()
    try:  # where watchdog >= 6 pairs renames
        from watchdog.observers.inotify_move_event_grouper import (
            InotifyMoveEventGrouper as Pairing,
        )
    except ImportError:  # watchdog 3 to 5
        from watchdog.observers.inotify_buffer import (  # type: ignore[no-redef]
            InotifyBuffer as Pairing,
        )
    Pairing.delay = 0.0
    return InotifyObserver(generate_full_events=True)


def _attempt_markers(folder: Path) -> List[Path]:
    """The attempt records ``begin_attempt`` left in a claim folder."""
    return [child for child in folder.iterdir() if child.name.startswith(_ATTEMPT_PREFIX)]


def _error_file_name(name: str) -> str:
    """``NAME.error.json``, NAME shortened so that the temporary name it is written under
    stays within 255 bytes (a long input name must not stop its quarantine)."""
    stem = name.encode("utf-8", "surrogateescape")[:_ERROR_STEM_MAX_BYTES]
    return stem.decode("utf-8", "ignore") + ERROR_SUFFIX


def _not_regular_reason(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return f"{path.name}: vanished before it could be checked"
    if stat.S_ISLNK(mode):
        return f"{path.name}: is a symbolic link; refused unread"
    if stat.S_ISDIR(mode):
        return f"{path.name}: is a directory; refused unread"
    return f"{path.name}: is not a regular file; refused unread"


def _oversize_reason(name: str, size_bytes: int, max_bytes: int) -> str:
    return f"{name}: {size_bytes} bytes exceeds the limit of {max_bytes} bytes; refused unread"
