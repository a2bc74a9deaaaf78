"""Stalls, departing clients and clients sharing one worker (SPEC §1 "Clients",
§8 "Handle ids and lifetime", `interrupt`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import pytest
import zmq
from helpers import raw_exchange, recv_reply, seconds_until_raised, start_tcp_worker, wait_until, worker_rss_mb

import bridge


def stalled(pid: int, seconds: float) -> threading.Thread:
    """Stops process `pid` now and resumes it after `seconds`, on a thread."""
    os.kill(pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    resume.start()
    return resume


# -- stalls are not deaths ----------------------------------------------------------

def test_a_stalled_private_worker_finishes_the_call_and_keeps_its_handles(fresh):
    kept = fresh.eval("new.env()")
    fresh.eval("kept_value <- 41")
    threading.Timer(0.3, stalled, (fresh.info["pid"], 5.0)).start()
    start = time.monotonic()
    assert fresh.eval("Sys.sleep(1); kept_value + 1") == 42        # the call in flight completes
    assert time.monotonic() - start > 5
    assert fresh.call("is.environment", kept) is True
    stalled(fresh.info["pid"], 5.0).join()                          # stalled while idle
    assert fresh.call("is.environment", kept) is True
    assert fresh.sum(1, 2) == 3


def test_a_stalled_tcp_worker_is_not_declared_dead(tcp_worker):
    endpoint, proc = tcp_worker
    with bridge.connect(endpoint) as r:
        kept = r.eval("new.env()")
        threading.Timer(0.3, stalled, (proc.pid, 5.0)).start()
        assert r.eval("Sys.sleep(1); 7") == 7
        assert r.call("is.environment", kept) is True
        assert r.ping()["state"] == "idle"


def test_silence_beyond_the_liveness_is_death(tcp_worker):
    endpoint, proc = tcp_worker
    r = bridge.connect(endpoint, liveness=2)
    try:
        threading.Timer(0.3, os.kill, (proc.pid, signal.SIGSTOP)).start()
        start = time.monotonic()
        with pytest.raises(bridge.WorkerDied, match="did not answer for 2 s"):
            r.eval("Sys.sleep(1)")
        assert 2 < time.monotonic() - start < 6
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        r.close()


def test_a_killed_tcp_worker_is_dead_within_two_seconds(tcp_worker):
    endpoint, proc = tcp_worker
    with bridge.connect(endpoint) as r:
        assert seconds_until_raised(proc.kill, lambda: r.eval("Sys.sleep(60)"), bridge.WorkerDied) < 2.0


def test_liveness_is_checked():
    with pytest.raises(ValueError, match="liveness"):
        bridge.connect(liveness=0)


# -- departing clients ------------------------------------------------------------------

def start_client(endpoint: str, body: str) -> subprocess.Popen:
    """A client process that connects, prints "ready", then runs `body` (with `r`)."""
    code = f"import bridge, os, numpy as np\nr = bridge.connect({endpoint!r})\n" + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline().strip() == "ready"


@pytest.mark.parametrize("work", ["repeat {}", "Sys.sleep(60)"])
def test_a_client_killed_mid_request_frees_the_worker_and_its_handles(tcp_worker, work):
    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as other:
        before = other.live_handles()
        victim = start_client(endpoint, f"""
            held = [r.eval("new.env()") for _ in range(5)]
            print("ready", flush=True)
            r.eval({work!r})
        """)
        wait_ready(victim)
        assert wait_until(lambda: other.ping()["state"] == "busy", 5)
        victim.kill()
        victim.wait()
        killed = time.monotonic()
        assert wait_until(lambda: other.ping()["state"] == "idle", 5)
        assert time.monotonic() - killed < 5
        assert other.live_handles() == before                       # the victim's handles are freed
        assert other.sum(1, 2) == 3


def test_a_client_killed_three_callbacks_deep_leaves_the_worker_idle(tcp_worker):
    endpoint, _ = tcp_worker
    victim = start_client(endpoint, """
        def down(n):
            if n == 0:
                print("ready", flush=True)
                import time; time.sleep(60)
            return r.call(bounce, n - 1)
        bounce = r.eval("function(f) function(n) f(n)")(down)
        r.call(bounce, 3)
    """)
    wait_ready(victim)
    with bridge.connect(endpoint) as other:
        assert other.ping()["depth"] == 4
        victim.kill()
        victim.wait()
        assert wait_until(lambda: other.ping()["depth"] == 0, 5)
        assert other.sum(1, 2) == 3


def test_a_client_that_leaves_callbacks_unanswered_and_disconnects(tcp_worker):
    endpoint, _ = tcp_worker
    victim = start_client(endpoint, """
        import threading
        def never(x):
            print("ready", flush=True)
            r.close()                  # disconnect without answering
            threading.Event().wait(60)
        r.eval("function(f) f(1)")(never)
    """)
    wait_ready(victim)
    with bridge.connect(endpoint) as other:
        assert wait_until(lambda: other.ping()["depth"] == 0, 5)
        assert other.sum(1, 2) == 3
    victim.kill()
    victim.wait()


# -- clients of one worker are isolated ------------------------------------------------

def test_clients_cannot_touch_each_others_handles(tcp_worker):
    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as a:
        mine = a.eval("new.env()")
        live = a.live_handles()
        forged = msgpack.ExtType(1, mine.handle_id.to_bytes(8, "big"))   # another client knows its id
        use = raw_exchange(endpoint, [msgpack.packb(
            {"v": 1, "id": 1, "op": "call", "fn": "is.environment", "args": [forged]})])
        assert use["op"] == "error" and "not live" in use["error"]["message"]
        release = raw_exchange(endpoint, [msgpack.packb({"v": 1, "id": 2, "op": "release", "handles": [forged]})])
        assert release["value"]["released"] == 0
        assert a.live_handles() == live
        assert a.call("is.environment", mine) is True


def test_an_interrupt_stops_only_the_senders_requests(tcp_worker):
    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as a, bridge.connect(endpoint) as b:
        done: list[object] = []
        worker = threading.Thread(target=lambda: done.append(a.eval("Sys.sleep(1.5); 'finished'")))
        worker.start()
        assert wait_until(lambda: b.ping()["state"] == "busy", 5)
        assert b.interrupt() is False                 # b has nothing running
        worker.join(10)
        assert done == ["finished"]


def test_a_timeout_of_one_client_does_not_stop_another(tcp_worker):
    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as a, bridge.connect(endpoint) as b:
        out: list[object] = []

        def a_long() -> None:
            out.append(a.eval("Sys.sleep(2); 'a done'"))

        t = threading.Thread(target=a_long)
        t.start()
        assert wait_until(lambda: b.ping()["state"] == "busy", 5)
        # b's request waits behind a's and runs out of time in the queue
        with pytest.raises(bridge.RTimeout):
            b.with_options(timeout=0.5).eval("1")
        t.join(10)
        assert out == ["a done"]


def test_two_clients_using_callbacks_at_once_both_get_their_results(tcp_worker):
    endpoint, _ = tcp_worker
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def client(name: str, delay: float) -> None:
        try:
            with bridge.connect(endpoint) as r:
                def slow(x):
                    time.sleep(delay)
                    return x * 2
                fn = r.eval("function(f) sum(sapply(1:5, f))")
                results[name] = [fn(slow) for _ in range(3)]
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n, d)) for n, d in (("a", 0.05), ("b", 0.02))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == {"a": [30, 30, 30], "b": [30, 30, 30]}


def test_handles_of_connected_clients_survive_churn(tcp_worker):
    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as keeper:
        kept = [keeper.with_options(convert=False).eval(f"list(k = {i})") for i in range(20)]
        errors: list[BaseException] = []

        def churn(i: int) -> None:
            try:
                for _ in range(3):
                    with bridge.connect(endpoint) as c:
                        h = c.eval("new.env()")
                        assert c.call("is.environment", h) is True
            except BaseException as exc:   # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        time.sleep(2.5)                                   # past the grace period of the last departures
        assert [keeper.call("[[", h, "k") for h in kept] == list(range(20))
        assert keeper.live_handles() == 20


def test_shared_memory_is_used_only_after_the_clients_probe(tcp_worker):
    endpoint, _ = tcp_worker

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:   # no hello: "shm": true must not make the worker create an arena
        before = set(os.listdir("/dev/shm"))
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": "eval", "code": "runif(5e5)", "mode": "arrow",
                                 "shm": True}))
        frames = recv_reply(sock)
        assert len(frames) == 2                          # the payload came as a frame
        assert not [n for n in set(os.listdir("/dev/shm")) - before if n.startswith("rbridge-w")]
    finally:
        sock.close()
        ctx.term()


# -- floods and slow readers are bounded ---------------------------------------------

def flood(endpoint: str, request: dict, seconds: float, rate: int = 10_000) -> int:
    """Sends `rate` requests (`request` with ids) a second for `seconds`, reading nothing."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)           # and let as little as possible in
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.connect(endpoint)
    start, sent = time.monotonic(), 0
    try:
        while time.monotonic() - start < seconds:
            sent += 1
            with contextlib.suppress(zmq.Again):
                sock.send(msgpack.packb({"v": 1, "id": sent, **request}), zmq.NOBLOCK)
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        return sent
    finally:
        sock.close()
        ctx.term()


