"""``ecgd batch`` end to end on the one-machine engine: real records, real worker processes,
SIGKILL, and the tables checked against ``ecgd analyze``."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from batch_helpers import (assert_exactly_once, batch_command, children, committed_shards,
                           config_file, events, kill, read_table, run_batch, run_folder,
                           shards_in, wait_for, write_window_archive)
from ecgd.cli import main
from ecgd.records.companions import wfdb_signal_files
from ecgd.security.pseudonym import hash_name, redact_names
from model_helpers import write_tiny_model

pytest.importorskip("pyarrow")

PSEUDONYM_KEY = bytes.fromhex("ab" * 32)
GOOD = ["cinc/E07500.hea", "cinc/HR06004.hea", "ludb/1.hea", "vendors/example-DICOM1.dcm",
        "vendors/129DYPRG.XML"]
BAD = ["bad/empty.csv", "bad/notes.txt", "bad/E07501.hea", "bad/big.csv"]


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory, ecgfounder_labels) -> Path:
    labels = tuple(ecgfounder_labels.read_text().splitlines())
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), labels)


def _archive(shared_data: Path, root: Path) -> Path:
    """Real records in the formats ecgd reads, WFDB annotation files beside their header,
    and bad inputs: empty, not an ECG, a truncated signal file, over the size limit; a
    hidden file, a link inside the tree and a link leaving it."""
    copies = {"cinc": ["cinc2021/E07500.hea", "cinc2021/E07500.mat", "cinc2021/HR06004.hea",
                       "cinc2021/HR06004.mat"],
              "ludb": ["ludb/data/1.hea", "ludb/data/1.dat", "ludb/data/1.i", "ludb/data/1.v6"],
              "vendors": ["dicom/example-DICOM1.dcm", "philips-xml/129DYPRG.XML"],
              "bad": ["cinc2021/E07501.hea"]}
    archive = root / "archive"
    for folder, files in copies.items():
        (archive / folder).mkdir(parents=True)
        for name in files:
            shutil.copyfile(shared_data / name, archive / folder / Path(name).name)
    signal_bytes = (shared_data / "cinc2021" / "E07501.mat").read_bytes()
    (archive / "bad" / "E07501.mat").write_bytes(signal_bytes[: len(signal_bytes) // 2])
    (archive / "bad" / "empty.csv").write_bytes(b"")
    (archive / "bad" / "notes.txt").write_text("ward 7 ECG archive, do not delete\n")
    (archive / "bad" / "big.csv").write_bytes(b"1,2,3\n" * 200_000)  # 1.2 MB, over the limit
    (archive / ".hidden.csv").write_text("not an input\n")
    (archive / "inside-link.hea").symlink_to(archive / "cinc" / "E07500.hea")
    (archive / "outside-link.hea").symlink_to(shared_data / "cinc2021" / "E07502.hea")
    return archive


def _analyze(capsys, manifest: Path, config: Path, path: Path) -> Tuple[List[dict], str]:
    code = main(["analyze", "--model", str(manifest), "--config", str(config), str(path)])
    captured = capsys.readouterr()
    reports = [json.loads(line) for line in captured.out.splitlines()]
    assert (code == 0) == bool(reports)
    return reports, captured.err.strip().removeprefix("ecgd: ")


def _names(path: Path) -> List[str]:
    names = [path.name, path.stem]
    return names + (wfdb_signal_files(path) if path.suffix == ".hea" and path.exists() else [])


def test_tables_hold_what_analyze_reports_and_errors_give_its_reasons(
        tmp_path, shared_data, tiny_manifest, capsys) -> None:
    """Each window row is the analyze report flattened (names hashed); each bad input is one
    error row with analyze's reason; links leaving the tree are refused, never read."""
    archive = _archive(shared_data, tmp_path)
    config = config_file(tmp_path, "[limits]\nmax_input_bytes = 1000000\n")
    out = tmp_path / "out"
    result = run_batch(archive, "--out", out, "--model", tiny_manifest, "--config", config)
    assert result.returncode == 1, result.stderr  # some inputs are in the errors table
    run_dir = run_folder(out)
    windows = read_table(run_dir, "windows")
    errors = {row["source_name_hash"]: row for row in read_table(run_dir, "errors")}
    rows = {row["report_id"]: row for row in windows}

    expected_reports: List[dict] = []
    for relative in GOOD:
        path = archive.resolve() / relative
        reports, _ = _analyze(capsys, tiny_manifest, config, path)
        for report in reports:
            row = rows[report["report_id"]]
            assert row["source_name_hash"] == hash_name(str(path), PSEUDONYM_KEY)
            _assert_row_is_report(row, report)
        expected_reports += reports
    assert len(windows) == len(expected_reports)

    for relative in BAD:
        path = archive.resolve() / relative
        _, reason = _analyze(capsys, tiny_manifest, config, path)
        reason = reason.removeprefix(f"{path.parent}/")  # analyze names the path given
        name_hash = hash_name(str(path), PSEUDONYM_KEY)
        assert errors.pop(name_hash)["reason"] == redact_names(reason, _names(path), name_hash)
    outside = archive.resolve() / "outside-link.hea"
    refused = errors.pop(hash_name(str(outside), PSEUDONYM_KEY))
    assert refused["reason"].endswith("symbolic link leading outside the source folders; "
                                      "not followed")
    assert refused["source_content_sha256"] is None
    assert errors == {}  # nothing else: no companion, hidden file or inner link became an input

    every_value = json.dumps([windows, list(read_table(run_dir, "errors"))])
    for name in ("E07500", "HR06004", "DICOM1", "129DYPRG", "notes", "big.csv", "E07502"):
        assert name not in every_value
        assert name.encode() not in (run_dir / "run.json").read_bytes()
        assert name.encode() not in (run_dir / "ledger.sqlite").read_bytes()
    finished, = events(result.stderr, "batch_finished")
    assert finished["analysed"] == len(GOOD) + len(BAD) + 1 and finished["failed"] == 5


