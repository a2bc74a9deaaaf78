"""The Arrow data plane against a real worker: types both ways, result types,
zero-copy, shared memory and its clean-up, hostile payloads."""

import datetime
import json
import os
import secrets
import signal
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from helpers import VECTORS, raw_exchange, recv_reply, shm_dealer, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bridge

#: Text pyarrow can encode (no lone surrogates) and R can hold (no NUL).
UTF8_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


def handle(r, code):
    return r.with_options(convert=False).eval(code)


def shm_segments():
    return {f for f in os.listdir("/dev/shm") if f.startswith("rbridge-")}


# ---- R -> Python ----------------------------------------------------------------------

EVERY_TYPE = ("data.frame(num = c(1.5, NA, NaN), int = c(1L, NA, 3L), lgl = c(TRUE, NA, FALSE), "
              "chr = c('a', NA, '\\u00e9'), fct = factor(c('u', NA, 'v')), "
              "date = as.Date(c('2024-02-29', NA, '1960-01-01')), "
              "time = as.POSIXct(c(0, NA, 1.5), origin = '1970-01-01', tz = 'Europe/Paris'), "
              "dur = as.difftime(c(1, NA, 2), units = 'mins'), stringsAsFactors = FALSE)")


def test_data_frame_becomes_pandas_with_plain_numpy_dtypes_by_default(r):
    df = r.eval(EVERY_TYPE)
    assert list(df.columns) == ["num", "int", "lgl", "chr", "fct", "date", "time", "dur"]
    assert df["num"].dtype == np.float64 and df["num"].isna().tolist() == [False, True, True]   # NA is NaN
    assert df["int"].dtype == np.float64 and df["int"].tolist()[::2] == [1.0, 3.0]     # as read_csv does
    assert df["lgl"].dtype == object and df["lgl"].tolist() == [True, None, False]
    assert df["chr"].iloc[2] == "é" and pd.isna(df["chr"].iloc[1])
    assert isinstance(df["fct"].dtype, pd.CategoricalDtype) and list(df["fct"].cat.categories) == ["u", "v"]
    assert df["date"].dtype == object and str(df["date"].iloc[0]) == "2024-02-29"   # datetime.date
    assert pd.isna(df["date"].iloc[1])
    assert str(df["time"].dt.tz) == "Europe/Paris" and df["time"].iloc[2].timestamp() == 1.5
    assert df["dur"].iloc[2] == pd.Timedelta(minutes=2) and pd.isna(df["dur"].iloc[1])
    assert df[["num", "int"]].to_numpy().dtype == np.float64     # feeds scikit-learn as it is
    named = r.eval("c(a = 1L, b = NA)")                            # named vectors follow the same rule
    assert named.dtype == np.float64 and named.index.tolist() == ["a", "b"]
    assert r.eval("c(a = TRUE, b = NA)").tolist() == [True, None]


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_lossless_dtype_backends_keep_na_apart_from_nan(r, backend):
    df = r.with_options(dtype_backend=backend).eval(EVERY_TYPE)
    assert df["num"].isna().tolist() == [False, True, False]       # NA is missing...
    assert np.isnan(df["num"].iloc[2])                              # ...and NaN is a number
    assert df["int"].isna().tolist() == [False, True, False] and df["int"].iloc[2] == 3
    assert df["lgl"].isna().tolist() == [False, True, False]
    want = {"numpy_nullable": ["Float64", "Int32", "boolean", "string"],
            "pyarrow": ["double[pyarrow]", "int32[pyarrow]", "bool[pyarrow]", "string[pyarrow]"]}[backend]
    assert [str(df[c].dtype) for c in ("num", "int", "lgl", "chr")] == want
    named = r.with_options(dtype_backend=backend).eval("c(a = 1L, b = NA)")
    assert named.isna().tolist() == [False, True] and named.iloc[0] == 1
    back = r.eval("function(d, want) identical(d, want)")    # difftime comes back in seconds: not compared
    assert back(df.drop(columns="dur"), r.with_options(convert=False).eval(
        "local({ d <- " + EVERY_TYPE + "; d$dur <- NULL; rownames(d) <- 0:2; d })"))


