"""Bad input, dead workers, timeouts, interrupts and clean-up."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from helpers import pid_alive, raw_exchange, recv_reply, seconds_until_raised, segments, start_tcp_worker, wait_until

import bridge

GARBAGE = [
    pytest.param([b""], "truncated", id="empty-frame"),
    pytest.param([b"\xc1"], "0xc1", id="never-used-byte"),
    pytest.param([b"\xa5ab"], "truncated", id="truncated-string"),
    pytest.param([b"\x93\x01"], "count exceeds", id="short-array"),
    pytest.param([msgpack.packb([1, 2])], "not a msgpack map", id="not-a-map"),
    pytest.param([msgpack.packb({"v": 1, "op": "eval"})], "no 'id'", id="no-id"),
    pytest.param([msgpack.packb({"v": 1, "id": 5})], "no 'op'", id="no-op"),
    pytest.param([msgpack.packb({"v": 9, "id": 5, "op": "eval"})], "version", id="bad-version"),
    pytest.param([msgpack.packb({"v": 1, "id": 5, "op": "frobnicate"})], "unknown op", id="unknown-op"),
    pytest.param([msgpack.packb({"v": 1, "id": 5, "op": "eval", "code": "1"}) + b"\x00"], "trailing",
                 id="trailing-bytes"),
    pytest.param([b"\x81\xa1v\xa2\xc3\x28"], "UTF-8", id="invalid-utf8"),
    pytest.param([b"\xdd\xff\xff\xff\xff"], "exceeds", id="huge-array-count"),
    pytest.param([b"\x91" * 100 + b"\xc0"], "too deep", id="deep-nesting"),
    pytest.param([msgpack.packb({"v": 1, "id": 5, "op": "eval", "code": "1"})] * 1100, "too many frames",
                 id="too-many-frames"),
]


@pytest.mark.parametrize(("frames", "message"), GARBAGE)
def test_malformed_messages_get_an_error_reply_and_the_worker_keeps_serving(fresh, frames, message):
    reply = raw_exchange(fresh.endpoint, frames)
    assert reply["op"] == "error"
    assert reply["error"]["class"][0] == "rbridge_protocol_error"
    assert message in reply["error"]["message"]
    assert fresh.sum(1, 2) == 3


def test_bad_values_in_a_wellformed_message_are_r_errors(fresh):
    bad_handle = msgpack.packb({"v": 1, "id": 7, "op": "call", "fn": "identity",
                                "args": [msgpack.ExtType(1, b"\x00" * 8)], "kwargs": {}})
    reply = raw_exchange(fresh.endpoint, [bad_handle])
    assert reply["id"] == 7 and reply["op"] == "error" and "not live" in reply["error"]["message"]
    big_int = msgpack.packb({"v": 1, "id": 8, "op": "call", "fn": "identity", "args": [2**63], "kwargs": {}})
    reply = raw_exchange(fresh.endpoint, [big_int])
    assert reply["id"] == 8 and "2^53" in reply["error"]["message"]
    nul = msgpack.packb({"v": 1, "id": 9, "op": "eval", "code": "1\x002"})
    reply = raw_exchange(fresh.endpoint, [nul])
    assert reply["id"] == 9 and "NUL" in reply["error"]["message"]
    assert fresh.sum(1) == 1


def test_random_garbage_never_kills_the_worker(fresh):
    import random
    rng = random.Random(7)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fresh.endpoint)
    for _ in range(300):
        sock.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    try:
        for _ in range(300):        # every message answered, none crashed the worker
            assert msgpack.unpackb(recv_reply(sock, 5000)[0])["op"] == "error"
    finally:
        sock.close()
        ctx.term()
    assert fresh.sum(2) == 2


def test_oversized_envelope_is_refused_with_an_error(tmp_path):
    endpoint, proc = start_tcp_worker(tmp_path, ("RBRIDGE_MAX_ENVELOPE", "1000"))
    try:
        big = msgpack.packb({"v": 1, "id": 3, "op": "eval", "code": "x" * 5000})
        reply = raw_exchange(endpoint, [big])
        assert reply["error"]["class"][0] == "rbridge_limit_error"
        assert "limit of 1000" in reply["error"]["message"]
        with bridge.connect(endpoint) as r:
            assert r.sum(1) == 1
            r.eval("quit_soon <- TRUE")
    finally:
        proc.kill()
        proc.wait()


def test_killed_worker_raises_worker_died_quickly_and_leaves_no_files(fresh):
    pid = fresh.info["pid"]
    r_tmp = Path(fresh.eval("tempdir()"))
    assert r_tmp.is_dir()
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    start = time.monotonic()
    with pytest.raises(bridge.WorkerDied):
        fresh.eval("Sys.sleep(30)")
    assert time.monotonic() - start < 2.5
    with pytest.raises(bridge.WorkerDied):     # and stays dead, without hanging
        fresh.sum(1)
    fresh.close()
    assert not r_tmp.exists()    # R's temporary directory, which a killed R cannot remove itself


def test_worker_crashing_inside_r_raises_worker_died(fresh):
    with pytest.raises(bridge.WorkerDied):
        fresh.eval("tools::pskill(Sys.getpid(), 11L)")   # SIGSEGV


def test_killed_remote_worker_is_detected_by_pings(tcp_worker):
    endpoint, proc = tcp_worker
    r = bridge.connect(endpoint)
    threading.Timer(0.5, proc.kill).start()
    start = time.monotonic()
    with pytest.raises(bridge.WorkerDied):
        r.eval("Sys.sleep(60)")
    assert time.monotonic() - start < 6
    r.close()


def test_timeout_interrupts_r_and_the_session_stays_usable(r):
    r.eval("counter <- 1")
    slow = r.with_options(timeout=0.5)
    start = time.monotonic()
    with pytest.raises(bridge.RTimeout) as info:
        slow.eval("repeat counter <- counter + 1")
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start < 2
    assert r.eval("counter") > 1               # state is intact
    assert r.sum(1, 2) == 3
    assert slow.sum(1) == 1                    # a fast call under the same option is fine


def test_timeout_interrupts_sleeping_r(r):
    start = time.monotonic()
    with pytest.raises(bridge.RTimeout):
        r.with_options(timeout=0.3).eval("Sys.sleep(20)")
    assert time.monotonic() - start < 1.5
    assert r.sum(1) == 1


def test_ping_is_answered_while_r_is_busy(r):
    done = threading.Event()

    def long_call():
        r.eval("Sys.sleep(1.5)")
        done.set()

    t = threading.Thread(target=long_call)
    t.start()
    time.sleep(0.6)
    status = r.ping()
    assert status["state"] == "busy" and status["request_op"] == "eval"
    assert 0.3 < status["busy_for"] < 1.5
    assert not done.is_set()
    t.join()
    assert r.status()["state"] == "idle"


def test_a_long_call_right_after_a_stream_of_small_ones_is_still_watched(r):
    """The I/O thread's takeover timer is re-armed lazily while calls keep
    coming (SPEC §9): a long call that follows thousands of small ones still
    gets its pings answered and can be interrupted."""
    states = []

    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = r.ping()
            if status["request_op"] == "eval":
                states.append(status)
                r.interrupt()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for _ in range(3000):
        assert r.sum(1) == 1
    start = time.monotonic()
    with pytest.raises(bridge.RInterrupted):
        r.eval("while (TRUE) {}")
    watcher.join()
    assert states and states[0]["state"] == "busy" and states[0]["busy_for"] < 1.0
    assert time.monotonic() - start < 2.0
    assert r.sum(2) == 2


def test_interrupt_from_another_thread(r):
    r.eval("kept <- 'yes'")
    assert seconds_until_raised(r.interrupt, lambda: r.eval("while (TRUE) {}"), bridge.RInterrupted) < 1.0
    assert r["kept"] == "yes"
    assert r.interrupt() is False              # nothing running now


def test_ctrl_c_interrupts_r(r):
    assert seconds_until_raised(_thread.interrupt_main, lambda: r.eval("Sys.sleep(30)"),
                                KeyboardInterrupt) < 1.0
    assert r.ping()["state"] == "idle"         # R stopped too
    assert r.sum(1, 2) == 3


def test_close_leaves_no_process_or_files():
    r = bridge.connect()
    pid = r.info["pid"]
    directory = Path(r.diagnostics().worker_directory)
    assert directory.exists() and oct(directory.stat().st_mode & 0o777) == "0o700"
    r.close()
    assert not pid_alive(pid)
    assert not directory.exists()


def run_python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_interpreter_exit_without_close_cleans_up():
    proc = run_python("""
        import bridge
        r = bridge.connect()
        print(r.info["pid"], r.diagnostics().worker_directory, flush=True)
        r.eval("x <- 1")
    """)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pid, directory = out.split()
    assert wait_until(lambda: not pid_alive(int(pid)), 5)
    assert not Path(directory).exists()


def test_killed_python_leaves_no_worker_behind():
    proc = run_python("""
        import bridge, time
        r = bridge.connect()
        print(r.info["pid"], r.diagnostics().worker_directory, flush=True)
        time.sleep(60)
    """)
    pid, directory = proc.stdout.readline().split()
    proc.kill()
    proc.wait()
    assert wait_until(lambda: not pid_alive(int(pid)), 5)
    assert wait_until(lambda: not Path(directory).exists(), 2)


def test_killed_python_stops_even_a_busy_worker():
    proc = run_python("""
        import bridge, threading
        r = bridge.connect()
        print(r.info["pid"], r.diagnostics().worker_directory, flush=True)
        r.eval("repeat {}")
    """)
    pid, directory = proc.stdout.readline().split()
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    assert wait_until(lambda: not pid_alive(int(pid)), 8)
    assert wait_until(lambda: not Path(directory).exists(), 2)


def test_missing_rscript_gives_an_install_hint():
    with pytest.raises(bridge.WorkerNotAvailable, match="rbridge install-worker"):
        bridge.connect(rscript="/nonexistent/Rscript")


def test_missing_r_package_gives_an_install_hint(tmp_path):
    # A real Rscript whose library path holds only base R: rserver cannot be found.
    wrapper = tmp_path / "Rscript"
    wrapper.write_text('#!/bin/sh\nexec Rscript -e \'assign(".lib.loc", .Library, '
                       'envir = environment(.libPaths))\' "$@"\n')
    wrapper.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(bridge.WorkerNotAvailable, match="'rserver' is not installed.*rbridge install-worker"):
        bridge.connect(rscript=str(wrapper))
    assert time.monotonic() - start < 10


def test_no_worker_at_an_endpoint():
    start = time.monotonic()
    with pytest.raises(bridge.WorkerNotAvailable, match="no rbridge worker answered"):
        bridge.connect("tcp://127.0.0.1:9", startup_timeout=3)
    assert time.monotonic() - start < 8


def test_interrupts_at_random_moments_never_kill_the_worker_or_give_wrong_values(fresh):
    import random
    import threading
    import time

    r = fresh
    rng = random.Random(7)
    stop = threading.Event()
    sent = []

    def interrupter():   # back to back: some land just as a reply leaves
        while not stop.is_set():
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0.0001, 0.005))
            sent.append(r.interrupt())

    t = threading.Thread(target=interrupter)
    t.start()
    deadline = time.monotonic() + 60
    checked = 0
    try:
        while len(sent) < 3000 and time.monotonic() < deadline:
            k = rng.randint(1, 1000)
            try:
                assert r.call("sum", np.arange(k, dtype=float)) == k * (k - 1) / 2
                assert r.eval(f"x <- {k}; x * 2") == 2 * k
                checked += 1
            except bridge.RInterrupted:
                pass
    finally:
        stop.set()
        t.join()
    assert len(sent) >= 1000 and checked > 0
    for k in range(20):                                   # every later value is right
        assert r.eval(f"{k} + 1") == k + 1
    assert r.ping()["state"] == "idle"


def test_sessions_dropped_without_close_clean_up_without_blocking(tmp_path):
    """As a re-run notebook cell does: `r = bridge.connect()` again and again."""
    script = textwrap.dedent("""
        import gc, bridge, numpy as np
        pids = []
        for i in range(15):
            r = bridge.connect()
            pids.append(r.info["pid"])
            r.eval("x <- runif(10)")
            held = r.eval("new.env()")            # a handle keeps the session's core alive a while longer
            junk = [np.zeros(500) for _ in range(3000)]
            if i % 4 == 0:
                gc.collect()
        del r, held
        gc.collect()
        print(" ".join(map(str, pids)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 15
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 10)   # every replaced worker exits


SMALL_SHM_CLIENT = """
import os, sys, numpy as np, bridge
with bridge.connect() as r:
    assert r.info["pid"] > 0
    big = np.arange(70_000_000 // 8, dtype=np.float64)      # more than the whole /dev/shm
    r["x"] = big
    assert r.eval("sum(as.numeric(x))") == big.sum()
    back = r.eval("x + 1")                                   # and back from R
    assert back.shape == big.shape and back[-1] == big[-1] + 1
    r["m"] = np.ones(2_000_000)                              # what fits still goes through shared memory
    assert r.eval("sum(m)") == 2_000_000
print(" ".join(sorted(os.listdir("/dev/shm"))))
"""


def test_a_small_dev_shm_and_foreign_leftovers_never_stop_payloads():
    """In a 64 MB /dev/shm (Docker's default) holding another user's leftover
    segment: 70 MB payloads travel as frames both ways, without an error, and
    nothing of ours is left behind."""
    leftover = "rbridge-c999999-0123456789abcdef0123456789abcdef"
    # A mount namespace of our own with a small tmpfs owned by another user
    # (nobody); the client runs in a user namespace, where it cannot remove
    # that user's files, as a non-root user could not.
    setup = (f"mount -t tmpfs -o size=64m,mode=1777,uid=65534,gid=65534 tmpfs /dev/shm && "
             f"head -c 100 /dev/zero > /dev/shm/{leftover} && chown 65534:65534 /dev/shm/{leftover} && "
             f"chmod 600 /dev/shm/{leftover} && exec unshare -U -r \"$0\" -c \"$1\"")
    done = subprocess.run(["unshare", "-m", "sh", "-c", setup, sys.executable, SMALL_SHM_CLIENT],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [leftover]


def test_sigterm_stops_a_busy_serve_worker_and_leaves_nothing_behind(tmp_path):
    socket_file = tmp_path / "w"
    endpoint, proc = start_tcp_worker(tmp_path, endpoint=f"ipc://{socket_file}")
    try:
        r = bridge.connect(endpoint)
        held = r.eval("runif(5e5)")                # a region of the worker's arena, still held here
        assert r.uses_shared_memory
        assert seconds_until_raised(lambda: proc.send_signal(signal.SIGTERM), lambda: r.eval("Sys.sleep(60)"),
                                    bridge.RInterrupted) < 10
        assert proc.wait(15) == 0                  # serve() returned: a clean exit
        assert not socket_file.exists() and not segments("w", proc.pid)
        assert len(held) == 5e5                    # the mapping outlives the segment's name
        r.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sighup_stops_an_idle_serve_worker_and_a_second_signal_ends_one_stuck_in_c(tmp_path, naughty):
    endpoint, proc = start_tcp_worker(tmp_path, endpoint=f"ipc://{tmp_path / 'idle'}")
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(15) == 0 and not (tmp_path / "idle").exists()

    endpoint, proc = start_tcp_worker(tmp_path)
    try:
        r = bridge.connect(endpoint)
        r.call("dyn.load", str(naughty))
        alive_after_one: list[bool] = []

        def terminate_twice() -> None:
            proc.send_signal(signal.SIGTERM)       # R never looks: the worker keeps spinning
            time.sleep(1)
            alive_after_one.append(proc.poll() is None)
            proc.send_signal(signal.SIGTERM)       # the second ends it at once
        assert seconds_until_raised(terminate_twice, lambda: r.eval(".C('spin')"), bridge.WorkerDied) < 10
        assert alive_after_one == [True] and proc.wait(10) == 128 + signal.SIGTERM
        r.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
