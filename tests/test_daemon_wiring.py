"""The stages wired together, end to end through ``ecgd run``: each test here fails when one
connection between them is broken (issue 15 seeded such defects and 482 tests still passed).

One daemon run serves every test in this module: real rejected recordings, a recording
carrying a patient identifier, and multi-window inputs inferred in shared batches. What the
daemon wrote is compared with values computed independently of ecgd's own code paths.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import uuid
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from daemon_harness import DaemonProcess, wait_for
from test_daemon import Appliance

PATIENT_ID = "WIRING-PATIENT-0042"
REJECTED = ("JS20004", "JS20007")
# Two inputs of three 10-s windows each, every window a different clean LUDB record.
MULTI_WINDOW = {"three-a.npz": (1, 3, 5), "three-b.npz": (8, 9, 11)}
# The fixed namespace README's report section and ecgd/report.py define for report ids.
REPORT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://ecgd.invalid/report")


@dataclasses.dataclass
class WiredRun:
    """What one daemon run over the module's inputs left behind."""

    appliance: Appliance
    dropped: Dict[str, List[Path]]          # input name -> its files, header first
    reports: List[dict]
    report_names_before_redrop: List[str]
    redropped: List[dict]                   # reports of three-a.npz dropped a second time
    log: str


def _ludb_windows(shared_data: Path, records: tuple, target: Path) -> Path:
    """An .npz whose consecutive 10-s windows are the given LUDB records, standard leads."""
    import wfdb

    signals = []
    for record in records:
        data = wfdb.rdrecord(str(shared_data / "ludb" / "data" / str(record)))
        signals.append(data.p_signal.T[:, :5000].astype(np.float32))
    np.savez(target, signal=np.concatenate(signals, axis=1), fs_hz=500.0,
             lead_names=np.array(["I", "II", "III", "aVR", "aVL", "aVF",
                                  "V1", "V2", "V3", "V4", "V5", "V6"]), units="mV")
    return target


def _content_digest(files: List[Path]) -> str:
    """sha256 over each file's 8-byte big-endian length and bytes, header first: the
    report-id seed as README's report section describes it, written out again here."""
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory, reference_manifest: Path,
          shared_data: Path) -> WiredRun:
    root = tmp_path_factory.mktemp("wiring")
    appliance = Appliance(root / "appliance", reference_manifest)
    staging = root / "staging"
    staging.mkdir()
    dropped: Dict[str, List[Path]] = {}
    for record in REJECTED:
        files = [shared_data / "cinc2021" / f"{record}{suffix}" for suffix in (".hea", ".mat")]
        dropped[f"{record}.hea"] = files
    header = (shared_data / "cinc2021" / "E07501.hea").read_text()
    (staging / "E07501.hea").write_text(header + f"# Patient ID: {PATIENT_ID}\n")
    shutil.copyfile(shared_data / "cinc2021" / "E07501.mat", staging / "E07501.mat")
    dropped["E07501.hea"] = [staging / "E07501.hea", staging / "E07501.mat"]
    for name, records in MULTI_WINDOW.items():
        dropped[name] = [_ludb_windows(shared_data, records, staging / name)]
    daemon = DaemonProcess(appliance.config, root)
    try:
        daemon.wait_ready()
        for files in dropped.values():
            for path in reversed(files):  # data files first: the header then finds them
                appliance.drop(path)
        wait_for(lambda: len([n for n in appliance.names_in(appliance.done)
                              if not n.endswith(".mat")]) == len(dropped)
                 or daemon.process.poll() is not None, 120, "every input done")
        reports = appliance.decrypted_reports()
        names_before = [path.name for path in appliance.report_files()]
        appliance.drop(dropped["three-a.npz"][0], "three-a-again.npz")
        wait_for(lambda: "three-a-again.npz" in appliance.names_in(appliance.done)
                 or daemon.process.poll() is not None, 60, "the second drop done")
        redropped = [r for r in appliance.decrypted_reports()
                     if r["source"]["file"] == "three-a-again.npz"]
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    return WiredRun(appliance, dropped, reports, names_before, redropped, daemon.log_text())


def _reports_of(run: WiredRun, name: str) -> List[dict]:
    return sorted((r for r in run.reports if r["source"]["file"] == name),
                  key=lambda report: report["window"]["index"])


def test_every_input_was_interpreted_or_rejected_and_none_failed(wired: WiredRun) -> None:
    """Control for the tests below: every input gave its windows' reports, none failed."""
    assert wired.appliance.names_in(wired.appliance.failed) == []
    assert sorted({r["source"]["file"] for r in wired.reports}) == sorted(wired.dropped)
    assert len(wired.reports) == len(REJECTED) + 1 + 3 * len(MULTI_WINDOW)