def test_dtype_backend_is_checked(r):
    with pytest.raises(ValueError, match="dtype_backend must be one of"):
        r.with_options(dtype_backend="numpy-nullable")
    with pytest.raises(ValueError, match="dtype_backend must be one of"):
        bridge.connect(dtype_backend="arrow")


def test_data_frame_shapes_names_and_row_names(r):
    dup = r.eval("structure(list(1:2, c('a', 'b')), names = c('x', 'x'), class = 'data.frame', "
                 "row.names = c(NA, -2L))")
    assert list(dup.columns) == ["x", "x"] and dup.shape == (2, 2)
    assert list(r.eval("data.frame(`a b` = 1, `1` = 2, check.names = FALSE)").columns) == ["a b", "1"]
    empty = r.eval("data.frame(a = numeric(0), s = character(0))")
    assert empty.shape == (0, 2)
    no_cols = r.eval("data.frame(row.names = 1:3)")
    assert no_cols.shape == (3, 0)
    named = r.eval("data.frame(x = 1:2, row.names = c('r1', 'r2'))")
    assert named.index.tolist() == ["r1", "r2"]
    subset = r.eval("data.frame(x = 1:5)[c(4, 2), , drop = FALSE]")
    assert subset.index.tolist() == [4, 2]
    assert r.eval("data.frame()").shape == (0, 0)


def test_vectors_become_numpy_with_masked_na(r):
    big = r.eval("x <- as.numeric(1:10000); x[5] <- NA; x[6] <- NaN; x")
    assert isinstance(big, np.ma.MaskedArray) and big.mask.sum() == 1 and big.mask[4]
    assert np.isnan(big.data[5]) and not big.mask[5]
    ints = r.eval("c(1:9999, NA)")
    assert ints.dtype == np.int32 and ints.mask[-1] and ints[0] == 1
    assert r.eval("rep(c(TRUE, NA), 5000)").mask.sum() == 5000
    strings = r.eval("rep(c('a', NA), 5000)")
    assert strings[0] == "a" and strings[1] is None
    # a length-1 time is a scalar, as other length-1 vectors are
    assert r.eval("as.Date('2024-01-02')") == datetime.date(2024, 1, 2)
    assert r.eval("as.POSIXct(0, origin = '1970-01-01', tz = 'UTC')") == pd.Timestamp(0, tz="UTC")
    assert r.eval("as.difftime(90, units = 'secs')") == pd.Timedelta(seconds=90)
    assert r.eval("as.Date(NA)") is None
    assert r.eval("as.Date(c('2024-01-02', NA))")[0] == np.datetime64("2024-01-02")


def test_factor_named_vector_and_arrays(r):
    f = r.eval("factor(c('lo', 'hi', NA), levels = c('lo', 'hi'), ordered = TRUE)")
    assert isinstance(f, pd.Categorical) and f.ordered and list(f.categories) == ["lo", "hi"]
    assert f.isna().tolist() == [False, False, True]
    s = r.eval("c(a = 1, b = NA)")
    assert isinstance(s, pd.Series) and s.index.tolist() == ["a", "b"] and s.isna().tolist() == [False, True]
    m = r.eval("matrix(1:6, 2)")
    assert m.shape == (2, 3) and m.tolist() == [[1, 3, 5], [2, 4, 6]]      # column-major respected
    a = r.eval("array(1:24, c(2, 3, 4))")
    assert a.shape == (2, 3, 4) and a[1, 2, 3] == 24 and a[1, 0, 0] == 2
    named = r.eval("matrix(1:4, 2, dimnames = list(c('a', 'b'), NULL))")   # with dimnames: a DataFrame
    assert named.index.tolist() == ["a", "b"] and named.columns.tolist() == [0, 1] and named.iloc[1, 1] == 4


# ---- Python -> R, checked with identical() in R ----------------------------------------

