"""``ecgd run``: the long-running appliance process under systemd (Type=notify).

Threads and their hand-offs::

    spool watcher (inotify + rescans) -> Spool.next_ready() --+   both set one wake event
    serial source -> WindowQueue (bounded, drops oldest) -----+
        |
        v
    prepare: claim -> read -> QC, R-peaks, preprocess (Analyzer.prepare)
        |  StageQueue (bounded in windows, live first)
        v
    infer: every waiting window, up to [model] batch_max, in one ONNX Runtime call
        |  ([model] inference_workers of these, each on its own batch)
        |  StageQueue (bounded)
        v
    write: seal -> durable write -> input moved to done (strictly after its reports)
    retention: deletes done inputs and delivered reports past their limits; below the
        free-space floor new spool inputs wait in the spool (ecgd.retention)
    main thread: signals, host health polling, STATUS=, WATCHDOG=, the state file
                 ``ecgd status`` reads (ecgd.daemon_state)

Preparing the next inputs overlaps inference of the current batch, and a backlog of
one-window files is inferred in batches. Live windows go before spool files (a bedside
stream is real time; a spool backlog is not). The watchdog is pinged only while every stage
is idle or has made progress within half the watchdog interval: a hung inference or writer
stops the pings and systemd restarts us. A crashed stage stops the daemon with exit code 1.
An input leaves the processing area only after every report of it is durable on disk.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
import signal
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

import sdnotify

from ecgd import __version__
from ecgd.config import Config
from ecgd.daemon_state import FORMAT_VERSION, free_bytes, write_state
from ecgd.durable import remove_stale_temporaries
from ecgd.errors import ConfigError, EcgdError, RecordError, SealError, SourceError
from ecgd.host import HostHealth, read_host_health
from ecgd.security.keys import RecipientKey, SigningKey, load_recipients
from ecgd.logs import get_logger
from ecgd.patient import PatientStore
from ecgd.pipeline import (Analyzer, PreparedRecording, SourceInfo, WorkBudget,
                           file_source)
from ecgd.preflight import load_appliance_signing_key, open_analyzer
from ecgd.security.pseudonym import load_pseudonym_key, pseudonymize
from ecgd.records.companions import content_sha256
from ecgd.records.reader import read_recording
from ecgd.report import utc_timestamp
from ecgd.report_store import report_file_name
from ecgd.retention import Retention
from ecgd.security.seal import ensure_private_dir, seal_report, write_durable
from ecgd.signal.bridged import BridgedStretches
from ecgd.sources.serial_source import SerialSource
from ecgd.sources.spool import ClaimedInput, Spool
from ecgd.sources.windowing import LiveWindow, WindowQueue
from ecgd.wording import counted

_DEFAULT_WATCHDOG_S = 30.0
# How long a blocked stage waits before it looks at the stop/abort flags again (not a poll
# of the sources: those wake the prepare stage through an event at once).
_RECHECK_S = 0.5
_CAUSE_LINE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT_LINE = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _traceback_without_messages(exc: BaseException) -> str:
    """The traceback of ``exc`` and of the exceptions chained to it, each exception shown
    by its type alone (an OSError also by its errno and strerror).

    Messages are left out because they can hold a path (an OSError's file names, a
    RecordError naming its file), and a path under processing_dir ends in the name the input
    was dropped under, which may hold a patient identifier. The frames still show where.
    """
    chain: List[Tuple[BaseException, str]] = []
    seen: Set[int] = set()
    current: Optional[BaseException] = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE_LINE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT_LINE
        else:
            current = None
    parts: List[str] = []
    for item, link in reversed(chain):
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(item.__traceback__))
        what = type(item).__qualname__
        if isinstance(item, OSError) and item.errno is not None:
            what += f": [Errno {item.errno}] {item.strerror}"
        parts.append(what + "\n" + link)
    return "".join(parts)


@dataclasses.dataclass
class Counters:
    """What STATUS= shows; written by the worker, read by the main thread."""

    windows_done: int = 0
    windows_rejected: int = 0
    inputs_done: int = 0
    inputs_failed: int = 0
    last_latency_ms: Optional[float] = None


@dataclasses.dataclass
class Job:
    """One input on its way through the stages: a spool input or one live window."""

    prepared: PreparedRecording
    claimed: Optional[ClaimedInput]     # None for a live window
    started: float                      # time.perf_counter() when the input was taken
    live: bool = False
    reports: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    error: Optional[str] = None         # why the input could not be interpreted

    @property
    def n_windows(self) -> int:
        return max(1, len(self.prepared.windows))


class StageAborted(Exception):
    """A stage crashed: the others stop waiting on their queues."""


class StageQueue:
    """Bounded hand-over between two stages, measured in windows, live jobs first.

    ``put`` blocks while the queue holds ``capacity_windows`` or more (a job larger than the
    capacity still passes when the queue is empty), so memory stays bounded in a backlog and
    the producer is slowed down instead of anything being dropped. A live job passes at once
    unless another live job is already waiting. ``get_nowait`` lets the inference stage
    gather every job already waiting into one batch without waiting for more.
    """

    def __init__(self, capacity_windows: int, abort: threading.Event) -> None:
        self._capacity = capacity_windows
        self._abort = abort
        self._live: Deque[Optional[Job]] = collections.deque()
        self._files: Deque[Optional[Job]] = collections.deque()
        self._windows = 0
        self._changed = threading.Condition()

    def put(self, job: Optional[Job]) -> None:
        """Enqueue ``job`` (None: end of stream, after everything already queued)."""
        weight = job.n_windows if job is not None else 0
        with self._changed:
            # A live job does not wait for room behind a spool backlog; but only one at a
            # time passes the bound, so live jobs cannot pile up behind a stalled writer (the
            # live source's queue then drops its oldest windows instead).
            bounded = job is None or not job.live or bool(self._live)
            while bounded and self._windows and self._windows + weight > self._capacity:
                if self._abort.is_set():
                    raise StageAborted()
                self._changed.wait(_RECHECK_S)
            if job is not None and job.live:
                self._live.append(job)
            else:
                self._files.append(job)
            self._windows += weight
            self._changed.notify_all()

    def get(self) -> Optional[Job]:
        """The next job, waiting for one; None marks the end of the stream."""
        with self._changed:
            while not self._live and not self._files:
                if self._abort.is_set():
                    raise StageAborted()
                self._changed.wait(_RECHECK_S)
            return self._pop()

    def get_nowait(self) -> Tuple[bool, Optional[Job]]:
        """(True, job) when a job (or the end mark) is waiting, else (False, None)."""
        with self._changed:
            if not self._live and not self._files:
                return False, None
            return True, self._pop()

    def _pop(self) -> Optional[Job]:
        # The end mark stays behind live jobs queued before it: they drain first.
        job = self._live.popleft() if self._live else self._files.popleft()
        if job is not None:
            self._windows -= job.n_windows
        self._changed.notify_all()
        return job

    def __len__(self) -> int:
        with self._changed:
            return self._windows


class _WakingWindowQueue(WindowQueue):
    """The live window queue, also setting the prepare stage's wake event on every put."""

    def __init__(self, max_windows: int, wake: threading.Event) -> None:
        super().__init__(max_windows)
        self._wake = wake

    def put(self, window: LiveWindow) -> None:
        super().put(window)
        self._wake.set()