def _assert_row_is_report(row: Dict, report: Dict) -> None:
    flat: Dict = {}

    def walk(value: Dict, prefix: str) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                walk(item, f"{prefix}{key}_")
            else:
                flat[f"{prefix}{key}"] = item
    walk(report, "")
    for name, value in flat.items():
        if name in ("created_at", "source_file", "findings") or name.startswith(
                ("timing_ms_", "waveform_")):
            continue
        assert row[name] == value, name
    # Windows are inferred in batches across inputs here and one recording at a time by
    # analyze: ORT's kernels then round differently, by at most one unit of the 6th decimal.
    probabilities = {f"prob_{f['label']}": f["probability"] for f in report["findings"]}
    assert probabilities == pytest.approx({k: v for k, v in row.items()
                                           if k.startswith("prob_") and v is not None},
                                          rel=0, abs=1.5e-6)
    assert row["findings_above_threshold"] == [f["label"] for f in report["findings"]
                                               if f["above_threshold"]]
    assert row["timing_ms_inference"] >= 0


def test_killed_workers_and_a_killed_batch_still_commit_every_input_once(
        tmp_path, shared_data, reference_manifest) -> None:
    """A worker SIGKILLed mid-batch is replaced; the batch SIGKILLed mid-run, started again
    with the same arguments, finishes the rest: every input once, none analysed twice."""
    count = 96
    write_window_archive(shared_data, tmp_path / "archive", count)
    out = tmp_path / "out"
    args = [tmp_path / "archive", "--out", out, "--model", reference_manifest, "--format",
            "jsonl", "--workers", "2", "--batch", "1", "--shard-windows", "4"]
    batch = subprocess.Popen(batch_command(*args), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: shards_in(out) >= 1, 120, "a first shard")
        run_dir = run_folder(out)
        workers = children(batch.pid)
        assert len(workers) == 2
        kill(workers[0])
        wait_for(lambda: committed_shards(run_dir) >= 4, 120, "shards after the worker died")
        kill(batch.pid)
        batch.wait(30)
    finally:
        kill(batch.pid)
        batch.communicate()
    for worker in workers[1:]:  # orphaned workers exit on their own once the pipe is gone
        wait_for(lambda: not Path(f"/proc/{worker}").exists()
                 or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2], 30,
                 "the orphaned worker to exit")
    committed_before = committed_shards(run_dir)
    assert 4 <= committed_before < count // 4 + 1
    for part in (run_dir / "windows").iterdir():  # published shards are whole
        assert all(json.loads(line) for line in part.read_text().splitlines())

    again = run_batch(*args)
    assert again.returncode == 0, again.stderr
    started, = events(again.stderr, "batch_started")
    finished, = events(again.stderr, "batch_finished")
    assert finished["skipped"] == started["committed_before"] > 0
    assert finished["analysed"] == count - started["committed_before"]
    assert finished["duplicates"] == 0
    assert_exactly_once(run_dir, count)
    assert len(read_table(run_dir, "windows")) == count


