"""Host health from a real (fake-firmware) vcgencmd executable on PATH and thermal zones."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import pytest

from ecgd.host import FlagState, HostHealth, read_host_health

FLAGS = ("under_voltage", "frequency_capped", "throttled", "soft_temperature_limit")


def _install_vcgencmd(bin_dir: Path, throttled: str, temp: str, exit_code: int = 0) -> None:
    """Write an executable ``vcgencmd`` printing the Pi firmware's output lines."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "vcgencmd"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  get_throttled) printf '%s\\n' '{throttled}' ;;\n"
        f"  measure_temp) printf '%s\\n' \"{temp}\" ;;\n"
        "  *) echo 'error=1 error_msg=\"Command not registered\"'; exit 255 ;;\n"
        "esac\n"
        f"exit {exit_code}\n"
    )
    script.chmod(0o755)


def _thermal_root(tmp_path: Path, *zones: Optional[str]) -> Path:
    """A /sys/class/thermal look-alike; each zone's ``temp`` holds the given text."""
    root = tmp_path / "thermal"
    root.mkdir()
    (root / "cooling_device0").mkdir()
    for number, content in enumerate(zones):
        zone = root / f"thermal_zone{number}"
        zone.mkdir()
        if content is not None:
            (zone / "temp").write_text(content)
    return root


@pytest.fixture()
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only a temp bin dir plus /bin and /usr/bin (for sh, printf, sleep)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]))
    return bin_dir


def _flags(health: HostHealth) -> dict:
    return {name: (getattr(health, name).now, getattr(health, name).since_boot)
            for name in FLAGS}


def test_healthy_pi(tmp_path, fake_bin) -> None:
    """throttled=0x0 and temp=47.2'C decode to no flags and 47.2 degrees from vcgencmd."""
    _install_vcgencmd(fake_bin, "throttled=0x0", "temp=47.2'C")
    health = read_host_health(thermal_root=tmp_path / "absent")
    assert health.source == "vcgencmd"
    assert health.temperature_c == pytest.approx(47.2)
    assert health.throttled_raw == "0x0"
    assert set(_flags(health).values()) == {(False, False)}
    assert health.summary() == "47.2C, no throttling"


def test_under_voltage_and_throttled_now_and_since_boot(tmp_path, fake_bin) -> None:
    """0x50005 = bits 0, 2, 16, 18: under-voltage and throttled, now and since boot."""
    _install_vcgencmd(fake_bin, "throttled=0x50005", "temp=61.8'C")
    health = read_host_health(thermal_root=tmp_path / "absent")
    assert health.throttled_raw == "0x50005"
    assert _flags(health) == {
        "under_voltage": (True, True),
        "frequency_capped": (False, False),
        "throttled": (True, True),
        "soft_temperature_limit": (False, False),
    }
    assert health.summary() == "61.8C, under-voltage now, throttled now"


def test_soft_temperature_limit(tmp_path, fake_bin) -> None:
    """0x80008 = bits 3 and 19: soft temperature limit now and since boot, nothing else."""
    _install_vcgencmd(fake_bin, "throttled=0x80008", "temp=80.1'C")
    health = read_host_health(thermal_root=tmp_path / "absent")
    assert _flags(health) == {
        "under_voltage": (False, False),
        "frequency_capped": (False, False),
        "throttled": (False, False),
        "soft_temperature_limit": (True, True),
    }


def test_past_events_only(tmp_path, fake_bin) -> None:
    """0x20000 = bit 17 only: frequency capped since boot, not now, and says so."""
    _install_vcgencmd(fake_bin, "throttled=0x20000", "temp=45.0'C")
    health = read_host_health(thermal_root=tmp_path / "absent")
    assert health.frequency_capped == FlagState(now=False, since_boot=True)
    assert health.summary() == "45.0C, frequency capped since boot"


