"""Python values to wire values, following the table in README ("Conversion").

``to_wire`` walks containers, so that an unsupported value or an integer R
cannot hold is refused here with a clear Python error, before anything is sent.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pandas as pd

from ._arrow import numpy_to_table, to_table
from ._code import RCode
from ._codec import EXACT_INT, INT_NA, REAL_NA_BITS, vector_ext
from ._payloads import PayloadWriter

#: 1-D arrays at least this long travel as Arrow payloads rather than ext 2.
ARROW_MIN_LENGTH = 4096
#: Scalars sent as one-element Date, POSIXct and difftime vectors (pd.Timestamp
#: and pd.Timedelta are subclasses of datetime and timedelta).
_TIME_SCALARS = (datetime.date, datetime.timedelta, np.datetime64, np.timedelta64)


def _int_value(x: int) -> int | float:
    if INT_NA < x < 2**31:
        return x
    if -EXACT_INT <= x <= EXACT_INT:
        return float(x)    # R has no 64-bit integers: an exact double instead
    raise ValueError(f"integer {x} is beyond 2^53 and cannot be represented exactly in R")


def _strings(values: np.ndarray, mask: np.ndarray) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    parts = []
    for v, m in zip(values.tolist(), mask.tolist(), strict=True):
        if m or v is None:
            parts.append(packer.pack(None))
        elif isinstance(v, str):
            parts.append(packer.pack(v))
        else:
            raise TypeError(f"a string array may hold only str and None, not {type(v).__name__}")
    return b"".join(parts)


def _as(data: np.ndarray, dtype: str, mask: np.ndarray | None, na: int, view: str) -> memoryview:
    """data as a contiguous little-endian `dtype` buffer with masked elements set to
    the NA bit pattern; copies only when the dtype, layout or a mask requires it."""
    out = np.ascontiguousarray(data, dtype=dtype)
    if na == REAL_NA_BITS:   # a NaN that happens to carry R's NA payload is still NaN
        carries = out.view(view) == na
        if carries.any():
            out = out.copy() if np.may_share_memory(out, data) else out
            out[carries] = np.nan
    if mask is not None:
        if np.may_share_memory(out, data):   # never write into the caller's array
            out = out.copy()
        out.view(view)[mask] = na
    return memoryview(out).cast("B")


def array_to_wire(array: np.ndarray) -> msgpack.ExtType:
    """A 1-D numpy (or masked) array as an atomic-vector ext."""
    if array.ndim != 1:
        raise TypeError(f"only 1-D arrays can be sent to R in this version (got {array.ndim}-D)")
    mask = np.ma.getmaskarray(array) if np.ma.is_masked(array) else None
    data = np.ma.getdata(array)
    n = len(data)
    kind = data.dtype.kind
    if kind == "b":
        return vector_ext(b"l", n, _as(data, "<i4", mask, INT_NA, "<i4"))
    if kind in "iu":
        if n and ((data > 2**31 - 1).any() or (data <= INT_NA).any()):
            if (data > EXACT_INT).any() or (data < -EXACT_INT).any():
                raise ValueError("array holds integers beyond 2^53, which R cannot represent exactly")
            kind = "f"   # R has no 64-bit integers: exact doubles instead
        else:
            return vector_ext(b"i", n, _as(data, "<i4", mask, INT_NA, "<i4"))
    if kind == "f":
        return vector_ext(b"d", n, _as(data, "<f8", mask, REAL_NA_BITS, "<u8"))
    if kind in "OU":
        return vector_ext(b"s", n, _strings(data, np.zeros(n, dtype=bool) if mask is None else mask))
    raise TypeError(f"numpy arrays of dtype {data.dtype} cannot be sent to R")


def homogeneous_vector(items: list[Any] | tuple[Any, ...]) -> np.ndarray | None:
    """A list of scalars of one kind as the numpy array R's atomic vector is
    made from (None is NA), or None when the list is to stay an R list: when
    it is empty, holds only None, mixes kinds or holds anything but scalars.
    The kinds are bool; int; int and float; str."""
    kinds = set()
    for v in items:
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            kinds.add("b")
        elif isinstance(v, (int, np.integer)):
            kinds.add("i")
        elif isinstance(v, (float, np.floating)):
            kinds.add("f")
        elif isinstance(v, str):
            kinds.add("s")
        else:
            return None
    if not kinds or (len(kinds) > 1 and kinds != {"i", "f"}):
        return None
    mask = np.array([v is None for v in items])
    kind = "f" if "f" in kinds else kinds.pop()
    if kind == "s":
        return np.array(items, dtype=object)
    if kind == "i":
        for v in items:
            if v is not None and not -EXACT_INT <= v <= EXACT_INT:
                raise ValueError(f"integer {v} is beyond 2^53 and cannot be represented exactly in R")
    fill = {"b": False, "i": 0, "f": 0.0}[kind]
    dtype = {"b": bool, "i": np.int64, "f": np.float64}[kind]
    data = np.array([fill if v is None else v for v in items], dtype=dtype)
    return np.ma.MaskedArray(data, mask=mask) if mask.any() else data


def _travels_as_arrow(array: np.ndarray) -> bool:
    return array.ndim != 1 or len(array) >= ARROW_MIN_LENGTH or array.dtype.kind not in "biufUO"


#: The types whose values are their own wire form.
_PLAIN = frozenset({type(None), bool, float, str, bytes})


def scalars_wire(values: tuple[Any, ...]) -> list[Any] | None:
    """``values`` as wire values when each is a scalar that travels as itself
    (None, bool, float, str, bytes, a 32-bit int): the common small call,
    without to_wire's dispatch. None when any one needs to_wire."""
    for v in values:
        kind = type(v)
        if kind not in _PLAIN and not (kind is int and INT_NA < v < 2**31):
            return None
    return list(values)


def to_wire(value: Any, reference: Callable[[Any], Any], payloads: PayloadWriter | None) -> Any:
    """Converts a Python value for the envelope. ``reference`` gives the wire
    form of objects bound to the session (RObjects, R functions by name, Python
    callables), or None for anything else; it raises for one of another session.
    Tables and large arrays are added to ``payloads`` (see _payloads)."""
    kind = type(value)
    if kind in _PLAIN:   # the common case first, without isinstance() checks
        return value
    if kind is int:
        return _int_value(value)
    if isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        return _int_value(value)
    if isinstance(value, (list, tuple)):
        vector = homogeneous_vector(value)
        if vector is not None:
            return to_wire(vector, reference, payloads)
        return [to_wire(v, reference, payloads) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys sent to R must be str, not {type(k).__name__}")
            out[k] = to_wire(v, reference, payloads)
        return out
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, RCode):
        return value.to_wire()
    if isinstance(value, _TIME_SCALARS):       # one-element vectors of R's time classes
        value = np.array([value]) if isinstance(value, (np.datetime64, np.timedelta64)) else pd.Series([value])
    table = None
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return to_wire(value.item(), reference, payloads)
        if not _travels_as_arrow(value):
            return array_to_wire(value)
        table = numpy_to_table(value)
    elif isinstance(value, np.generic):
        return to_wire(value.item(), reference, payloads)
    else:
        table = to_table(value)
    if table is not None:
        if payloads is None:
            raise TypeError(f"a {type(value).__name__} cannot be sent in this message")
        return payloads.add(table)
    wire = reference(value)
    if wire is not None:
        return wire
    raise TypeError(f"cannot convert a value of type {type(value).__name__} to R")
