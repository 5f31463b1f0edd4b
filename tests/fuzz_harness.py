"""Mutation fuzzing of ecgd's readers and of ``ecgd analyze``, shared by the bounded run in the
suite (tests/test_fuzz_readers.py) and the long runs of tools/fuzz_readers.py.

A case is a ``Recipe``: a seed (a real recording from ../shared/data, or one derived from a
real one when the case is built: a 10-s cut, a CSV or .npz conversion) and a few
``Splice``s, each replacing ``delete`` bytes at ``offset`` of one of its files (or of one
member of an .npz archive, which is then re-packed with valid CRCs) with ``insert``. A
recipe rebuilds its files from ../shared/data anywhere, so a crasher is kept in the tests
as its recipe (JSON), never as a mutated copy of the data.

Mutations are chosen through a ``Chooser``: hypothesis' draws in the suite (shrinking a
failure to a small recipe), a seeded ``random.Random`` in the tool. Besides byte flips,
truncations and span deletions or copies, they replace numbers and texts of the
text formats with "interesting" values (0, -1, 1e308, NaN, 400, 99999999999999999999,
XXXX, an empty string, ...), which is how one reaches SampleExponent 400 or a day of
99999999999999999999.

The contract (``read_outcome``, ``check_report``): every input gives a validated Recording
(and then reports) or exactly one RecordError line naming the file; never another
exception, a NaN/Inf or an out-of-range value in a report.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import re
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Protocol, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")

ARCHIVE_MEMBER = ":"  # "rec.npz:signal.npy" names a member of an .npz archive


@dataclasses.dataclass(frozen=True)
class Splice:
    """Replace ``delete`` bytes at ``offset`` of ``file`` with ``insert``."""

    file: str
    offset: int
    delete: int
    insert: bytes

    def apply(self, data: bytes) -> bytes:
        offset = min(self.offset, len(data))
        return data[:offset] + self.insert + data[offset + self.delete:]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A seed and the splices that turn it into one fuzz case."""

    seed: str
    splices: Tuple[Splice, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"seed": self.seed,
                "splices": [{"file": s.file, "offset": s.offset, "delete": s.delete,
                             "insert": s.insert.hex()} for s in self.splices]}

    @classmethod
    def from_json(cls, value: Dict[str, Any]) -> "Recipe":
        return cls(value["seed"], tuple(Splice(s["file"], s["offset"], s["delete"],
                                               bytes.fromhex(s["insert"]))
                                        for s in value["splices"]))


# --- seeds: real recordings of every format, some derived when the case is built ---------

def _files(shared: Path, *relatives: str) -> Dict[str, bytes]:
    return {Path(r).name: (shared / r).read_bytes() for r in relatives}


def _wfdb_cut(shared: Path, relative: str, seconds: float) -> Dict[str, bytes]:
    """The first ``seconds`` of a single-file WFDB record (30-min records are too slow to
    analyze per case)."""
    header = (shared / f"{relative}.hea").read_text()
    lines = header.splitlines()
    fields = lines[0].split()
    n_signals, fs_hz = int(fields[1]), float(fields[2])
    n_samples = int(seconds * fs_hz)
    fields[3] = str(n_samples)
    fmt = lines[1].split()[1]
    bytes_per_frame = {"212": 1.5, "16": 2.0}[fmt] * n_signals
    name = Path(relative).name
    data = (shared / f"{relative}.dat").read_bytes()[:int(n_samples * bytes_per_frame)]
    return {f"{name}.hea": (" ".join(fields) + "\n" + "\n".join(lines[1:]) + "\n").encode(),
            f"{name}.dat": data}


def _ludb_csv(shared: Path) -> Dict[str, bytes]:
    """LUDB record 1 as the CSV convention (uV, with a time column), from its .dat."""
    header = (shared / "ludb" / "data" / "1.hea").read_text().splitlines()
    gains = [float(line.split()[2].split("(")[0]) for line in header[1:13]]
    baselines = [float(line.split()[2].split("(")[1].split(")")[0]) for line in header[1:13]]
    digital = np.frombuffer((shared / "ludb" / "data" / "1.dat").read_bytes(), "<i2")
    microvolts = (digital.reshape(-1, 12)[:5000] - baselines) / gains * 1000.0
    rows = [f"{i / 500:.3f}," + ",".join(f"{v:.1f}" for v in row)
            for i, row in enumerate(microvolts)]
    text = ("# fs_hz=500, units=uV\ntime_s,i,ii,iii,avr,avl,avf,v1,v2,v3,v4,v5,v6\n"
            + "\n".join(rows) + "\n")
    return {"ludb1.csv": text.encode()}


