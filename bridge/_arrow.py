"""Python data <-> Arrow tables in the shape the worker reads and writes.

Schema metadata says what R object a table stands for (``protocol/SPEC.md``,
"Arrow payloads"): ``rbridge.kind`` is ``data.frame`` (the default),
``vector`` or ``array``; ``rbridge.names`` marks a second column holding a
vector's names, ``rbridge.dim`` an array's dimensions (column-major values),
``rbridge.row_names`` a last column holding a data.frame's row names.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

EXACT_INT = 2**53
KIND = b"rbridge.kind"


class Payload:
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


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError,
                      ValueError)
#: numpy time units R has no exact counterpart for, and what they become.
_DATE_UNITS = {"Y": "D", "M": "D", "W": "D", "D": "D"}     # datetime64 -> Date
_SECOND_UNITS = {"W", "D", "h", "m"}                       # -> seconds


def _time_values(values: np.ndarray, what: str) -> np.ndarray:
    """datetime64/timedelta64 in a unit pyarrow and R take: dates in days,
    whole hours and minutes in seconds; months and years have no fixed length."""
    unit, count = np.datetime_data(values.dtype)
    if unit == "generic":
        raise TypeError(f"{what} has dtype {values.dtype} without a unit")
    if values.dtype.kind == "M" and unit in _DATE_UNITS:
        return values.astype("datetime64[D]")
    if values.dtype.kind == "m" and unit in ("Y", "M"):
        raise TypeError(f"{what} has dtype {values.dtype}: months and years have no fixed length in R's difftime")
    if unit in _SECOND_UNITS or count != 1:
        return values.astype(values.dtype.kind == "M" and "datetime64[s]" or "timedelta64[s]")
    return values


def _numpy_column(values: np.ndarray, mask: np.ndarray | None, what: str = "the array") -> pa.Array:
    if values.dtype.kind == "c":
        raise TypeError(f"{what} holds complex numbers, which cannot be sent to R")
    if values.dtype.kind in "Mm":
        values = _time_values(values, what)
    try:
        if values.dtype.kind in "Mm":     # NaT is the only missing marker of times
            return pa.array(values, mask=mask, from_pandas=True)
        if values.dtype.kind == "O":
            return pa.array(values.tolist(), mask=mask, from_pandas=True)
        return pa.array(values, mask=mask, from_pandas=False)   # NaN stays NaN
    except _CONVERSION_ERRORS as exc:
        raise TypeError(f"{what} (dtype {values.dtype}) cannot be sent to R: {exc}") from None


def _pandas_column(series: pd.Series, what: str = "the series") -> pa.Array:
    if isinstance(series.dtype, pd.PeriodDtype):   # R has no periods: their start, a Date for days and longer
        start = series.dt.start_time
        freq = series.dtype.freq
        sub_daily = isinstance(freq, pd.offsets.Tick) and freq.nanos < 86_400 * 10**9
        series = start if sub_daily else start.dt.date.astype(object).where(start.notna(), None)
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "fMmc":
        return _numpy_column(series.to_numpy(), None, what)   # NaN stays NaN
    try:
        return pa.array(series, from_pandas=True)
    except _CONVERSION_ERRORS as exc:
        kinds = sorted({type(v).__name__ for v in series.dropna().head(1000)}) if dtype == np.dtype(object) else []
        holds = f" holding {', '.join(kinds)}" if len(kinds) > 1 else ""
        raise TypeError(f"{what} (dtype {dtype}{holds}) cannot be sent to R: {exc}") from None


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


# ---- time series --------------------------------------------------------------------

#: Period frequencies that are R ts frequencies, and their cycles per year.
_TS_FREQUENCIES = {"M": 12, "Q-DEC": 4, "Y-DEC": 1}
#: DatetimeIndex frequencies (pandas aliases, old and new) and their periods.
_TS_DATE_FREQS = {"MS": "M", "ME": "M", "M": "M", "QS-JAN": "Q", "QE-DEC": "Q", "Q-DEC": "Q",
                  "YS-JAN": "Y", "YE-DEC": "Y", "A-DEC": "Y", "AS-JAN": "Y", "Y-DEC": "Y"}


def _periods(index: pd.Index) -> pd.PeriodIndex | None:
    """The index as consecutive monthly, quarterly or yearly periods, or None."""
    if isinstance(index, pd.DatetimeIndex) and len(index) >= 3 and index.tz is None:
        freq = _TS_DATE_FREQS.get(index.freqstr or pd.infer_freq(index) or "")
        index = index.to_period(freq) if freq else index
    if not isinstance(index, pd.PeriodIndex) or index.freqstr not in _TS_FREQUENCIES or not len(index):
        return None
    return index if (np.diff(index.asi8) == 1).all() else None


def _tsp(start: float, frequency: float, n: int) -> str:
    return f"{start!r},{start + (n - 1) / frequency!r},{float(frequency)!r}"


def _index_tsp(index: pd.Index) -> str | None:
    """R's tsp ("start,end,frequency") for a regular monthly, quarterly or yearly index."""
    periods = _periods(index)
    if periods is None:
        return None
    frequency = _TS_FREQUENCIES[periods.freqstr]
    first = periods[0]
    cycle = {12: first.month - 1, 4: first.quarter - 1, 1: 0}[frequency]
    return _tsp(first.year + cycle / frequency, frequency, len(periods))


