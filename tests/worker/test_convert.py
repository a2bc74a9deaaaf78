"""The conversion table (README, "Conversion"), pinned in both directions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge
from bridge._convert import homogeneous_vector


@pytest.mark.parametrize(("value", "r_type", "r_length"), [
    (None, "NULL", 0), (True, "logical", 1), (7, "integer", 1), (2**31 - 1, "integer", 1),
    (2**31, "double", 1), (-(2**31), "double", 1), (2**53, "double", 1), (1.5, "double", 1),
    ("é", "character", 1), (b"\x00\xff", "raw", 2), ([1, "a"], "list", 2), ({"a": 1}, "list", 1),
    (np.array([1.5, 2]), "double", 2), (np.array([1, 2], dtype=np.int32), "integer", 2),
    (np.array([1, 2], dtype=np.int64), "integer", 2), (np.array([2**40], dtype=np.int64), "double", 1),
    (np.array([True, False]), "logical", 2), (np.array(["a", None], dtype=object), "character", 2),
    (np.array(["a", "b"]), "character", 2), (np.float32(1.5), "double", 1), (np.int64(3), "integer", 1),
])
def test_python_to_r_types(r, value, r_type, r_length):
    assert r.typeof(value) == r_type
    assert r.length(value) == r_length


def test_python_to_r_values(r):
    assert r.identical(r.list(a=1, b="x"), r.eval("list(a = 1L, b = 'x')"))
    assert r.eval("function(x) identical(x, list(1L, list(k = TRUE)))")([[1], {"k": True}])
    assert r.eval("function(x) identical(x, list(1L, 'a', NULL))")([1, "a", None])   # mixed: a list
    assert r.eval("function(x) identical(x, c(1.5, NA, NaN))")(
        np.ma.MaskedArray([1.5, 0, np.nan], mask=[False, True, False]))
    assert r.eval("function(x) identical(x, c(TRUE, NA))")(np.ma.MaskedArray([True, True], mask=[0, 1]))
    assert r.eval("function(x) identical(x, c(NA, 3L))")(np.ma.MaskedArray([0, 3], mask=[1, 0]))
    assert r.eval("function(x) identical(x, 'h\u00e9llo \u4e16')")("h\u00e9llo \u4e16")
    # an int32 array holding R's NA bit pattern must not turn into NA
    assert r.eval("function(x) identical(x, c(-2147483648, 0))")(np.array([-(2**31), 0], dtype=np.int32))


def test_integers_beyond_2_53_are_refused(r):
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity(2**53 + 1)
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity([1, {"deep": -(2**60)}])
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity(np.array([2**60]))


def test_unsupported_python_values_are_refused_clearly(r):
    with pytest.raises(TypeError, match="cannot convert a value of type set"):
        r.identity({1, 2})
    with pytest.raises(TypeError, match="keys sent to R must be str"):
        r.identity({1: "a"})
    with pytest.raises(TypeError, match="complex"):
        r.identity(np.array([1j]))
    with pytest.raises(TypeError, match="complex"):
        r.identity(np.zeros((2, 2), dtype=complex))
    assert r.sum(1) == 1.0   # nothing was sent; the session is fine


@pytest.mark.parametrize(("code", "expected"), [
    ("NULL", None), ("TRUE", True), ("NA", None), ("5L", 5), ("NA_integer_", None), ("2.5", 2.5),
    ("NA_real_", None), ("'x'", "x"), ("NA_character_", None), ("list()", []),
    ("list(1L, 'a', NULL)", [1, "a", None]), ("list(a = 1L, b = list(c = TRUE))", {"a": 1, "b": {"c": True}}),
    ("as.raw(c(1, 255))", b"\x01\xff"), ("raw(0)", b""),
])
def test_r_to_python_scalars_and_containers(r, code, expected):
    got = r.eval(code)
    assert got == expected and type(got) is type(expected)


def test_nan_is_not_na(r):
    got = r.eval("NaN")
    assert isinstance(got, float) and math.isnan(got)


def test_r_vectors_become_numpy_arrays_with_na_masked(r):
    d = r.eval("c(1.5, NA, NaN)")
    assert isinstance(d, np.ma.MaskedArray) and d.dtype == np.float64
    assert d.mask.tolist() == [False, True, False] and math.isnan(d.data[2])
    i = r.eval("c(1L, NA)")
    assert i.dtype == np.int32 and i.mask.tolist() == [False, True]
    lg = r.eval("c(TRUE, NA, FALSE)")
    assert lg.dtype == np.bool_ and lg.mask.tolist() == [False, True, False]
    s = r.eval("c('a', NA, '\u00fc')")
    assert s.dtype == object and s.tolist() == ["a", None, "\u00fc"]
    plain = r.eval("c(1, 2, 3)")
    assert type(plain) is np.ndarray and plain.tolist() == [1.0, 2.0, 3.0]
    assert r.eval("integer(0)").dtype == np.int32 and len(r.eval("character(0)")) == 0


@pytest.mark.parametrize("code", ["structure(1:2, label = 'x')", "array(1:8, c(2, 2, 2), dimnames = list(c('a', 'b')))",
                                  "mean", "globalenv()", "list(1, b = 2)", "1i", "structure(list(1), class = 'foo')",
                                  "data.frame(x = I(list(1, 2)))", "list(a = 1, a = 2)"])
def test_objects_with_attributes_or_no_python_equivalent_stay_in_r(r, code):
    got = r.eval(code)
    assert isinstance(got, bridge.RObject)
    assert r.identical(got, r.eval(code))     # the same R object, passed back as an argument


def test_language_objects_are_handles_that_are_spliced_into_calls(r):
    r.eval("x <- 1; y <- 2")
    code = r.eval("quote(x + y)")
    assert isinstance(code, bridge.RObject) and code.rclass == ["call"]
    assert r.eval("function(x, y, e) e")(1, 2, code) == 3     # evaluated where the call runs: x + y
    assert r.eval("function(e) class(e)")(code) == "numeric"  # spliced: e = x + y, with globals x, y
    r["kept"] = code                                          # assigned, it stays a value
    assert r.eval("identical(kept, quote(x + y))") is True


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1),
    st.floats(allow_nan=False), st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                               blacklist_characters="\x00")),
    st.binary(min_size=2))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.text(min_size=1, alphabet="abcxyz_."), inner, max_size=5)), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values)
def test_round_trip_python_r_python(r, value):
    assert plain(r.identity(value)) == r_view(value)


def r_view(value):
    """What R makes of a Python value: a list of scalars of one kind is an
    atomic vector, which comes back as a scalar when it has one element."""
    if isinstance(value, list):
        if homogeneous_vector(value) is not None and len(value) == 1:
            return value[0]
        return [r_view(v) for v in value]
    if isinstance(value, dict):
        return {k: r_view(v) for k, v in value.items()}
    return value


def plain(got):
    if isinstance(got, np.ndarray):
        values, mask = np.ma.getdata(got).tolist(), np.ma.getmaskarray(got).tolist()
        return [None if m else v for v, m in zip(values, mask, strict=True)]
    if isinstance(got, list):
        return [plain(v) for v in got]
    if isinstance(got, dict):
        return {k: plain(v) for k, v in got.items()}
    return got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=True), max_size=50), st.data())
def test_round_trip_double_arrays_with_na_and_nan(r, floats, data):
    mask = data.draw(st.lists(st.booleans(), min_size=len(floats), max_size=len(floats)))
    arr = np.ma.MaskedArray(np.array(floats, dtype=np.float64), mask=mask)
    got = r.identity(arr)
    if len(floats) == 1:   # a length-1 vector comes back as a scalar
        assert (got is None) if mask[0] else (got == floats[0] or (math.isnan(got) and math.isnan(floats[0])))
        return
    assert np.ma.getmaskarray(got).tolist() == mask
    keep = ~np.array(mask, dtype=bool)
    np.testing.assert_array_equal(np.ma.getdata(got)[keep], np.array(floats)[keep])


def test_large_vectors_round_trip(r):
    big = np.arange(1_000_000, dtype=np.float64)
    assert r.sum(big) == float(big.sum())
    back = r.identity(big)
    assert np.array_equal(back, big)


def test_sending_a_masked_array_leaves_it_unchanged(r):
    data = np.array([1.5, 2.5, 3.5])
    masked = np.ma.MaskedArray(data, mask=[False, True, False])
    assert r.eval("function(x) identical(x, c(1.5, NA, 3.5))")(masked) is True
    assert data.tolist() == [1.5, 2.5, 3.5]          # the NA bit pattern went into a copy
    ints = np.array([1, 2], dtype=np.int32)
    assert r.eval("function(x) identical(x, c(NA, 2L))")(np.ma.MaskedArray(ints, mask=[True, False]))
    assert ints.tolist() == [1, 2]
