"""Calls R can evaluate again, and R code from Python (README, "What R sees"
and "R code from Python"; SPEC §4 `call`, ext 5)."""

import gc
import re

import numpy as np
import pandas as pd
import pytest

import bridge
from bridge import expr, formula, sym


def deparsed_call(r, fit):
    return r.eval("function(f) paste(deparse(f$call), collapse = '')")(fit)


def test_values_are_bound_under_unique_names_r_finds_from_anywhere(r):
    df = pd.DataFrame({"x": [1.0, 2, 3, 4], "y": [2.0, 4.1, 5.9, 8.2]})
    fit = r.lm("y ~ x", data=df)
    call = deparsed_call(r, fit)
    assert re.fullmatch(r"lm\(formula = y ~ x, data = data\.\d+\)", call)
    name = call.split("data = ")[1][:-1]
    assert r.eval(f"nrow({name})") == 4                          # from the global environment
    assert r.eval("function(n) n %in% ls('rbridge:args')")(name) is True
    r["data"] = pd.DataFrame({"x": [0.0, 1], "y": [5.0, 5]})   # a global that must never be used
    again = r.eval("function(f) coef(eval(f$call, globalenv()))")(fit)
    np.testing.assert_allclose(again, r.coef(fit))


def test_update_works_with_no_global_data_at_all(fresh):
    fit = fresh.lm("mpg ~ wt", data=fresh["mtcars"])
    assert fresh.eval("exists('data')") is True                 # utils::data, a function: not the data
    refit = fresh.update(fit, ". ~ . + hp")
    np.testing.assert_allclose(fresh.coef(refit), fresh.eval("coef(lm(mpg ~ wt + hp, mtcars))"))
    np.testing.assert_allclose(fresh.coef(fresh.eval("function(f) update(f, . ~ 1)")(fit)),
                               fresh.eval("coef(lm(mpg ~ 1, mtcars))"))   # update() called from R code


def test_positional_values_take_the_name_of_the_formal_they_fill(r):
    show = r.eval("function(x, y) paste(deparse(sys.call()), collapse = '')")   # records its call: unique
    assert re.search(r"\(x\.\d+, y\.\d+\)$", show(np.arange(3.0), np.arange(3.0)))
    plain = r.eval("function(x, y) c(deparse(substitute(x)), deparse(substitute(y)))")   # does not: plain
    assert plain(np.arange(3.0), np.arange(3.0)).tolist() == ["x", "y"]
    labels = r.eval("function(...) { cl <- match.call(graphics::plot.default, sys.call()); "
                    "c(deparse(cl$x), deparse(cl$y)) }")
    got = labels(np.arange(3.0), np.arange(3.0) ** 2)
    assert all(not g.startswith("arg") for g in got)
    hist = r.hist(np.array([1.0, 2.0, 2.5, 3.0]), plot=False)
    assert hist["xname"] == "x"                                # "Histogram of x", never of arg1


def test_a_value_bound_again_keeps_its_name(r):
    df = pd.DataFrame({"x": [1.0, 2, 3], "y": [1.0, 3, 2]})
    a, b = r.lm("y ~ x", data=df), r.lm("y ~ 1", data=df)
    assert deparsed_call(r, a).split("data = ")[1] == deparsed_call(r, b).split("data = ")[1]
    c = r.lm("y ~ 1", data=df.assign(y=[9.0, 9, 9]))
    assert deparsed_call(r, c).split("data = ")[1] != deparsed_call(r, b).split("data = ")[1]


def test_calls_that_are_not_recorded_make_no_new_names(fresh):
    fresh.eval("invisible(gc())")
    base = fresh.eval("length(ls('rbridge:args'))") if fresh.eval("'rbridge:args' %in% search()") else 0
    for _ in range(50):
        fresh.sum(np.arange(10.0))                           # sum records nothing: the value is plain `x`
        fresh.coef(fresh.with_options(convert=False).eval("lm(mpg ~ wt, mtcars)"))
    assert fresh.call("rserver:::live_args") == base          # nothing published


