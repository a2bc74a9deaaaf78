"""Server mode: one port, an isolated forked session per client (issue 13 §1),
tested through `rbridge serve` and bridge.connect against real R sessions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import Relay, Server, pid_alive, segments, status_of, wait_until

import bridge

PRELOAD = """
big <- rnorm(2e6)          # 16 MB, shared copy-on-write with every session
counter <- 0
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    code = tmp / "preload.R"
    code.write_text(PRELOAD)
    srv = Server(tmp, "--preload", "stats", "--preload", str(code), "--client-grace", "1")
    yield srv
    assert srv.stop() == 0
    assert srv.processes() == []


def test_each_client_gets_its_own_forked_session(server):
    with bridge.connect(server.endpoint) as a, bridge.connect(server.endpoint) as b:
        pa, pb = a.call("Sys.getpid"), b.call("Sys.getpid")
        assert len({pa, pb, server.proc.pid}) == 3
        assert a.eval("length(big)") == b.eval("length(big)") == 2_000_000   # preloaded, in both
        a.eval("counter <- counter + 1; options(digits = 3); mine <- 'a'")
        assert a.eval("counter") == 1 and b.eval("counter") == 0                # no shared globals
        assert a.eval("getOption('digits')") == 3 and b.eval("getOption('digits')") == 7
        assert b.eval("exists('mine')") is False
        h = a.eval("lm(mpg ~ wt, data = mtcars)")
        assert isinstance(h, bridge.RObject)
        assert a.call("class", h) == "lm"
        with pytest.raises(ValueError, match="another session"):
            b.call("class", h)                        # a handle is its session's own
        assert a.diagnostics().worker_pid == pa


def test_a_session_on_the_servers_host_reserves_shared_memory_as_a_private_worker_does(server):
    with bridge.connect(server.endpoint, shm_reserve=32 << 20) as r:
        d = r.diagnostics()
        assert (d.shm_reserved, d.worker_shm_reserved) == (32 << 20, 32 << 20)
        (arena,) = d.worker_arenas_mapped
        back = r.eval("as.numeric(seq_len(3e6))")                # 24 MB, into the reserved arena
        assert back[-1] == 3e6 and r.diagnostics().worker_arenas_mapped == (arena,)
        sent = np.linspace(0, 1, 3_000_000)
        r.assign("s", sent)
        assert r.eval("sum(s)") == pytest.approx(float(sent.sum())) and r.diagnostics().arenas == 1
        pid = r.diagnostics().worker_pid
    assert wait_until(lambda: not segments("w", pid), 10)


def test_what_works_against_a_private_worker_works_against_a_session(server):
    with bridge.connect(server.endpoint) as r:
        assert r.sum(1, 2) == 3
        x = np.arange(2_000_000, dtype=np.float64)
        back = r.call("identity", x)
        assert back.dtype == np.float64 and np.array_equal(back, x)
        assert r.uses_shared_memory is True          # same host and user: shared memory
        df = pd.DataFrame({"g": list("ab") * 5000, "v": np.arange(10000.0)})
        out = r.call("aggregate", bridge.formula("v ~ g"), data=df, FUN="mean")
        assert out["v"].tolist() == pytest.approx([4999.0, 5000.0])
        # callbacks, nested R -> Python -> R -> Python
        call_back = r.eval("function(f, n) f(n - 1)")

        def depth(n):
            return 0 if n == 0 else 1 + call_back(depth, n)
        assert depth(6) == 6
        with r.capture_output() as out_text:
            r.eval('cat("hello from a session\\n")')
        assert out_text.stdout == "hello from a session\n"
        with r.plots(width=3, height=2, dpi=50) as plots:      # plots, through the front
            r.eval("plot(1:10); plot.new()")
        assert [(p.mime, p.width, p.height) for p in plots] == [("image/png", 150, 100)]
        with pytest.raises(bridge.RTimeout):
            r.with_options(timeout=0.5).eval("Sys.sleep(30)")
        timer = threading.Timer(0.5, r.interrupt)
        timer.start()
        with pytest.raises(bridge.RInterrupted):
            r.eval("Sys.sleep(30)")
        assert r.eval("1 + 1") == 2


def test_a_sessions_large_payloads_go_in_chunks_without_curve_too(server):
    # the front relays every payload, so a session and its client use chunks even in plaintext
    x = np.random.default_rng(3).normal(size=3_000_000)
    with bridge.connect(server.endpoint, shm=False) as r:
        r.assign("x", x)
        assert "rbridge view" in "".join(r.eval("capture.output(.Internal(inspect(x)))"))   # gathered
        assert r.eval("sum(x)") == pytest.approx(x.sum())
        np.testing.assert_array_equal(r["x"], x)


def test_a_result_of_more_frames_than_a_request_may_have_reaches_the_client(server):
    # 1,100 vectors of 5,000 doubles: a payload frame each, more than the 1,024 frames of a request
    with bridge.connect(server.endpoint, shm=False) as r:
        parts = r.eval("lapply(1:1100, function(i) as.numeric(seq_len(5000)) + i)")
        assert len(parts) == 1100 and parts[0][0] == 2 and parts[-1][-1] == 6100
        assert r.sum(1, 2) == 3


def test_a_session_ends_with_its_client_and_leaves_nothing(server):
    r = bridge.connect(server.endpoint)
    pid = r.call("Sys.getpid")
    r.eval("f <- tempfile(); writeLines('x', f)")
    tmp = r.eval("tempdir()")
    assert str(server.directory()) in tmp        # its own temporary directory
    r.close()
    assert wait_until(lambda: not pid_alive(pid), 5)
    assert wait_until(lambda: not os.path.exists(tmp), 5)
    assert wait_until(lambda: status_of(server.endpoint)["server"]["sessions_open"] == 0, 5)
    assert not segments("w", pid)


