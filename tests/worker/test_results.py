"""Results that fit pandas (README, "Conversion"): alignment of named results,
data.frame subclasses, matrices with dimnames, time series, dates and times,
conversion errors."""

import datetime
import subprocess
import zoneinfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import bridge


def test_automatic_names_come_back_by_position_and_real_names_as_the_index(r):
    fitted = r.eval("fitted(lm(mpg ~ wt, data.frame(mpg = c(1, 3, 2, 5), wt = 1:4)))")
    assert isinstance(fitted, np.ndarray) and fitted.shape == (4,)      # names "1".."4": positions
    named = r.eval("c(a = 1, b = 2)")
    assert isinstance(named, pd.Series) and named.index.tolist() == ["a", "b"]
    ints = r.eval("sapply(split(mtcars$mpg, mtcars$cyl), length)")
    assert ints.index.tolist() == [4, 6, 8]                             # integer names: an integer index
    assert r.eval("c('007' = 1)").index.tolist() == ["007"]             # not canonical: a string


def test_a_pandas_index_travels_as_row_names_and_comes_back(r):
    df = pd.DataFrame({"v": [10.0, 20.0, 30.0]}, index=[7, 3, 9])
    assert r.eval("function(d) rownames(d)")(df).tolist() == ["7", "3", "9"]
    assert r.identity(df).index.tolist() == [7, 3, 9]
    plain = pd.DataFrame({"v": [1.0, 2.0]})
    assert r.eval("function(d) rownames(d)")(plain).tolist() == ["0", "1"]
    back = r.identity(plain)
    assert isinstance(back.index, pd.RangeIndex) and back.index.equals(plain.index)
    picked = r.eval("function(d) d[d$v > 15, , drop = FALSE]")(df)
    assert picked.index.tolist() == [3, 9]                              # the original labels


def test_data_frame_subclasses_become_data_frames_with_their_r_class_in_attrs(r):
    tib = r.eval("tibble::tibble(x = 1:2, y = c('a', 'b'))")
    assert isinstance(tib, pd.DataFrame) and tib.attrs["r_class"] == ["tbl_df", "tbl", "data.frame"]
    anova = r.eval("anova(lm(mpg ~ wt, mtcars))")
    assert anova.index.tolist() == ["wt", "Residuals"] and anova["Df"].tolist() == [1, 30]
    assert anova.attrs["r_class"] == ["anova", "data.frame"] and "heading" in anova.attrs["r_attributes"]
    labelled = r.eval("local({ d <- data.frame(x = I(1:2), y = c(1.5, 2)); attr(d$y, 'label') <- 'Weight'; d })")
    assert labelled.attrs["r_column_attributes"] == {"x": {"class": "AsIs"}, "y": {"label": "Weight"}}
    assert labelled["x"].tolist() == [1, 2]
    stays = r.eval("data.frame(x = I(list(1, 2)))")                      # a list column: no pandas form
    assert isinstance(stays, bridge.RObject)
    with pytest.raises(bridge.RError, match="class 'data.frame' has no Arrow form"):
        stays.to_arrow()
    for code in ("tibble::tibble(x = 1:2)", "dplyr::group_by(mtcars, cyl)", "data.table::data.table(a = 1)",
                 "anova(lm(mpg ~ wt, mtcars))"):
        table = r.with_options(convert=False).eval(code).to_arrow()
        assert isinstance(table, pa.Table) and b"rbridge.r_class" in table.schema.metadata