def test_real_rejected_recordings_come_out_rejected_with_their_reasons(
        wired: WiredRun, capsys: pytest.CaptureFixture, shared_data: Path,
        reference_manifest: Path) -> None:
    """CinC JS20004 (V2, V4, V6 stored as zeros) and JS20007 (a V6 swing over 10 mV) are
    rejected with reasons naming the bad leads, through the daemon and through
    ``ecgd analyze``."""
    from ecgd.cli import main

    for record in REJECTED:
        (report,) = _reports_of(wired, f"{record}.hea")
        code = main(["analyze", "--model", str(reference_manifest),
                     str(shared_data / "cinc2021" / f"{record}.hea")])
        (analyzed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert code == 0
        for result in (report, analyzed):
            assert result["qc"]["status"] == "rejected", record
            assert result["findings"] == [] and result["interpretation_valid"] is False
            assert result["qc"]["reasons"] == report["qc"]["reasons"]
            assert "quality control rejected" in result["warning"]
    reasons = {record: _reports_of(wired, f"{record}.hea")[0]["qc"]["reasons"]
               for record in REJECTED}
    for lead in ("V2", "V4", "V6"):
        assert any(reason.endswith(f":{lead}") for reason in reasons["JS20004"])
    assert any(reason.endswith(":V6") for reason in reasons["JS20007"])


def test_pseudonym_is_the_keyed_hmac_of_the_identifier(wired: WiredRun) -> None:
    """The report's pseudonym equals HMAC-SHA256(pseudonym key, identifier), computed here
    from the key file; an unkeyed hash of the identifier would not match."""
    key = bytes.fromhex(wired.appliance.keys["pseudonym"].read_text().strip())
    expected = hmac.new(key, PATIENT_ID.encode("utf-8"), hashlib.sha256).hexdigest()
    (report,) = _reports_of(wired, "E07501.hea")
    assert report["patient"]["pseudonym"] == expected
    assert expected != hashlib.sha256(PATIENT_ID.encode("utf-8")).hexdigest()
    assert PATIENT_ID not in wired.log and PATIENT_ID not in json.dumps(wired.reports)


def test_report_ids_are_uuid5_of_content_and_window_and_stable_on_reprocessing(
        wired: WiredRun) -> None:
    """Every report id is UUIDv5(namespace, "file:<content sha256>:<window index>"), both
    computed here; dropping a finished input again yields the same ids, so its reports
    overwrite themselves and the folder gains no file."""
    for name, files in wired.dropped.items():
        digest = _content_digest(files)
        for report in _reports_of(wired, name):
            assert report["source"]["content_sha256"] == digest
            assert report["report_id"] == str(uuid.uuid5(
                REPORT_NAMESPACE, f"file:{digest}:{report['window']['index']}"))
    first = _reports_of(wired, "three-a.npz")
    assert [r["report_id"] for r in sorted(wired.redropped, key=lambda r: r["window"]["index"])
            ] == [r["report_id"] for r in first]
    names_after = [path.name for path in wired.appliance.report_files()]
    assert names_after == wired.report_names_before_redrop


def test_findings_belong_to_their_own_window(wired: WiredRun, shared_data: Path,
                                             reference_manifest: Path) -> None:
    """Each window's findings equal an independent inference of that window (ONNX Runtime
    called directly on the model file): the windows of two 3-window inputs, inferred by the
    daemon in shared batches, each carry their own record's probabilities."""
    import onnxruntime
    from scipy.special import expit

    from ecgd.model.manifest import load_manifest
    from ecgd.signal.preprocess import make_preprocessor

    manifest = load_manifest(reference_manifest)
    preprocess = make_preprocessor(manifest.preprocessing_profile,
                                   manifest.preprocessing_params, manifest.fs_hz, 50)
    session = onnxruntime.InferenceSession(str(manifest.onnx_path),
                                           providers=["CPUExecutionProvider"])
    for name, records in MULTI_WINDOW.items():
        signal = np.load(wired.dropped[name][0])["signal"]
        windows = np.stack([signal[:, 5000 * k:5000 * (k + 1)] for k in range(len(records))])
        (logits,) = session.run(None, {session.get_inputs()[0].name:
                                       preprocess(windows).astype(np.float32)})
        expected = expit(logits.astype(np.float64))
        reports = _reports_of(wired, name)
        assert [r["qc"]["status"] for r in reports] == ["accepted"] * len(records)
        for report, probabilities in zip(reports, expected):
            found = {f["label"]: f["probability"] for f in report["findings"]}
            assert len(found) == len(manifest.labels)
            np.testing.assert_allclose([found[label] for label in manifest.labels],
                                       probabilities, atol=1e-4)
        # The windows differ enough that a swap could not pass the check above.
        assert np.abs(expected[0] - expected[-1]).max() > 1e-3
