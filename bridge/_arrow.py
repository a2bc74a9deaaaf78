"""Python data <-> Arrow tables in the shape the worker reads and writes.

Schema metadata says what R object a table stands for (``protocol/SPEC.md``,
"Arrow payloads"): ``rbridge.kind`` is ``data.frame`` (the default),
``vector`` or ``array``; ``rbridge.names`` marks a second column holding a
vector's names, ``rbridge.dim`` an array's dimensions (column-major values),
``rbridge.row_names`` a last column holding a data.frame's row names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

EXACT_INT = 2**53
KIND = b"rbridge.kind"


class ArrowValue:
    """A decoded payload, converted to a Python result once the reply is in
    (the result type is an option of the request)."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table


# ---- Python -> Arrow ---------------------------------------------------------------

def _check_type(arr: pa.Array | pa.ChunkedArray, what: str) -> pa.Array | pa.ChunkedArray:
    """Normalizes a column to the subset the worker reads, or raises."""
    t = arr.type
    if pa.types.is_dictionary(t):
        if not (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
            arr = arr.cast(pa.dictionary(t.index_type, pa.string(), t.ordered))   # R levels are strings
        return arr
    if pa.types.is_float16(t):
        return arr.cast(pa.float64())
    if pa.types.is_string_view(t):
        return arr.cast(pa.string())
    if pa.types.is_binary_view(t):
        return arr.cast(pa.binary())
    if pa.types.is_integer(t) and t.bit_width >= 32 and t != pa.int32():
        bounds = pc.min_max(arr)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is not None and (lo < -EXACT_INT or hi > EXACT_INT):
            raise ValueError(f"{what} holds integers beyond 2^53, which R cannot represent exactly "
                             "(R has no 64-bit integers; values within 2^53 become doubles)")
        return arr
    if (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_date(t) or pa.types.is_timestamp(t)
            or pa.types.is_duration(t) or pa.types.is_null(t)):
        return arr
    raise TypeError(f"{what} has Arrow type {t}, which has no R counterpart here")


def _numpy_column(values: np.ndarray, mask: np.ndarray | None) -> pa.Array:
    if values.dtype.kind == "c":
        raise TypeError("complex arrays cannot be sent to R")
    if values.dtype.kind in "Mm":     # NaT is the only missing marker of times
        return pa.array(values, mask=mask, from_pandas=True)
    if values.dtype.kind == "O":
        return pa.array(values.tolist(), mask=mask, from_pandas=True)
    return pa.array(values, mask=mask, from_pandas=False)   # NaN stays NaN


def _pandas_column(series: pd.Series) -> pa.Array:
    if isinstance(series.dtype, np.dtype) and series.dtype.kind == "f":
        return pa.array(series.to_numpy(), from_pandas=False)   # NaN stays NaN
    return pa.array(series, from_pandas=True)


def _table(columns: list[pa.Array | pa.ChunkedArray], names: list[str], meta: dict[str, str]) -> pa.Table:
    checked = [_check_type(c, f"column {n!r}" if n else "the array")
               for c, n in zip(columns, names, strict=True)]
    schema_fields = [pa.field(n, c.type) for c, n in zip(checked, names, strict=True)]
    table = pa.Table.from_arrays(checked, schema=pa.schema(schema_fields, metadata=meta))
    if any(pa.types.is_dictionary(c.type) for c in checked):
        table = table.unify_dictionaries()
    return table


def _vector_meta(kind: str = "vector") -> dict[str, str]:
    return {"rbridge.kind": kind}


def numpy_to_table(array: np.ndarray) -> pa.Table:
    """A numpy array as an R vector (1-D) or array (n-D, column-major)."""
    mask = np.ma.getmaskarray(array) if np.ma.is_masked(array) else None
    data = np.ma.getdata(array)
    if data.ndim == 1:
        return _table([_numpy_column(data, mask)], [""], _vector_meta())
    meta = _vector_meta("array")
    meta["rbridge.dim"] = ",".join(str(d) for d in data.shape)
    flat = data.ravel(order="F")
    return _table([_numpy_column(flat, None if mask is None else mask.ravel(order="F"))], [""], meta)


def _names_column(index: pd.Index) -> pa.Array:
    return pa.array([str(v) for v in index], pa.string())


def _is_default_index(index: pd.Index) -> bool:
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def series_to_table(series: pd.Series) -> pa.Table:
    """A pandas Series as an R vector; a non-default index becomes its names."""
    if _is_default_index(series.index):
        return _table([_pandas_column(series)], [""], _vector_meta())
    meta = _vector_meta()
    meta["rbridge.names"] = "1"
    return _table([_pandas_column(series.reset_index(drop=True)), _names_column(series.index)],
                  ["", "names"], meta)


def frame_to_table(frame: pd.DataFrame) -> pa.Table | pa.RecordBatch:
    """A pandas DataFrame as an R data.frame. Column names become strings. A
    unique index of strings or integers becomes row.names; any other
    non-default index is turned into leading columns (``reset_index()``)."""
    meta = {"rbridge.kind": "data.frame"}
    row_names = None
    index = frame.index
    if not _is_default_index(index):
        if index.is_unique and index.nlevels == 1 and (
                pd.api.types.is_string_dtype(index) or pd.api.types.is_integer_dtype(index)):
            if pd.api.types.is_integer_dtype(index) and len(index) and (
                    index.min() <= -(2**31) or index.max() >= 2**31):
                frame = frame.reset_index()
            else:
                row_names = (pa.array(index.to_numpy(dtype=np.int32)) if pd.api.types.is_integer_dtype(index)
                             else _names_column(index))
        else:
            frame = frame.reset_index()
    names = [str(c) for c in frame.columns]
    columns = [_pandas_column(frame.iloc[:, i]) for i in range(frame.shape[1])]
    if row_names is not None:
        columns.append(row_names)
        names.append("")
        meta["rbridge.row_names"] = "1"
    if not columns:     # zero columns: the row count travels as a batch's length
        batch = pa.record_batch([pa.nulls(len(frame))], names=["x"]).drop_columns(["x"])
        return batch.replace_schema_metadata(meta)
    return _table(columns, names, meta)


def arrow_to_table(value: pa.Array | pa.ChunkedArray | pa.RecordBatch | pa.Table) -> pa.Table:
    """A pyarrow object as an R vector (arrays) or data.frame (tables)."""
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return _table([value], [""], _vector_meta())
    if isinstance(value, pa.RecordBatch):
        value = pa.Table.from_batches([value])
    # rbridge's own metadata (from to_arrow()) is kept, so such tables go back unchanged
    meta = {k.decode(): v.decode() for k, v in (value.schema.metadata or {}).items() if k.startswith(b"rbridge.")}
    return _table(list(value.columns), list(value.column_names), {"rbridge.kind": "data.frame", **meta})


def to_table(value: Any) -> pa.Table | pa.RecordBatch | None:
    """The Arrow form of values that travel as payloads, else None."""
    if isinstance(value, pd.DataFrame):
        return frame_to_table(value)
    if isinstance(value, pd.Series):
        return series_to_table(value)
    if isinstance(value, pd.api.extensions.ExtensionArray):   # Categorical, DatetimeArray...
        return series_to_table(pd.Series(value))
    if isinstance(value, (pa.Array, pa.ChunkedArray, pa.RecordBatch, pa.Table)):
        return arrow_to_table(value)
    return None


# ---- Arrow -> Python ---------------------------------------------------------------

def _single(col: pa.ChunkedArray) -> pa.Array:
    if col.num_chunks == 1:
        return col.chunk(0)
    return col.combine_chunks() if col.num_chunks else pa.array([], col.type)


def _masked(values: np.ndarray, arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return values
    return np.ma.MaskedArray(values, mask=arr.is_null().to_numpy(zero_copy_only=False))


def vector_to_numpy(arr: pa.Array) -> Any:
    """An R vector's values: numpy (masked where NA for logical, integer and
    double; None for strings and raw; NaT for times), or a pandas array for
    factors and time-zone-aware times."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return arr.to_pandas().array
    if pa.types.is_timestamp(t) and t.tz is not None:
        return pd.Series(arr.to_pandas()).array
    if pa.types.is_null(t):
        return np.ma.masked_all(len(arr), dtype=bool)
    if pa.types.is_boolean(t):
        return _masked(arr.fill_null(False).to_numpy(zero_copy_only=False), arr)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if arr.null_count == 0:
            return arr.to_numpy(zero_copy_only=False)
        return _masked(arr.fill_null(0).to_numpy(zero_copy_only=False), arr)
    return arr.to_numpy(zero_copy_only=False)


_NULLABLE = {pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype(), pa.float64(): pd.ArrowDtype(pa.float64())}


def _frame_column(col: pa.ChunkedArray) -> pd.Series:
    if col.null_count and col.type in _NULLABLE:
        return col.to_pandas(types_mapper=_NULLABLE.get)
    if pa.types.is_date32(col.type):      # stays a date (and an R Date on the way back)
        return col.to_pandas(types_mapper=pd.ArrowDtype)
    return col.to_pandas(date_as_object=False)


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    meta = table.schema.metadata or {}
    ncol = table.num_columns - (b"rbridge.row_names" in meta)
    columns = {i: _frame_column(table.column(i)) for i in range(ncol)}
    index = None
    if ncol < table.num_columns:
        index = pd.Index(table.column(ncol).to_pandas())
    if index is None:
        index = pd.RangeIndex(table.num_rows)
    if not columns:
        return pd.DataFrame(index=index)
    frame = pd.DataFrame(columns)
    frame.index = index
    frame.columns = table.column_names[:ncol]
    return frame


def to_python(table: pa.Table, results: str) -> Any:
    """A payload as the result type chosen: ``"pandas"`` (DataFrame, numpy
    arrays, Series for named vectors) or ``"arrow"`` (the pyarrow objects)."""
    meta = table.schema.metadata or {}
    kind = meta.get(KIND, b"data.frame")
    plain = kind == b"vector" and b"rbridge.names" not in meta
    if results == "arrow":
        return _single(table.column(0)) if plain else table
    if kind == b"data.frame":
        return table_to_frame(table)
    values = vector_to_numpy(_single(table.column(0)))
    if kind == b"array":
        dim = tuple(int(d) for d in meta[b"rbridge.dim"].split(b","))
        reshaped = np.ma.getdata(values).reshape(dim, order="F")
        if np.ma.isMaskedArray(values):
            return np.ma.MaskedArray(reshaped, mask=np.ma.getmaskarray(values).reshape(dim, order="F"))
        return reshaped
    if b"rbridge.names" in meta:
        return pd.Series(values, index=pd.Index(table.column(1).to_pandas()))
    return values


def numpy_to_arrow(values: np.ndarray) -> pa.Array:
    """A small vector decoded from msgpack (ext 2), as a pyarrow Array."""
    mask = np.ma.getmaskarray(values) if np.ma.is_masked(values) else None
    return pa.array(np.ma.getdata(values), mask=mask, from_pandas=values.dtype.kind == "O")


def resolve(value: Any, results: str) -> Any:
    """Replaces decoded payloads (and, for ``"arrow"``, vectors) in a reply value."""
    if isinstance(value, ArrowValue):
        return to_python(value.table, results)
    if isinstance(value, list):
        return [resolve(v, results) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, results) for k, v in value.items()}
    if results == "arrow" and isinstance(value, np.ndarray):
        return numpy_to_arrow(value)
    return value