@pytest.mark.parametrize(("value", "code"), [
    (np.array([1.5, np.nan, -0.0]), "c(1.5, NaN, -0)"),
    (np.ma.masked_array([1.5, 2.0], mask=[False, True]), "c(1.5, NA)"),
    (np.arange(10000, dtype=np.int64), "0:9999"),
    (np.array([2**40, 1]), "c(2^40, 1)"),
    (np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32), "matrix(c(1L, 4L, 2L, 5L, 3L, 6L), 2)"),
    (np.asfortranarray(np.ones((2, 2))), "matrix(1, 2, 2)"),
    (np.arange(24.0).reshape(2, 3, 4), "aperm(array(0:23, c(4, 3, 2)), 3:1) + 0"),
    (np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"), "as.Date(c('2024-01-01', NA))"),
    (pd.Series([1.0, np.nan, None], dtype="Float64"), "c(1, NA, NA)"),
    (pd.Series([1.5, np.nan]), "c(1.5, NaN)"),
    (pd.Series(["a", None, "é"]), "c('a', NA, '\\u00e9')"),
    (pd.Series([True, None], dtype="boolean"), "c(TRUE, NA)"),
    (pd.Series([1, None], dtype="Int64"), "c(1L, NA)"),
    (pd.Series([1.0, 2.0], index=["a", "b"]), "c(a = 1, b = 2)"),
    (pd.Categorical(["x", "y", None, "x"]), "factor(c('x', 'y', NA, 'x'))"),
    (pd.Categorical([3, 1], categories=[1, 3], ordered=True), "factor(c('3', '1'), levels = c('1', '3'), "
                                                              "ordered = TRUE)"),
    (pd.Series(pd.to_datetime(["2024-01-01 12:00", None]).tz_localize("UTC")),
     "as.POSIXct(c('2024-01-01 12:00', NA), tz = 'UTC')"),
    (pd.Series(pd.to_timedelta(["1s", None])), "as.difftime(c(1, NA), units = 'secs')"),
    (pa.array([1, None], pa.int8()), "c(1L, NA)"),
    (pa.chunked_array([["a"], [None, "b"]], pa.large_string()), "c('a', NA, 'b')"),
    (pa.array([b"\x01", None]), "list(as.raw(1), NULL)"),
    (pa.array([0, 86400000], pa.date64()), "as.Date(c(0, 1), origin = '1970-01-01')"),
    (pa.array([1, 2], pa.timestamp("ns", tz="Asia/Tokyo")),
     "structure(c(1e-9, 2e-9), class = c('POSIXct', 'POSIXt'), tzone = 'Asia/Tokyo')"),
    (pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int64()), pa.array(["p", "q"])), "factor(c('q', 'p'))"),
])
def test_python_data_arrives_identical_to_the_r_object(r, value, code):
    assert r.identical(value, handle(r, code)), r.eval("function(x) capture.output(str(x))")(value)


def same_frame(r, df, want):
    """identical() in R, but for the row names: a pandas index travels as
    row names, the default one as 0..n-1 (see README)."""
    return r.eval("function(d, want) { if (.row_names_info(want) < 0) rownames(d) <- NULL; identical(d, want) }")(
        df, want)