def test_every_bit_decodes(tmp_path, fake_bin) -> None:
    """0xF000F sets all four conditions now and since boot."""
    _install_vcgencmd(fake_bin, "throttled=0xf000f", "temp=70.0'C")
    health = read_host_health(thermal_root=tmp_path / "absent")
    assert set(_flags(health).values()) == {(True, True)}


def test_garbage_output_falls_back_to_thermal(tmp_path, fake_bin) -> None:
    """A vcgencmd that prints something unexpected is ignored in favour of thermal zones."""
    _install_vcgencmd(fake_bin, "VCHI initialization failed", "garbage 12'C")
    health = read_host_health(thermal_root=_thermal_root(tmp_path, "52345\n"))
    assert health.source == "thermal"
    assert health.temperature_c == pytest.approx(52.345)
    assert health.throttled_raw is None
    assert set(_flags(health).values()) == {(None, None)}
    assert health.summary() == "52.3C"


def test_failing_vcgencmd_without_thermal_is_unknown(tmp_path, fake_bin) -> None:
    """A vcgencmd exiting 1 and no thermal zones give source unknown, without raising."""
    _install_vcgencmd(fake_bin, "throttled=0x0", "temp=40.0'C", exit_code=1)
    health = read_host_health(thermal_root=tmp_path / "absent")
    assert health == HostHealth()
    assert health.source == "unknown"
    assert health.summary() == "host health unknown"


def test_hanging_vcgencmd_times_out(tmp_path, fake_bin) -> None:
    """A vcgencmd that never answers is abandoned after the timeout; thermal is used."""
    script = fake_bin / "vcgencmd"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    health = read_host_health(thermal_root=_thermal_root(tmp_path, "48000"), timeout_s=0.3)
    assert health.source == "thermal"
    assert health.temperature_c == pytest.approx(48.0)


def test_throttle_without_temperature_uses_thermal_zone(tmp_path, fake_bin) -> None:
    """Valid get_throttled but broken measure_temp: flags from vcgencmd, temp from sysfs."""
    _install_vcgencmd(fake_bin, "throttled=0x1", "temp=hot")
    health = read_host_health(thermal_root=_thermal_root(tmp_path, "39500\n"))
    assert health.source == "vcgencmd"
    assert health.temperature_c == pytest.approx(39.5)
    assert health.under_voltage == FlagState(now=True, since_boot=False)


def test_no_vcgencmd_uses_first_valid_zone(tmp_path, fake_bin) -> None:
    """Without vcgencmd, the lowest-numbered zone with a plausible reading is used."""
    root = _thermal_root(tmp_path, None, "not a number", "999999", "41000\n", "30000")
    health = read_host_health(thermal_root=root)
    assert health.source == "thermal"
    assert health.temperature_c == pytest.approx(41.0)


def test_zone_order_is_numeric(tmp_path, fake_bin) -> None:
    """thermal_zone2 comes before thermal_zone10 (numeric, not text, order)."""
    root = tmp_path / "thermal"
    for number, millidegrees in ((10, "90000"), (2, "33000")):
        (root / f"thermal_zone{number}").mkdir(parents=True)
        (root / f"thermal_zone{number}" / "temp").write_text(millidegrees)
    assert read_host_health(thermal_root=root).temperature_c == pytest.approx(33.0)


def test_as_dict_is_json_ready(tmp_path, fake_bin) -> None:
    """as_dict gives the report's host field: plain JSON values, every flag now/since_boot."""
    _install_vcgencmd(fake_bin, "throttled=0x50005", "temp=61.8'C")
    host = read_host_health(thermal_root=tmp_path / "absent").as_dict()
    assert json.loads(json.dumps(host)) == host
    assert host["source"] == "vcgencmd"
    assert host["throttled_raw"] == "0x50005"
    assert host["under_voltage"] == {"now": True, "since_boot": True}
    assert host["frequency_capped"] == {"now": False, "since_boot": False}
    assert set(host) == {"source", "temperature_c", "throttled_raw", *FLAGS}