@dataclasses.dataclass(frozen=True)
class Resources:
    """Everything ``run`` needs that ``check`` verifies first."""

    analyzer: Analyzer
    recipients: List[RecipientKey]
    pseudonym_key: bytes
    signing_key: SigningKey


def _prepare_directories(config: Config) -> None:
    """Create (0700) or verify the report and patient folders and the four spool folders.

    An existing spool ``dir`` keeps its mode: vendors' drop users may need group write. The
    patient folder is created by the service user, so that a patient file an operator writes
    as root takes the service user as its owner (see ecgd.patient).
    """
    for section, folder in (("[reports] dir", config.reports.dir),
                            ("[privacy] patient_file", config.privacy.patient_file.parent)):
        try:
            ensure_private_dir(folder)
        except SealError as exc:
            raise ConfigError(f"{section}: {exc}") from exc
    if not os.access(config.reports.dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{config.reports.dir}: report directory is not writable")
    Spool(config.spool, config.limits.max_input_bytes, get_logger(component="spool")).ensure_dirs()
    # A report write killed between write and rename left a hidden temporary that may hold
    # a complete report; its input is still in processing and will write it again.
    for section, folder in (("[reports] dir", config.reports.dir),
                            ("[spool] failed_dir", config.spool.failed_dir)):
        try:
            removed = remove_stale_temporaries(folder)
        except OSError as exc:
            raise ConfigError(f"{section}: cannot remove stale temporary files: "
                              f"{exc.strerror}") from exc
        if removed:
            get_logger(component="daemon").info("stale_temporaries_removed", folder=section,
                                                count=removed)


def load_resources(config: Config) -> Resources:
    """Verify keys and directories, load the model and open its ONNX session (or raise)."""
    recipients = load_recipients(config.reports.recipients)
    signing_key = load_appliance_signing_key(config)
    pseudonym_key = load_pseudonym_key(config.privacy)
    _prepare_directories(config)
    return Resources(open_analyzer(config), recipients, pseudonym_key, signing_key)


class Daemon:
    """The appliance: sources in, sealed reports out, health to systemd."""

    def __init__(self, config: Config, resources: Resources) -> None:
        self.config = config
        self.analyzer = resources.analyzer
        self.recipients = resources.recipients
        self.signing_key = resources.signing_key
        self.pseudonym_key = resources.pseudonym_key
        self.log = get_logger(component="daemon")
        self.notifier = sdnotify.SystemdNotifier()
        self.stop_event = threading.Event()
        self.counters = Counters()
        self.host: HostHealth = read_host_health()
        self.stream_epoch = utc_timestamp()
        # One event for both sources: the prepare stage sleeps on it, never polls.
        self._wake = threading.Event()
        # Keyed name hashes: a short MRN in a file name cannot be recovered from the logs.
        self.spool = Spool(config.spool, config.limits.max_input_bytes,
                           get_logger(component="spool"), name_key=self.pseudonym_key,
                           wake=self._wake)
        self.patients = PatientStore(config.privacy.patient_file)
        self.retention = Retention(config.retention, config.spool.done_dir, config.reports.dir,
                                   get_logger(component="retention"), wake=self._wake)
        self.live_queue: Optional[WindowQueue] = None
        self.serial: Optional[SerialSource] = None
        self._max_bridged_fraction = 1.0
        if config.serial is not None:
            self._max_bridged_fraction = config.serial.max_bridged_fraction
            self.live_queue = _WakingWindowQueue(config.serial.queue_windows, self._wake)
            self.serial = SerialSource(config.serial, config.window, self.live_queue,
                                       get_logger(component="serial"))
        self._recovered: Deque[ClaimedInput] = collections.deque()
        # Spool inputs still owed a turn before the next recovered input (None: not counted
        # yet, the spool's startup scan has not settled).
        self._turns_owed: Optional[int] = None
        # Spool inputs handed to the stages and not yet done, failed or left in processing;
        # a recovered input that crashed the daemon before goes alone (``_solo``).
        self._files_in_flight = 0
        self._solo = False
        self._in_flight_lock = threading.Lock()
        self._live_windows_cut = 0  # every window the live source cut, dropped ones included
        self._started_at = utc_timestamp()
        self._last_window: Optional[Dict[str, Any]] = None  # time, latency, QC of the last
        self._state_failing = False
        self._state_written_s = -float("inf")
        self._seal_failing = False
        self._patient_failing = False
        self._abort = threading.Event()
        self._sources_stopped = threading.Event()
        self._stage_crashed = False
        self._fail_lock = threading.Lock()
        batch_max = config.model.batch_max
        # Two batches of windows may wait before inference: one being gathered while the
        # previous one runs; memory stays at a few MB (240 kB per 12 x 5000 window).
        self._to_infer = StageQueue(2 * batch_max, self._abort)
        # Set while no live window is being prepared or inferred. One at a time, as before
        # the stages: the others wait in the live source's queue, whose drop-oldest policy
        # keeps an appliance slower than real time on the newest signal.
        self._live_idle = threading.Event()
        self._live_idle.set()
        self._to_write = StageQueue(2 * batch_max, self._abort)
        # stage name -> monotonic time it started its current item (None: waiting)
        self._busy_since: Dict[str, Optional[float]] = {}
        n_workers = config.model.inference_workers
        infer_stages = (["infer"] if n_workers == 1
                        else [f"infer-{k}" for k in range(1, n_workers + 1)])
        # Inference workers still running: the last one to end closes the writer's stream.
        self._infer_running = len(infer_stages)
        self._infer_running_lock = threading.Lock()
        self._stages = [self._stage_thread("prepare", self._prepare_until_stopped)]
        self._stages += [self._stage_thread(name, functools.partial(self._infer_until_drained,
                                                                    name))
                         for name in infer_stages]
        self._stages.append(self._stage_thread("write", self._write_until_drained))
        watchdog_usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_s = int(watchdog_usec) / 1e6 if watchdog_usec else _DEFAULT_WATCHDOG_S

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        """Start everything, serve until SIGTERM/SIGINT, drain, return the exit code."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self._recovered = collections.deque(self._quarantine_crashers(self.spool.recover()))
        self.retention.check_free_space()  # before the first input is taken
        self.retention.start()
        self.spool.start()
        if self.serial is not None:
            self.serial.start()
        for stage in self._stages:
            stage.start()
        try:
            self.log.info("daemon_started", version=__version__,
                          model=self.analyzer.manifest.name,
                          precision=self.analyzer.manifest.precision,
                          inference_workers=self.config.model.inference_workers,
                          threads=self.config.model.threads,
                          recovered_inputs=len(self._recovered),
                          live_source=self.serial is not None, host=self.host.summary())
            self.notifier.notify("READY=1\nSTATUS=" + self._status_text())
            self._write_state("ready")
            next_host_poll = time.monotonic() + self.config.host.poll_s
            # Ping well inside the watchdog interval, however short systemd makes it.
            while not self.stop_event.wait(min(1.0, self.watchdog_s / 4)):
                if time.monotonic() >= next_host_poll:
                    self._poll_host()
                    next_host_poll = time.monotonic() + self.config.host.poll_s
                self._notify_health()
                if time.monotonic() - self._state_written_s >= self.config.status.interval_s:
                    self._write_state("ready")
        finally:
            # Also on a crash of this thread: never leave the stages running headless.
            self.stop_event.set()
            self._wake.set()
            self.notifier.notify("STOPPING=1\nSTATUS=draining")
            self._write_state("stopping")
            self.log.info("daemon_stopping")
            if self.serial is not None:
                self.serial.stop()
            self.spool.stop()
            self.retention.stop()
            # Sources first, then the stages: a window cut while stopping is still sealed.
            self._sources_stopped.set()
            self._wake.set()
            # In pipeline order: each stage ends after draining what the previous one left.
            for stage in self._stages:
                stage.join()
        self.log.info("daemon_stopped", **dataclasses.asdict(self.counters_now()))
        self._write_state("stopped")
        # A dead stage is a failure: exit non-zero so systemd (Restart=on-failure) restarts us.
        return 1 if self._stage_crashed else 0

    def _quarantine_crashers(self, recovered: List[ClaimedInput]) -> List[ClaimedInput]:
        """Fail the recovered inputs that were in hand at ``[spool] max_crashes`` crashes;
        return the others, to be retried."""
        retry = []
        for claimed in recovered:
            if claimed.crashes < self.config.spool.max_crashes:
                retry.append(claimed)
                continue
            try:
                self._fail(claimed, f"crashed the daemon {claimed.crashes} times; "
                                    f"not tried again ([spool] max_crashes)")
            except SourceError as exc:  # left in processing, not retried: never a loop
                self.log.error("input_quarantine_failed", input=claimed.name_hash,
                               reason=str(exc))
        return retry

    def _request_stop(self, signum: int, _frame: Any) -> None:
        self.stop_event.set()
        self._wake.set()

    def _notify_health(self) -> None:
        now = time.monotonic()
        stalled = [f"{stage} {now - since:.1f} s"
                   for stage, since in list(self._busy_since.items())
                   if since is not None and now - since >= self.watchdog_s / 2]
        message = "STATUS=" + self._status_text()
        if stalled:  # no ping: systemd restarts us if this lasts the watchdog interval
            message += "; stalled: " + ", ".join(stalled)
        else:
            message = "WATCHDOG=1\n" + message
        self.notifier.notify(message)

    def counters_now(self) -> Counters:
        """The counters, the inputs the spool refused itself (never handed to the stages)
        counted among the failed ones."""
        return dataclasses.replace(
            self.counters, inputs_failed=self.counters.inputs_failed + self.spool.refused_count())

    def _status_text(self) -> str:
        c = self.counters_now()
        queue = len(self.live_queue) if self.live_queue is not None else 0
        dropped = self.live_queue.dropped_total if self.live_queue is not None else 0
        latency = "-" if c.last_latency_ms is None else f"{c.last_latency_ms:.0f} ms"
        link = f"; {self.serial.status_text()}" if self.serial is not None else ""
        paused = self.retention.status_text()
        return (f"windows {c.windows_done} done, {c.windows_rejected} rejected; inputs "
                f"{c.inputs_done} done, {c.inputs_failed} failed, {self.spool.ready_count()} "
                f"waiting, {counted(len(self._to_infer), 'window')} prepared; live queue "
                f"{queue}, dropped {dropped}{link}; last {latency}; host {self.host.summary()}"
                + (f"; {paused}" if paused else ""))

    def _state_document(self, state: str) -> Dict[str, Any]:
        """What ``ecgd status`` shows (layout in ecgd.daemon_state)."""
        counters = dataclasses.asdict(self.counters_now())
        del counters["last_latency_ms"]  # part of last_window
        manifest = self.analyzer.manifest
        return {
            "format_version": FORMAT_VERSION, "state": state, "pid": os.getpid(),
            "version": __version__, "started_at": self._started_at,
            "updated_at": utc_timestamp(), "updated_unix_s": time.time(),
            "interval_s": self.config.status.interval_s,
            "counters": counters,
            "queue": {
                "spool_waiting": self.spool.ready_count(),
                "windows_prepared": len(self._to_infer),
                "windows_to_write": len(self._to_write),
                "live_queue": len(self.live_queue) if self.live_queue is not None else 0,
                "live_dropped": (self.live_queue.dropped_total
                                 if self.live_queue is not None else 0),
            },
            "last_window": self._last_window,
            "model": {"name": manifest.name, "precision": manifest.precision,
                      "trained": manifest.trained},
            "live_source": self.serial is not None,
            "live_link": self.serial.status_text() if self.serial is not None else None,
            "intake_paused": self.retention.status_text() or None,
            "host": dict(self.host.as_dict(), summary=self.host.summary()),
            "disk": {name: {"path": str(folder), "free_bytes": free_bytes(folder)}
                     for name, folder in (("reports", self.config.reports.dir),
                                          ("spool", self.config.spool.dir))},
        }

    def _write_state(self, state: str) -> None:
        """Rewrite the state file; a failure is logged once (and its end), never fatal:
        the appliance works without it."""
        self._state_written_s = time.monotonic()
        path = self.config.status.file
        try:
            write_state(path, self._state_document(state))
        except OSError as exc:
            if not self._state_failing:
                self.log.error("state_file_unwritable", path=str(path),
                               reason=exc.strerror or type(exc).__name__)
                self._state_failing = True
            return
        if self._state_failing:
            self.log.info("state_file_writable_again", path=str(path))
            self._state_failing = False

    def _poll_host(self) -> None:
        health = read_host_health()
        # Log state changes (source, throttling flags), not every 0.1 degree of temperature.
        if dataclasses.replace(health, temperature_c=None) != dataclasses.replace(
                self.host, temperature_c=None):
            self.log.warning("host_state_changed", **health.as_dict())
        self.host = health

    # -- stages -----------------------------------------------------------------------------
    def _stage_thread(self, name: str, body: Callable[[], None]) -> threading.Thread:
        self._busy_since[name] = None

        def run_stage() -> None:
            try:
                body()
            except StageAborted:
                pass  # another stage crashed and logged it
            except Exception as exc:
                self.log.error("stage_crashed", stage=name,
                               exception=_traceback_without_messages(exc))
                self._stage_crashed = True
                self._abort.set()
                self.stop_event.set()
                self._wake.set()

        return threading.Thread(target=run_stage, name=f"ecgd-{name}")

    def _prepare_until_stopped(self) -> None:
        """Take live windows first, then inputs recovered from a previous run, then new
        spool inputs, until stopped; on stop, drain the live windows already queued (a
        recovered input not taken yet stays in processing for the next start). Ends the
        stream for the next stage.
        """
        try:
            while True:
                # Cleared before looking, so a window or file arriving after the look
                # makes the wait below return at once.
                self._wake.clear()
                live_idle = self._live_idle.is_set()
                live = None
                if self.live_queue is not None and live_idle:
                    live = self.live_queue.get(timeout_s=0)
                if live is not None:
                    self._prepare_live(live)
                    continue
                if self.stop_event.is_set():
                    if self.live_queue is None or (self._sources_stopped.is_set()
                                                   and len(self.live_queue) == 0):
                        return
                    # Draining: wait for the live window in flight, then take the next.
                    self._wake.wait(_RECHECK_S)
                    continue
                if self.retention.intake_paused:
                    # Below the free-space floor: spool inputs wait where they are; the
                    # space left is for live windows' reports. Resuming sets the wake event.
                    self._wake.wait(_RECHECK_S * 2)
                    continue
                if self._solo and self._files_in_flight:
                    self._wake.wait(_RECHECK_S)  # a suspect goes alone: nothing else yet
                    continue
                if self._recovered_turn():
                    suspect = self._recovered[0].crashes > 0
                    if suspect and self._files_in_flight:
                        self._wake.wait(_RECHECK_S)  # let the stages drain: it goes alone
                        continue
                    self._prepare_claimed(self._recovered.popleft(), alone=suspect)
                    self._turns_owed = self.spool.ready_count()
                    continue
                item = self.spool.next_ready(timeout_s=0)
                if item is not None:
                    self._busy_since["prepare"] = time.monotonic()  # a hung rename counts
                    taken = self.spool.claim(item)
                    self._busy_since["prepare"] = None
                    if taken is not None:
                        if self._turns_owed:
                            self._turns_owed -= 1
                        self._prepare_claimed(taken)
                    continue
                self._wake.wait(_RECHECK_S * 2)
        finally:
            if not self._abort.is_set():
                self._to_infer.put(None)

    def _recovered_turn(self) -> bool:
        """Whether the next recovered input goes now. Recovered inputs (one of them may have
        crashed the daemon) wait for the inputs already in the spool: until the startup scan
        has settled, then until each input waiting at that moment (or at the last recovered
        input's turn) has been taken, or none is waiting."""
        if not self._recovered or not self.spool.initial_scan_settled():
            return False
        if self._turns_owed is None:
            self._turns_owed = self.spool.ready_count()
        return self._turns_owed <= 0 or self.spool.ready_count() == 0

    def _prepare_claimed(self, claimed: ClaimedInput, alone: bool = False) -> None:
        """Read and prepare ``claimed`` (``alone``: nothing else is taken until it is done)
        and hand it to inference, or fail it with its reason."""
        self._busy_since["prepare"] = time.monotonic()
        started = time.perf_counter()
        try:
            self.spool.begin_attempt(claimed)
        except SourceError as exc:  # counting crashes protects the daemon; never blocks work
            self.log.error("input_attempt_unrecorded", input=claimed.name_hash,
                           reason=str(exc))
        limits = self.config.limits
        budget = WorkBudget(time_s=limits.input_time_budget_s,
                            on_progress=functools.partial(self._mark_progress, "prepare"))
        try:
            try:
                recording = read_recording(claimed.primary, limits.max_input_bytes,
                                           limits.max_input_samples)
                digest = content_sha256(list(claimed.files))
                budget.check_time()
            except RecordError as exc:
                self._fail(claimed, str(exc))
                return
            read_ms = (time.perf_counter() - started) * 1000.0
            pseudonym = (pseudonymize(recording.patient_id, self.pseudonym_key)
                         if recording.patient_id else None)
            source = file_source(claimed.original_name, recording.format, digest)
            try:
                prepared = self.analyzer.prepare(recording, source, pseudonym, read_ms,
                                                 host=self.host.as_dict(), budget=budget)
            except EcgdError as exc:
                self._fail(claimed, str(exc))
                return
            job = Job(prepared, claimed, started)
        except Exception as exc:  # a bug must not kill the appliance: quarantine and go on
            self.log.error("input_crashed", input=claimed.name_hash,
                           exception=_traceback_without_messages(exc))
            self._fail(claimed, "internal error while processing (see the journal)")
            return
        finally:
            self._busy_since["prepare"] = None
        with self._in_flight_lock:
            self._files_in_flight += 1
            self._solo = alone
        self._to_infer.put(job)

    def _mark_progress(self, stage: str) -> None:
        """A long item moved on: the watchdog counts from here, not from its start."""
        self._busy_since[stage] = time.monotonic()

    def _file_left_the_stages(self) -> None:
        """Called by the writer once a file job is done, failed or left in processing."""
        with self._in_flight_lock:
            self._files_in_flight -= 1
            if not self._files_in_flight:
                self._solo = False
        self._wake.set()

    def _prepare_live(self, live: LiveWindow) -> None:
        self._busy_since["prepare"] = time.monotonic()
        started = time.perf_counter()
        try:
            pseudonym = self._current_pseudonym()
            lead_off_names = [name for name, bit in
                              zip(live.recording.lead_names, live.lead_off or ()) if bit]
            source = SourceInfo(
                fields={"kind": "serial", "device": live.device,
                        "format": live.recording.format, "segment": live.segment,
                        "sample_start": live.sample_start, "sample_end": live.sample_end,
                        "lost_samples": live.lost_samples,
                        "dropped_windows": live.dropped_windows, "lead_off": lead_off_names,
                        "bridged_samples": live.bridged_samples,
                        "bridged_gaps": [{"sample_start": start, "sample_end": end}
                                         for start, end in live.bridged_gaps]},
                id_seed=f"serial:{live.device}:{self.stream_epoch}:{live.segment}:"
                        f"{live.sample_start}")
            self._live_windows_cut += 1 + live.dropped_windows
            bridged = BridgedStretches(
                tuple((start - live.sample_start, end - live.sample_start)
                      for start, end in live.bridged_gaps), self._max_bridged_fraction)
            prepared = self.analyzer.prepare(live.recording, source, pseudonym,
                                             lead_off=live.lead_off, host=self.host.as_dict(),
                                             first_window_index=self._live_windows_cut - 1,
                                             bridged=bridged)
            job = Job(prepared, None, started, live=True)
        except Exception:
            self.log.exception("live_window_crashed", segment=live.segment,
                               sample_start=live.sample_start)
            return
        finally:
            self._busy_since["prepare"] = None
        self._live_idle.clear()
        self._to_infer.put(job)

    def _current_pseudonym(self) -> Optional[str]:
        """The connected patient's pseudonym. An unreadable patient file does not cost the
        window: its report carries no pseudonym and the error is logged once per change."""
        try:
            patient_id = self.patients.current()
        except ConfigError as exc:
            if not self._patient_failing:
                self.log.error("patient_file_unreadable", reason=str(exc))
                self._patient_failing = True
            return None
        if self._patient_failing:
            self.log.info("patient_file_readable_again")
            self._patient_failing = False
        return pseudonymize(patient_id, self.pseudonym_key) if patient_id else None

    def _infer_until_drained(self, stage: str) -> None:
        """Infer every job waiting (up to batch_max windows) together, until the end mark.

        With several inference workers each runs this loop on its own batches; the end mark
        is passed on to the next worker, and the last worker to end closes the writer's
        stream. Jobs may then reach the writer out of order: each is written on its own.
        """
        batch_max = self.config.model.batch_max
        ended = False
        while not ended:
            first = self._to_infer.get()
            if first is None:
                break
            jobs = [first]
            windows = len(first.prepared.model_inputs())
            while windows < batch_max:
                waiting, job = self._to_infer.get_nowait()
                if not waiting:
                    break
                if job is None:
                    ended = True
                    break
                jobs.append(job)
                windows += len(job.prepared.model_inputs())
            self._busy_since[stage] = time.monotonic()
            try:
                self._infer_jobs(jobs, stage)
            finally:
                self._busy_since[stage] = None
                if any(job.live for job in jobs):
                    self._live_idle.set()
                    self._wake.set()
            for job in jobs:
                self._to_write.put(job)
        self._to_infer.put(None)  # for the other workers
        with self._infer_running_lock:
            self._infer_running -= 1
            last = self._infer_running == 0
        if last:
            self._to_write.put(None)

    def _infer_jobs(self, jobs: List[Job], stage: str) -> None:
        """Reports for ``jobs``, inferred in shared batches. A refused batch is retried input
        by input, so one bad input cannot fail the others with it."""
        try:
            results = self.analyzer.infer_recordings(
                [job.prepared for job in jobs],
                on_progress=functools.partial(self._mark_progress, stage))
        except Exception as exc:
            if len(jobs) > 1:
                for job in jobs:
                    self._infer_jobs([job], stage)
                return
            jobs[0].error = self._error_reason(jobs[0], exc)
            return
        for job, (logits, inference_ms) in zip(jobs, results):
            try:
                job.reports = self.analyzer.finish(job.prepared, logits, inference_ms)
            except Exception as exc:
                job.error = self._error_reason(job, exc)

    def _error_reason(self, job: Job, exc: Exception) -> str:
        """What the input's error file says; a bug is logged in full (it must not kill the
        appliance: the input is quarantined and the daemon goes on)."""
        if isinstance(exc, EcgdError):
            return str(exc)
        if job.claimed is not None:
            self.log.exception("input_crashed", input=job.claimed.name_hash)
        else:
            self.log.exception("live_window_crashed", segment=job.prepared.source.fields.get(
                "segment"), sample_start=job.prepared.source.fields.get("sample_start"))
        return "internal error while processing (see the journal)"

    def _write_until_drained(self) -> None:
        """Seal and write reports, then move each input to done, until the end mark."""
        while True:
            job = self._to_write.get()
            if job is None:
                return
            self._busy_since["write"] = time.monotonic()
            try:
                self._write_job(job)
            finally:
                self._busy_since["write"] = None
                if job.claimed is not None:
                    self._file_left_the_stages()

    def _write_job(self, job: Job) -> None:
        sealed_reports: List[bytes] = []
        if job.error is None:
            # Every report is sealed before any is written: one that cannot be serialised
            # fails its input, never the appliance.
            try:
                sealed_reports = [seal_report(report, self.recipients, self.signing_key)
                                  for report in job.reports]
            except Exception as exc:
                job.error = self._error_reason(job, exc)
        if job.error is not None:
            if job.claimed is not None:
                self._fail(job.claimed, job.error)
            else:
                self.log.warning("live_window_failed", reason=job.error)
            return
        input_hash = job.claimed.name_hash if job.claimed is not None else None
        if not self._write_reports(job.reports, sealed_reports, input_hash=input_hash,
                                   started=job.started):
            # Stopping while reports are unwritable: the input stays in processing, and its
            # attempt did not crash the daemon.
            if job.claimed is not None:
                self.spool.end_attempt(job.claimed)
            return
        if job.claimed is not None:
            self.spool.complete(job.claimed)
            self.counters.inputs_done += 1

    def _fail(self, claimed: ClaimedInput, reason: str) -> None:
        """Quarantine ``claimed`` (called by the prepare and the write stage)."""
        self.spool.fail(claimed, reason)
        with self._fail_lock:
            self.counters.inputs_failed += 1

    def _write_reports(self, reports: List[Dict[str, Any]], sealed_reports: List[bytes],
                       input_hash: Optional[str], started: float) -> bool:
        """Durably write every report (``sealed_reports``: each one's sealed file),
        retrying while the disk refuses.

        Returns False only when asked to stop before the reports could be written.
        """
        for report, sealed in zip(reports, sealed_reports):
            while True:
                self._busy_since["write"] = time.monotonic()
                try:
                    write_durable(self.config.reports.dir, report_file_name(report["report_id"]),
                                  sealed)
                    break
                except SealError as exc:
                    if not self._seal_failing:
                        self.log.error("reports_unwritable", reason=str(exc))
                        self._seal_failing = True
                    self._busy_since["write"] = None  # waiting for the disk is not a hang
                    if self.stop_event.wait(self.config.reports.retry_s):
                        return False
            if self._seal_failing:
                self.log.info("reports_writable_again")
                self._seal_failing = False
            self._count_report(report, input_hash, started)
        return True

    def _count_report(self, report: Dict[str, Any], input_hash: Optional[str],
                      started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        accepted = report["qc"]["status"] == "accepted"
        if accepted:
            self.counters.windows_done += 1
        else:
            self.counters.windows_rejected += 1
        self.counters.last_latency_ms = latency_ms
        self._last_window = {"at": utc_timestamp(), "latency_ms": round(latency_ms, 1),
                             "qc": report["qc"]["status"]}
        top = report["findings"][0] if report["findings"] else None
        self.log.info(
            "window_analyzed",
            report_id=report["report_id"], input=input_hash,
            source=report["source"]["kind"], window=report["window"]["index"],
            qc=report["qc"]["status"], reasons=report["qc"]["reasons"],
            pseudonym=report["patient"]["pseudonym"],
            top_label=top["label"] if top else None,
            top_probability=top["probability"] if top else None,
            interpretation_valid=report["interpretation_valid"],
            latency_ms=round(latency_ms, 1))
