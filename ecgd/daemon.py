"""``ecgd run``: the long-running appliance process under systemd (Type=notify).

Threads and their hand-offs::

    spool watcher (inotify + rescans) --> Spool.next_ready() --+
                                                               +--> worker: read -> QC ->
    serial source (pyserial) --> WindowQueue (bounded, drops --+    preprocess -> infer ->
                                 oldest, counted)                   seal -> durable write ->
                                                                    input moved to done
    main thread: signals, host health polling, STATUS=, WATCHDOG=

Live windows go before spool files (a bedside stream is real time; a spool backlog is not).
The watchdog is pinged only while the worker is idle or has made progress within half the
watchdog interval: a hung inference or writer stops the pings and systemd restarts us.
An input leaves the processing area only after every report of it is durable on disk.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional

import sdnotify

from ecgd import __version__
from ecgd.config import Config
from ecgd.errors import ConfigError, EcgdError, RecordError, SealError
from ecgd.host import HostHealth, read_host_health
from ecgd.keys import RecipientKey, load_recipients
from ecgd.logs import get_logger
from ecgd.model.session import ModelSession
from ecgd.patient import PatientStore
from ecgd.pipeline import Analyzer, SourceInfo
from ecgd.pseudonym import load_pseudonym_key, pseudonymize
from ecgd.records.companions import content_sha256
from ecgd.records.reader import read_recording
from ecgd.report import dumps_report, utc_timestamp
from ecgd.sealing import ensure_private_dir, seal, write_durable
from ecgd.sources.serial_source import SerialSource
from ecgd.sources.spool import ClaimedInput, Spool
from ecgd.windowing import LiveWindow, WindowQueue

REPORT_SUFFIX = ".ecgr"
_POLL_S = 0.05
_DEFAULT_WATCHDOG_S = 30.0


@dataclasses.dataclass
class Counters:
    """What STATUS= shows; written by the worker, read by the main thread."""

    windows_done: int = 0
    windows_rejected: int = 0
    inputs_done: int = 0
    inputs_failed: int = 0
    last_latency_ms: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Resources:
    """Everything ``run`` needs that ``check`` verifies first."""

    analyzer: Analyzer
    recipients: List[RecipientKey]
    pseudonym_key: bytes


def _prepare_directories(config: Config) -> None:
    """Create (0700) or verify the report folder and the four spool folders.

    An existing spool ``dir`` keeps its mode: vendors' drop users may need group write.
    """
    try:
        ensure_private_dir(config.reports.dir)
    except SealError as exc:
        raise ConfigError(f"[reports] dir: {exc}") from exc
    if not os.access(config.reports.dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{config.reports.dir}: report directory is not writable")
    Spool(config.spool, config.limits.max_input_bytes, get_logger(component="spool")).ensure_dirs()


def _open_analyzer(config: Config) -> Analyzer:
    session = ModelSession.open(config.model.manifest, threads=config.model.threads)
    return Analyzer(session, config.window, config.qc, config.preprocess.mains_hz,
                    config.model.batch_max)


def check_config(config: Config) -> List[str]:
    """Every problem ``run`` would refuse to start on, one line each (empty: all good)."""
    problems = []
    for step in (lambda: load_recipients(config.reports.recipients),
                 lambda: load_pseudonym_key(config.privacy),
                 lambda: _prepare_directories(config),
                 lambda: _open_analyzer(config)):
        try:
            step()
        except EcgdError as exc:
            problems.append(str(exc))
    return problems


def load_resources(config: Config) -> Resources:
    """Verify keys and directories, load the model and open its ONNX session (or raise)."""
    recipients = load_recipients(config.reports.recipients)
    pseudonym_key = load_pseudonym_key(config.privacy)
    _prepare_directories(config)
    return Resources(_open_analyzer(config), recipients, pseudonym_key)


class Daemon:
    """The appliance: sources in, sealed reports out, health to systemd."""

    def __init__(self, config: Config, resources: Resources) -> None:
        self.config = config
        self.analyzer = resources.analyzer
        self.recipients = resources.recipients
        self.pseudonym_key = resources.pseudonym_key
        self.log = get_logger(component="daemon")
        self.notifier = sdnotify.SystemdNotifier()
        self.stop_event = threading.Event()
        self.counters = Counters()
        self.host: HostHealth = read_host_health()
        self.stream_epoch = utc_timestamp()
        # Keyed name hashes: a short MRN in a file name cannot be recovered from the logs.
        self.spool = Spool(config.spool, config.limits.max_input_bytes,
                           get_logger(component="spool"), name_key=self.pseudonym_key)
        self.patients = PatientStore(config.privacy.patient_file)
        self.live_queue: Optional[WindowQueue] = None
        self.serial: Optional[SerialSource] = None
        if config.serial is not None:
            self.live_queue = WindowQueue(config.serial.queue_windows)
            self.serial = SerialSource(config.serial, config.window, self.live_queue,
                                       get_logger(component="serial"))
        self._recovered: List[ClaimedInput] = []
        self._live_windows_cut = 0  # every window the live source cut, dropped ones included
        self._busy_since: Optional[float] = None
        self._seal_failing = False
        self._worker_crashed = False
        self._worker = threading.Thread(target=self._work_until_stopped, name="ecgd-worker")
        watchdog_usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_s = int(watchdog_usec) / 1e6 if watchdog_usec else _DEFAULT_WATCHDOG_S

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        """Start everything, serve until SIGTERM/SIGINT, drain, return the exit code."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self._recovered = self.spool.recover()
        self.spool.start()
        if self.serial is not None:
            self.serial.start()
        self._worker.start()
        try:
            self.log.info("daemon_started", version=__version__,
                          model=self.analyzer.manifest.name,
                          precision=self.analyzer.manifest.precision,
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
            # Also on a crash of this thread: never leave the worker running headless.
            self.stop_event.set()
            self.notifier.notify("STOPPING=1\nSTATUS=draining")
            self.log.info("daemon_stopping")
            if self.serial is not None:
                self.serial.stop()
            self.spool.stop()
            self._worker.join()
        self.log.info("daemon_stopped", **dataclasses.asdict(self.counters))
        # A dead worker is a failure: exit non-zero so systemd (Restart=on-failure) restarts us.
        return 1 if self._worker_crashed else 0

    def _request_stop(self, signum: int, _frame: Any) -> None:
        self.stop_event.set()

    def _notify_health(self) -> None:
        busy_since = self._busy_since
        progressing = busy_since is None or (time.monotonic() - busy_since) < self.watchdog_s / 2
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
                f"waiting; live queue {queue}, "
                f"dropped {dropped}; last {latency}; host {self.host.summary()}")

    def _poll_host(self) -> None:
        health = read_host_health()
        # Log state changes (source, throttling flags), not every 0.1 degree of temperature.
        if dataclasses.replace(health, temperature_c=None) != dataclasses.replace(
                self.host, temperature_c=None):
            self.log.warning("host_state_changed", **health.as_dict())
        self.host = health

    # -- the worker -------------------------------------------------------------------------
    def _work_until_stopped(self) -> None:
        try:
            self._work()
        except Exception:
            self.log.exception("worker_crashed")
            self._worker_crashed = True
            self.stop_event.set()

    def _work(self) -> None:
        """Take live windows first, then spool inputs; on stop, drain live windows and exit."""
        for claimed in self._recovered:
            if self.stop_event.is_set():
                return
            self._process_claimed(claimed)
        while True:
            live = self.live_queue.get(timeout_s=0) if self.live_queue is not None else None
            if live is not None:
                self._process_live(live)
                continue
            if self.stop_event.is_set():
                return
            item = self.spool.next_ready(timeout_s=_POLL_S)
            if item is None:
                continue
            claimed = self.spool.claim(item)
            if claimed is not None:
                self._process_claimed(claimed)

    def _process_claimed(self, claimed: ClaimedInput) -> None:
        self._busy_since = time.monotonic()
        started = time.perf_counter()
        try:
            try:
                recording = read_recording(claimed.primary, self.config.limits.max_input_bytes)
                digest = content_sha256(list(claimed.files))
            except RecordError as exc:
                self.spool.fail(claimed, str(exc))
                self.counters.inputs_failed += 1
                return
            read_ms = (time.perf_counter() - started) * 1000.0
            pseudonym = (pseudonymize(recording.patient_id, self.pseudonym_key)
                         if recording.patient_id else None)
            source = SourceInfo(
                fields={"kind": "file", "file": claimed.original_name,
                        "format": recording.format, "content_sha256": digest},
                id_seed=f"file:{digest}")
            try:
                reports = self.analyzer.analyze(recording, source, pseudonym, read_ms,
                                                host=self.host.as_dict())
            except EcgdError as exc:
                self.spool.fail(claimed, str(exc))
                self.counters.inputs_failed += 1
                return
            if not self._write_reports(reports, input_hash=claimed.name_hash, started=started):
                return  # stopping while reports are unwritable: the input stays in processing
            self.spool.complete(claimed)
            self.counters.inputs_done += 1
        except Exception:  # a bug must not kill the appliance: quarantine and go on
            self.log.exception("input_crashed", input=claimed.name_hash)
            self.spool.fail(claimed, "internal error while processing (see the journal)")
            self.counters.inputs_failed += 1
        finally:
            self._busy_since = None

    def _process_live(self, live: LiveWindow) -> None:
        self._busy_since = time.monotonic()
        started = time.perf_counter()
        try:
            patient_id = self.patients.current()
            pseudonym = pseudonymize(patient_id, self.pseudonym_key) if patient_id else None
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
            reports = self.analyzer.analyze(live.recording, source, pseudonym,
                                            lead_off=live.lead_off, host=self.host.as_dict(),
                                            first_window_index=self._live_windows_cut - 1)
            self._write_reports(reports, input_hash=None, started=started)
        except Exception:
            self.log.exception("live_window_crashed", segment=live.segment,
                               sample_start=live.sample_start)
        finally:
            self._busy_since = None

    def _write_reports(self, reports: List[Dict[str, Any]], input_hash: Optional[str],
                       started: float) -> bool:
        """Seal and durably write every report, retrying while the disk refuses.

        Returns False only when asked to stop before the reports could be written.
        """
        for report in reports:
            sealed = seal(dumps_report(report).encode("utf-8"), self.recipients)
            while True:
                self._busy_since = time.monotonic()
                try:
                    write_durable(self.config.reports.dir, report["report_id"] + REPORT_SUFFIX,
                                  sealed)
                    break
                except SealError as exc:
                    if not self._seal_failing:
                        self.log.error("reports_unwritable", reason=str(exc))
                        self._seal_failing = True
                    self._busy_since = None  # waiting for the disk is not a hang
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
