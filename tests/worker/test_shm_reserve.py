"""Shared memory reserved when a session starts (``connect(shm_reserve=)``,
SPEC ``reserve``): the first large transfers both ways use pages that exist."""

import os
import subprocess
import sys

import msgpack
import numpy as np
import pandas as pd
import pytest
from helpers import proc_status_mb, raw_exchange, recv_reply, segments, shm_dealer

import bridge

RESERVE = 96 << 20
N = 10_000_000   # 80 MB of doubles, as the benchmark's cold transfer


def test_a_reserved_session_sends_its_first_transfers_through_the_reserved_pages():
    plain = bridge.connect()
    try:
        assert proc_status_mb(plain.worker_pid, "RssShmem") < 8
        d = plain.diagnostics()
        assert (d.shm_reserved, d.worker_shm_reserved, d.arenas) == (0, 0, 0)
    finally:
        plain.close()
    r = bridge.connect(shm_reserve=RESERVE)
    try:
        d = r.diagnostics()
        assert (d.shm_reserved, d.worker_shm_reserved, d.arenas) == (RESERVE, RESERVE, 1)
        (worker_arena,) = d.worker_arenas_mapped             # mapped while connecting ...
        assert not segments("w", r.worker_pid)                # ... so its name is gone already
        assert proc_status_mb(r.worker_pid, "RssShmem") >= RESERVE / 2**20  # the worker's pages exist and are mapped
        (mine,) = segments("c", os.getpid()) - {n for n in os.listdir("/dev/shm") if "probe" in n}
        assert os.stat(f"/dev/shm/{mine}").st_blocks * 512 >= RESERVE   # and ours are allocated

        r.eval(f"x <- as.numeric(seq_len({N}))")
        got = r["x"]                                          # the first large result
        assert got.dtype == np.float64 and got.shape == (N,) and got[0] == 1 and got[-1] == N
        assert r.diagnostics().worker_arenas_mapped == (worker_arena,)   # it came in the reserved arena

        sent = np.random.default_rng(1).normal(size=N)
        r.assign("y", sent)                                   # the first large argument
        assert r.eval("sum(y)") == pytest.approx(float(sent.sum()), rel=1e-12)
        assert r.eval("y[c(1, length(y))]").tolist() == [sent[0], sent[-1]]
        assert r.diagnostics().arenas == 1                    # it went in the reserved arena

        frame = pd.DataFrame({"a": np.arange(N // 2, dtype=np.float64), "g": np.arange(N // 2) % 7})
        r.assign("df", frame)
        assert r.eval("nrow(df)") == N // 2 and r.eval("sum(df$g)") == int(frame["g"].sum())
        back = r.eval("df$b <- df$a * 2; df")
        assert back.shape == (N // 2, 3) and back["b"].iloc[-1] == 2 * frame["a"].iloc[-1]
    finally:
        pid = r.worker_pid
        r.close()
    assert not segments("c", os.getpid()) and not segments("w", pid)


@pytest.mark.parametrize("bad", [-1, (1 << 29) + 1, 1.5, True, "96MB"])
def test_shm_reserve_is_checked(bad):
    with pytest.raises(ValueError, match="shm_reserve must be a number of bytes from 0 to 536870912"):
        bridge.connect(shm_reserve=bad)


def test_shm_reserve_needs_shared_memory():
    with pytest.raises(ValueError, match="shm=False"):
        bridge.connect(shm=False, shm_reserve=RESERVE)


def test_over_tcp_a_session_without_shared_memory_reserves_nothing(tcp_worker, monkeypatch):
    monkeypatch.setattr("bridge._session.make_probe", lambda: ("/rbridge-c1-" + "0" * 32, b"x" * 16))
    with bridge.connect(tcp_worker[0], shm_reserve=RESERVE) as r:   # the worker cannot read the probe
        assert not r.uses_shared_memory
        d = r.diagnostics()
        assert (d.shm_reserved, d.worker_shm_reserved) == (0, 0)
        assert r.eval("sum(as.numeric(1:1e6))") == 500000500000


def _reserve(value, shm=True):
    msg = {"v": 1, "id": 7, "op": "reserve", "bytes": value}
    if shm:
        msg["shm"] = True
    return [msgpack.packb(msg)]


@pytest.mark.parametrize("value", [-1, 2**40, 1.5, "1", None, [1]])
def test_a_bad_reserve_request_gets_an_error_reply(tcp_worker, value):
    reply = raw_exchange(tcp_worker[0], _reserve(value))
    assert reply["op"] == "error"
    assert "'bytes' must be a whole number from 0 to 536870912" in reply["error"]["message"]
    assert raw_exchange(tcp_worker[0], _reserve(0))["value"] == {"reserved": 0, "arena": None}


def test_a_client_without_shared_memory_or_with_regions_out_gets_nothing_reserved(tcp_worker):
    assert raw_exchange(tcp_worker[0], _reserve(RESERVE, shm=False))["value"] == {"reserved": 0, "arena": None}
    with shm_dealer(tcp_worker[0]) as sock:
        sock.send_multipart(_reserve(RESERVE))
        value = msgpack.unpackb(recv_reply(sock)[0])["value"]
        assert value["reserved"] == RESERVE and value["arena"].startswith(f"/rbridge-w{tcp_worker[1].pid}-")
        sock.send(msgpack.packb({"v": 1, "id": 2, "op": "eval", "code": "runif(1e6)", "shm": True}))
        reply = msgpack.unpackb(recv_reply(sock)[0], raw=False, ext_hook=lambda c, d: (c, d))
        assert reply["value"][1][21:].decode() == value["arena"]   # the result is in the reserved arena
        sock.send_multipart(_reserve(RESERVE))                      # and its region is still out
        assert msgpack.unpackb(recv_reply(sock)[0])["value"] == {"reserved": 0, "arena": None}


SMALL_SHM_CLIENT = """
import os, numpy as np, bridge
for reserve in (96 << 20, 40 << 20):
    with bridge.connect(shm_reserve=reserve) as r:
        d = r.diagnostics()
        print(d.shm_reserved >> 20, d.worker_shm_reserved >> 20)
        big = np.arange(5_000_000, dtype=np.float64)     # 40 MB: fits in what is left, or in frames
        r["x"] = big
        assert r.eval("sum(x)") == big.sum()
        back = r.eval("x + 1")
        assert back.shape == big.shape and back[-1] == big[-1] + 1
print("left:", sorted(os.listdir("/dev/shm")))
"""


def test_in_a_small_dev_shm_what_does_not_fit_is_not_reserved_and_nothing_breaks():
    """In Docker's default 64 MB /dev/shm: 96 MB fits on neither side; 40 MB
    fits on one side at most (both reserve at once, so which one, if any, is
    a race). Payloads still travel, and nothing is left behind."""
    setup = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" -c "$1"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", setup, sys.executable, SMALL_SHM_CLIENT],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "0 0" and lines[2] == "left: []"
    ours, workers = map(int, lines[1].split())
    assert {ours, workers} <= {0, 40} and ours + workers <= 64
