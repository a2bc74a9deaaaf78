"""Python callables as R functions: nesting, errors, threads, lifetime, interrupts."""

from __future__ import annotations

import _thread
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest
from helpers import run_in_threads, seconds_until_raised, wait_until

import bridge


def test_python_callables_work_where_r_expects_a_function(r):
    assert r.sapply(np.array([1.0, 2.0, 3.0]), lambda v: v * 2).tolist() == [2.0, 4.0, 6.0]
    assert r.Reduce(lambda a, b: a + b, [1, 2, 3]) == 6
    area = r.integrate(lambda x: x**2, 0, 1)
    assert area.rclass == ["integrate"] and r.eval("function(i) i$value")(area) == pytest.approx(1 / 3)
    fit = r.optim(np.array([1.0, 1.0]), lambda p: float((p[0] - 3) ** 2 + (p[1] + 1) ** 2))
    assert np.allclose(fit["par"], [3, -1], atol=1e-2)
    r["twice"] = lambda x: x * 2                      # assigned to an R variable
    assert r.eval("twice(21)") == 42.0
    assert r.eval("is.function(twice)") is True


def test_arguments_unnamed_positional_named_as_keywords(r):
    seen = {}

    def record(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return "ok"

    call_it = r.eval("function(f) f(1L, 'two', b = TRUE, na.rm = NULL)")
    assert call_it(record) == "ok"
    assert seen["args"] == (1, "two") and seen["kwargs"] == {"b": True, "na.rm": None}


def test_results_of_callbacks_use_the_normal_conversions(r):
    assert r.eval("function(f) f()")(lambda: {"a": [1, "x", None]}) == {"a": [1, "x", None]}
    back = r.eval("function(f) f()")(lambda: {"a": [1, None]})["a"]    # one kind: a vector, None is NA
    assert back.dtype == np.int32 and back.tolist() == [1, None]
    assert r.eval("function(f) class(f())")(lambda: np.array([1.5, 2.5])) == "numeric"
    env = r.eval("new.env()")
    assert r.eval("function(f, e) identical(f(), e)")(lambda: env, env) is True
    with pytest.raises(bridge.RError, match="cannot convert a value of type set"):
        r.eval("function(f) f()")(lambda: {1, 2})


def test_nesting_fifty_levels_deep_is_correct_at_every_level(r):
    trail = []

    def down(n):
        trail.append(n)
        if n == 0:
            return 0
        return 1 + r.call(bounce, n - 1)            # Python -> R -> Python ...

    bounce = r.eval("function(f) function(n) f(n) * 1")(down)
    assert r.call(bounce, 50) == 50
    assert trail == list(range(50, -1, -1))
    assert r.ping()["depth"] == 0 and r.sum(1) == 1


def test_recursion_that_is_too_deep_ends_in_a_clean_error(r):
    def forever(n):
        return r.call(again, n + 1)

    again = r.eval("function(f) function(n) f(n)")(forever)
    with pytest.raises(bridge.RError, match="nested too deeply"):
        r.call(again, 0)
    assert r.sum(1, 2) == 3                           # both sides are fine afterwards
    assert r.ping()["depth"] == 0


def test_python_exception_is_a_catchable_r_condition(r):
    def boom(x):
        raise ValueError(f"bad value {x}")

    caught = r.eval("function(f) tryCatch(f(1), python_error = function(e) "
                    "c(conditionMessage(e), e$python_type))")(boom)
    assert caught.tolist() == ["ValueError: bad value 1.0", "builtins.ValueError"]


def test_uncaught_python_exception_raises_rerror_chained_to_the_original(r):
    class Custom(Exception):
        pass

    def boom(x):
        raise Custom("deep trouble")

    with pytest.raises(bridge.RError) as info:
        r.sapply(np.array([1.0]), boom)
    assert info.value.rclass[0] == "python_error"
    assert isinstance(info.value.__cause__, Custom)
    assert "deep trouble" in info.value.message


def test_r_error_inside_a_nested_call_propagates_through_every_level(r):
    def middle(x):
        return r.eval("stop('from the bottom')")

    with pytest.raises(bridge.RError) as info:
        r.eval("function(f) f(1)")(middle)
    assert "from the bottom" in info.value.message
    assert info.value.rclass[0] == "python_error"        # it crossed Python on the way up
    assert isinstance(info.value.__cause__, bridge.RError)
    assert info.value.__cause__.message == "from the bottom"


def test_callback_runs_on_the_thread_that_made_the_call(r):
    caller = threading.get_ident()
    seen = []
    r.sapply(np.array([1.0, 2.0]), lambda v: seen.append(threading.get_ident()) or v)
    assert seen == [caller, caller]


def test_threads_with_callbacks_each_get_their_own_results(r):
    def work(tag: int) -> None:
        local = threading.local()       # thread-local state, seen by the callback
        local.tag = tag
        for _ in range(10):
            got = r.sapply(np.array([1.0, 2.0, 3.0]), lambda v: v + local.tag * 100)
            assert got.tolist() == [tag * 100 + 1.0, tag * 100 + 2.0, tag * 100 + 3.0]

    assert run_in_threads(work, 6) == []


def test_r_garbage_collection_releases_python_callables(fresh):
    r = fresh
    r["keep"] = lambda: 1
    r.eval("f1 <- function() 1")
    r["drop"] = lambda: 2
    before = r.diagnostics().callables
    r.eval("rm(drop); invisible(gc())")
    r.sum(1)                                     # the release rides on a later reply
    assert r.diagnostics().callables == before - 1
    assert r.eval("keep()") == 1                 # referenced only from R: still alive


def test_callables_held_only_by_r_stay_alive(fresh):
    r = fresh

    def make():
        state = {"n": 0}

        def counter():
            state["n"] += 1
            return state["n"]
        return counter

    r["count"] = make()                          # no Python reference remains
    gc.collect()
    assert r.eval("count(); count(); count()") == 3


def test_interrupt_reaches_r_while_it_loops_over_callbacks(r):
    loop = r.eval("function(f) repeat f(1)")
    assert seconds_until_raised(r.interrupt, lambda: loop(lambda x: x), bridge.RInterrupted) < 1.0
    assert r.sum(1) == 1


def test_worker_killed_during_a_callback_raises_worker_died(fresh):
    pid = fresh.info["pid"]

    def kill_worker(x):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        return x

    with pytest.raises(bridge.WorkerDied):
        fresh.sapply(np.array([1.0]), kill_worker)


def test_r_functions_by_name_pass_as_functions(r):
    assert r.sapply(np.array([1.0, 4.0]), r.sqrt).tolist() == [1.0, 2.0]


def test_deep_nesting_on_a_default_stack_ends_in_a_clean_error(tcp_worker):
    endpoint, _ = tcp_worker          # started from the shell: the usual 8 MiB C stack
    with bridge.connect(endpoint) as r:
        def down(n):
            return 0 if n == 0 else 1 + r.call(bounce, n - 1)

        bounce = r.eval("function(f) function(n) f(n) * 1")(down)
        assert r.call(bounce, 10) == 10
        with pytest.raises(bridge.RError, match="nested too deeply"):
            r.with_options(timeout=30).call(bounce, 200)
        assert r.ping()["depth"] == 0
        assert r.call(bounce, 10) == 10          # and it still works


def test_outer_timeout_still_holds_after_nested_calls(r):
    def quick_nested(x):
        return r.sum(x, 1)                          # a nested request, with no timeout

    start = time.monotonic()
    with pytest.raises(bridge.RTimeout):
        slow = r.eval("function(f) { f(1); Sys.sleep(30) }")
        r.with_options(timeout=1.0).call(slow, quick_nested)
    assert time.monotonic() - start < 3
    assert r.sum(1) == 1


def test_interrupts_reach_a_worker_over_tcp(tcp_worker):
    endpoint, _ = tcp_worker          # not a child process: only messages can reach it
    with bridge.connect(endpoint) as r:
        r.eval("kept <- 1")
        assert seconds_until_raised(r.interrupt, lambda: r.eval("while (TRUE) {}"),
                                    bridge.RInterrupted) < 1.0
        assert seconds_until_raised(_thread.interrupt_main, lambda: r.eval("Sys.sleep(30)"),
                                    KeyboardInterrupt) < 1.0      # Ctrl-C
        assert r["kept"] == 1 and r.ping()["state"] == "idle"


def test_a_client_dying_inside_its_callback_does_not_hang_the_worker(tcp_worker):
    import subprocess
    import sys
    import textwrap

    endpoint, _ = tcp_worker
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import bridge, os, sys
        r = bridge.connect({endpoint!r})
        print("ready", flush=True)
        r.eval("function(f) f(1)")(lambda x: os._exit(0))   # dies while R waits for it
    """)], stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "ready"
    victim.wait(10)
    with bridge.connect(endpoint) as other:              # the worker serves others again
        assert other.with_options(timeout=10).sum(1, 2) == 3
        # and, once the client has been gone for the grace period, it is idle
        assert wait_until(lambda: other.ping()["depth"] == 0, 5)


def test_outer_deadline_fires_while_a_nested_request_runs(r):
    def slow_nested(x):
        return r.eval("Sys.sleep(20)")                 # nested, with no timeout of its own

    start = time.monotonic()
    with pytest.raises(bridge.RTimeout):
        r.with_options(timeout=1.0).call(r.eval("function(f) f(1)"), slow_nested)
    assert time.monotonic() - start < 2.0             # R stops within 1 s of the deadline
    assert r.ping()["depth"] == 0 and r.sum(1, 2) == 3


def test_timeout_reaches_r_while_it_loops_over_slow_callbacks(r):
    loop = r.eval("function(f) for (i in 1:20) f(i)")
    start = time.monotonic()
    with pytest.raises(bridge.RTimeout):
        r.with_options(timeout=1.0).call(loop, lambda x: time.sleep(0.3))
    assert time.monotonic() - start < 2.0
    assert r.sum(1, 2) == 3


def test_ctrl_c_inside_a_callback_keeps_the_session_in_step(r):
    def interrupted(x):
        threading.Timer(0.1, _thread.interrupt_main).start()
        time.sleep(0.5)
        return x

    with pytest.raises(KeyboardInterrupt):
        r.eval("function(f) { f(1); Sys.sleep(5) }")(interrupted)
    assert r.ping()["depth"] == 0
    assert [r.sum(i, 1) for i in range(5)] == [1, 2, 3, 4, 5]