def test_changed_model_is_refused_unless_new_run_and_old_results_are_kept(
        tmp_path, shared_data, tiny_manifest, ecgfounder_labels) -> None:
    """Same arguments, another model: exit 2; with --new-run a second run folder, the
    first untouched; an --out holding anything else is refused too."""
    write_window_archive(shared_data, tmp_path / "archive", 3)
    out = tmp_path / "out"
    first = run_batch(tmp_path / "archive", "--out", out, "--model", tiny_manifest)
    assert first.returncode == 0, first.stderr
    old_run = run_folder(out)
    before = {p: p.read_bytes() for p in old_run.rglob("*") if p.is_file()
              and not p.name.startswith("ledger.sqlite")}
    other = write_tiny_model(tmp_path / "other", tuple(
        ecgfounder_labels.read_text().splitlines()), seed=1)

    refused = run_batch(tmp_path / "archive", "--out", out, "--model", other)
    assert refused.returncode == 2
    assert "the model differ from the run already there; give --new-run" in refused.stderr
    renewed = run_batch(tmp_path / "archive", "--out", out, "--model", other, "--new-run")
    assert renewed.returncode == 0, renewed.stderr
    assert len(list(out.iterdir())) == 2
    assert before == {p: p.read_bytes() for p in before}

    elsewhere = run_batch(shared_data / "dicom", "--out", out, "--model", tiny_manifest)
    assert elsewhere.returncode == 2 and "a batch over other sources" in elsewhere.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "results.csv").write_text("someone else's\n")
    foreign = run_batch(tmp_path / "archive", "--out", tmp_path / "busy", "--model",
                        tiny_manifest)
    assert foreign.returncode == 2 and "not ecgd batch runs" in foreign.stderr
    assert (tmp_path / "busy" / "results.csv").read_text() == "someone else's\n"


