"""The Python API against a real worker: eval, call, globals, attributes,
namespaces, handles as proxies, options."""

from __future__ import annotations

import re

import numpy as np
import pytest

import bridge


def test_eval_returns_the_last_value_and_keeps_state(r):
    assert r.eval("x <- 20; x + 1") == 21.0
    assert r.eval("x") == 20.0


def test_call_by_name_with_positional_and_named_arguments(r):
    assert r.call("sum", 1, 2) == 3.0
    assert r.call("paste", "a", "b", sep="-") == "a-b"
    assert r.call("base::nchar", "hello") == 5
    assert r.call("sum", 1, None, 3) == 4.0   # None is NULL, which sum ignores


def test_functions_by_attribute_and_dotted_names(r):
    assert r.sum(1, 2) == 3.0
    assert r.sum(1, float("nan"), **{"na.rm": True}) == 1.0
    assert r.sum(1, 2, na_rm=True) == 3.0
    x = np.array([1.0, np.nan, 3.0])
    assert r.mean(x, na_rm=True) == 2.0           # na.rm of mean.default, through the generic
    assert r.importr("stats").median(x, na_rm=True) == 2.0
    assert r.is_na(None).dtype == np.bool_ and len(r.is_na(None)) == 0   # is.na(NULL): logical(0)
    assert bool(r.is_na(np.array([1.0, np.nan]))[1]) is True
    assert r.sum(np.ma.MaskedArray([1.0, 5.0], mask=[False, True]), na_rm=True) == 1.0


def test_globals_by_item(r):
    r["y"] = [1, 2, 3]
    assert r["y"].tolist() == [1, 2, 3] and r.eval("is.integer(y)")
    r["z"] = 2.5
    assert r.eval("z * 2") == 5.0
    assert r["pi"] == pytest.approx(3.14159265)   # found through the search path
    with pytest.raises(bridge.RError, match="not found"):
        r["no_such_variable_anywhere"]


def test_importr_namespace_proxy(r):
    stats = r.importr("stats")
    assert stats.median(np.array([1, 5, 9])) == 5.0
    assert "median" in dir(stats)
    assert "t_test" in dir(stats)            # t.test, reachable as t_test
    res = stats.t_test(np.array([1.0, 2.0, 3.0, 4.0]))
    assert "htest" in res.rclass
    with pytest.raises(AttributeError, match="exports no function"):
        getattr(stats, "no_such_function")  # noqa: B009  (the attribute access is the test)
    with pytest.raises(bridge.RError, match="no R package called .noSuchPackageAnywhere.*apt-get install r-cran"):
        r.importr("noSuchPackageAnywhere")


def test_tab_completion_lists_r_names(r):
    r.eval("my_global_for_completion <- 1")
    names = dir(r)
    assert "my_global_for_completion" in names
    assert "lm" in names and "is_na" in names and "eval" in names


def test_unconvertible_results_are_handles_with_r_print_output(r):
    fit = r.lm("mpg ~ wt", data=r["mtcars"])
    assert isinstance(fit, bridge.RObject)
    assert fit.rclass == ["lm"]
    text = str(fit)                                  # R's own print
    assert "Coefficients:" in text and re.search(r"lm\(formula = mpg ~ wt, data = data\.\d+\)", text)
    short = repr(fit)                                # a header, then the start of R's print
    assert short.splitlines()[0] == "<RObject lm: list of length 12>" and "Coefficients:" in short
    coefs = r.coef(fit)          # a handle passed back as an argument; a named vector comes back
    assert coefs.index.tolist() == ["(Intercept)", "wt"]
    assert coefs.tolist() == [pytest.approx(37.285, abs=1e-3), pytest.approx(-5.344, abs=1e-3)]


def test_handles_to_functions_are_callable(r):
    add = r.eval("function(a, b = 10) a + b")
    assert isinstance(add, bridge.RObject) and add.rclass == ["function"]
    assert add(1) == 11.0
    assert add(1, b=2) == 3.0
    assert r.call(add, 5) == 15.0


def test_to_py_converts_deeply(r):
    df = r.with_options(convert=False).eval("data.frame(a = 1:2, b = c('x', 'y'), f = factor(c('u', 'v')))")
    assert df.rclass == ["data.frame"]
    got = df.to_py()
    assert list(got) == ["a", "b", "f"]
    assert got["a"].tolist() == [1, 2] and got["f"].tolist() == ["u", "v"]
    with pytest.raises(bridge.RError, match="cannot convert"):
        r.eval("mean", ).to_py()


