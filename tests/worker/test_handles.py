"""Handles: lifetime, batched release, leak checks."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import bridge


def test_dropping_proxies_releases_their_handles(fresh):
    r = fresh
    base = r.live_handles()
    objs = [r.eval("new.env()") for _ in range(300)]
    assert r.live_handles() == base + 300
    del objs
    gc.collect()
    assert r.live_handles() == base


def test_releases_are_batched_not_one_round_trip_each(fresh):
    r = fresh
    objs = [r.eval("new.env()") for _ in range(200)]
    before = r.diagnostics().messages_sent
    del objs
    gc.collect()
    assert r.sum(1) == 1                     # the next request carries the releases
    after = r.diagnostics().messages_sent
    assert after.get("release", 0) - before.get("release", 0) == 1
    assert after["call"] - before.get("call", 0) == 1
    assert r.live_handles() == 0


def test_handles_keep_objects_alive_in_r(fresh):
    r = fresh
    env = r.eval("local({e <- new.env(); e$v <- 99; e})")
    r.eval("gc()")
    assert r.call("get", "v", envir=env) == 99.0


def test_results_inside_lists_are_handles_too(fresh):
    r = fresh
    got = r.eval("list(1L, new.env(), quote(a + b))")
    assert got[0] == 1
    assert isinstance(got[1], bridge.RObject) and got[1].rclass == ["environment"]
    assert got[2].rclass == ["call"]
    assert r.live_handles() == 2
    del got
    gc.collect()
    assert r.live_handles() == 0


def test_repr_does_not_leak_handles(fresh):
    r = fresh
    fit = r.lm("mpg ~ wt", data=r["mtcars"])
    gc.collect()
    base = r.live_handles()
    for _ in range(20):
        repr(fit)
    gc.collect()
    assert r.live_handles() == base


def test_handles_of_a_vanished_client_are_freed(tcp_worker):
    import subprocess
    import sys
    import textwrap
    import time

    endpoint, _ = tcp_worker
    client = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import bridge, time
        r = bridge.connect({endpoint!r})
        held = [r.eval("new.env()") for _ in range(50)]
        print(r.live_handles(), flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "50"
    with bridge.connect(endpoint) as watcher:
        mine = watcher.eval("new.env()")
        assert watcher.live_handles() == 51
        client.kill()                                   # no goodbye, no releases
        client.wait()
        deadline = time.monotonic() + 5
        while watcher.live_handles() != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watcher.live_handles() == 1              # only the watcher's own handle is left
        assert watcher.call("environmentName", mine) == ""


def test_repr_is_short_and_str_is_r_print(r):
    fit = r.lm("mpg ~ wt", data=r["mtcars"])
    lines = repr(fit).splitlines()
    assert lines[0] == "<RObject lm: list of length 12>" and "Coefficients:" in repr(fit)
    assert "Residuals:" in str(r.summary(fit))
    for code in ("as.list(1:100000)", "data.frame(x = runif(2e5), y = 'a')", "matrix(1:1e6, 1000)",
                 "paste(rep('x', 1e4), collapse = '')", "new.env()", "mean", "lme4::sleepstudy"):
        text = repr(r.with_options(convert=False).eval(code))
        rows = text.splitlines()
        assert len(rows) <= 14 and all(len(row) <= 100 for row in rows[1:]), code
    assert repr(r.with_options(convert=False).eval("data.frame(x = runif(2e5))")).splitlines()[0] == \
        "<RObject data.frame: 200000 x 1>"


def test_repr_of_plots_draws_nothing(r, tmp_path):
    gg = r.importr("ggplot2")
    plot = gg.ggplot(r["mtcars"], gg.aes(x=bridge.sym("wt"), y=bridge.sym("mpg"))) + gg.geom_point()
    text = repr(plot)
    assert text.startswith("<RObject gg/ggplot") and "mapping:" in text
    lattice = r.with_options(convert=False).eval("lattice::xyplot(mpg ~ wt, mtcars)")
    assert repr(lattice).startswith("<RObject trellis")
    str(plot)
    assert r.eval("file.exists('Rplots.pdf')") is False
    assert r.eval("dev.cur()").tolist() == [1]                # no device left open


def test_element_access_length_and_iteration(r):
    fit = r.lm("mpg ~ wt", data=r["mtcars"])
    assert fit["rank"] == 2 and len(fit) == 12 and fit[0].index.tolist() == ["(Intercept)", "wt"]
    assert fit.rx2(1).tolist() == fit["coefficients"].tolist()
    assert fit[-1].shape == (32, 2)                            # the last element: the model frame
    with pytest.raises(KeyError):
        fit["no_such_part"]
    with pytest.raises(IndexError, match="out of range"):
        fit[12]
    with pytest.raises(TypeError, match="keys are names"):
        fit[1.5]
    parts = list(r.with_options(convert=False).eval("list(1, 'a', TRUE)"))
    assert parts == [1.0, "a", True]
    env = r.with_options(convert=False).eval("local({ e <- new.env(); e$v <- 5; e })")
    assert env["v"] == 5
    mixed = r.importr("lme4").lmer("Reaction ~ Days + (1 | Subject)", data=r.eval("lme4::sleepstudy"))
    assert mixed["beta"].tolist() == pytest.approx([251.405, 10.467], abs=1e-3)   # an S4 slot


def test_operators_call_r(r):
    v = r.with_options(convert=False).eval("c(2, 4)")
    assert (v + 1).tolist() == [3.0, 5.0] and (1 + v).tolist() == [3.0, 5.0]
    assert (v - 1).tolist() == [1.0, 3.0] and (10 - v).tolist() == [8.0, 6.0]
    assert (v * 2).tolist() == [4.0, 8.0] and (v / 2).tolist() == [1.0, 2.0] and (8 / v).tolist() == [4.0, 2.0]
    assert (v ** 2).tolist() == [4.0, 16.0] and (2 ** v).tolist() == [4.0, 16.0]
    assert (v % 3).tolist() == [2.0, 1.0] and (-v).tolist() == [-2.0, -4.0]
    with pytest.raises(bridge.RError, match="non-numeric argument"):
        r.with_options(convert=False).eval("mean") + 1


def test_numpy_asarray_converts_or_raises(r):
    m = r.with_options(convert=False).eval("matrix(c(1.5, 2, 3, 4), 2)")
    assert np.asarray(m).shape == (2, 2) and np.asarray(m, dtype=np.float32).dtype == np.float32
    frame = r.with_options(convert=False).eval("data.frame(a = 1:2, b = c(0.5, 1))")
    assert np.asarray(frame).shape == (2, 2)
    with pytest.raises(TypeError, match="class lm has no array form"):
        np.asarray(r.lm("mpg ~ wt", data=r["mtcars"]))