class TimeSeries:
    """Data to be sent as an R time series (``ts``). Make one with :func:`bridge.ts`."""

    __slots__ = ("data", "tsp")

    def __init__(self, data: Any, tsp: str) -> None:
        self.data = data
        self.tsp = tsp

    def __repr__(self) -> str:
        start, _, frequency = self.tsp.split(",")
        return f"<bridge.ts of {len(self.data)} values, start {start}, frequency {frequency}>"


def ts(data: Any, frequency: float | None = None, start: float | tuple[int, int] | None = None) -> TimeSeries:
    """Marks data to be sent as an R time series, as ``stats::ts()`` makes it.

    A pandas Series (or DataFrame, for a multivariate series) whose index is
    monthly, quarterly or yearly (a ``PeriodIndex``, or a regular
    ``DatetimeIndex``) needs no arguments; such a Series is sent as a ``ts``
    even without this function. Other data needs ``frequency`` (observations
    per cycle: 7 for daily data with a weekly season, 24 for hourly data with a
    daily one) and may give ``start``, in R's form: a time (``2020.5``) or
    ``(cycle, position)`` such as ``(2020, 3)``; the default is 1.

    Raises:
        ValueError: the frequency cannot be inferred, or is not positive.
    """
    index = data.index if isinstance(data, (pd.Series, pd.DataFrame)) else None
    n = len(data)
    if frequency is None:
        tsp = _index_tsp(index) if index is not None else None
        if tsp is None:
            raise ValueError("cannot infer the frequency of this series from its index (only monthly, quarterly "
                             "and yearly indexes can be); pass frequency= and start=")
        return TimeSeries(data, tsp)
    if not frequency > 0:
        raise ValueError(f"frequency must be positive, not {frequency!r}")
    if start is None:
        tsp = _index_tsp(index) if index is not None else None
        if tsp is not None and float(tsp.split(",")[2]) == float(frequency):
            return TimeSeries(data, tsp)
        start = 1.0
    if isinstance(start, tuple):
        start = start[0] + (start[1] - 1) / frequency
    return TimeSeries(data, _tsp(float(start), float(frequency), n))


def _time_series_table(value: TimeSeries) -> pa.Table:
    data = value.data
    if isinstance(data, pd.DataFrame):
        table = frame_to_table(data.reset_index(drop=True))
        table = table.drop_columns([c for c in table.column_names if c == ""]) if table.num_columns else table
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
                if k != b"rbridge.row_names"}
        return table.replace_schema_metadata({**meta, "rbridge.tsp": value.tsp})
    if isinstance(data, pd.Series):
        column = _pandas_column(data.reset_index(drop=True))
    else:
        array = np.asarray(data) if not np.ma.isMaskedArray(data) else data
        if array.ndim == 2:
            return _time_series_table(TimeSeries(pd.DataFrame(array), value.tsp))
        column = _numpy_column(np.ma.getdata(array), np.ma.getmaskarray(array) if np.ma.is_masked(array) else None)
    return _table([column], [""], {**_vector_meta(), "rbridge.tsp": value.tsp})