def _cinc_npz(shared: Path) -> Dict[str, bytes]:
    """CinC HR06004 as the .npz convention (int16 counts in uV), from its .mat."""
    digital = np.frombuffer((shared / "cinc2021" / "HR06004.mat").read_bytes()[24:], "<i2")
    buffer = io.BytesIO()
    np.savez(buffer, signal=digital.reshape(5000, 12).T.copy(), fs_hz=np.float64(500.0),
             lead_names=np.array(["I", "II", "III", "aVR", "aVL", "aVF",
                                  "V1", "V2", "V3", "V4", "V5", "V6"]), units=np.array("uV"))
    return {"HR06004.npz": buffer.getvalue()}


SEEDS: Dict[str, Callable[[Path], Dict[str, bytes]]] = {
    "wfdb-mat": lambda s: _files(s, "cinc2021/E07500.hea", "cinc2021/E07500.mat"),
    "wfdb-16": lambda s: _files(s, "ludb/data/1.hea", "ludb/data/1.dat"),
    "wfdb-16-egm": lambda s: _files(s, "ge-muse-xml/EGM/muse-af.hea",
                                    "ge-muse-xml/EGM/muse-af.dat"),
    "wfdb-16-two-files": lambda s: _files(s, "ptbdb/s0010_re.hea", "ptbdb/s0010_re.dat",
                                          "ptbdb/s0010_re.xyz"),
    "wfdb-212": lambda s: _wfdb_cut(s, "mitdb/100", 10.0),
    "wfdb-212-gain0": lambda s: _wfdb_cut(s, "nstdb/bw", 10.0),
    "wfdb-212-128hz": lambda s: _wfdb_cut(s, "svdb/800", 20.0),
    "csv": _ludb_csv,
    "npz": _cinc_npz,
    "dicom-ge": lambda s: _files(s, "dicom/example-DICOM1.dcm"),
    "dicom-mortara": lambda s: _files(s, "dicom/waveform_ecg.dcm"),
    "hl7": lambda s: _files(s, "hl7-aecg/Example aECG.xml"),
    "hl7-100hz": lambda s: _files(s, "hl7-aecg/hl7aecg_example.xml"),
    "muse": lambda s: _files(s, "ge-muse-xml/BRAVEHEART/example1.xml"),
    "muse-egm": lambda s: _files(s, "ge-muse-xml/EGM/muse-sinus.xml"),
    "cardiosoft": lambda s: _files(s, "ge-cardiosoft-xml/example-XML1.xml"),
    "philips-103": lambda s: _files(s, "philips-xml/129DYPRG.XML"),
    "philips-104-utf16": lambda s: _files(s, "philips-xml/3191723_ZZDEMOPTONLY_1-04_orig.xml"),
    "edf": lambda s: _files(s, "edf/0000050.ECG.edf"),
}


class SeedCache:
    """Each seed's files, built once from ../shared/data."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self._built: Dict[str, Dict[str, bytes]] = {}
        self._spans: Dict[Tuple[str, str, str], List[Tuple[int, int]]] = {}

    def files(self, seed: str) -> Dict[str, bytes]:
        if seed not in self._built:
            self._built[seed] = SEEDS[seed](self.shared)
        return self._built[seed]

    def token_spans(self, seed: str, target: str, kind: str) -> List[Tuple[int, int]]:
        """The character spans of the numbers (``kind`` "number") or element/attribute
        texts ("text") of one seed file, found once: mutations always start from the seed."""
        key = (seed, target, kind)
        if key not in self._spans:
            text = _as_text(_target_bytes(self.files(seed), target))
            spans: List[Tuple[int, int]] = []
            for match in (_NUMBER if kind == "number" else _TEXT).finditer(text):
                group = 0 if kind == "number" else (1 if match.group(1) is not None else 2)
                spans.append(match.span(group))
                if len(spans) >= 20000:  # enough spread, bounded cost
                    break
            self._spans[key] = spans
        return self._spans[key]


def build(recipe: Recipe, seeds: SeedCache, folder: Path) -> Path:
    """Write the recipe's files into ``folder``; return the primary file (the first)."""
    files = dict(seeds.files(recipe.seed))
    members: Dict[str, Dict[str, bytes]] = {}
    for splice in recipe.splices:
        if ARCHIVE_MEMBER in splice.file:
            archive, member = splice.file.split(ARCHIVE_MEMBER, 1)
            if archive not in members:
                with zipfile.ZipFile(io.BytesIO(files[archive])) as zipped:
                    members[archive] = {name: zipped.read(name) for name in zipped.namelist()}
            members[archive][member] = splice.apply(members[archive][member])
            files[archive] = _zip(members[archive])
        else:
            files[splice.file] = splice.apply(files[splice.file])
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder / next(iter(files))


