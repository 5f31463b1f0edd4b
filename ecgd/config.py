"""Strict TOML configuration: frozen dataclasses, unknown keys and bad values refused.

Each ``[section]`` of the TOML file maps to one frozen dataclass below; a key that is not a
field is an error, a value of the wrong type is an error, and cross-field rules live in
``__post_init__``. A medical appliance refuses to start on a bad value rather than guessing.
Every option is documented in the shipped ``etc/ecgd.toml``.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
import urllib.parse
from pathlib import Path
from typing import Any, Optional, Tuple

from ecgd.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Raspberry Pi OS bookworm ships Python 3.11; bullseye (3.9) needs tomli.
    import tomli as tomllib


DEFAULT_CONFIG = Path("/etc/ecgd/ecgd.toml")


def _fail(section: str, key: str, reason: str) -> ConfigError:
    return ConfigError(f"[{section}] {key}: {reason}")


def _require(condition: bool, section: str, key: str, reason: str) -> None:
    if not condition:
        raise _fail(section, key, reason)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model to run, how many ONNX Runtime threads each inference gets and how many
    inferences run at once."""

    manifest: Path = Path("/var/lib/ecgd/models/ecgfounder.json")
    threads: int = 2
    batch_max: int = 4
    inference_workers: int = 1

    def __post_init__(self) -> None:
        _require(1 <= self.threads <= 64, "model", "threads", "must be between 1 and 64")
        _require(1 <= self.batch_max <= 256, "model", "batch_max", "must be between 1 and 256")
        _require(1 <= self.inference_workers <= 16, "model", "inference_workers",
                 "must be between 1 and 16")


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """How recordings are cut into analysis windows."""

    seconds: float = 10.0
    stride_s: float = 10.0

    def __post_init__(self) -> None:
        _require(self.seconds > 0, "window", "seconds", "must be positive")
        _require(
            0 < self.stride_s <= self.seconds, "window", "stride_s", "must be in (0, seconds]"
        )


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Site facts the preprocessing needs that the model manifest cannot know."""

    mains_hz: int = 50

    def __post_init__(self) -> None:
        _require(self.mains_hz in (50, 60), "preprocess", "mains_hz", "must be 50 or 60")


@dataclasses.dataclass(frozen=True)
class QcConfig:
    """Signal-quality thresholds, applied per lead to the raw millivolt signal.

    Calibrated on the 100 LUDB records in ../shared/data and on NSTDB noise (see ecgd.signal.quality):
    - saturation_fraction_max: fraction of samples in clipped runs of clip_run_min_samples or
      more at the lead's extremes above which the lead is saturated;
    - flatline_variance_min_mv2 / flatline_window_s: a lead is flat when some stretch of
      flatline_window_s seconds has a variance below this (5e-5 mV^2 = 7 uV RMS: a stuck
      input; 0.01 mV^2 over 1 s flags 93 of 100 clean LUDB records between beats);
    - lead_off_rms_min_mv: RMS about the mean below this is an electrode off (clean LUDB
      leads go down to 0.035 mV RMS, so 0.05 would reject clean records);
    - quality_score_min: accept only when QS = 1 - (saturated + flat samples) / total is above;
    - amplitude_max_mv: peak-to-peak above this is implausible (wrong units or gain);
    - noise_index_max: muscle/high-frequency noise index (median / 99th percentile of the
      10-45 Hz band energy; clean LUDB <= 0.0073);
    - powerline_ratio_max: mains +- 1 Hz power over power above 0.5 Hz (clean LUDB <= 0.013);
    - baseline_wander_ratio_max: power below 0.5 Hz over all power;
    - min_beats: fewer R peaks than this in a window is no_beats.
    """

    saturation_fraction_max: float = 0.05
    clip_run_min_samples: int = 3
    flatline_variance_min_mv2: float = 5e-5
    flatline_window_s: float = 2.0
    lead_off_rms_min_mv: float = 0.02
    quality_score_min: float = 0.95
    amplitude_max_mv: float = 10.0
    noise_index_max: float = 0.01
    powerline_ratio_max: float = 0.2
    baseline_wander_ratio_max: float = 0.9
    min_beats: int = 2

    def __post_init__(self) -> None:
        for name in (
            "saturation_fraction_max",
            "quality_score_min",
            "noise_index_max",
            "powerline_ratio_max",
            "baseline_wander_ratio_max",
        ):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, "qc", name, "must be between 0 and 1")
        for name in ("flatline_variance_min_mv2", "lead_off_rms_min_mv", "flatline_window_s",
                     "amplitude_max_mv"):
            _require(getattr(self, name) > 0, "qc", name, "must be positive")
        _require(self.clip_run_min_samples >= 2, "qc", "clip_run_min_samples", "must be >= 2")
        _require(self.min_beats >= 0, "qc", "min_beats", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class LimitsConfig:
    """Input limits that protect the appliance from hostile or broken files."""

    max_input_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        _require(self.max_input_bytes > 0, "limits", "max_input_bytes", "must be positive")


@dataclasses.dataclass(frozen=True)
class SpoolConfig:
    """The folder device vendors drop recordings into, and where inputs go afterwards."""

    dir: Path = Path("/var/spool/ecgd/incoming")
    done_dir: Path = Path("/var/spool/ecgd/done")
    failed_dir: Path = Path("/var/spool/ecgd/failed")
    processing_dir: Path = Path("/var/spool/ecgd/processing")
    settle_s: float = 1.0
    rescan_s: float = 30.0
    wfdb_wait_s: float = 300.0

    def __post_init__(self) -> None:
        _require(self.settle_s >= 0, "spool", "settle_s", "must be >= 0")
        _require(self.rescan_s > 0, "spool", "rescan_s", "must be positive")
        _require(self.wfdb_wait_s > 0, "spool", "wfdb_wait_s", "must be positive")
        dirs = {"dir": self.dir, "done_dir": self.done_dir, "failed_dir": self.failed_dir,
                "processing_dir": self.processing_dir}
        if len(set(dirs.values())) != len(dirs):
            raise ConfigError("[spool] dir, done_dir, failed_dir, processing_dir: must all differ")


@dataclasses.dataclass(frozen=True)
class ReportsConfig:
    """Where sealed reports go, who can read them, the key that signs them, and whether
    they carry the window's samples (``waveform``: the tracing the station shows and
    exports)."""

    dir: Path = Path("/var/lib/ecgd/reports")
    recipients: Tuple[Path, ...] = (Path("/etc/ecgd/recipients/reading-station.pub"),)
    retry_s: float = 5.0
    signing_key_file: Path = Path("/etc/ecgd/appliance-signing.key")
    signing_credential: str = "appliance-signing.key"
    waveform: bool = True

    def __post_init__(self) -> None:
        _require(len(self.recipients) >= 1, "reports", "recipients", "needs at least one key")
        _require(self.retry_s > 0, "reports", "retry_s", "must be positive")


def _is_station_url(url: str) -> bool:
    """An https URL with a host, and no credentials, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return (parts.scheme == "https" and bool(parts.hostname) and parts.username is None
            and not parts.query and not parts.fragment)


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    """Delivery of sealed reports to the reading station (``ecgd forward``).

    ``ca_file`` is the trust anchor for the station's certificate: the CA that issued it, or
    the station's own self-signed certificate (pinning it). The client certificate and key
    identify this appliance to the station; the key is read from the systemd credential
    ``client_key_credential`` when there is one.
    """

    url: str = ""
    ca_file: Path = Path("/etc/ecgd/tls/station-ca.pem")
    client_cert: Path = Path("/etc/ecgd/tls/appliance.pem")
    client_key: Path = Path("/etc/ecgd/tls/appliance.key")
    client_key_credential: str = "forward-client.key"
    timeout_s: float = 30.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    scan_s: float = 5.0

    def __post_init__(self) -> None:
        _require(_is_station_url(self.url), "forward", "url",
                 "must be https://HOST[:PORT][/PATH] (reports never travel in plain HTTP)")
        _require(self.timeout_s > 0, "forward", "timeout_s", "must be positive")
        _require(0 < self.retry_initial_s <= self.retry_max_s, "forward", "retry_initial_s",
                 "must be positive and <= retry_max_s")
        _require(self.scan_s > 0, "forward", "scan_s", "must be positive")


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    """The key that turns patient identifiers into pseudonyms."""

    pseudonym_key_file: Path = Path("/etc/ecgd/pseudonym.key")
    pseudonym_credential: str = "pseudonym.key"
    patient_file: Path = Path("/var/lib/ecgd/patient/current")


