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
    main thread: signals, host health polling, STATUS=, WATCHDOG=

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
from ecgd.errors import ConfigError, EcgdError, RecordError, SealError
from ecgd.host import HostHealth, read_host_health
from ecgd.security.keys import (
    RecipientKey,
    SigningKey,
    credential_or_file,
    load_recipients,
    load_signing_key,
)
from ecgd.logs import get_logger
from ecgd.model.session import ModelSession
from ecgd.patient import PatientStore
from ecgd.pipeline import Analyzer, PreparedRecording, SourceInfo
from ecgd.security.pseudonym import load_pseudonym_key, pseudonymize
from ecgd.records.companions import content_sha256
from ecgd.records.reader import read_recording
from ecgd.report import utc_timestamp
from ecgd.report_store import report_file_name
from ecgd.security.seal import ensure_private_dir, seal_report, write_durable
from ecgd.sources.serial_source import SerialSource
from ecgd.sources.spool import ClaimedInput, Spool
from ecgd.sources.windowing import LiveWindow, WindowQueue

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
    the producer is slowed down instead of anything being dropped (live jobs excepted). ``get_nowait`` lets the
    inference stage gather every job already waiting into one batch without waiting for more.
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
        # A live job never waits for room: the daemon keeps at most one in flight, and it
        # must not queue behind a spool backlog.
        bounded = job is None or not job.live
        with self._changed:
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


def _check_directories(config: Config) -> List[str]:
    """What ``run`` would find wrong with its folders, without creating or changing any.

    ``check`` is often run as root before the first start: folders it created would belong
    to root and lock the service user out, so it only looks.
    """
    problems = []
    folders = (("[reports] dir", config.reports.dir),
               ("[privacy] patient_file", config.privacy.patient_file.parent),
               ("[spool] dir", config.spool.dir),
               ("[spool] processing_dir", config.spool.processing_dir),
               ("[spool] done_dir", config.spool.done_dir),
               ("[spool] failed_dir", config.spool.failed_dir))
    for section, folder in folders:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.is_symlink() or not existing.is_dir():
            problems.append(f"{section}: {existing} is not a directory")
        elif not os.access(existing, os.W_OK | os.X_OK):
            what = "is not writable" if existing == folder else f"cannot be created in {existing}"
            problems.append(f"{section}: {folder} {what}")
    return problems


def _open_analyzer(config: Config) -> Analyzer:
    session = ModelSession.open(config.model.manifest, threads=config.model.threads)
    return Analyzer(session, config.window, config.qc, config.preprocess.mains_hz,
                    config.model.batch_max, keep_waveform=config.reports.waveform)


def check_config(config: Config) -> List[str]:
    """Every problem ``run`` would refuse to start on, one line each (empty: all good)."""
    problems = _check_directories(config)
    for step in (lambda: load_recipients(config.reports.recipients),
                 lambda: _load_signing_key(config),
                 lambda: load_pseudonym_key(config.privacy),
                 lambda: _open_analyzer(config)):
        try:
            step()
        except EcgdError as exc:
            problems.append(str(exc))
    return problems


def _load_signing_key(config: Config) -> SigningKey:
    """This appliance's signing key: the systemd credential if present, else the key file."""
    return load_signing_key(credential_or_file(config.reports.signing_credential,
                                               config.reports.signing_key_file))