#: zoo's index classes of months and quarters: their period frequency and cycles a year.
_ZOO_INDEX_CLASSES = {"yearmon": ("M", 12), "yearqtr": ("Q", 4)}
_ZOO_PERIODS = {"M": "yearmon", "Q-DEC": "yearqtr"}


def _series_table(value: pd.Series | pd.DataFrame) -> pa.Table | None:
    """A Series or DataFrame that came from a zoo or xts series (its
    ``attrs["r_class"]`` says so) as that series again: the values, all of one
    type, and, last, its index of dates, times, numbers, or monthly or
    quarterly periods (zoo's yearmon, yearqtr). None for anything else, which
    then travels as a vector or data.frame."""
    if "zoo" not in value.attrs.get("r_class", ()) or value.index.nlevels != 1:
        return None
    index_class = _ZOO_PERIODS.get(value.index.freqstr) if isinstance(value.index, pd.PeriodIndex) else None
    if index_class is not None:   # zoo's yearmon or yearqtr: the year, with the month or quarter as a fraction
        per_year = _ZOO_INDEX_CLASSES[index_class][1]
        index = pa.array((value.index.asi8 + 1970 * per_year) / per_year, pa.float64())
    else:
        index = _pandas_column(pd.Series(value.index), "the index")
        if not (pa.types.is_date(index.type) or pa.types.is_timestamp(index.type)
                or pa.types.is_integer(index.type) or pa.types.is_floating(index.type)):
            return None
    frame = value.to_frame() if isinstance(value, pd.Series) else value
    names = [str(c) for c in frame.columns]
    columns = _frame_columns(frame.reset_index(drop=True), names)
    if not columns or len({c.type for c in columns}) != 1 or pa.types.is_dictionary(columns[0].type):
        return None
    meta = {"rbridge.kind": "data.frame", "rbridge.index": "vector" if isinstance(value, pd.Series) else "matrix",
            "rbridge.r_class": json.dumps(value.attrs["r_class"])}
    if isinstance(value, pd.DataFrame) and isinstance(value.columns, pd.RangeIndex):
        meta["rbridge.colnames"] = "0"
    if index_class is not None:
        meta["rbridge.index_class"] = index_class
    return _table([*columns, index], [*names, "index"], meta)


def series_to_table(series: pd.Series) -> pa.Table:
    """A pandas Series as an R vector; a non-default index becomes its names,
    except a regular monthly, quarterly or yearly one, which makes a ``ts``,
    and the index of a Series that came from a zoo or xts series."""
    zoo = _series_table(series)
    if zoo is not None:
        return zoo
    if _is_default_index(series.index):
        return _table([_pandas_column(series)], [""], _vector_meta())
    tsp = _index_tsp(series.index)
    if tsp is not None:
        return _time_series_table(TimeSeries(series, tsp))
    meta = _vector_meta()
    meta["rbridge.names"] = "1"
    return _table([_pandas_column(series.reset_index(drop=True)), _names_column(series.index)],
                  ["", "names"], meta)


def _frame_columns(frame: pd.DataFrame, names: list[str]) -> list[pa.Array]:
    """The columns as Arrow arrays. A wide frame whose columns share one
    numeric NumPy dtype is taken as one array (pandas' per-column access costs
    more than the data of 2,000 short columns); other frames column by column,
    large columns without a copy."""
    dtypes = set(frame.dtypes)
    if frame.shape[1] > SPLIT_BLOCKS_MAX and len(dtypes) == 1:
        (dtype,) = dtypes
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            block = np.asfortranarray(frame.to_numpy())
            return [_numpy_column(block[:, i], None, f"column {name!r}") for i, name in enumerate(names)]
    return [_pandas_column(col, f"column {name!r}") for name, (_, col) in zip(names, frame.items(), strict=True)]