@dataclasses.dataclass(frozen=True)
class HostConfig:
    """Host health polling (Pi thermal and power state)."""

    poll_s: float = 10.0

    def __post_init__(self) -> None:
        _require(self.poll_s > 0, "host", "poll_s", "must be positive")


@dataclasses.dataclass(frozen=True)
class SerialConfig:
    """A live acquisition device. Absent section = no live source."""

    port: str = ""
    format: str = "ecgd-frame"
    baudrate: int = 115200
    lead_names: Tuple[str, ...] = ()
    units: str = "mv"
    lsb_uv: float = 1.0
    fs_hz: float = 500.0  # text format only: the other formats carry or fix their rate
    gain: int = 24
    stall_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    queue_windows: int = 4

    def __post_init__(self) -> None:
        _require(bool(self.port), "serial", "port", "is required when [serial] is present")
        _require(self.format in ("openbci-cyton", "ecgd-frame", "text"), "serial", "format",
                 "must be openbci-cyton, ecgd-frame or text")
        _require(self.baudrate > 0, "serial", "baudrate", "must be positive")
        _require(self.units in ("mv", "uv", "counts"), "serial", "units",
                 "must be mv, uv or counts")
        _require(self.lsb_uv > 0, "serial", "lsb_uv", "must be positive")
        _require(0 < self.fs_hz <= 20000, "serial", "fs_hz", "must be in (0, 20000]")
        _require(self.gain in (1, 2, 4, 6, 8, 12, 24), "serial", "gain",
                 "must be an ADS1299 gain: 1, 2, 4, 6, 8, 12 or 24")
        expected_leads = {"openbci-cyton": (8,), "text": (8, 12), "ecgd-frame": (0,)}
        _require(len(self.lead_names) in (0,) + expected_leads[self.format], "serial",
                 "lead_names", "must be empty (format default), 8 names for openbci-cyton, "
                 "8 or 12 for text, and empty for ecgd-frame (frames name their leads)")
        _require(self.stall_s > 0, "serial", "stall_s", "must be positive")
        _require(0 < self.backoff_initial_s <= self.backoff_max_s, "serial", "backoff_initial_s",
                 "must be positive and <= backoff_max_s")
        _require(self.queue_windows >= 1, "serial", "queue_windows", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Log rendering: JSON lines for the journal, console for a terminal, or auto."""

    format: str = "auto"
    level: str = "info"

    def __post_init__(self) -> None:
        _require(self.format in ("auto", "json", "console"), "logging", "format",
                 "must be auto, json or console")
        _require(self.level in ("debug", "info", "warning", "error"), "logging", "level",
                 "must be debug, info, warning or error")


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration. ``serial`` is None when there is no live source, ``forward``
    when reports are not delivered over the network."""

    model: ModelConfig = ModelConfig()
    window: WindowConfig = WindowConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    qc: QcConfig = QcConfig()
    limits: LimitsConfig = LimitsConfig()
    spool: SpoolConfig = SpoolConfig()
    reports: ReportsConfig = ReportsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    host: HostConfig = HostConfig()
    logging: LoggingConfig = LoggingConfig()
    serial: Optional[SerialConfig] = None
    forward: Optional[ForwardConfig] = None
    source_path: Optional[Path] = None


_SECTIONS = {
    "model": ModelConfig,
    "window": WindowConfig,
    "preprocess": PreprocessConfig,
    "qc": QcConfig,
    "limits": LimitsConfig,
    "spool": SpoolConfig,
    "reports": ReportsConfig,
    "privacy": PrivacyConfig,
    "host": HostConfig,
    "logging": LoggingConfig,
    "serial": SerialConfig,
    "forward": ForwardConfig,
}


def _convert(section: str, key: str, hint: Any, value: Any, base_dir: Path) -> Any:
    """Check one TOML value against its field type; return the field value."""
    origin = typing.get_origin(hint)
    if hint is bool:
        _require(isinstance(value, bool), section, key, "must be true or false")
        return value
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), section, key,
                 "must be an integer")
        return value
    if hint is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), section, key,
                 "must be a number")
        return float(value)
    if hint is str:
        _require(isinstance(value, str), section, key, "must be a string")
        return value
    if hint is Path:
        _require(isinstance(value, str) and value != "", section, key, "must be a path")
        path = Path(value)
        return path if path.is_absolute() else base_dir / path
    if origin in (tuple, Tuple):
        _require(isinstance(value, list), section, key, "must be a list")
        item_hint = typing.get_args(hint)[0]
        return tuple(_convert(section, key, item_hint, item, base_dir) for item in value)
    raise TypeError(f"config field type {hint!r} is not supported")  # a bug, not bad input


def _build_section(name: str, table: Any, base_dir: Path) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}]: must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"[{name}] {unknown[0]}: unknown key")
    values = {key: _convert(name, key, hints[key], value, base_dir) for key, value in table.items()}
    return cls(**values)


def parse_config(text: str, source: str = "<config>", base_dir: Optional[Path] = None) -> Config:
    """Parse TOML text into a Config. Relative paths resolve against ``base_dir``."""
    base = base_dir if base_dir is not None else Path.cwd()
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section")
    sections = {name: _build_section(name, table, base) for name, table in document.items()}
    return Config(**sections)


def load_config(path: Path) -> Config:
    """Load and validate a TOML config file; every problem is a one-line ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    try:
        config = parse_config(text, str(path), base_dir=Path(path).resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return dataclasses.replace(config, source_path=Path(path))