def test_data_frames_arrive_identical(r):
    df = pd.DataFrame({"num": [1.5, np.nan], "int": pd.array([1, None], dtype="Int32"), "s": ["a", None],
                       "f": pd.Categorical(["u", "v"]), "b": [True, False],
                       "t": pd.to_datetime(["2024-01-01", None]).tz_localize("UTC")})
    want = handle(r, "data.frame(num = c(1.5, NaN), int = c(1L, NA), s = c('a', NA), f = factor(c('u', 'v')), "
                     "b = c(TRUE, FALSE), t = as.POSIXct(c('2024-01-01', NA), tz = 'UTC'))")
    assert same_frame(r, df, want)
    assert r.eval("function(d) rownames(d)")(df).tolist() == ["0", "1"]    # the pandas labels
    rows = pd.DataFrame({"x": [1, 2]}, index=["r1", "r2"])
    assert r.identical(rows, handle(r, "data.frame(x = 1:2, row.names = c('r1', 'r2'))"))
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    assert r.eval("function(d) names(d)")(dup).tolist() == ["a", "a"]
    no_columns = handle(r, "structure(list(), names = character(0), class = 'data.frame', row.names = c(NA, -3L))")
    assert r.identical(pd.DataFrame(index=range(3)), no_columns)
    assert r.identical(pa.table({"x": [1.0]}), handle(r, "data.frame(x = 1)"))    # Arrow tables have no index
    assert r.identical(pa.record_batch({"x": [1.0]}), handle(r, "data.frame(x = 1)"))
    other_index = pd.DataFrame({"v": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], name="when"))
    assert r.eval("function(d) names(d)")(other_index).tolist() == ["when", "v"]   # reset_index()


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_round_trip_of_a_data_frame_with_every_type(r, backend):
    code = ("data.frame(num = c(1.5, NA, NaN), int = c(1L, NA, 3L), lgl = c(TRUE, NA, FALSE), "
            "chr = c('a', NA, 'z'), fct = factor(c('u', NA, 'v')), date = as.Date(c('2024-02-29', NA, "
            "'1960-01-01')), time = as.POSIXct(c(0, NA, 1.5), origin = '1970-01-01', tz = 'UTC'))")
    df = r.with_options(dtype_backend=backend).eval(code)
    assert same_frame(r, df, handle(r, code))


def test_strings_r_cannot_hold_are_refused(r):
    with pytest.raises(bridge.RError, match="embedded NUL"):
        r.identity(pa.array(["a\x00b"]))
    assert r.sum(1) == 1


def test_integers_beyond_2_53_are_refused(r):
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity(pd.Series([2**60, 1]))
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity(pa.array([2**63 + 5], pa.uint64()))
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity(np.arange(5000, dtype=np.uint64) + np.uint64(2**62))
    assert r.sum(1) == 1


def test_unsupported_arrow_types_are_refused_clearly(r):
    with pytest.raises(TypeError, match="list<item: int64>"):
        r.identity(pa.array([[1, 2]]))
    with pytest.raises(TypeError, match="decimal"):
        r.identity(pa.table({"d": pa.array([1], pa.decimal128(5, 2))}))
    assert r.sum(1) == 1


# ---- result types --------------------------------------------------------------------------

def test_results_option_chooses_pyarrow_per_session_and_per_call(r):
    arrow = r.with_options(results="arrow")
    table = arrow.eval("data.frame(x = 1:2, f = factor(c('a', 'b')))")
    assert isinstance(table, pa.Table) and table.schema.field("f").type == pa.dictionary(pa.int32(), pa.string())
    assert isinstance(arrow.eval("c(1.5, NA)"), pa.Array) and arrow.eval("c(1.5, NA)").null_count == 1
    assert isinstance(arrow.eval("runif(5000)"), pa.Array)
    assert isinstance(r.eval("data.frame(x = 1)"), pd.DataFrame)       # the session's default is unchanged
    with bridge.connect(results="arrow") as s:
        assert isinstance(s.eval("data.frame(x = 1)"), pa.Table)
    with pytest.raises(ValueError, match="results must be one of"):
        r.with_options(results="polars")


def test_to_arrow_on_handles_is_lossless(r):
    df = handle(r, "data.frame(x = c(1.5, NA), d = as.Date(c('2024-01-01', NA)), row.names = c('a', 'b'))")
    table = df.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.column("d").type == pa.date32() and table.column("x").null_count == 1
    assert r.identical(table, df)                       # and back again, unchanged
    vec = handle(r, "c(1L, NA)").to_arrow()
    assert isinstance(vec, pa.Array) and vec.to_pylist() == [1, None]
    assert handle(r, "7").to_arrow().to_pylist() == [7.0]      # even a scalar
    with pytest.raises(bridge.RError, match="no Arrow form"):
        handle(r, "lm(mpg ~ wt, mtcars)").to_arrow()


def test_received_numeric_data_is_not_copied(r):
    x = r.eval("as.numeric(1:100000)")
    assert not x.flags.writeable and not x.flags.owndata     # a view of the received payload