def frame_to_table(frame: pd.DataFrame) -> pa.Table | pa.RecordBatch:
    """A pandas DataFrame as an R data.frame. Column names become strings. A
    unique index of strings or integers becomes row.names; any other
    non-default index is turned into leading columns (``reset_index()``).
    A frame that came from a zoo or xts series goes back as that series."""
    zoo = _series_table(frame)
    if zoo is not None:
        return zoo
    meta = {"rbridge.kind": "data.frame"}
    row_names = None
    index = frame.index
    if _is_default_index(index) and 0 < len(index) < 2**31 and frame.shape[1]:
        # R sees the pandas labels 0..n-1 as row names, so that results named
        # by rows (predict, fitted, residuals, subsets) come back with them
        meta["rbridge.row_names_from"] = "0"
    elif not _is_default_index(index):
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
    columns = _frame_columns(frame, names)
    if row_names is not None:
        columns.append(row_names)
        names.append("")
        meta["rbridge.row_names"] = "1"
    for key in ("r_class", "r_attributes"):   # a frame that came from R: its class goes back with it
        if key in frame.attrs:
            meta[f"rbridge.{key}"] = json.dumps(frame.attrs[key])
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
    if isinstance(value, TimeSeries):
        return _time_series_table(value)
    return None


# ---- Arrow -> Python ---------------------------------------------------------------

#: How pandas results hold data, as in ``pandas.read_csv(dtype_backend=...)``:
#: plain NumPy dtypes (NA becomes NaN, None or NaT), pandas' nullable dtypes,
#: or pyarrow-backed dtypes (both keep NA apart from NaN).
DTYPE_BACKENDS = ("numpy", "numpy_nullable", "pyarrow")

_NULLABLE = {pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype(), pa.float64(): pd.Float64Dtype(),
             pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}


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


def _pandas_values(col: pa.ChunkedArray | pa.Array, backend: str) -> pd.Series:
    """One column as a pandas Series of the backend's dtype (factors are
    categoricals in every backend)."""
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col], col.type)
    t = col.type
    if pa.types.is_dictionary(t):
        return col.to_pandas()
    if backend == "pyarrow":
        return col.to_pandas(types_mapper=pd.ArrowDtype)
    if backend == "numpy_nullable":
        if pa.types.is_float64(t):   # built from values and mask: pandas' own path would turn NaN into NA
            arr = _single(col)
            mask = arr.is_null().to_numpy(zero_copy_only=False)
            return pd.Series(pd.arrays.FloatingArray(arr.fill_null(0.0).to_numpy(zero_copy_only=False), mask))
        return col.to_pandas(types_mapper=_NULLABLE.get)
    return col.to_pandas()     # dates as datetime.date objects, as read_parquet gives them


SPLIT_BLOCKS_MAX = 64


def _frame_values(table: pa.Table, backend: str) -> pd.DataFrame:
    """The columns as a DataFrame of the backend's dtypes, built by pyarrow in
    one go (a frame of 2,000 columns built column by column costs 7 times as
    much); the same dtypes as :func:`_pandas_values` gives one column."""
    table = table.rename_columns([str(i) for i in range(table.num_columns)])   # names may repeat
    # Few columns: each its own block, so numeric columns are views of the
    # payload (no copy of a tall frame); many: consolidated, as pyarrow does.
    split = table.num_columns <= SPLIT_BLOCKS_MAX
    if backend == "pyarrow":
        return table.to_pandas(split_blocks=split,
                               types_mapper=lambda t: None if pa.types.is_dictionary(t) else pd.ArrowDtype(t))
    if backend == "numpy":
        return table.to_pandas(split_blocks=split)
    frame = table.to_pandas(split_blocks=split, types_mapper=_NULLABLE.get)
    for i, col in enumerate(table.columns):   # Float64 from Arrow turns NaN into NA: rebuilt where it holds NaN
        if pa.types.is_float64(col.type) and pc.any(pc.is_nan(col)).as_py():
            frame.isetitem(i, _pandas_values(col, backend))
    return frame