def test_a_session_whose_client_vanished_ends_after_the_grace(server):
    code = (f"import bridge, time; r = bridge.connect({server.endpoint!r}); "
            "print(r.call('Sys.getpid'), flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(child.stdout.readline())
    assert pid_alive(pid)
    child.kill()
    child.wait()
    assert wait_until(lambda: not pid_alive(pid), 6)     # --client-grace 1


def test_status_reports_each_session(server):
    with bridge.connect(server.endpoint) as r:
        pid = r.call("Sys.getpid")
        r.eval("x <- rnorm(1e6)")
        status = status_of(server.endpoint)
        server_figures = status["server"]
        assert server_figures["sessions_open"] >= 1 and server_figures["uptime"] > 0
        assert server_figures["pid"] == server.proc.pid and server_figures["curve"] is False
        mine = [s for s in status["sessions"] if s["pid"] == pid][0]
        assert mine["state"] == "idle" and mine["rss"] > 10 * 2**20 and mine["cpu"] >= 0 and mine["idle"] >= 0


def test_idle_sessions_end_after_the_idle_timeout(tmp_path):
    srv = Server(tmp_path, "--idle-timeout", "1")
    try:
        r = bridge.connect(srv.endpoint)
        pid = r.call("Sys.getpid")
        time.sleep(2.5)
        with pytest.raises(bridge.WorkerDied, match="idle for 1 s"):
            r.sum(1)
        assert not pid_alive(pid)
        r.close()
    finally:
        assert srv.stop() == 0


def test_sigterm_drains_calls_in_flight_then_exits_cleanly(tmp_path):
    srv = Server(tmp_path, "--drain-timeout", "8")
    directory = srv.directory()
    busy, idle = bridge.connect(srv.endpoint), bridge.connect(srv.endpoint)
    results = []
    worker = threading.Thread(target=lambda: results.append(busy.eval("Sys.sleep(2); 42")))
    worker.start()
    time.sleep(0.5)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(bridge.ServerBusy, match="shutting down"):
        bridge.connect(srv.endpoint)
    with pytest.raises(bridge.WorkerDied, match="shutting down"):
        idle.sum(1)
    worker.join(10)
    assert results == [42]                      # the call in flight finished, its reply delivered
    assert srv.proc.wait(10) == 0
    assert srv.processes() == [] and not directory.exists()
    busy.close()
    idle.close()


def test_a_second_sigterm_ends_sessions_at_once(tmp_path):
    srv = Server(tmp_path, "--drain-timeout", "30")
    r = bridge.connect(srv.endpoint)
    started = time.monotonic()
    worker = threading.Thread(target=lambda: pytest.raises(bridge.WorkerDied, r.eval, "Sys.sleep(60)"))
    worker.start()
    time.sleep(0.5)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0
    worker.join(10)
    assert time.monotonic() - started < 10
    assert srv.processes() == []
    r.close()


def test_a_crash_of_the_parent_leaves_no_process_or_file(tmp_path):
    temp = tmp_path / "temp"           # where the server's R puts its tempdir() and its directory
    temp.mkdir()
    srv = Server(tmp_path, env={"TMPDIR": str(temp)})
    directory = srv.directory()
    assert sorted(p.name[:4] for p in temp.iterdir()) == ["Rtmp", "rbri"]
    r = bridge.connect(srv.endpoint)
    pid = r.call("Sys.getpid")
    everyone = srv.processes()
    assert pid in everyone and len(everyone) >= 3      # the server, its front, a session
    srv.proc.kill()
    srv.proc.wait()
    assert wait_until(lambda: not any(pid_alive(p) for p in everyone), 10)
    assert wait_until(lambda: not directory.exists(), 10)
    assert wait_until(lambda: not any(temp.iterdir()), 10)   # R's tempdir() too
    with pytest.raises(bridge.WorkerDied):
        r.sum(1)
    r.close()


def test_a_silent_partition_is_noticed_by_both_sides(tmp_path):
    srv = Server(tmp_path, "--liveness", "2", "--client-grace", "1")
    relay = Relay(srv.endpoint)
    try:
        r = bridge.connect(relay.endpoint)
        pid = r.call("Sys.getpid")
        assert r.eval("Sys.sleep(1.5); 1") == 1        # a busy session is not a partition
        started = time.monotonic()
        relay.frozen.set()
        with pytest.raises(bridge.WorkerDied):
            r.eval("Sys.sleep(30)")
        assert time.monotonic() - started <= 3.0
        assert wait_until(lambda: not pid_alive(pid), 8)   # liveness 2 s + grace 1 s
        r.close()
    finally:
        relay.close()
        assert srv.stop() == 0


def test_a_crash_of_the_front_ends_the_server_and_its_sessions(tmp_path):
    srv = Server(tmp_path)
    directory = srv.directory()
    r = bridge.connect(srv.endpoint)
    session = r.call("Sys.getpid")
    front = [p for p in srv.processes() if p not in (srv.proc.pid, session)]
    assert len(front) == 1
    os.kill(front[0], signal.SIGKILL)
    assert srv.proc.wait(15) != 0                  # the server says it failed
    assert "front process ended abnormally" in srv.log.read_text()
    assert srv.processes() == [] and not pid_alive(session) and not directory.exists()
    r.close()


def test_no_zombie_is_left_by_sessions_that_ended(server):
    pids = []
    for _ in range(3):
        with bridge.connect(server.endpoint) as r:
            pids.append(r.call("Sys.getpid"))
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 5)

    def zombies() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) in server.processes():
                found.append(int(stat.parent.name))
        return found
    assert wait_until(lambda: zombies() == [], 5)
