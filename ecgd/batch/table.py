"""The two tables ``ecgd batch`` writes: one row per window, one row per failed input.

A window row is the window's report (``Analyzer.finish``, as the daemon and ``ecgd analyze``
build it) flattened: nested fields joined with ``_`` (``qc.status`` -> ``qc_status``), the
150 findings as one probability column per label (``prob_<label>``, in the manifest's label
order; null when QC rejected the window) plus ``findings_above_threshold`` (the labels at or
above their threshold, most probable first); ``measurements.unmeasured`` becomes one reason
column per measurement (``measurements_unmeasured_pr_ms``), null where it was measured. Three report fields differ: ``source.file`` (an
input name may hold a patient identifier, and these files are not sealed) becomes
``source_name_hash``, the hash the daemon's logs show for a name; ``host`` (the Pi's thermal
state) and ``waveform`` (the window's samples, tens of kB a row, which the archive's
recordings already hold) are left out. Every other report field has its column; a report
field without one is refused (:func:`window_row`), so the table cannot silently drift from
the schema.

Shards are encoded in memory (:func:`encode_shard`) as Parquet (pyarrow, zstd) or JSON Lines.
"""
from __future__ import annotations

import io
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ecgd.errors import BatchError
from ecgd.signal.chain import MEASUREMENT_FIELDS

FORMATS = ("parquet", "jsonl")
FILE_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl"}
PROBABILITY_PREFIX = "prob_"

# (column, type): the report's fields in schema order; "list" types hold strings or numbers.
REPORT_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("report_id", "string"),
    ("schema_version", "string"),
    ("created_at", "string"),
    ("ecgd_version", "string"),
    ("source_kind", "string"),
    ("source_format", "string"),
    ("source_content_sha256", "string"),
    ("source_name_hash", "string"),
    ("patient_pseudonym", "string"),
    ("window_index", "int64"),
    ("window_start_s", "float64"),
    ("window_start_time", "string"),
    ("window_fs_hz", "float64"),
    ("window_source_fs_hz", "float64"),
    ("window_n_samples", "int64"),
    ("window_leads_derived", "list<string>"),
    ("window_leads_missing", "list<string>"),
    ("qc_status", "string"),
    ("qc_score", "float64"),
    ("qc_reasons", "list<string>"),
    ("qc_saturation_rule", "string"),
    ("measurements_heart_rate_bpm", "float64"),
    ("measurements_rr_ms", "list<float64>"),
    ("measurements_rr_irregularity", "float64"),
    ("measurements_r_peaks_ms", "list<float64>"),
    ("measurements_pr_ms", "float64"),
    ("measurements_qrs_ms", "float64"),
    ("measurements_qt_ms", "float64"),
    ("measurements_qtc_ms", "float64"),
    ("measurements_qtc_formula", "string"),
    ("measurements_p_axis_deg", "float64"),
    ("measurements_qrs_axis_deg", "float64"),
    ("measurements_t_axis_deg", "float64"),
) + tuple((f"measurements_unmeasured_{name}", "string") for name in MEASUREMENT_FIELDS) + (
    ("model_not_run", "list<string>"),
    ("model_name", "string"),
    ("model_sha256", "string"),
    ("model_precision", "string"),
    ("model_trained", "bool"),
    ("model_preprocessing", "string"),
    ("interpretation_valid", "bool"),
    ("warning", "string"),
    ("timing_ms_read", "float64"),
    ("timing_ms_qc", "float64"),
    ("timing_ms_preprocess", "float64"),
    ("timing_ms_inference", "float64"),
    ("findings_above_threshold", "list<string>"),
)
# Report fields that have no column of their own (see the module docstring).
_NOT_COLUMNS = {"source_file", "host", "findings"}
_REPORT_INDEX = {name: index for index, (name, _) in enumerate(REPORT_COLUMNS)}

ERROR_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("input_key", "string"),
    ("source_name_hash", "string"),
    ("source_content_sha256", "string"),
    ("reason", "string"),
    ("created_at", "string"),
    ("ecgd_version", "string"),
)

Row = List[Any]


def window_columns(labels: Sequence[str]) -> List[Tuple[str, str]]:
    """The window table's columns for a model with ``labels``."""
    return list(REPORT_COLUMNS) + [(PROBABILITY_PREFIX + label, "float64") for label in labels]


def _flatten(value: Mapping[str, Any], prefix: str, out: Dict[str, Any]) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            _flatten(item, name + "_", out)
        else:
            out[name] = item


def window_row(report: Mapping[str, Any], name_hash: str, labels: Sequence[str]) -> Row:
    """One window's row, in :func:`window_columns` order."""
    flat: Dict[str, Any] = {}
    _flatten(report, "", flat)
    unknown = set(flat) - {name for name, _ in REPORT_COLUMNS} - _NOT_COLUMNS
    if unknown:
        raise ValueError(f"report field(s) {', '.join(sorted(unknown))} have no batch column")
    flat["source_name_hash"] = name_hash
    findings = report["findings"]
    flat["findings_above_threshold"] = [f["label"] for f in findings if f["above_threshold"]]
    probability = {f["label"]: f["probability"] for f in findings}
    row = [flat.get(name) for name, _ in REPORT_COLUMNS]
    for key in ("window_leads_derived", "window_leads_missing", "qc_reasons",
                "measurements_rr_ms", "measurements_r_peaks_ms", "model_not_run"):
        index = _REPORT_INDEX[key]
        row[index] = list(row[index] or [])
    return row + [probability.get(label) for label in labels]


def error_row(input_key: str, name_hash: str, content_sha256: Optional[str], reason: str,
              created_at: str, ecgd_version: str) -> Row:
    """One failed input's row, in ``ERROR_COLUMNS`` order."""
    return [input_key, name_hash, content_sha256, reason, created_at, ecgd_version]


def encode_shard(rows: Sequence[Row], columns: Sequence[Tuple[str, str]], fmt: str) -> bytes:
    """``rows`` as one file's bytes in ``fmt`` (``parquet`` or ``jsonl``)."""
    names = [name for name, _ in columns]
    if fmt == "jsonl":
        lines = (json.dumps(dict(zip(names, row)), ensure_ascii=False, allow_nan=False,
                            separators=(",", ":")) for row in rows)
        return "".join(line + "\n" for line in lines).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, _arrow_type(kind)) for name, kind in columns])
    table = pa.table([pa.array([row[i] for row in rows], type=schema.field(i).type)
                      for i in range(len(names))], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    element = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
               "bool": pa.bool_()}
    if kind.startswith("list<"):
        return pa.list_(element[kind[len("list<"):-1]])
    return element[kind]


def require_format(fmt: str) -> None:
    """Refuse a format whose library is missing, naming the extra that brings it."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:
            raise BatchError("--format parquet needs pyarrow: pip install 'ecgd[archive]' "
                             "(or give --format jsonl)") from exc