def _index(col: pa.ChunkedArray | pa.Array) -> pd.Index:
    """Names or row names as an index. Names that are all integers (as R
    writes the row names of data from pandas) become an integer index, a
    RangeIndex when they are 0..n-1, so results named by rows align with the
    frame they came from. Months and quarters as R's print.ts writes them
    ("Jan 1961", "1961 Q1": forecast tables) become a PeriodIndex."""
    arr = _single(col) if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        if len(arr) and not arr.null_count:
            if pc.all(pc.match_substring_regex(arr, _INTEGER)).as_py():
                arr = pc.cast(arr, pa.int64())
            elif pc.all(pc.match_substring_regex(arr, _MONTH)).as_py():
                return pd.PeriodIndex(pd.to_datetime(arr.to_pylist(), format="%b %Y"), freq="M")
            elif pc.all(pc.match_substring_regex(arr, _QUARTER)).as_py():
                return pd.PeriodIndex([p.replace(" ", "") for p in arr.to_pylist()], freq="Q")
    if pa.types.is_integer(arr.type):
        values = arr.to_numpy(zero_copy_only=False)
        if len(values) and values[0] == 0 and np.array_equal(values, np.arange(len(values))):
            return pd.RangeIndex(len(values))
    return pd.Index(arr, tupleize_cols=False).rename(None)


_INTEGER = r"^(0|-?[1-9][0-9]{0,17})$"   # canonical, within int64
_MONTH = r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4}$"
_QUARTER = r"^[0-9]{4} Q[1-4]$"


def _is_automatic(names: pa.Array) -> bool:
    """Names "1".."n": R's automatic row names of the data a result came from."""
    n = len(names)
    if n == 0 or names.null_count:
        return False
    return bool(pc.all(pc.equal(names.cast(pa.string()), pa.array(range(1, n + 1)).cast(pa.string()))).as_py())