def test_matrices_with_dimnames_are_data_frames(r):
    cor = r.cor(r["mtcars"][["mpg", "wt", "hp"]])
    assert cor.index.tolist() == cor.columns.tolist() == ["mpg", "wt", "hp"]
    assert cor.loc["mpg", "mpg"] == 1.0
    ci = r.confint(r.lm("mpg ~ wt", data=r["mtcars"]))
    assert ci.columns.tolist() == ["2.5 %", "97.5 %"] and ci.index.tolist() == ["(Intercept)", "wt"]
    interval = r.predict(r.lm("mpg ~ wt", data=r["mtcars"]), interval="confidence")
    assert interval.columns.tolist() == ["fit", "lwr", "upr"] and len(interval) == 32
    crosstab = r.eval("table(cyl = mtcars$cyl, gear = mtcars$gear)")
    assert crosstab.index.name == "cyl" and crosstab.columns.name == "gear" and crosstab.loc[8, 3] == 12
    counts = r.eval("table(c('b', 'a', 'b'))")
    assert counts.to_dict() == {"a": 1, "b": 2}
    rows_only = r.eval("matrix(1:4, 2, dimnames = list(c('r1', 'r2'), NULL))")
    assert rows_only.columns.tolist() == [0, 1] and rows_only.loc["r2", 1] == 4
    table = r.with_options(convert=False).eval("cor(mtcars[, 1:2])").to_arrow()
    assert table.schema.metadata[b"rbridge.kind"] == b"matrix"
    assert r.eval("function(m) identical(m, cor(mtcars[, 1:2]))")(table)     # lossless back to R


def test_time_series_come_back_with_periods_and_go_to_r_as_ts(r):
    air = r["AirPassengers"]
    assert isinstance(air.index, pd.PeriodIndex) and air.index.freqstr == "M" and len(air) == 144
    quarterly = r.eval("ts(1:6, start = c(2001, 2), frequency = 4)")
    assert quarterly.index[0] == pd.Period("2001Q2", "Q")
    yearly = r.eval("ts(c(5, 6), start = 1990)")
    assert yearly.index.tolist() == [pd.Period("1990", "Y"), pd.Period("1991", "Y")]
    weekly = r.eval("ts(1:3, start = c(1, 3), frequency = 7)")
    assert weekly.index.tolist() == pytest.approx([1 + 2 / 7, 1 + 3 / 7, 1 + 4 / 7])
    multi = r.eval("ts(matrix(1:6, 3, dimnames = list(NULL, c('a', 'b'))), start = c(2000, 1), frequency = 12)")
    assert multi.columns.tolist() == ["a", "b"] and multi.index[2] == pd.Period("2000-03", "M")
    tsp = r.eval("function(x) c(frequency(x), start(x))")
    assert tsp(air).tolist() == [12.0, 1949.0, 1.0]                        # back to R as the same ts
    assert r.eval("function(x) isTRUE(all.equal(x, AirPassengers))")(air)
    dated = pd.Series([1.0, 2, 3], index=pd.date_range("2020-01-01", periods=3, freq="QS"))
    assert tsp(dated).tolist() == [4.0, 2020.0, 1.0]
    explicit = bridge.ts(np.arange(10.0), frequency=7, start=(2, 3))
    assert tsp(explicit).tolist() == [7.0, 2.0, 3.0]
    assert r.eval("function(x) class(x)")(bridge.ts(pd.DataFrame({"a": [1.0, 2], "b": [3.0, 4]}), 12, 2001)) \
        .tolist()[:3] == ["mts", "ts", "matrix"]
    irregular = pd.Series([1.0, 2], index=pd.to_datetime(["2020-01-01", "2020-03-07"]))
    assert r.eval("function(x) class(x)")(irregular) == "numeric"           # no frequency: a named vector
    with pytest.raises(ValueError, match="frequency must be positive"):
        bridge.ts([1.0], frequency=0)


