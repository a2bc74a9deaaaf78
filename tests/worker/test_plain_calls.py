"""Plain calls (a `call` of scalars by plain name, SPEC §9) are answered by
the worker's wait in C, without the serve loop's R code. What a user sees must
not depend on which path answered: each case runs plain, and again through the
R loop (a `mode` in the request sends it there)."""

from __future__ import annotations

import time

import pytest
from helpers import wait_until, worker_rss_mb

import bridge


def through_r_loop(r: bridge.Session) -> bridge.Session:
    """The same session, whose calls carry a `mode` (handles): not plain."""
    return r.with_options(convert=False)


def test_errors_carry_the_same_call_and_traceback_on_both_paths(r):
    r.eval("f <- function() stop('boom'); g <- function() f()")
    seen = []
    for session in (r, through_r_loop(r)):
        with pytest.raises(bridge.RError) as info:
            session.g()
        seen.append((info.value.rclass, info.value.message, info.value.call, info.value.traceback))
    assert seen[0] == seen[1] == (["simpleError", "error", "condition"], "boom", "f()",
                                  ["g()", "f()", 'stop("boom")'])


def test_warnings_arrive_the_same_on_both_paths(r):
    r.eval("w <- function(x) { warning('careful: ', x); x * 2 }")
    with pytest.warns(bridge.RWarning, match="careful: 3") as plain:
        assert r.w(3) == 6
    with pytest.warns(bridge.RWarning, match="careful: 3") as looped:
        assert through_r_loop(r).w(3).to_py() == 6
    assert [str(w.message) for w in plain] == [str(w.message) for w in looped]


def test_stop_and_warning_called_directly_name_no_call_on_both_paths(r):
    # called straight from the wait, their caller is the serve loop's frame,
    # which is rbridge's own, as the R loop's eval() is
    for session in (r, through_r_loop(r)):
        with pytest.warns(bridge.RWarning) as warned:
            session.call("warning", "careful")
        assert [(str(w.message), w.message.call) for w in warned] == [("careful", None)]
        with pytest.raises(bridge.RError) as info:
            session.call("stop", "boom")
        assert (info.value.message, info.value.call, info.value.traceback) == ("boom", None, [])


def test_a_plain_call_times_out_and_the_session_goes_on(r):
    started = time.monotonic()
    with pytest.raises(bridge.RTimeout):
        r.with_options(timeout=0.5).call("Sys.sleep", 5)
    assert time.monotonic() - started < 3
    assert r.sum(1, 2) == 3


def test_many_plain_calls_in_a_row_leave_no_memory_behind(fresh):
    # the wait serves plain calls one after another without returning to R:
    # what each allocates must not pile up until it does. R's heap grows in
    # steps to its collection trigger, so growth is judged over three windows:
    # a leak grows every one of them.
    for _ in range(10_000):
        fresh.sum(1)
    growth = []
    for _ in range(3):
        before = worker_rss_mb(fresh.worker_pid)
        for _ in range(15_000):
            fresh.sum(1)
        growth.append(worker_rss_mb(fresh.worker_pid) - before)
    assert min(growth) < 5, growth     # 1.5 KB a call would be 22 MB a window


def test_later_tasks_run_between_plain_calls_once_a_plain_call_loaded_later(fresh):
    fresh.call("loadNamespace", "later")             # plain: the wait hands back to R's loop
    fresh.eval("fired <- FALSE; later::later(function() fired <<- TRUE, 0.2)")
    assert wait_until(lambda: fresh.sum(1) == 1 and fresh["fired"] is True, 3)


def test_plain_calls_nest_through_callbacks(fresh):
    # a plain call runs R code that calls Python, which makes plain calls again:
    # the inner ones go through the callback's own loop
    fresh.assign("cb", lambda x: fresh.sum(x, 100) + fresh.call("nchar", "abcd"))
    fresh.assign("deep", lambda n: 0 if n == 0 else fresh.call("d", n - 1) + 1)
    fresh.eval("g <- function(x) cb(x) * 2; d <- function(n) deep(n)")
    assert fresh.g(1) == 210
    assert fresh.d(30) == 30
    assert fresh.sum(1, 2) == 3