def _ts_index(tsp: bytes, n: int) -> pd.Index:
    """The index of a time series: periods for monthly, quarterly and yearly
    series, else the time values (R's ``time(x)``) as floats."""
    start, _, frequency = (float(v) for v in tsp.split(b","))
    freq = {12.0: "M", 4.0: "Q", 1.0: "Y"}.get(frequency)
    year = math.floor(start + 1e-9)
    cycle = (start - year) * frequency
    if freq is not None and abs(cycle - round(cycle)) < 1e-6:
        first = pd.Period(year=year, month=round(cycle) * 12 // int(frequency) + 1, freq=freq)
        return pd.period_range(first, periods=n, freq=freq)
    return pd.Index(start + np.arange(n) / frequency, name="time")


def _r_attrs(meta: dict[bytes, bytes]) -> dict[str, Any]:
    """What R said about the object beyond its data (``DataFrame.attrs``)."""
    out = {}
    for key in ("r_class", "r_attributes", "r_column_attributes"):
        raw = meta.get(b"rbridge." + key.encode())
        if raw is not None:
            out[key] = json.loads(raw)
    return out


def table_to_frame(table: pa.Table, backend: str = "numpy") -> pd.DataFrame:
    meta = table.schema.metadata or {}
    ncol = table.num_columns - (b"rbridge.row_names" in meta)
    index: pd.Index
    if ncol < table.num_columns:
        index = _index(table.column(ncol))
    elif b"rbridge.tsp" in meta:
        index = _ts_index(meta[b"rbridge.tsp"], table.num_rows)
    else:
        index = pd.RangeIndex(table.num_rows)
    frame = _frame_values(table.select(range(ncol)), backend) if ncol else \
        pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    frame.index = index
    if meta.get(KIND) == b"matrix" and meta.get(b"rbridge.colnames") == b"0":
        frame.columns = pd.RangeIndex(ncol)
    elif meta.get(KIND) == b"matrix":    # dimnames both ways follow the rules of names
        frame.columns = _index(pa.array(table.column_names[:ncol], pa.string()))
    else:
        frame.columns = table.column_names[:ncol]
    if b"rbridge.dimnames_names" in meta:
        frame.index.name, frame.columns.name = (n or None for n in json.loads(meta[b"rbridge.dimnames_names"])[:2])
    frame.attrs.update(_r_attrs(meta))
    return frame


def _series_to_pandas(table: pa.Table, meta: dict[bytes, bytes], backend: str) -> pd.Series | pd.DataFrame:
    """A zoo or xts series (``rbridge.index``): a Series ("vector") or a
    DataFrame ("matrix") indexed by the series' index, which is the last column."""
    n = table.num_columns - 1
    index: pd.Index
    index_class = _ZOO_INDEX_CLASSES.get(meta.get(b"rbridge.index_class", b"").decode())
    if index_class is not None and pa.types.is_floating(table.column(n).type):   # yearmon, yearqtr: periods
        freq, per_year = index_class
        years = _single(table.column(n)).to_numpy(zero_copy_only=False)
        ordinals = np.rint((years - 1970) * per_year).astype(np.int64)
        index = pd.PeriodIndex(pd.arrays.PeriodArray(ordinals, dtype=pd.PeriodDtype(freq)))
    else:
        index = pd.Index(_pandas_values(table.column(n), backend)).rename(None)
    out: pd.Series | pd.DataFrame
    if meta[b"rbridge.index"] == b"vector":
        out = _pandas_values(table.column(0), backend).rename(None)
    else:
        out = _frame_values(table.select(range(n)), backend)
        out.columns = pd.RangeIndex(n) if meta.get(b"rbridge.colnames") == b"0" else table.column_names[:n]
    out.index = index
    out.attrs.update(_r_attrs(meta))
    return out


def _time_scalar(values: pa.Array) -> Any:
    """A length-1 Date, POSIXct or difftime as a scalar, as other length-1
    vectors are: ``datetime.date``, ``pd.Timestamp``, ``pd.Timedelta``; NA is None."""
    value = values[0].as_py()
    if value is None or pa.types.is_date(values.type):
        return value
    return pd.Timestamp(value) if pa.types.is_timestamp(values.type) else pd.Timedelta(value)


def _vector(table: pa.Table, meta: dict[bytes, bytes], backend: str) -> Any:
    """A vector: numpy values (masked where NA); a Series when it has names
    or a time index, unless its names are R's automatic row names "1".."n",
    which stand for positions: then plain values, so that assigning to a
    frame's column is by position."""
    values = _single(table.column(0))
    index = None
    if b"rbridge.names" in meta:
        names = _single(table.column(1))
        if not _is_automatic(names):
            index = _index(names)
    elif b"rbridge.tsp" in meta:
        index = _ts_index(meta[b"rbridge.tsp"], len(values))
    if index is None:
        if len(values) == 1 and (pa.types.is_temporal(values.type)):
            return _time_scalar(values)
        return vector_to_numpy(values)
    series = _pandas_values(values, backend)
    series.index = index
    series.attrs.update(_r_attrs(meta))
    return series


def to_python(table: pa.Table, results: str, backend: str = "numpy") -> Any:
    """A payload as the result type chosen: ``"pandas"`` (DataFrame, numpy
    arrays, Series for named vectors and time series) or ``"arrow"`` (the
    pyarrow objects)."""
    meta = table.schema.metadata or {}
    kind = meta.get(KIND, b"data.frame")
    plain = kind == b"vector" and b"rbridge.names" not in meta and b"rbridge.tsp" not in meta
    if results == "arrow":
        return _single(table.column(0)) if plain else table
    if kind == b"data.frame" and b"rbridge.index" in meta and table.num_columns >= 2:
        return _series_to_pandas(table, meta, backend)
    if kind in (b"data.frame", b"matrix"):
        return table_to_frame(table, backend)
    if kind == b"array":
        values = vector_to_numpy(_single(table.column(0)))
        dim = tuple(int(d) for d in meta[b"rbridge.dim"].split(b","))
        reshaped = np.ma.getdata(values).reshape(dim, order="F")
        if np.ma.isMaskedArray(values):
            return np.ma.MaskedArray(reshaped, mask=np.ma.getmaskarray(values).reshape(dim, order="F"))
        return reshaped
    return _vector(table, meta, backend)


def numpy_to_arrow(values: np.ndarray) -> pa.Array:
    """A small vector decoded from msgpack (ext 2), as a pyarrow Array."""
    mask = np.ma.getmaskarray(values) if np.ma.is_masked(values) else None
    return pa.array(np.ma.getdata(values), mask=mask, from_pandas=values.dtype.kind == "O")


def convert_payloads(value: Any, results: str, backend: str = "numpy") -> Any:
    """Replaces decoded payloads (and, for ``"arrow"``, vectors) in a reply value."""
    if isinstance(value, Payload):
        return to_python(value.table, results, backend)
    if isinstance(value, list):
        return [convert_payloads(v, results, backend) for v in value]
    if isinstance(value, dict):
        return {k: convert_payloads(v, results, backend) for k, v in value.items()}
    if results == "arrow" and isinstance(value, np.ndarray):
        return numpy_to_arrow(value)
    return value