@pytest.mark.parametrize("request_", [{"op": "eval", "code": "1"},             # tiny replies
                                      {"op": "eval", "code": "runif(2e4)"},    # 160 KB replies
                                      {"op": "call", "fn": "sum", "args": [1, 2]}],   # plain calls (SPEC §9)
                         ids=["tiny", "runif", "plain"])
def test_a_client_that_floods_and_never_reads_neither_starves_others_nor_grows_the_worker(tmp_path, request_):
    endpoint, proc = start_tcp_worker(tmp_path, ("RBRIDGE_LIVENESS", "3"))
    try:
        with bridge.connect(endpoint) as other:
            before = worker_rss_mb(proc.pid)
            flooding = threading.Thread(target=flood, args=(endpoint, request_, 5.0))
            flooding.start()
            slowest = 0.0
            while flooding.is_alive():
                start = time.monotonic()
                assert other.sum(1, 2) == 3
                slowest = max(slowest, time.monotonic() - start)
                time.sleep(0.01)
            flooding.join()
            # not a performance figure (make bench measures the p99): nobody waits
            # for the flooder's replies to be read
            assert slowest < 2.0
            assert worker_rss_mb(proc.pid) - before < 150
            assert wait_until(lambda: other.ping()["state"] == "idle", 10)
            assert other.live_handles() == 0
    finally:
        proc.kill()
        proc.wait()