def test_with_options_convert_false_returns_handles(r):
    h = r.with_options(convert=False).sum(1, 2)
    assert isinstance(h, bridge.RObject) and h.rclass == ["integer"]   # Python ints are R integers
    assert h.to_py() == 3
    assert r.sum(1, 2) == 3.0            # the original session is unchanged


def test_options_never_collide_with_r_argument_names(r):
    # R functions with arguments called timeout/convert/env get them as R arguments
    f = r.eval("function(timeout, convert, env) paste(timeout, convert, env)")
    assert f(timeout=1, convert="c", env="e") == "1 c e"
    assert r.with_options(timeout=30).call(f, 2, "x", "y") == "2 x y"
    with pytest.raises(TypeError, match="unknown option"):
        r.with_options(timeot=1)


def test_handle_from_another_session_is_refused(r, fresh):
    env = fresh.eval("new.env()")
    with pytest.raises(ValueError, match="another session"):
        r.identity(env)


def test_released_handle_cannot_be_used(r):
    env = r.eval("new.env()")
    env.release()
    assert env.handle_id is None
    with pytest.raises(ValueError, match="released"):
        r.identity(env)
    assert "released" in repr(env)


def test_worker_info(r):
    info = r.info
    assert info["r_version"].startswith("4.")
    assert isinstance(info["pid"], int) and info["pid"] > 0
    assert "eval" in info["capabilities"]


def test_session_is_a_context_manager_and_closes(fresh):
    with fresh as s:
        assert s.sum(1) == 1.0
    assert fresh.closed
    with pytest.raises(bridge.RBridgeError, match="closed"):
        fresh.sum(1)
    fresh.close()   # closing twice is harmless


def test_attach_to_a_worker_started_from_the_shell(tcp_worker):
    endpoint, proc = tcp_worker
    with bridge.connect(endpoint) as r1:
        r1.eval("shared <- 42")
        keep = r1.eval("new.env()")
        assert r1.live_handles() >= 1
    assert proc.poll() is None                         # closing an attached session keeps the worker
    with bridge.connect(endpoint) as r2:
        assert r2["shared"] == 42.0                    # state lives in the worker
        assert r2.live_handles() == 0                  # r1's handles were given back on close
    del keep


def test_an_attached_session_can_shut_its_worker_down(tcp_worker):
    endpoint, proc = tcp_worker
    other = bridge.connect(endpoint)
    r = bridge.connect(endpoint)
    r.eval("Sys.sleep(0)")
    r.shutdown()
    assert r.closed
    assert proc.wait(timeout=10) == 0                  # serve() returned; Rscript exited normally
    with pytest.raises(bridge.WorkerDied):
        other.with_options(timeout=10).eval("1")
    other.close()


def test_ctrl_c_stops_an_idle_server_and_interrupts_a_busy_one(tmp_path):
    import signal
    import time

    from helpers import start_tcp_worker
    endpoint, proc = start_tcp_worker(tmp_path)
    try:
        with bridge.connect(endpoint) as r:
            for _ in range(3):                          # the I/O thread's own interrupts never stop it
                with pytest.raises(bridge.RTimeout):
                    r.with_options(timeout=0.2).eval("Sys.sleep(5)")
            assert r.eval("1 + 1") == 2
            thread_result = {}

            def busy():
                try:
                    r.eval("Sys.sleep(10)")
                except bridge.RError as exc:
                    thread_result["error"] = exc

            import threading
            t = threading.Thread(target=busy)
            t.start()
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)             # busy: the request is interrupted
            t.join(10)
            assert isinstance(thread_result.get("error"), bridge.RInterrupted)
            assert r.eval("2 + 2") == 4
        time.sleep(2.5)   # a SIGINT within 2 s of one the worker sent itself is taken as its own
        proc.send_signal(signal.SIGINT)                 # idle: the server stops
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_timeout_counts_the_time_spent_queued_behind_another_client(tcp_worker):
    import threading
    import time

    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as a, bridge.connect(endpoint) as b:
        t = threading.Thread(target=lambda: a.eval("Sys.sleep(2)"))
        t.start()
        time.sleep(0.3)
        with pytest.raises(bridge.RTimeout):
            b.with_options(timeout=1).eval("ran_after_queue <- TRUE; Sys.sleep(3)")
        t.join()
        assert b.eval("exists('ran_after_queue')") is False    # it never started
        assert b.eval("1") == 1.0 and a.eval("2") == 2.0