def test_the_appliance_never_imports_the_batch_engine(tmp_path, shared_data,
                                                      tiny_manifest) -> None:
    """`ecgd analyze` (and the daemon's module) run with pyarrow and Ray unimportable (as on
    the appliance, which installs neither) and never load ecgd.batch."""
    probe = (
        "import sys\n"
        "sys.modules.update(pyarrow=None, ray=None)  # import pyarrow/ray raises ImportError\n"
        "from ecgd.cli import main\n"
        "import ecgd.daemon\n"
        f"main(['analyze', '--model', {str(tiny_manifest)!r}, "
        f"{str(shared_data / 'cinc2021' / 'HR06004.hea')!r}])\n"
        "loaded = [m for m in sys.modules if m.startswith('ecgd.batch')]\n"
        "print('LOADED', loaded, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stderr
    assert result.stdout.count("\n") == 1  # the one report: analyze really ran


def test_ctrl_c_leaves_a_run_that_resumes(tmp_path, shared_data, tiny_manifest) -> None:
    """SIGINT stops the batch with exit 130, committing what finished; started again, the
    run completes with every input once."""
    count = 120
    write_window_archive(shared_data, tmp_path / "archive", count)
    out = tmp_path / "out"
    args = [tmp_path / "archive", "--out", out, "--model", tiny_manifest, "--format", "jsonl",
            "--workers", "1", "--batch", "1", "--shard-windows", "10"]
    batch = subprocess.Popen(batch_command(*args), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: shards_in(out) >= 1, 60, "a first shard")
        os.kill(batch.pid, signal.SIGINT)
        assert batch.wait(60) == 130
    finally:
        kill(batch.pid)
        batch.communicate()
    interrupted = len(read_table(run_folder(out), "windows"))
    assert 10 <= interrupted < count
    again = run_batch(*args)
    assert again.returncode == 0, again.stderr
    assert_exactly_once(run_folder(out), count)


def test_analyse_inputs_keeps_order_and_batches_across_inputs(tmp_path, shared_data,
                                                              tiny_manifest) -> None:
    """The Ray actors' per-call work gives one result per path in the paths' order (errors
    and skips between prepared inputs), the same rows as each input finished on its own."""
    from ecgd.batch.table import window_columns
    from ecgd.batch.work import (ERROR, SKIPPED, WINDOWS, CommittedKeys, WorkSettings,
                                 analyse_inputs, finish_inputs, input_key, prepare_input)
    from ecgd.config import Config
    from ecgd.model.session import ModelSession

    good = write_window_archive(shared_data, tmp_path / "in", 4)
    bad = tmp_path / "in" / "notes.txt"
    bad.write_text("not an ECG\n")
    config = Config()
    settings = WorkSettings(config.window, config.qc, config.measurements,
                            config.preprocess.mains_hz, config.limits.max_input_bytes,
                            config.limits.max_input_samples, 3, None)
    analyzer = settings.analyzer(ModelSession.open(tiny_manifest, 1))
    committed = CommittedKeys([input_key(good[3], settings)])
    paths = [good[0], bad, good[1], good[2], good[3]]

    results = analyse_inputs(paths, analyzer, settings, committed)

    assert [result.outcome for result in results] == [WINDOWS, ERROR, WINDOWS, WINDOWS,
                                                      SKIPPED]
    assert [result.key for result in results] == [input_key(path, settings) for path in paths]
    names = [name for name, _ in window_columns(analyzer.manifest.labels)]
    for path, result in zip([good[0], good[1], good[2]], [results[0], results[2], results[3]]):
        alone, = finish_inputs(analyzer, [prepare_input(path, analyzer, settings, committed)])
        batched_rows = [dict(zip(names, row)) for row in result.window_rows]
        alone_rows = [dict(zip(names, row)) for row in alone.window_rows]
        assert [row["report_id"] for row in batched_rows] == \
            [row["report_id"] for row in alone_rows]
        for row, alone_row in zip(batched_rows, alone_rows):
            probabilities = [name for name in names if name.startswith("prob_")]
            assert probabilities and row[probabilities[0]] is not None
            assert max(abs(row[name] - alone_row[name]) for name in probabilities) <= 1e-6


def test_ctrl_c_during_a_shard_commit_finishes_that_shard_first(tmp_path, shared_data,
                                                               tiny_manifest,
                                                               monkeypatch) -> None:
    """A real SIGINT that arrives while a shard is published (after its ledger row) is
    raised only once the shard is whole; the commit the interrupted batch makes on its way
    out then has nothing left to do. Before, the shard stayed pending, was written again
    and the ledger refused it (exit 74 instead of 130, seen as a flaky Ctrl-C test)."""
    import ecgd.batch.run as run_module
    from ecgd.batch.run import Committer, open_run, run_identity
    from ecgd.batch.work import CommittedKeys, WorkSettings, analyse_inputs
    from ecgd.config import Config
    from ecgd.model.manifest import load_manifest
    from ecgd.model.session import ModelSession

    inputs = write_window_archive(shared_data, tmp_path / "in", 3)
    config = Config()
    settings = WorkSettings(config.window, config.qc, config.measurements,
                            config.preprocess.mains_hz, config.limits.max_input_bytes,
                            config.limits.max_input_samples, 3, None)
    manifest = load_manifest(tiny_manifest)
    analyzer = settings.analyzer(ModelSession.open(tiny_manifest, 1))
    results = analyse_inputs(inputs, analyzer, settings, CommittedKeys([]))
    out = tmp_path / "out"
    run = open_run(out, run_identity([tmp_path / "in"], "jsonl", manifest, settings),
                   manifest.labels, False)
    committer = Committer(run, shard_windows=1000)
    for result in results:
        committer.add(result)
    real_fsync_directory = run_module.fsync_directory

    def ctrl_c_while_publishing(folder):
        os.kill(os.getpid(), signal.SIGINT)
        real_fsync_directory(folder)

    monkeypatch.setattr(run_module, "fsync_directory", ctrl_c_while_publishing)
    with pytest.raises(KeyboardInterrupt):
        committer.commit()
    monkeypatch.setattr(run_module, "fsync_directory", real_fsync_directory)
    committer.commit()  # what `ecgd batch` does on its way out after Ctrl-C
    run.close()
    assert_exactly_once(run_folder(out), len(inputs))