def _zip(members: Dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


# --- mutations -----------------------------------------------------------------------------

class Chooser(Protocol):
    """Where a mutation's choices come from (hypothesis draws, or a seeded Random)."""

    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...


class RandomChooser:
    """Choices from a seeded ``random.Random`` (the long runs of the tool)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]


INTERESTING_NUMBERS = [
    b"0", b"-1", b"1", b"2", b"3", b"7", b"22", b"400", b"-400", b"9999", b"65536",
    b"4294967296", b"99999999999999999999", b"1e308", b"-1e308", b"1e-308", b"nan", b"inf",
    b"-inf", b"0.0001", b"", b"XXXX", b"+9999", b"-0", b"0x10", b"1.5",
]
INTERESTING_TEXTS = [
    b"", b"XXXX", b"XXXX XXXX", b"\x00", b"&amp;", b"<", "\u00e9\u00e8".encode(), b"x" * 300,
    b" ", b"MDC_ECG_LEAD_X", b"Q7Z3", b"-", b"\xff\xfe", b"0000",
]
INTERESTING_INTS = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
                    0x80000000, 0xFFFFFFFF]
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_TEXT = re.compile(r'>([^<>]{1,80})<|"([^"]{0,80})"')
_TEXT_SUFFIXES = (".hea", ".xml", ".csv")


def mutate(seed: str, seeds: SeedCache, chooser: Chooser, max_mutations: int = 3) -> Recipe:
    """A recipe of 1-``max_mutations`` mutations of ``seed``'s files (each one made on the
    seed's own bytes)."""
    files = seeds.files(seed)
    splices = []
    for _ in range(chooser.integer(1, max_mutations)):
        target = _target(files, chooser)
        splices.append(_mutation(seed, target, _target_bytes(files, target), seeds, chooser))
    return Recipe(seed, tuple(splices))


def _target(files: Dict[str, bytes], chooser: Chooser) -> str:
    """The file to mutate: headers (the first file) twice as often as data files; for an
    .npz, one of its members."""
    names = list(files)
    name = chooser.choice([names[0]] + names)
    if name.endswith(".npz"):
        with zipfile.ZipFile(io.BytesIO(files[name])) as zipped:
            return name + ARCHIVE_MEMBER + chooser.choice(sorted(zipped.namelist()))
    return name


def _target_bytes(files: Dict[str, bytes], target: str) -> bytes:
    if ARCHIVE_MEMBER in target:
        archive, member = target.split(ARCHIVE_MEMBER, 1)
        with zipfile.ZipFile(io.BytesIO(files[archive])) as zipped:
            return zipped.read(member)
    return files[target]


def _mutation(seed: str, target: str, data: bytes, seeds: SeedCache,
              chooser: Chooser) -> Splice:
    """One splice of ``data`` (the bytes of ``target``) of a chosen kind."""
    is_text = target.lower().endswith(_TEXT_SUFFIXES) or target.endswith(".npy")
    # mostly in-place edits, which keep a file's structure and reach the decoders
    kinds = ["bytes", "bytes", "integer", "integer", "truncate", "delete", "copy"]
    if is_text:
        kinds += ["number"] * 5 + ["text"] * 3
    kind = chooser.choice(kinds)
    size = len(data)
    offset = chooser.integer(0, max(size - 1, 0))
    if kind in ("number", "text"):
        spans = seeds.token_spans(seed, target, kind)
        if spans:
            return _token_splice(target, data, chooser.choice(spans), kind, chooser)
        kind = "bytes"
    if kind == "bytes":
        length = chooser.integer(1, 8)
        return Splice(target, offset, length,
                      bytes(chooser.integer(0, 255) for _ in range(length)))
    if kind == "integer":
        width = chooser.choice([1, 2, 4])
        value = chooser.choice(INTERESTING_INTS) & ((1 << (8 * width)) - 1)
        order = chooser.choice(["little", "big"])
        return Splice(target, offset, width, value.to_bytes(width, order))  # type: ignore[arg-type]
    if kind == "truncate":
        return Splice(target, offset, size, b"")
    if kind == "delete":
        return Splice(target, offset, chooser.integer(1, 256), b"")
    start = chooser.integer(0, max(size - 1, 0))
    return Splice(target, offset, 0, data[start:start + chooser.integer(1, 512)])


def _as_text(data: bytes) -> str:
    """A file as text: UTF-16 where it has a byte-order mark, else one character per byte."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data[2:].decode("utf-16-le" if data[:2] == b"\xff\xfe" else "utf-16-be",
                               errors="replace")
    return data.decode("latin-1")


def _token_splice(target: str, data: bytes, span: Tuple[int, int], kind: str,
                  chooser: Chooser) -> Splice:
    """Replace one number (or element/attribute text) at character ``span`` with an
    interesting value; in a UTF-16 file the splice is made of UTF-16 bytes."""
    start, end = span
    value = chooser.choice(INTERESTING_NUMBERS if kind == "number" else INTERESTING_TEXTS)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16-le" if data[:2] == b"\xff\xfe" else "utf-16-be"
        return Splice(target, 2 + 2 * start, 2 * (end - start),
                      value.decode("latin-1").encode(encoding))
    return Splice(target, start, end - start, value)


# --- the contract --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outcome:
    """What reading one case gave: ``read`` (a validated recording), ``refused`` (one
    RecordError line) or ``crash`` (anything else: a contract violation)."""

    kind: str
    detail: str


def read_outcome(path: Path, max_bytes: int = 64 * 1024 * 1024) -> Outcome:
    """Read ``path`` as ``ecgd analyze`` does and classify what happened."""
    from ecgd.errors import RecordError
    from ecgd.records.reader import read_recording

    try:
        recording = read_recording(path, max_bytes)
    except RecordError as exc:
        message = str(exc)
        if "\n" in message or not message.startswith(f"{path.name}: "):
            return Outcome("crash", f"refusal is not one line naming the file: {message!r}")
        return Outcome("refused", message)
    except Exception:  # the contract: nothing else may escape a reader
        return Outcome("crash", traceback.format_exc())
    problems = recording_problems(recording)
    if problems:
        return Outcome("crash", problems)
    return Outcome("read", f"{recording.format} {recording.samples_mv.shape} "
                           f"{recording.fs_hz:g} Hz")


def recording_problems(recording: Any) -> str:
    """What is wrong with a Recording a reader returned (empty when nothing)."""
    samples = recording.samples_mv
    if samples.dtype != np.float32 or samples.ndim != 2 or samples.shape[1] == 0:
        return f"samples are {samples.dtype} {samples.shape}"
    if not np.all(np.isfinite(samples)):
        return "non-finite samples"
    if not (100.0 <= recording.fs_hz <= 10000.0):
        return f"rate {recording.fs_hz!r} passed validation"
    return ""


def report_problems(line: str) -> str:
    """What is wrong with one JSON report line of ``ecgd analyze`` (empty when nothing):
    NaN or Inf anywhere, a probability outside [0, 1], a negative heart rate."""
    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} in a report")

    try:
        report = json.loads(line, parse_constant=refuse_constant)
    except ValueError as exc:
        return str(exc)
    numbers: List[float] = []
    _collect_numbers(report, numbers)
    if not all(math.isfinite(n) for n in numbers):
        return "a non-finite number"
    for finding in report.get("findings", []):
        if not 0.0 <= finding["probability"] <= 1.0:
            return "a probability outside [0, 1]"
    heart_rate = report["measurements"]["heart_rate_bpm"]
    if heart_rate is not None and not 0 < heart_rate < 1000:
        return "a heart rate outside (0, 1000) bpm"
    return ""


def _collect_numbers(value: Any, out: List[float]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect_numbers(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect_numbers(item, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append(float(value))