def load_resources(config: Config) -> Resources:
    """Verify keys and directories, load the model and open its ONNX session (or raise)."""
    recipients = load_recipients(config.reports.recipients)
    signing_key = _load_signing_key(config)
    pseudonym_key = load_pseudonym_key(config.privacy)
    _prepare_directories(config)
    return Resources(_open_analyzer(config), recipients, pseudonym_key, signing_key)


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
        self.live_queue: Optional[WindowQueue] = None
        self.serial: Optional[SerialSource] = None
        if config.serial is not None:
            self.live_queue = _WakingWindowQueue(config.serial.queue_windows, self._wake)
            self.serial = SerialSource(config.serial, config.window, self.live_queue,
                                       get_logger(component="serial"))
        self._recovered: Deque[ClaimedInput] = collections.deque()
        self._live_windows_cut = 0  # every window the live source cut, dropped ones included
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
        self._recovered = collections.deque(self.spool.recover())
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
            next_host_poll = time.monotonic() + self.config.host.poll_s
            while not self.stop_event.wait(1.0):
                if time.monotonic() >= next_host_poll:
                    self._poll_host()
                    next_host_poll = time.monotonic() + self.config.host.poll_s
                self._notify_health()
        finally:
            # Also on a crash of this thread: never leave the stages running headless.
            self.stop_event.set()
            self._wake.set()
            self.notifier.notify("STOPPING=1\nSTATUS=draining")
            self.log.info("daemon_stopping")
            if self.serial is not None:
                self.serial.stop()
            self.spool.stop()
            # Sources first, then the stages: a window cut while stopping is still sealed.
            self._sources_stopped.set()
            self._wake.set()
            # In pipeline order: each stage ends after draining what the previous one left.
            for stage in self._stages:
                stage.join()
        self.log.info("daemon_stopped", **dataclasses.asdict(self.counters))
        # A dead stage is a failure: exit non-zero so systemd (Restart=on-failure) restarts us.
        return 1 if self._stage_crashed else 0

    def _request_stop(self, signum: int, _frame: Any) -> None:
        self.stop_event.set()
        self._wake.set()

    def _notify_health(self) -> None:
        now = time.monotonic()
        progressing = all(since is None or now - since < self.watchdog_s / 2
                          for since in list(self._busy_since.values()))
        message = "STATUS=" + self._status_text()
        if progressing:
            message = "WATCHDOG=1\n" + message
        self.notifier.notify(message)

    def _status_text(self) -> str:
        c = self.counters
        queue = len(self.live_queue) if self.live_queue is not None else 0
        dropped = self.live_queue.dropped_total if self.live_queue is not None else 0
        latency = "-" if c.last_latency_ms is None else f"{c.last_latency_ms:.0f} ms"
        return (f"windows {c.windows_done} done, {c.windows_rejected} rejected; inputs "
                f"{c.inputs_done} done, {c.inputs_failed} failed, {self.spool.ready_count()} "
                f"waiting, {len(self._to_infer)} windows prepared; live queue {queue}, "
                f"dropped {dropped}; last {latency}; host {self.host.summary()}")

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
                if self._recovered:
                    self._prepare_claimed(self._recovered.popleft())
                    continue
                item = self.spool.next_ready(timeout_s=0)
                if item is not None:
                    self._busy_since["prepare"] = time.monotonic()  # a hung rename counts
                    taken = self.spool.claim(item)
                    self._busy_since["prepare"] = None
                    if taken is not None:
                        self._prepare_claimed(taken)
                    continue
                self._wake.wait(_RECHECK_S * 2)
        finally:
            if not self._abort.is_set():
                self._to_infer.put(None)

    def _prepare_claimed(self, claimed: ClaimedInput) -> None:
        self._busy_since["prepare"] = time.monotonic()
        started = time.perf_counter()
        try:
            try:
                recording = read_recording(claimed.primary, self.config.limits.max_input_bytes)
                digest = content_sha256(list(claimed.files))
            except RecordError as exc:
                self._fail(claimed, str(exc))
                return
            read_ms = (time.perf_counter() - started) * 1000.0
            pseudonym = (pseudonymize(recording.patient_id, self.pseudonym_key)
                         if recording.patient_id else None)
            source = SourceInfo(
                fields={"kind": "file", "file": claimed.original_name,
                        "format": recording.format, "content_sha256": digest},
                id_seed=f"file:{digest}")
            try:
                prepared = self.analyzer.prepare(recording, source, pseudonym, read_ms,
                                                 host=self.host.as_dict())
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
        self._to_infer.put(job)

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
                        "dropped_windows": live.dropped_windows, "lead_off": lead_off_names},
                id_seed=f"serial:{live.device}:{self.stream_epoch}:{live.segment}:"
                        f"{live.sample_start}")
            self._live_windows_cut += 1 + live.dropped_windows
            prepared = self.analyzer.prepare(live.recording, source, pseudonym,
                                             lead_off=live.lead_off, host=self.host.as_dict(),
                                             first_window_index=self._live_windows_cut - 1)
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
                self._infer_jobs(jobs)
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

    def _infer_jobs(self, jobs: List[Job]) -> None:
        """Reports for ``jobs``, inferred in shared batches. A refused batch is retried input
        by input, so one bad input cannot fail the others with it."""
        try:
            results = self.analyzer.infer_recordings([job.prepared for job in jobs])
        except Exception as exc:
            if len(jobs) > 1:
                for job in jobs:
                    self._infer_jobs([job])
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

    def _write_job(self, job: Job) -> None:
        if job.error is not None:
            if job.claimed is not None:
                self._fail(job.claimed, job.error)
            else:
                self.log.warning("live_window_failed", reason=job.error)
            return
        input_hash = job.claimed.name_hash if job.claimed is not None else None
        if not self._write_reports(job.reports, input_hash=input_hash, started=job.started):
            return  # stopping while reports are unwritable: the input stays in processing
        if job.claimed is not None:
            self.spool.complete(job.claimed)
            self.counters.inputs_done += 1

    def _fail(self, claimed: ClaimedInput, reason: str) -> None:
        """Quarantine ``claimed`` (called by the prepare and the write stage)."""
        self.spool.fail(claimed, reason)
        with self._fail_lock:
            self.counters.inputs_failed += 1

    def _write_reports(self, reports: List[Dict[str, Any]], input_hash: Optional[str],
                       started: float) -> bool:
        """Seal and durably write every report, retrying while the disk refuses.

        Returns False only when asked to stop before the reports could be written.
        """
        for report in reports:
            while True:
                self._busy_since["write"] = time.monotonic()
                try:
                    write_durable(self.config.reports.dir, report_file_name(report["report_id"]),
                                  seal_report(report, self.recipients, self.signing_key))
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