def test_callbacks_take_and_return_data_frames(r):
    def summarize(df):
        assert isinstance(df, pd.DataFrame)
        return df.assign(y=df["x"] * 2)

    got = r.eval("function(f) f(data.frame(x = c(1, 2)))")(summarize)
    assert got["y"].tolist() == [2.0, 4.0]
    assert r.eval("function(f) class(f(data.frame(x = 1)))")(summarize) == "data.frame"


# ---- property-based round trips ----------------------------------------------------------

floats = hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(allow_nan=True, allow_infinity=True))
masks = st.lists(st.booleans(), max_size=200)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=floats, mask=masks)
def test_hypothesis_float_series_round_trip(r, values, mask):
    mask = np.resize(np.array(mask, dtype=bool), len(values)) if mask else np.zeros(len(values), bool)
    sent = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, mask=mask, from_pandas=False)))
    back = r.with_options(results="arrow").identity(sent)
    if len(values) == 1:                     # a length-1 vector comes back as a scalar
        assert back is None if mask[0] else (back == values[0] or (np.isnan(back) and np.isnan(values[0])))
        return
    assert back.is_null().to_pylist() == mask.tolist()
    got = back.fill_null(0.0).to_numpy(zero_copy_only=False)
    assert np.array_equal(got[~mask], values[~mask], equal_nan=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.one_of(st.none(), st.text(UTF8_CHARS, max_size=8)),
                               st.one_of(st.none(), st.integers(-(2**31) + 1, 2**31 - 1)),
                               st.one_of(st.none(), st.sampled_from(["lo", "mid", "hi"]))), max_size=60))
def test_hypothesis_frame_round_trip(r, rows):
    table = pa.table({"s": pa.array([x[0] for x in rows], pa.string()),
                      "i": pa.array([x[1] for x in rows], pa.int32()),
                      "f": pa.array([x[2] for x in rows], pa.string()).dictionary_encode()})
    back = r.with_options(results="arrow").identity(table)
    assert back.column("s").to_pylist() == table.column("s").to_pylist()
    assert back.column("i").to_pylist() == table.column("i").to_pylist()
    assert back.column("f").to_pylist() == table.column("f").to_pylist()