def test_bound_values_go_when_nothing_made_by_their_call_is_left(fresh):
    fresh.eval("invisible(gc())")
    base = fresh.call("rserver:::live_args")
    for _ in range(20):
        fresh.sum(np.arange(10.0))                           # nothing keeps these calls' environments
    fit = fresh.lm("y ~ x", data=pd.DataFrame({"x": [1.0, 2, 3], "y": [1.0, 2, 4]}))
    fresh.eval("invisible(gc())")
    assert fresh.call("rserver:::live_args") == base + 1       # only the fit's data
    del fit
    gc.collect()
    fresh.eval("invisible(gc()); invisible(gc())")
    assert fresh.call("rserver:::live_args") == base


def test_r_code_is_spliced_into_calls(r):
    df = pd.DataFrame({"a": [3, 1, 2], "b": ["x", "y", "z"]})
    assert r.subset(df, expr("a > 1"))["b"].tolist() == ["x", "z"]
    assert r.eval("function(e) class(e)")(expr("1 + 1")) == "numeric"   # evaluated where the call runs
    r["a_global"] = 10
    assert r.identity(sym("a_global")) == 10
    r.eval("`weird name` <- 7")
    assert r.identity(sym("weird name")) == 7
    assert r.with_options(convert=False).identity(formula("y ~ x + z")).rclass == ["formula"]
    r["kept"] = expr("a_global * 2")                         # assigned: the language object itself
    assert r.eval("is.call(kept) && eval(kept) == 20") is True
    assert r.eval("function(l) is.call(l[[1]])")([expr("x + 1"), 1]) is True   # in a list: a value


def test_formulas_as_strings_where_a_formula_goes(r):
    sleep = r["sleep"]
    test = r.t_test("extra ~ group", data=sleep)                # a generic with a formula method
    assert test["statistic"]["t"] == pytest.approx(r.eval("t.test(extra ~ group, sleep)$statistic")["t"])
    assert r.paste("a ~ b") == "a ~ b"                          # elsewhere a string stays a string
    agg = r.aggregate("mpg ~ cyl", data=r["mtcars"], FUN=r.mean)
    assert agg["mpg"].tolist() == pytest.approx(r.eval("aggregate(mpg ~ cyl, mtcars, mean)$mpg").tolist())
    fit = r.nls("y ~ a * x", data=pd.DataFrame({"x": [1.0, 2, 3], "y": [2.1, 3.9, 6.0]}), start={"a": 1.0})
    assert r.coef(fit)["a"] == pytest.approx(2.0, abs=0.05)


def test_malformed_r_code_is_refused_clearly(r):
    with pytest.raises(ValueError, match="needs a '~'"):
        bridge.formula("x + y")
    with pytest.raises(ValueError, match="empty"):
        bridge.expr("  ")
    with pytest.raises(TypeError, match="must be a str"):
        bridge.sym(3)
    with pytest.raises(bridge.RError, match="does not parse: x >"):
        r.identity(expr("x >"))
    with pytest.raises(bridge.RError, match="exactly one expression"):
        r.identity(expr("a; b"))
    assert r.sum(1) == 1
    assert repr(bridge.expr("x > 2")) == "bridge.expr('x > 2')" and bridge.sym("a") == bridge.sym("a")


def test_lists_of_one_scalar_kind_are_atomic_vectors(r):
    assert r.mean([1, 2, 3]) == 2.0
    assert r.typeof([1, 2]) == "integer" and r.typeof([1, 2.5]) == "double"
    assert r.typeof([True, None]) == "logical" and r.typeof(["a", None]) == "character"
    assert r.typeof([2**40, 1]) == "double"
    assert r.eval("function(x) is.na(x)")([1.5, None]).tolist() == [False, True]
    assert r.typeof([1, "a"]) == "list" and r.typeof([]) == "list" and r.typeof([None]) == "list"
    assert r.typeof([True, 1]) == "list"                        # bool and int do not mix
    assert r.typeof([[1, 2], [3]]) == "list"
    with pytest.raises(ValueError, match="2\\^53"):
        r.identity([2**60, 1])
