"""Writes the golden Arrow payloads in protocol/vectors/arrow/.

- ``py_*.arrow`` are written by pyarrow, the way clients write them. The R tests
  decode each and compare it with ``identical()`` to the R expression in
  ``arrow.json``.
- ``r_*.arrow`` are written by the worker's own writer (through Rscript) from
  the R expression in ``arrow.json``. The Python tests read them with pyarrow
  (tests/test_arrow_vectors.py), and the R tests check that the writer still
  produces exactly these bytes.

Run after changing the payload format (``python protocol/vectors/generate_arrow.py``,
with the rserver package installed) and commit the result.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

HERE = Path(__file__).parent
OUT = HERE / "arrow"


def _frame(columns: dict[str, pa.Array]) -> pa.Table:
    return pa.table(columns).replace_schema_metadata({"rbridge.kind": "data.frame"})


def _vector(values: pa.Array | pa.ChunkedArray, **meta: str) -> pa.Table:
    return pa.table({"": values}).replace_schema_metadata({"rbridge.kind": "vector", **meta})


PY_CASES: list[tuple[str, Callable[[], pa.Table], str]] = [
    ("doubles_na_nan", lambda: _vector(pa.array([1.5, None, float("nan"), -0.0])),
     "c(1.5, NA, NaN, -0)"),
    ("int_types", lambda: _frame({
        "i8": pa.array([-128, None, 127], pa.int8()), "u16": pa.array([0, 65535, None], pa.uint16()),
        "i32": pa.array([2**31 - 1, None, -(2**31) + 1], pa.int32()),
        "i64": pa.array([1, 2, None], pa.int64()), "i64big": pa.array([2**40, -(2**53), None], pa.int64()),
        "u64": pa.array([0, 2**53, None], pa.uint64())}),
     "data.frame(i8 = c(-128L, NA, 127L), u16 = c(0L, 65535L, NA), i32 = c(2147483647L, NA, -2147483647L), "
     "i64 = c(1L, 2L, NA), i64big = c(2^40, -2^53, NA), u64 = c(0, 2^53, NA))"),
    ("strings", lambda: _frame({"s": pa.array(["a", None, "üñí€𝄞", ""]),
                               "ls": pa.array(["x", "y", None, "z"], pa.large_string())}),
     "data.frame(s = c('a', NA, '\\u00fc\\u00f1\\u00ed\\u20ac\\U0001D11E', ''), ls = c('x', 'y', NA, 'z'))"),
    ("bools", lambda: _vector(pa.array([True, False, None, True, True, False, False, True, False])),
     "c(TRUE, FALSE, NA, TRUE, TRUE, FALSE, FALSE, TRUE, FALSE)"),
    ("dictionary_int8_large", lambda: _vector(pa.DictionaryArray.from_arrays(
        pa.array([1, 0, None, 1], pa.int8()), pa.array(["lo", "hi"], pa.large_string()))),
     "factor(c('hi', 'lo', NA, 'hi'), levels = c('lo', 'hi'))"),
    ("dictionary_ordered_uint64", lambda: _vector(pa.DictionaryArray.from_arrays(
        pa.array([0, 2, 1], pa.uint64()), pa.array(["s", "m", "l"]), ordered=True)),
     "factor(c('s', 'l', 'm'), levels = c('s', 'm', 'l'), ordered = TRUE)"),
    ("dates", lambda: _frame({"d32": pa.array([0, 19723, None], pa.date32()),
                             "d64": pa.array([86400000, None, -86400000], pa.date64())}),
     "data.frame(d32 = as.Date(c(0, 19723, NA), origin = '1970-01-01'), "
     "d64 = as.Date(c(1, NA, -1), origin = '1970-01-01'))"),
    ("timestamps", lambda: _frame({
        "s": pa.array([1, None], pa.timestamp("s", tz="UTC")),
        "ms": pa.array([1500, 0], pa.timestamp("ms", tz="America/New_York")),
        "us": pa.array([1_700_000_000_123_456, None], pa.timestamp("us")),
        "ns": pa.array([2_000_000_000, -1_000_000_000], pa.timestamp("ns", tz="Asia/Tokyo"))}),
     "data.frame(s = structure(c(1, NA), class = c('POSIXct', 'POSIXt'), tzone = 'UTC'), "
     "ms = structure(c(1.5, 0), class = c('POSIXct', 'POSIXt'), tzone = 'America/New_York'), "
     "us = structure(c(1700000000.123456, NA), class = c('POSIXct', 'POSIXt'), tzone = 'UTC'), "
     "ns = structure(c(2, -1), class = c('POSIXct', 'POSIXt'), tzone = 'Asia/Tokyo'))"),
    ("durations", lambda: _vector(pa.array([1500, None, -250], pa.duration("ms"))),
     "structure(c(1.5, NA, -0.25), class = 'difftime', units = 'secs')"),
    ("binary", lambda: _frame({"b": pa.array([b"\x00\x01", None, b""]),
                              "lb": pa.array([b"x", b"yz", None], pa.large_binary())}),
     "local({ d <- data.frame(b = 1:3); d$b <- list(as.raw(0:1), NULL, raw(0)); "
     "d$lb <- list(charToRaw('x'), charToRaw('yz'), NULL); d })"),
    ("chunked", lambda: _vector(pa.chunked_array([pa.array([1, 2], pa.int32()), pa.array([None, 4], pa.int32()),
                                                  pa.array([], pa.int32())])),
     "c(1L, 2L, NA, 4L)"),
    ("null_type", lambda: _frame({"n": pa.nulls(3), "x": pa.array([1.0, 2.0, 3.0])}),
     "data.frame(n = c(NA, NA, NA), x = c(1, 2, 3))"),
    ("zero_rows", lambda: _frame({"a": pa.array([], pa.float64()), "b": pa.array([], pa.string())}),
     "data.frame(a = numeric(0), b = character(0))"),
    ("odd_names", lambda: _frame({"a b": pa.array([1]), "": pa.array([2]), "ü": pa.array([3])}),
     "structure(list(1L, 2L, 3L), names = c('a b', '', '\\u00fc'), "
     "class = 'data.frame', row.names = c(NA, -1L))"),
    ("matrix", lambda: pa.table({"": pa.array([1, 2, 3, None, 5, 6], pa.int32())}).replace_schema_metadata(
        {"rbridge.kind": "array", "rbridge.dim": "2,3"}),
     "matrix(c(1:3, NA, 5:6), 2)"),
    ("named_vector", lambda: pa.table({"": pa.array([1.0, 2.0]), "names": pa.array(["a", "b"])})
     .replace_schema_metadata({"rbridge.kind": "vector", "rbridge.names": "1"}),
     "c(a = 1, b = 2)"),
    ("plain_table", lambda: pa.table({"x": pa.array([1.0]), "y": pa.array(["k"])}),   # no metadata at all
     "data.frame(x = 1, y = 'k')"),
    ("zoo_series", lambda: pa.table({"": pa.array([1.5, None]), "index": pa.array([19723, 19724], pa.date32())})
     .replace_schema_metadata({"rbridge.kind": "data.frame", "rbridge.index": "vector", "rbridge.r_class": '["zoo"]'}),
     "zoo::zoo(c(1.5, NA), as.Date(c('2024-01-01', '2024-01-02')))"),
]

R_CASES: list[tuple[str, str]] = [
    ("frame", "data.frame(num = c(1.5, NA, NaN), int = c(1L, NA, -3L), chr = c('a', NA, '\\u00e9'), "
              "lgl = c(TRUE, NA, FALSE), fct = factor(c('u', NA, 'v')), "
              "date = as.Date(c('2024-02-29', NA, '1960-01-01')), "
              "time = as.POSIXct(c(0, NA, 1.5), origin = '1970-01-01', tz = 'Europe/Paris'), "
              "dur = as.difftime(c(1, NA, 2.5), units = 'hours'), stringsAsFactors = FALSE)"),
    ("row_names", "data.frame(x = 1:2, row.names = c('r1', 'r2'))"),
    ("matrix", "matrix(c(1, 2, NA, 4, 5, 6), 2)"),
    ("named_vector", "c(a = 1L, b = NA)"),
    ("ordered", "factor(c('lo', 'hi', 'lo'), levels = c('lo', 'hi'), ordered = TRUE)"),
    ("zero_columns", "data.frame(row.names = 1:3)"),
    ("xts_series", "xts::xts(cbind(a = c(1.5, NA), b = 3:4), "
                   "as.POSIXct(c(0, 3600), origin = '1970-01-01', tz = 'UTC'))"),
    ("zoo_yearmon", "zoo::zoo(1:2, zoo::as.yearmon(c(2024, 2024 + 3 / 12)))"),
]


def write_stream(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    manifest: dict[str, list[dict[str, str]]] = {"pyarrow": [], "rserver": []}
    for name, build, r_expr in PY_CASES:
        write_stream(build(), OUT / f"py_{name}.arrow")
        manifest["pyarrow"].append({"name": name, "file": f"py_{name}.arrow", "r": r_expr})
    script = []
    for name, r_expr in R_CASES:
        path = OUT / f"r_{name}.arrow"
        script.append(f"writeBin(rserver:::arrow_encode({r_expr}), {json.dumps(str(path))})")
        manifest["rserver"].append({"name": name, "file": f"r_{name}.arrow", "r": r_expr})
    subprocess.run(["Rscript", "-e", "\n".join(script)], check=True)
    (HERE / "arrow.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
