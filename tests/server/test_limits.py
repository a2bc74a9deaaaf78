"""Server mode: limits with typed errors that end only the session at fault,
crashes, and hostile input on the public port (issue 13 §3 and §5)."""

from __future__ import annotations

import os
import signal
import threading
import time

import msgpack
import pytest
import zmq
from helpers import Server, pid_alive, raw_exchange, recv_reply, segments, wait_until

import bridge


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("limits"), "--max-sessions", "3", "--session-memory", "300M",
                 "--session-cpu", "3", "--interrupt-grace", "1")
    yield srv
    assert srv.stop() == 0
    assert srv.processes() == []


def test_client_beyond_max_sessions_gets_server_busy_and_others_are_unaffected(server):
    sessions = [bridge.connect(server.endpoint) for _ in range(3)]
    try:
        with pytest.raises(bridge.ServerBusy, match="maximum of 3 sessions"):
            bridge.connect(server.endpoint)
        assert [r.sum(i) for i, r in enumerate(sessions)] == [0, 1, 2]
    finally:
        for r in sessions:
            r.close()
    assert wait_until(lambda: _can_connect(server), 5)


def _can_connect(server) -> bool:
    try:
        bridge.connect(server.endpoint).close()
        return True
    except bridge.ServerBusy:
        return False


def test_memory_limit_is_an_r_error_naming_it_and_the_session_lives_on(server):
    with bridge.connect(server.endpoint) as r, bridge.connect(server.endpoint) as other:
        other.eval("keep <- 1:10")
        with pytest.raises(bridge.RError, match="memory limit is 300 MiB"):
            r.eval("x <- numeric(1e10)")
        with pytest.raises(bridge.RError, match="memory limit"):
            r.eval("x <- lapply(1:100, function(i) numeric(1e7))")   # 8 GB, piece by piece
        assert r.eval("y <- numeric(1e6); length(y)") == 1_000_000
        assert other.eval("sum(keep)") == 55


def test_cpu_limit_ends_only_that_session_with_the_reason(server):
    with bridge.connect(server.endpoint) as r, bridge.connect(server.endpoint) as other:
        started = time.monotonic()
        with pytest.raises(bridge.WorkerDied, match="CPU limit of 3 s"):
            r.eval("repeat {}")
        assert time.monotonic() - started < 15
        assert other.sum(4) == 4


def test_an_ignored_interrupt_ends_the_session_after_the_grace(server, naughty):
    with bridge.connect(server.endpoint) as r, bridge.connect(server.endpoint) as other:
        pid = r.call("Sys.getpid")
        r.call("dyn.load", str(naughty))
        threading.Timer(0.5, r.interrupt).start()
        started = time.monotonic()
        with pytest.raises(bridge.WorkerDied, match="did not stop within 1 s of an interrupt"):
            r.eval('.C("spin")')
        assert time.monotonic() - started < 5
        assert not pid_alive(pid)
        assert other.sum(5) == 5
    with bridge.connect(server.endpoint) as r:   # a timeout escalates alike
        r.call("dyn.load", str(naughty))
        with pytest.raises(bridge.WorkerDied, match="interrupt"):
            r.with_options(timeout=0.5).eval('.C("spin")')


def test_a_killed_session_is_reported_within_2_s_with_the_signal(server):
    with bridge.connect(server.endpoint) as r:
        pid = r.call("Sys.getpid")
        seen = []

        def kill() -> None:
            seen.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

        threading.Timer(0.5, kill).start()
        r.call("identity", list(range(10_000)))          # it made shared-memory segments
        with pytest.raises(bridge.WorkerDied, match="signal 9"):
            r.eval("Sys.sleep(30)")
        assert time.monotonic() - seen[0] < 2
    assert wait_until(lambda: not segments("w", pid), 5)


def test_a_segfault_is_reported_with_the_last_lines_of_the_session_output(server, naughty):
    with bridge.connect(server.endpoint) as r:
        r.call("dyn.load", str(naughty))
        with pytest.raises(bridge.WorkerDied, match=r"(?s)signal 11.*about to crash"):
            r.eval('.C("crash")')


GARBAGE = [
    [b""], [b"\xc1"], [b"\x93\x01"], [msgpack.packb([1, 2])], [msgpack.packb({"v": 1, "op": "eval"})],
    [msgpack.packb({"v": 9, "id": 5, "op": "eval"})], [b"\x91" * 100 + b"\xc0"],
    [msgpack.packb({"v": 1, "id": 5, "op": "eval", "code": "1"})] * 1100,
]


@pytest.mark.parametrize("frames", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_on_the_public_port_gets_an_error_and_starts_no_session(server, frames):
    reply = raw_exchange(server.endpoint, frames)
    assert reply["op"] == "error" and reply["error"]["class"][0] == "rbridge_protocol_error"
    no_session = raw_exchange(server.endpoint, [msgpack.packb({"v": 1, "id": 3, "op": "eval", "code": "1"})])
    assert no_session["error"]["class"][0] == "rbridge_no_session"
    with bridge.connect(server.endpoint) as r:
        assert r.sum(1) == 1


def test_garbage_inside_a_session_is_answered_by_the_session(server):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": "hello", "versions": [1]}))
        assert msgpack.unpackb(recv_reply(sock)[0])["op"] == "hello"
        for frames in GARBAGE:
            sock.send_multipart(frames)
            reply = msgpack.unpackb(recv_reply(sock)[0])
            assert reply["op"] == "error" and reply["error"]["class"][0] == "rbridge_protocol_error"
        sock.send(msgpack.packb({"v": 1, "id": 2, "op": "call", "fn": "sum", "args": [2], "kwargs": {}}))
        while True:
            assert sock.poll(10000)
            reply = msgpack.unpackb(sock.recv())
            if reply["id"] == 2:
                break
        assert reply["op"] == "result" and reply["value"] == 2
    finally:
        sock.close()
        ctx.term()


def test_a_flooding_client_never_starves_the_others(server):
    ctx = zmq.Context()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.setsockopt(zmq.SNDHWM, 100000)
    flood.connect(server.endpoint)
    stop = threading.Event()

    def flooding() -> None:
        flood.send(msgpack.packb({"v": 1, "id": 1, "op": "hello", "versions": [1]}))
        i = 10
        while not stop.is_set():
            try:
                flood.send(msgpack.packb({"v": 1, "id": i, "op": "eval", "code": "Sys.sleep(0.001)"}), zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.001)
            i += 1

    with bridge.connect(server.endpoint) as r:
        thread = threading.Thread(target=flooding)
        thread.start()
        try:
            time.sleep(1)
            worst = 0.0
            for i in range(50):
                started = time.monotonic()
                assert r.sum(i) == i
                worst = max(worst, time.monotonic() - started)
            assert worst < 1.0
            front = [p for p in server.processes() if p != server.proc.pid and _is_front(p, server)]
            assert front and _rss(front[0]) < 200 * 2**20       # the front's memory stays bounded
        finally:
            stop.set()
            thread.join()
            flood.close()
            ctx.term()


def _is_front(pid: int, server) -> bool:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == server.proc.pid and \
        os.getpgid(pid) == os.getpgid(server.proc.pid)


def _rss(pid: int) -> int:
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
