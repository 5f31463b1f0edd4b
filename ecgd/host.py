"""Host health: the Raspberry Pi's temperature and power/thermal throttling state.

Sources, best first:
  ``vcgencmd``  the Pi firmware tool: ``get_throttled`` prints ``throttled=0x50005`` and
                ``measure_temp`` prints ``temp=47.2'C``
  ``thermal``   ``/sys/class/thermal/thermal_zone*/temp`` (millidegrees Celsius) on other
                Linux boxes, or on a Pi where vcgencmd cannot reach ``/dev/vchiq``
  ``unknown``   neither is available

Reading host health never raises: a vcgencmd that is missing, hangs, fails or prints
something unexpected only means the next source is tried. Throttle bits (get_throttled)::

    bit  0 / 16   under-voltage               now / has occurred since boot
    bit  1 / 17   ARM frequency capped        now / since boot
    bit  2 / 18   currently throttled         now / since boot
    bit  3 / 19   soft temperature limit      now / since boot
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

VCGENCMD_TIMEOUT_S = 2.0
THERMAL_ROOT = Path("/sys/class/thermal")

_THROTTLED_LINE = re.compile(r"throttled=(0x[0-9a-fA-F]{1,8})\s*")
_TEMP_LINE = re.compile(r"temp=(-?[0-9]{1,3}(?:\.[0-9]+)?)'C\s*")
_ZONE_NAME = re.compile(r"thermal_zone([0-9]+)")
# Plausible die temperatures; a reading outside is a broken sensor, not a measurement.
_TEMP_RANGE_C = (-60.0, 150.0)

# (field name, bit for "now"); "since boot" is the same bit + 16.
FLAG_BITS: Tuple[Tuple[str, int], ...] = (
    ("under_voltage", 0),
    ("frequency_capped", 1),
    ("throttled", 2),
    ("soft_temperature_limit", 3),
)
_SINCE_BOOT_SHIFT = 16
_FLAG_LABELS = {
    "under_voltage": "under-voltage",
    "frequency_capped": "frequency capped",
    "throttled": "throttled",
    "soft_temperature_limit": "soft temperature limit",
}


@dataclasses.dataclass(frozen=True)
class FlagState:
    """One throttle condition: active ``now`` and/or seen ``since_boot``; None = not known."""

    now: Optional[bool] = None
    since_boot: Optional[bool] = None


_UNKNOWN_FLAG = FlagState()


@dataclasses.dataclass(frozen=True)
class HostHealth:
    """A snapshot of the host's temperature (degrees Celsius) and throttling state."""

    source: str = "unknown"
    temperature_c: Optional[float] = None
    throttled_raw: Optional[str] = None
    under_voltage: FlagState = _UNKNOWN_FLAG
    frequency_capped: FlagState = _UNKNOWN_FLAG
    throttled: FlagState = _UNKNOWN_FLAG
    soft_temperature_limit: FlagState = _UNKNOWN_FLAG

    def as_dict(self) -> Dict[str, Any]:
        """The report's ``host`` field: plain JSON types, None where not measured."""
        result: Dict[str, Any] = {
            "source": self.source,
            "temperature_c": self.temperature_c,
            "throttled_raw": self.throttled_raw,
        }
        for name, _ in FLAG_BITS:
            flag = getattr(self, name)
            result[name] = {"now": flag.now, "since_boot": flag.since_boot}
        return result

    def summary(self) -> str:
        """Short text for systemd ``STATUS=``, e.g. ``48.3C, under-voltage now``."""
        parts: List[str] = []
        if self.temperature_c is not None:
            parts.append(f"{self.temperature_c:.1f}C")
        if self.throttled_raw is not None:
            active = [_FLAG_LABELS[name] + " now" for name, _ in FLAG_BITS
                      if getattr(self, name).now]
            past = [_FLAG_LABELS[name] + " since boot" for name, _ in FLAG_BITS
                    if getattr(self, name).since_boot and not getattr(self, name).now]
            parts.extend(active + past if active or past else ["no throttling"])
        if not parts:
            return "host health unknown"
        return ", ".join(parts)


def decode_throttled(value: int) -> Dict[str, FlagState]:
    """Decode a ``get_throttled`` bit mask into one FlagState per condition."""
    return {
        name: FlagState(
            now=bool(value >> bit & 1),
            since_boot=bool(value >> (bit + _SINCE_BOOT_SHIFT) & 1),
        )
        for name, bit in FLAG_BITS
    }


def parse_throttled(output: str) -> Optional[int]:
    """The mask from ``vcgencmd get_throttled`` output (``throttled=0x50005``), else None."""
    match = _THROTTLED_LINE.fullmatch(output)
    return int(match.group(1), 16) if match else None


def parse_temperature(output: str) -> Optional[float]:
    """Degrees Celsius from ``vcgencmd measure_temp`` output (``temp=47.2'C``), else None."""
    match = _TEMP_LINE.fullmatch(output)
    if match is None:
        return None
    return _plausible(float(match.group(1)))


def _plausible(temperature_c: float) -> Optional[float]:
    low, high = _TEMP_RANGE_C
    return temperature_c if low <= temperature_c <= high else None


def _run_vcgencmd(executable: str, argument: str, timeout_s: float) -> Optional[str]:
    """stdout of ``vcgencmd <argument>`` if it exits 0 in time, else None."""
    try:
        completed = subprocess.run(
            [executable, argument],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.decode("ascii", errors="replace")


def read_thermal_zone_c(thermal_root: Path = THERMAL_ROOT) -> Optional[float]:
    """The first thermal zone's (lowest number) plausible temperature in Celsius, else None."""
    try:
        names = [_ZONE_NAME.fullmatch(path.name) for path in thermal_root.iterdir()]
    except OSError:
        return None
    numbers = sorted(int(match.group(1)) for match in names if match is not None)
    for number in numbers:
        zone = thermal_root / f"thermal_zone{number}"
        try:
            millidegrees = int((zone / "temp").read_text(encoding="ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        temperature_c = _plausible(millidegrees / 1000.0)
        if temperature_c is not None:
            return temperature_c
    return None


def read_host_health(
    thermal_root: Path = THERMAL_ROOT, timeout_s: float = VCGENCMD_TIMEOUT_S
) -> HostHealth:
    """Read host health from vcgencmd (on PATH), else thermal zones, else "unknown".

    Never raises. Blocks at most about ``2 * timeout_s`` seconds when vcgencmd hangs.
    """
    executable = shutil.which("vcgencmd")
    mask: Optional[int] = None
    temperature_c: Optional[float] = None
    if executable is not None:
        throttled_out = _run_vcgencmd(executable, "get_throttled", timeout_s)
        mask = parse_throttled(throttled_out) if throttled_out is not None else None
        temp_out = _run_vcgencmd(executable, "measure_temp", timeout_s)
        temperature_c = parse_temperature(temp_out) if temp_out is not None else None
    if mask is not None:
        if temperature_c is None:
            temperature_c = read_thermal_zone_c(thermal_root)
        flags = decode_throttled(mask)
        return HostHealth(
            source="vcgencmd",
            temperature_c=temperature_c,
            throttled_raw=f"0x{mask:x}",
            under_voltage=flags["under_voltage"],
            frequency_capped=flags["frequency_capped"],
            throttled=flags["throttled"],
            soft_temperature_limit=flags["soft_temperature_limit"],
        )
    if temperature_c is not None:
        return HostHealth(source="vcgencmd", temperature_c=temperature_c)
    thermal_c = read_thermal_zone_c(thermal_root)
    if thermal_c is not None:
        return HostHealth(source="thermal", temperature_c=thermal_c)
    return HostHealth()