def test_output_bursts_reach_a_client_that_reads_slowly_complete_and_in_order(tcp_worker):
    endpoint, _ = tcp_worker
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import bridge, sys, io
        r = bridge.connect({endpoint!r})
        print("ready", flush=True)
        with r.capture_output() as out:
            r.eval("for (i in 1:20000) cat(i, '\\\\n')")
        lines = out.stdout.split()
        print(len(lines), lines == [str(i) for i in range(1, 20001)], flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    wait_ready(reader)
    time.sleep(0.2)
    reader.send_signal(signal.SIGSTOP)              # reads nothing for 2 s while R writes
    time.sleep(2)
    reader.send_signal(signal.SIGCONT)
    out, _ = reader.communicate(timeout=60)
    assert out.split() == ["20000", "True"]


@pytest.mark.parametrize("shm", [True, False])
def test_a_client_killed_mid_transfer_leaves_nothing_behind(tcp_worker, shm):
    endpoint, proc = tcp_worker
    victim = start_client(endpoint, f"""
        r.close()
        r = bridge.connect({endpoint!r}, shm={shm})
        big = np.random.default_rng(1).random(10_000_000)          # 80 MB each way
        print("ready", flush=True)
        while True:
            r["x"] = big
            r.eval("x")
    """)
    wait_ready(victim)
    time.sleep(1.5)
    victim.kill()
    victim.wait()
    with bridge.connect(endpoint) as other:          # connect() sweeps segments of dead processes
        assert wait_until(lambda: other.ping()["state"] == "idle", 5)
        assert other.live_handles() == 0
        assert other.sum(1, 2) == 3
        mine = (f"rbridge-c{victim.pid}-", f"rbridge-w{proc.pid}-")
        assert wait_until(lambda: not [n for n in os.listdir("/dev/shm") if n.startswith(mine)], 5)


def test_a_client_cannot_answer_another_clients_callbacks(tcp_worker):
    endpoint, _ = tcp_worker
    with bridge.connect(endpoint) as a:
        forged: list[dict] = []

        def slow(x):
            # meanwhile another client answers every callback id the worker may have used
            ctx = zmq.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            for n in range(1, 200):
                sock.send(msgpack.packb({"v": 1, "id": (1 << 52) | n, "op": "result", "value": 999}))
            forged.append(raw_exchange(endpoint, [msgpack.packb({"v": 1, "id": 1, "op": "eval", "code": "2"})]))
            sock.close()
            ctx.term()
            return x + 1

        assert a.eval("function(f) f(1) * 10")(slow) == 20       # its own answer, not 999
        assert forged[0]["value"] == 2
        assert a.ping()["depth"] == 0
