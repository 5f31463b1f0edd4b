"""The shipped systemd units (ecgd, ecgd-forward): contract settings, `systemd-analyze
verify`, security score."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

UNIT_PATH = Path(__file__).resolve().parents[1] / "systemd" / "ecgd.service"
FORWARD_UNIT_PATH = UNIT_PATH.with_name("ecgd-forward.service")
SHIPPED_EXEC_START = "/opt/ecgd/venv/bin/ecgd run --config /etc/ecgd/ecgd.toml"
FORWARD_EXEC_START = "/opt/ecgd/venv/bin/ecgd forward --config /etc/ecgd/ecgd.toml"
# Each shipped unit and the ExecStart it must keep.
UNITS = {UNIT_PATH: SHIPPED_EXEC_START, FORWARD_UNIT_PATH: FORWARD_EXEC_START}
MAX_EXPOSURE = 2.0
_EXPOSURE_LINE = re.compile(r"Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)")

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian package 'systemd'; .ci/run installs it)",
)


def _settings(text: str) -> Dict[Tuple[str, str], List[str]]:
    """Every ``Key=value`` of a unit file by (section, key); repeated keys keep all values."""
    settings: Dict[Tuple[str, str], List[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def _runnable_copy(tmp_path: Path, unit_text: str, unit: Path = UNIT_PATH) -> Path:
    """The unit with ExecStart pointing at a real executable, saved under its own name.

    `systemd-analyze verify` fails when the ExecStart binary does not exist, and
    /opt/ecgd/venv/bin/ecgd exists only on an installed appliance; everything else in the
    unit is verified exactly as shipped.
    """
    fake_ecgd = tmp_path / "bin" / "ecgd"
    fake_ecgd.parent.mkdir()
    fake_ecgd.write_text("#!/bin/sh\nexit 0\n")
    fake_ecgd.chmod(0o755)
    exec_start = UNITS[unit]
    if f"ExecStart={exec_start}\n" not in unit_text:
        raise AssertionError("unit no longer has the expected ExecStart line")
    copy = tmp_path / "unit" / unit.name
    copy.parent.mkdir()
    copy.write_text(unit_text.replace(
        f"ExecStart={exec_start}", "ExecStart=" + exec_start.replace(
            "/opt/ecgd/venv/bin/ecgd", str(fake_ecgd))))
    return copy


def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, cwd=unit.parent, timeout=120)


def _exposure(unit: Path) -> float:
    completed = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True, cwd=unit.parent, timeout=120,
    )
    match = _EXPOSURE_LINE.search(completed.stdout)
    if match is None:
        raise AssertionError(f"no exposure line in: {completed.stdout[-500:]}{completed.stderr}")
    return float(match.group(1))


def test_unit_has_contract_settings() -> None:
    """Type=notify, the watchdog, restart policy (not on 78), serial group and credential."""
    service = _service(UNIT_PATH)
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecStart"] == [SHIPPED_EXEC_START]
    assert int(service["WatchdogSec"][0]) > 0
    assert service["Restart"] == ["on-failure"]
    assert "78" in service["RestartPreventExitStatus"][0].split()
    assert "dialout" in service["SupplementaryGroups"][0].split()
    assert service["LoadCredential"] == ["pseudonym.key:/etc/ecgd/pseudonym.key",
                                         "appliance-signing.key:/etc/ecgd/appliance-signing.key"]
    assert service["PrivateNetwork"] == ["yes"]
    assert service["StateDirectory"] == ["ecgd"]
    assert service["ConfigurationDirectory"] == ["ecgd"]
    assert "/var/spool/ecgd" in service["ReadWritePaths"][0].split()
    assert {"char-ttyACM rw", "char-ttyUSB rw", "/dev/vchiq rw"} <= set(service["DeviceAllow"])
    # PrivateDevices=yes would hide the serial devices the DeviceAllow list grants.
    assert service.get("PrivateDevices", ["no"]) == ["no"]


def _service(unit: Path) -> Dict[str, List[str]]:
    return {key: values for (section, key), values in _settings(unit.read_text()).items()
            if section == "Service"}


def test_forward_unit_sees_only_the_reports_and_reaches_only_the_station() -> None:
    """ecgd-forward: notify service, not restarted on 78, the reports folder bound alone
    into a hidden /var/lib/ecgd, the spool and secret keys inaccessible, its TLS key as a
    credential, IP allowed only where the admin adds the station."""
    service = _service(FORWARD_UNIT_PATH)
    assert service["ExecStart"] == [FORWARD_EXEC_START]
    assert service["Type"] == ["notify"]
    assert "78" in service["RestartPreventExitStatus"][0].split()
    assert service["User"] == ["ecgd"]
    assert service["TemporaryFileSystem"] == ["/var/lib/ecgd:ro"]
    assert service["BindPaths"] == ["/var/lib/ecgd/reports"]
    assert {"-/var/spool/ecgd", "-/etc/ecgd/pseudonym.key", "-/etc/ecgd/appliance-signing.key",
            "-/etc/ecgd/tls/appliance.key"} <= set(service["InaccessiblePaths"])
    assert service["LoadCredential"] == ["forward-client.key:/etc/ecgd/tls/appliance.key"]
    assert service["IPAddressDeny"] == ["any"]
    assert service["IPAddressAllow"] == ["localhost"]
    assert "PrivateNetwork" not in service


@needs_systemd_analyze
@pytest.mark.parametrize("unit", list(UNITS), ids=lambda unit: unit.name)
def test_unit_verifies_clean(tmp_path, unit: Path) -> None:
    """`systemd-analyze verify` exits 0 and prints nothing for the shipped settings."""
    completed = _verify(_runnable_copy(tmp_path, unit.read_text(), unit))
    assert (completed.returncode, completed.stdout, completed.stderr) == (0, "", "")


@needs_systemd_analyze
def test_verify_check_catches_a_bad_setting(tmp_path) -> None:
    """Control: verify exits 0 on a bad value but warns on stderr, which the check catches."""
    broken = UNIT_PATH.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe")
    completed = _verify(_runnable_copy(tmp_path, broken))
    assert completed.returncode == 0
    assert "Failed to parse boolean value, ignoring: maybe" in completed.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", list(UNITS), ids=lambda unit: unit.name)
def test_security_exposure_at_most_2(unit: Path) -> None:
    """`systemd-analyze security --offline=true` rates each shipped unit 2.0 or better."""
    assert _exposure(unit) <= MAX_EXPOSURE


@needs_systemd_analyze
def test_plain_unit_scores_far_worse(tmp_path) -> None:
    """Control: the same service without hardening is rated well above 2.0 (the parser works)."""
    plain = tmp_path / "ecgd.service"
    plain.write_text(f"[Service]\nType=notify\nExecStart={SHIPPED_EXEC_START}\n")
    assert _exposure(plain) > 9.0


# Runs in a child: PR_SET_MDWE cannot be undone, and must not restrict the test runner.
_MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit(76)
    except OSError:
        pass
    import numpy, onnx, onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    from watchdog.observers.inotify import InotifyObserver
    assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
    observer = InotifyObserver()
    observer.start()
    observer.stop()
    observer.join()
    weights = numpy.ones((8, 12, 16), dtype="float32")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2]),
         helper.make_node("Sigmoid", ["c"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, 500])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": numpy.zeros((1, 12, 500), dtype="float32")})
    print(output.shape)
    """
)


def test_runtime_works_without_writable_executable_memory() -> None:
    """ONNX Runtime, numpy, ctypes and inotify run with W+X memory refused.

    Pins MemoryDenyWriteExecute=yes in the unit; the kernel's PR_SET_MDWE (Linux 6.3+)
    enforces the same rule for the child process as systemd's filter does for the service.
    """
    completed = subprocess.run([sys.executable, "-c", _MDWE_PROBE], capture_output=True,
                               text=True, timeout=300)
    if completed.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (needs Linux 6.3+)")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "(1, 8, 243)"