def test_zoo_and_xts_series_come_back_indexed_by_time_and_go_back_as_themselves(r):
    r.eval("suppressMessages(library(xts)); set.seed(3)")
    r.eval("px <- xts(cbind(open = c(10, NA, 10.5, 11), close = c(10.2, 10.4, NA, 11.3)), "
           "as.POSIXct('2024-03-10', tz = 'America/New_York') + 3600 * 0:3)")
    px = r["px"]
    assert isinstance(px, pd.DataFrame) and px.columns.tolist() == ["open", "close"]
    assert str(px.index.dtype) == "datetime64[us, America/New_York]"
    assert px.index[3] == pd.Timestamp("2024-03-10 04:00", tz="America/New_York")   # across the DST change
    assert np.isnan(px.loc[px.index[1], "open"]) and px.attrs["r_class"] == ["xts", "zoo"]
    nullable = r.with_options(dtype_backend="numpy_nullable")

    def same_as(code):
        return r.eval(f"function(x) identical(x, {code})")
    assert same_as("px")(nullable["px"])   # lossless: NA stays NA
    back = r.eval("function(x) list(class(x), tzone(x), colnames(x), all.equal(is.na(x), is.na(px)))")(px * 2)
    assert back[0].tolist() == ["xts", "zoo"] and back[1] == "America/New_York"
    assert back[2].tolist() == ["open", "close"] and back[3] is True
    # an R function on the series, with its result as a frame indexed by the same times
    sma = r.eval("function(x) TTR::SMA(na.locf(x[, 'close']), n = 2)")(px)
    assert sma.index.equals(px.index) and sma.iloc[1, 0] == pytest.approx(10.3)
    daily = r.eval("zoo(c(1.5, NA, 3), as.Date('2024-01-01') + 0:2)")
    assert isinstance(daily, pd.Series) and daily.index.tolist() == [datetime.date(2024, 1, d) for d in (1, 2, 3)]
    assert same_as("zoo(c(1.5, NA, 3), as.Date('2024-01-01') + 0:2)")(
        nullable.eval("zoo(c(1.5, NA, 3), as.Date('2024-01-01') + 0:2)"))
    numbered = r.eval("zoo(matrix(1:6, 3), c(0.5, 1, 2))")
    assert numbered.columns.tolist() == [0, 1] and numbered.index.tolist() == [0.5, 1.0, 2.0]
    assert same_as("zoo(matrix(1:6, 3), c(0.5, 1, 2))")(numbered)
    # zoo's months and quarters are periods
    air = r.eval("as.zoo(AirPassengers)")
    assert isinstance(air.index, pd.PeriodIndex) and air.index.freqstr == "M"
    assert air.index[0] == pd.Period("1949-01", "M") and air.iloc[-1] == 432.0
    assert same_as("as.zoo(AirPassengers)")(air)
    quarters = r.eval("xts(cbind(q = c(1.5, 2.5)), as.yearqtr(c(1999.75, 2000)))")
    assert quarters.index.tolist() == [pd.Period("1999Q4", "Q"), pd.Period("2000Q1", "Q")]
    assert same_as("xts(cbind(q = c(1.5, 2.5)), as.yearqtr(c(1999.75, 2000)))")(quarters)
    # an index with no Python form stays a handle; a frame whose values are
    # no longer of one type goes back as a data.frame
    assert isinstance(r.eval("zoo(1:2, factor(c('a', 'b')))"), bridge.RObject)
    empty = r.eval("px[0, ]")
    assert empty.shape == (0, 2) and str(empty.index.dtype) == "datetime64[us, America/New_York]"
    assert r.eval("function(x) class(x)")(empty).tolist() == ["xts", "zoo"]
    bogus = pa.table({"v": [1.0], "index": [1.0]}).replace_schema_metadata(
        {"rbridge.kind": "data.frame", "rbridge.index": "cube"})
    with pytest.raises(bridge.RError, match="malformed rbridge.index"):
        r.eval("function(x) x")(bogus)
    mixed = px.assign(note=["a", "b", "c", "d"])
    assert r.eval("function(x) class(x)")(mixed) == "data.frame"
    assert r.eval("function(x) names(x)")(mixed).tolist() == ["index", "open", "close", "note"]


