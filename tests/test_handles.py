"""Handles: lifetime, batched release, leak checks."""

from __future__ import annotations

import gc

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
    sent: list[str] = []
    channel = r._core.channel
    original = channel.send

    def counting_send(message, frames=()):
        sent.append(message["op"])
        original(message, frames)

    objs = [r.eval("new.env()") for _ in range(200)]
    channel.send = counting_send
    try:
        del objs
        gc.collect()
        assert r.sum(1) == 1                     # the next request carries the releases
        assert sent.count("release") == 1
    finally:
        channel.send = original
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
