"""Compare `ecgd analyze` reports from two machines (x86-64 and arm64), field by field.

Used by tools/arm64_check.sh. The comparison is generic, so it keeps working when reports
gain fields: every leaf of every report is compared, and every difference is printed.

- Reports are paired by ``report_id`` (derived from the input's content and the window
  index, so both machines give the same ids).
- Per-run facts are skipped: ``created_at``, ``timing_ms`` and ``host``.
- A list of objects that all carry a ``label`` (the findings) is compared as a mapping by
  label, so two near-tied probabilities swapping places is not a difference in itself.
- ``probability`` must agree within ``--probability-tolerance`` (FP32: 1e-4) or within the
  ``probability_abs_diff_max`` that ``ecgd model quantize`` wrote in its agreement report
  (``--agreement``, for INT8). ``above_threshold`` may differ only where the probability is
  within that tolerance of the threshold.
- Numbers whose key names a unit use the issue's tolerances: ``*_bpm`` 0.5 bpm, ``*_ms``
  1 ms (list items inherit their list's key). Any other number must agree to 1e-6
  (relative): a new measurement without a unit suffix is flagged rather than waved through.
- Strings, booleans, integers, nulls (QC status and reasons among them) must be identical.
- The report's ``waveform`` (the window's samples, encoded) is decoded and compared sample
  by sample: within 1 uV, since each sample is rounded to 1 uV and a value on a rounding
  edge may land either side.

``inputs`` writes the CSV and NumPy copies of one recording, for the formats the shared
recordings do not include.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ecgd.errors import TamperedError
from ecgd.report_waveform import decode_waveform

SKIPPED_KEYS = frozenset({"created_at", "timing_ms", "host"})
UNIT_TOLERANCES = {"_bpm": 0.5, "_ms": 1.0}  # issue 17: heart rate 0.5 bpm, intervals 1 ms
UNITLESS_REL_TOLERANCE = 1e-6
PROBABILITY_KEY = "probability"
WAVEFORM_KEY = "waveform"
WAVEFORM_TOLERANCE_UV = 1


class Comparison:
    """Walks two reports together; collects differences and the largest deviation per key."""

    def __init__(self, probability_tolerance: float) -> None:
        self.probability_tolerance = probability_tolerance
        self.differences: List[str] = []
        self.max_abs_diff: Dict[str, float] = {}

    def _tolerance(self, key: str) -> Optional[float]:
        if key == PROBABILITY_KEY:
            return self.probability_tolerance
        for suffix, tolerance in UNIT_TOLERANCES.items():
            if key.endswith(suffix):
                return tolerance
        return None

    def _differ(self, where: str, x86: Any, arm64: Any, why: str) -> None:
        self.differences.append(f"{where}: x86={json.dumps(x86)} arm64={json.dumps(arm64)} ({why})")

    def _numbers(self, where: str, key: str, x86: float, arm64: float) -> None:
        abs_diff = abs(float(x86) - float(arm64))
        self.max_abs_diff[key] = max(self.max_abs_diff.get(key, 0.0), abs_diff)
        tolerance = self._tolerance(key)
        if tolerance is not None:
            if abs_diff > tolerance:
                self._differ(where, x86, arm64, f"|difference| {abs_diff:.3g} > {tolerance:g}")
        elif not math.isclose(x86, arm64, rel_tol=UNITLESS_REL_TOLERANCE, abs_tol=1e-12):
            self._differ(where, x86, arm64,
                         f"|difference| {abs_diff:.3g}, beyond relative {UNITLESS_REL_TOLERANCE:g}")

    def walk(self, where: str, key: str, x86: Any, arm64: Any) -> None:
        """Compare one value of both reports; ``key`` is the nearest object key (for units)."""
        if key == WAVEFORM_KEY and isinstance(x86, dict) and isinstance(arm64, dict):
            self._waveforms(where, x86, arm64)
        elif isinstance(x86, dict) and isinstance(arm64, dict):
            self._objects(where, x86, arm64)
        elif isinstance(x86, list) and isinstance(arm64, list):
            if _is_labelled(x86) and _is_labelled(arm64):
                self._labelled(where, x86, arm64)
            elif len(x86) != len(arm64):
                self._differ(where, len(x86), len(arm64), "list lengths differ")
            else:
                for index, (x, a) in enumerate(zip(x86, arm64)):
                    self.walk(f"{where}[{index}]", key, x, a)
        elif _is_real(x86) and _is_real(arm64) and (isinstance(x86, float) or isinstance(arm64, float)):
            self._numbers(where, key, x86, arm64)
        elif type(x86) is not type(arm64) or x86 != arm64:
            self._differ(where, x86, arm64, "not identical")

    def _objects(self, where: str, x86: Dict[str, Any], arm64: Dict[str, Any]) -> None:
        for key in sorted(set(x86) | set(arm64)):
            if key in SKIPPED_KEYS:
                continue
            path = f"{where}.{key}" if where else key
            if key not in arm64 or key not in x86:
                self._differ(path, x86.get(key), arm64.get(key), "present on one side only")
            else:
                self.walk(path, key, x86[key], arm64[key])

    def _waveforms(self, where: str, x86: Dict[str, Any], arm64: Dict[str, Any]) -> None:
        """The encoded samples: decoded, then compared sample by sample (the rest as usual)."""
        self._objects(where, {k: v for k, v in x86.items() if k != "data"},
                      {k: v for k, v in arm64.items() if k != "data"})
        try:
            x86_uv, arm64_uv = (decode_waveform(w).samples_uv for w in (x86, arm64))
        except TamperedError as exc:
            self._differ(f"{where}.data", "...", "...", str(exc))
            return
        if x86_uv.shape != arm64_uv.shape:
            self._differ(f"{where}.data", x86_uv.shape, arm64_uv.shape, "shapes differ")
            return
        abs_diff_uv = np.abs(x86_uv - arm64_uv)
        key = "waveform_uv"
        self.max_abs_diff[key] = max(self.max_abs_diff.get(key, 0.0),
                                     float(abs_diff_uv.max(initial=0)))
        for lead_index, lead in enumerate(x86.get("lead_names", [])):
            beyond = np.flatnonzero(abs_diff_uv[lead_index] > WAVEFORM_TOLERANCE_UV)
            if beyond.size:
                first = int(beyond[0])
                self._differ(f"{where}.data[{lead}][{first}]", int(x86_uv[lead_index, first]),
                             int(arm64_uv[lead_index, first]),
                             f"{beyond.size} samples beyond {WAVEFORM_TOLERANCE_UV} uV")

    def _labelled(self, where: str, x86: List[Dict[str, Any]], arm64: List[Dict[str, Any]]) -> None:
        x86_by_label = {item["label"]: item for item in x86}
        arm64_by_label = {item["label"]: item for item in arm64}
        if len(x86_by_label) != len(x86) or len(arm64_by_label) != len(arm64):
            self._differ(where, len(x86), len(arm64), "a label appears twice")
        for label in sorted(set(x86_by_label) | set(arm64_by_label)):
            path = f"{where}[{label}]"
            x, a = x86_by_label.get(label), arm64_by_label.get(label)
            if x is None or a is None:
                self._differ(path, x is not None, a is not None, "label present on one side only")
                continue
            self._objects(path, {k: v for k, v in x.items() if k != "above_threshold"},
                          {k: v for k, v in a.items() if k != "above_threshold"})
            self._threshold_side(path, x, a)

    def _threshold_side(self, where: str, x86: Dict[str, Any], arm64: Dict[str, Any]) -> None:
        """``above_threshold`` may flip only for a probability within tolerance of the threshold."""
        if x86.get("above_threshold") == arm64.get("above_threshold"):
            return
        near = all(isinstance(item.get(PROBABILITY_KEY), (int, float))
                   and isinstance(item.get("threshold"), (int, float))
                   and abs(item[PROBABILITY_KEY] - item["threshold"]) <= self.probability_tolerance
                   for item in (x86, arm64))
        if not near:
            self._differ(f"{where}.above_threshold", x86.get("above_threshold"),
                         arm64.get("above_threshold"), "flipped away from the threshold")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_labelled(items: List[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "label" in item for item in items)


def read_reports(path: Path) -> Dict[str, Dict[str, Any]]:
    """The JSON Lines reports of ``path`` by report id (a repeated id is an error)."""
    reports: Dict[str, Dict[str, Any]] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        report = json.loads(line)
        report_id = report.get("report_id")
        if not isinstance(report_id, str) or report_id in reports:
            raise SystemExit(f"{path}: line {line_number}: missing or repeated report_id")
        reports[report_id] = report
    return reports


def int8_tolerance(agreement_path: Path) -> float:
    """The largest INT8-vs-FP32 probability difference the quantize report states."""
    agreement = json.loads(agreement_path.read_text(encoding="utf-8"))
    value = agreement.get("probability_abs_diff_max")
    if not _is_real(value):
        raise SystemExit(f"{agreement_path}: no numeric probability_abs_diff_max; "
                         "the quantize agreement report changed shape")
    return float(value)


def describe(report: Dict[str, Any]) -> str:
    source, window = report.get("source", {}), report.get("window", {})
    return f"{report.get('report_id')} ({source.get('format')} {source.get('file')} " \
           f"window {window.get('index')})"


def compare_runs(x86_path: Path, arm64_path: Path, probability_tolerance: float,
                 what: str) -> int:
    """Print every difference and a summary line; return the number of differences."""
    x86_reports, arm64_reports = read_reports(x86_path), read_reports(arm64_path)
    differences: List[str] = []
    comparison_maxima: Dict[str, float] = {}
    for report_id in sorted(set(x86_reports) - set(arm64_reports)):
        differences.append(f"{describe(x86_reports[report_id])}: only in the x86 run")
    for report_id in sorted(set(arm64_reports) - set(x86_reports)):
        differences.append(f"{describe(arm64_reports[report_id])}: only in the arm64 run")
    for report_id in sorted(set(x86_reports) & set(arm64_reports)):
        comparison = Comparison(probability_tolerance)
        comparison.walk("", "", x86_reports[report_id], arm64_reports[report_id])
        differences.extend(f"{describe(x86_reports[report_id])}: {d}"
                           for d in comparison.differences)
        for key, value in comparison.max_abs_diff.items():
            comparison_maxima[key] = max(comparison_maxima.get(key, 0.0), value)
    for line in differences:
        print(f"{what} DIFFERENCE {line}")
    paired = [x86_reports[i] for i in set(x86_reports) & set(arm64_reports)]
    accepted = sum(1 for r in paired if r.get("qc", {}).get("status") == "accepted")
    formats = sorted({str(r.get("source", {}).get("format")) for r in paired})
    maxima = ", ".join(f"{key} {value:.3g}" for key, value in sorted(comparison_maxima.items()))
    print(f"{what}: {len(paired)} windows paired ({accepted} accepted by QC; formats "
          f"{' '.join(formats)}); probability tolerance {probability_tolerance:.3g}; "
          f"{len(differences)} differences; largest |x86 - arm64|: {maxima or 'none'}")
    return len(differences)


def write_array_inputs(recording_path: Path, out_dir: Path) -> None:
    """Write RECORDING as ``.npz`` (signal in mV) and ``.csv`` (in uV), deterministically."""
    from ecgd.config import LimitsConfig
    from ecgd.records.reader import read_recording

    recording = read_recording(recording_path, LimitsConfig().max_input_bytes)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = recording_path.stem
    np.savez(out_dir / f"{stem}.npz", signal=recording.samples_mv, fs_hz=recording.fs_hz,
             lead_names=np.array(recording.lead_names), units="mV")
    rows = np.round(recording.samples_mv.T.astype(np.float64) * 1000.0, 3)
    with open(out_dir / f"{stem}.csv", "w", encoding="ascii") as csv_file:
        csv_file.write(f"# fs_hz={recording.fs_hz:g}, units=uV\n")
        csv_file.write(",".join(recording.lead_names) + "\n")
        np.savetxt(csv_file, rows, delimiter=",", fmt="%.3f")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="compare two JSON Lines report files")
    compare.add_argument("x86", type=Path)
    compare.add_argument("arm64", type=Path)
    compare.add_argument("--what", default="reports", help="prefix of every printed line")
    tolerance = compare.add_mutually_exclusive_group(required=True)
    tolerance.add_argument("--probability-tolerance", type=float)
    tolerance.add_argument("--agreement", type=Path,
                           help="NAME.agreement.json of `ecgd model quantize` (INT8)")
    inputs = commands.add_parser("inputs", help="write .npz and .csv copies of a recording")
    inputs.add_argument("recording", type=Path)
    inputs.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "inputs":
        write_array_inputs(args.recording, args.out_dir)
        return 0
    probability_tolerance = (args.probability_tolerance if args.agreement is None
                             else int8_tolerance(args.agreement))
    return 1 if compare_runs(args.x86, args.arm64, probability_tolerance, args.what) else 0


if __name__ == "__main__":
    sys.exit(main())