def test_date_and_time_scalars_both_ways(r):
    fmt = r.eval("function(x) paste(class(x)[1], format(x))")
    assert fmt(datetime.date(2024, 2, 29)) == "Date 2024-02-29"
    assert fmt(np.datetime64("2024-02-29")) == "Date 2024-02-29"
    assert fmt(datetime.datetime(2024, 2, 29, 13, 5)) == "POSIXct 2024-02-29 13:05:00"
    assert fmt(pd.Timestamp("2024-02-29 13:05:00.25")) == "POSIXct 2024-02-29 13:05:00"
    paris = datetime.datetime(2024, 7, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert r.eval("function(x) c(format(x, usetz = TRUE), attr(x, 'tzone'))")(paris).tolist() == \
        ["2024-07-01 09:00:00 CEST", "Europe/Paris"]
    assert r.eval("function(x) as.numeric(x, units = 'secs')")(datetime.timedelta(minutes=2, seconds=3)) == 123
    assert r.eval("as.Date('2024-02-29')") == datetime.date(2024, 2, 29)
    assert r.eval("as.POSIXct('2024-02-29 13:05', tz = 'UTC')") == pd.Timestamp("2024-02-29 13:05", tz="UTC")
    assert r.eval("as.difftime(3, units = 'hours')") == pd.Timedelta(hours=3)
    assert r.identity(pd.NaT if False else np.datetime64("NaT", "s")) is None


@pytest.mark.parametrize("unit", ["W", "D", "h", "m", "s", "ms", "us", "ns"])
def test_every_fixed_timedelta64_unit_arrives_in_seconds(r, unit):
    values = np.array([1, 3], dtype=f"timedelta64[{unit}]")
    seconds = r.eval("function(x) as.numeric(x, units = 'secs')")(values)
    np.testing.assert_allclose(seconds, values / np.timedelta64(1, "s"))


def test_months_and_years_have_no_fixed_length(r):
    with pytest.raises(TypeError, match="months and years have no fixed length"):
        r.identity(np.array([1], dtype="timedelta64[M]"))
    assert r.eval("function(x) format(x)")(np.array(["2024-03"], dtype="datetime64[M]")) == "2024-03-01"


def test_naive_times_keep_their_wall_clock_under_any_worker_time_zone():
    for tz in ("America/New_York", "Asia/Kolkata"):
        with bridge.connect(worker_env={"TZ": tz}) as r:
            assert r.eval("Sys.timezone()") == tz or r.eval("Sys.getenv('TZ')") == tz
            naive = pd.Series(pd.to_datetime(["2024-01-15 08:30:00", "2024-07-15 23:59:59"]))
            assert r.eval("function(x) format(x)")(naive).tolist() == ["2024-01-15 08:30:00", "2024-07-15 23:59:59"]
            assert r.eval("function(x) format(x, '%H:%M')")(datetime.datetime(2024, 1, 1, 8, 30)) == "08:30"
            back = pd.Series(r.identity(naive))           # UTC-aware: the same wall clock in UTC
            assert str(back.dt.tz) == "UTC" and back.dt.tz_convert(None).tolist() == naive.tolist()


def test_conversion_errors_name_the_column_and_the_type(r):
    with pytest.raises(TypeError, match=r"column 'mixed' \(dtype object holding int, str\) cannot be sent to R"):
        r.identity(pd.DataFrame({"ok": [1, 2], "mixed": [1, "a"]}))
    with pytest.raises(TypeError, match="column 'z' holds complex numbers"):
        r.identity(pd.DataFrame({"z": [1j, 2j]}))
    with pytest.raises(TypeError, match="column 'l' has Arrow type list"):
        r.identity(pd.DataFrame({"l": [[1], [2]]}))
    periods = r.eval("function(d) sapply(d, function(c) class(c)[1])")(
        pd.DataFrame({"p": pd.period_range("2020-01", periods=2, freq="M"),
                      "h": pd.period_range("2020-01-01 00:00", periods=2, freq="h")}))
    assert periods.to_dict() == {"p": "Date", "h": "POSIXct"}


def test_wide_frames_convert_both_ways(r):
    wide = pd.DataFrame(np.random.default_rng(0).normal(size=(100, 2000)), columns=[f"c{i}" for i in range(2000)])
    back = r.identity(wide)
    pd.testing.assert_frame_equal(back, wide)
    assert r.eval("function(d) dim(d)")(wide).tolist() == [100, 2000]


def test_a_worker_started_from_the_shell_attaches_nothing_until_asked(tmp_path):
    done = subprocess.run(["Rscript", "-e", "cat(search(), sep = ' ')"], capture_output=True, text=True)
    assert "rbridge:args" not in done.stdout


def test_row_names_from_metadata_is_checked(r):
    table = pa.table({"v": [1.0, 2.0, 3.0]})
    for bad in ("x", "", "-", "12345678901", "2147483647"):
        hostile = table.replace_schema_metadata({"rbridge.kind": "data.frame", "rbridge.row_names_from": bad})
        with pytest.raises(bridge.RError, match="row_names_from"):
            r.identity(hostile)
    fine = table.replace_schema_metadata({"rbridge.kind": "data.frame", "rbridge.row_names_from": "-1"})
    assert r.eval("function(d) rownames(d)")(fine).tolist() == ["-1", "0", "1"]
    assert r.sum(1) == 1