def test_large_round_trip_both_paths(r):
    n = 1_000_000
    df = pd.DataFrame({"x": np.random.default_rng(1).random(n), "s": np.array(["a", "bb", "ccc", None] * (n // 4)),
                       "f": pd.Categorical(np.array(["u", "v"] * (n // 2)))})
    with bridge.connect(shm=False) as frames:
        for session in (r, frames):
            back = session.identity(df)
            assert back["x"].equals(df["x"]) and back["f"].equals(df["f"])
            assert back["s"].isna().sum() == n // 4 and back["s"].iloc[2] == "ccc"
    assert shm_segments() == set()


# ---- shared memory ------------------------------------------------------------------------

def test_the_handshake_enables_shared_memory_on_one_host(r, tcp_worker):
    assert r.uses_shared_memory is True
    with bridge.connect(tcp_worker[0]) as remote:
        assert remote.uses_shared_memory is True           # a tcp worker on the same host sees the segment too
        assert remote.eval("length(runif(3e5))") == 3e5
    with bridge.connect(shm=False) as s:
        assert s.uses_shared_memory is False


def test_a_worker_that_cannot_see_the_probe_falls_back_to_frames(r, monkeypatch):
    monkeypatch.setattr(bridge._session, "make_probe", lambda: ("/rbridge-c1-" + "0" * 32, b"x" * 16))
    with bridge.connect() as s:
        assert s.uses_shared_memory is False
        assert len(s.eval("runif(5e5)")) == 5e5


def test_large_payloads_leave_no_segment_behind(r):
    before = shm_segments()
    big = np.random.default_rng(0).random(500_000)
    r.assign("big", big)
    back = r.eval("big")
    assert np.array_equal(back, big)
    assert shm_segments() == before


def test_a_fresh_sessions_arenas_carry_values_right_the_first_time_and_after(fresh):
    # fresh arena pages are written through the segment's file, reused ones
    # through the mapping: both ways, on both sides, give the same values
    n = 2_000_000
    sent = np.random.default_rng(4).normal(size=n)
    for round_ in range(3):
        assert np.array_equal(fresh.eval(f"as.numeric(seq_len({n}))"), np.arange(1, n + 1, dtype=np.float64))
        ints = fresh.eval(f"{n}:1")
        assert ints.dtype == np.int32 and np.array_equal(ints, np.arange(n, 0, -1, dtype=np.int32))
        assert np.array_equal(fresh.eval(f"x <- seq(0.5, by = 2, length.out = {n}); x[{round_ + 1}] <- NA; x")
                              .filled(-1.0)[:4], np.where(np.arange(4) == round_, -1.0, 0.5 + 2 * np.arange(4)))
        fresh.assign("y", sent + round_)
        assert fresh.eval(f"y[{n}]") == float(sent[-1] + round_)
        assert fresh.eval("sum(y)") == pytest.approx(float((sent + round_).sum()))
    assert fresh.uses_shared_memory


def test_segments_of_dead_processes_are_swept_at_start_up(tcp_worker):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive_name = f"rbridge-c{os.getpid()}-{secrets.token_hex(16)}"
    stale = [f"rbridge-c{dead.pid}-{secrets.token_hex(16)}", f"rbridge-w{dead.pid}-{secrets.token_hex(16)}"]
    for name in [*stale, alive_name]:
        Path("/dev/shm", name).write_bytes(b"x")
    try:
        with bridge.connect(tcp_worker[0]):
            pass
        assert not any(Path("/dev/shm", n).exists() for n in stale)
        assert Path("/dev/shm", alive_name).exists()       # a live process's segment is left alone
    finally:
        Path("/dev/shm", alive_name).unlink(missing_ok=True)


def test_an_unread_result_arena_goes_when_its_client_disconnects(tcp_worker):
    with shm_dealer(tcp_worker[0]) as sock:
        sock.send(msgpack.packb({"v": 1, "id": 2, "op": "eval", "code": "runif(1e6)", "shm": True}))
        reply = msgpack.unpackb(recv_reply(sock)[0], raw=False, ext_hook=lambda c, d: (c, d))
        code, ref = reply["value"]
        assert code == 3 and ref[:1] == b"a"          # a region of the worker's arena for this client
        seg = ref[21:].decode()
        assert Path("/dev/shm" + seg).exists()       # sent, and nobody has mapped it
    assert wait_until(lambda: not Path("/dev/shm" + seg).exists(), 10)


def test_a_killed_worker_leaves_no_segment(fresh):
    pid = fresh.worker_pid
    fake = Path("/dev/shm", f"rbridge-w{pid}-{secrets.token_hex(16)}")
    fake.write_bytes(b"x")          # as if it died between writing a result and the client reading it
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(bridge.WorkerDied):
        fresh.eval("1")
    fresh.close()
    assert not fake.exists()


# ---- hostile payloads -----------------------------------------------------------------------

def _assign(ref):
    return msgpack.packb({"v": 1, "id": 9, "op": "assign", "name": "x", "value": msgpack.ExtType(3, ref)})


def _stream(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


GOOD = _stream(pa.table({"x": pa.array([1.0, None]), "s": pa.array(["a", "b"])}))


@pytest.mark.parametrize(("frames", "message"), [
    ([_assign(b"f" + struct.pack("<I", 2)), GOOD], "frame 2"),
    ([_assign(b"f" + struct.pack("<I", 0))], "frame 0"),
    ([_assign(b"f\x01\x00\x00\x00"), GOOD[:40]], "Arrow"),
    ([_assign(b"f\x01\x00\x00\x00"), b"\xff\xff\xff\xff" + b"\x10\x00\x00\x00" + b"\x00" * 16], "Arrow"),
    ([_assign(b"f\x01\x00\x00\x00"), os.urandom(300)], "Arrow"),
    ([_assign(b"m" + struct.pack("<Q", 8) + b"/../../etc/passwd")], "invalid shared-memory segment name"),
    ([_assign(b"m" + struct.pack("<Q", 8) + f"/rbridge-c1-{'0' * 32}".encode())], "cannot open"),
    ([_assign(b"z")], "malformed payload reference"),
])
def test_hostile_payloads_get_error_replies(fresh, frames, message):
    reply = raw_exchange(fresh.endpoint, frames, timeout_ms=10000)
    assert reply["op"] == "error" and message in reply["error"]["message"]
    assert fresh.sum(1, 2) == 3


def test_mutated_arrow_payloads_never_crash_the_worker(fresh):
    rng = np.random.default_rng(7)
    good = bytearray(GOOD)
    for _ in range(150):
        bad = bytearray(good)
        for at in rng.integers(0, len(bad), 3):
            bad[at] = int(rng.integers(0, 256))
        reply = raw_exchange(fresh.endpoint, [_assign(b"f\x01\x00\x00\x00"), bytes(bad)], timeout_ms=10000)
        assert reply["op"] in ("result", "error")
    assert fresh.sum(1, 2) == 3


def test_a_foreign_segment_is_refused(fresh):
    name = f"/rbridge-c{os.getpid()}-{secrets.token_hex(16)}"
    fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_RDWR, 0o644)   # readable by others: not private
    os.write(fd, GOOD)
    os.close(fd)
    try:
        reply = raw_exchange(fresh.endpoint, [_assign(b"m" + struct.pack("<Q", len(GOOD)) + name.encode())],
                             timeout_ms=10000)
        assert reply["op"] == "error" and "not a private segment" in reply["error"]["message"]
    finally:
        Path("/dev/shm" + name).unlink(missing_ok=True)


# ---- golden payloads written by the worker ------------------------------------------------------

def _golden(name):
    return pa.ipc.open_stream((VECTORS / "arrow" / f"r_{name}.arrow").read_bytes()).read_all()


def test_r_written_golden_payloads_read_in_pyarrow():
    manifest = json.loads((VECTORS / "arrow.json").read_text())
    assert {e["name"] for e in manifest["rserver"]} >= {"frame", "row_names", "matrix", "named_vector"}
    frame = _golden("frame")
    assert frame.schema.metadata[b"rbridge.kind"] == b"data.frame"
    types = {f.name: f.type for f in frame.schema}
    assert types == {"num": pa.float64(), "int": pa.int32(), "chr": pa.string(), "lgl": pa.bool_(),
                     "fct": pa.dictionary(pa.int32(), pa.string()), "date": pa.date32(),
                     "time": pa.timestamp("us", tz="Europe/Paris"), "dur": pa.duration("us")}
    num = frame.column("num").to_pylist()
    assert num[0] == 1.5 and num[1] is None and np.isnan(num[2])
    assert frame.column("chr").to_pylist() == ["a", None, "é"]
    assert frame.column("fct").to_pylist() == ["u", None, "v"]
    assert frame.column("dur").to_pylist()[2] == pd.Timedelta(hours=2.5)
    assert frame.schema.field("dur").metadata == {b"rbridge.units": b"hours"}
    rows = _golden("row_names")
    assert rows.schema.metadata[b"rbridge.row_names"] == b"1" and rows.column(1).to_pylist() == ["r1", "r2"]
    m = _golden("matrix")
    assert m.schema.metadata[b"rbridge.dim"] == b"2,3" and m.column(0).to_pylist()[2] is None
    assert _golden("named_vector").column("names").to_pylist() == ["a", "b"]
    assert _golden("ordered").column(0).type.ordered
    assert _golden("zero_columns").num_rows == 3
    xts = _golden("xts_series")
    assert xts.schema.metadata[b"rbridge.index"] == b"matrix" and xts.column_names == ["a", "b", "index"]
    assert xts.schema.field("index").type == pa.timestamp("us", tz="UTC") and xts.column("a").to_pylist()[1] is None
    months = _golden("zoo_yearmon")
    assert months.schema.metadata[b"rbridge.index_class"] == b"yearmon"
    assert months.column("index").to_pylist() == [2024.0, 2024.25]

