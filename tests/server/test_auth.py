"""Server mode: CurveZMQ encryption and client authentication that fails
closed (issue 13 §2), `rbridge keygen` and `rbridge ping`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth
from helpers import Server, status_of

import bridge


def rbridge(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("server", "alice", "bob", "mallory"):
        assert rbridge("keygen", str(d / name)).returncode == 0
    allow = d / "allow"
    allow.mkdir()
    shutil.copy(d / "alice.key", allow / "alice.key")
    return d


@pytest.fixture(scope="module")
def server(keys, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("curve"), "--server-key", str(keys / "server.key_secret"),
                 "--allow", str(keys / "allow"))
    yield srv
    assert srv.stop() == 0


def connect_as(server, keys, name, **kwargs):
    return bridge.connect(server.endpoint, server_key=keys / "server.key",
                          client_key=keys / f"{name}.key_secret", **kwargs)


def test_keygen_writes_a_pyzmq_certificate_pair_with_a_private_secret(keys):
    public, secret = zmq.auth.load_certificate(keys / "alice.key_secret")
    assert zmq.auth.load_certificate(keys / "alice.key") == (public, None)
    assert len(public) == len(secret) == 40 and zmq.curve_public(secret) == public
    assert stat.S_IMODE(os.stat(keys / "alice.key_secret").st_mode) == 0o600
    again = rbridge("keygen", str(keys / "alice"))
    assert again.returncode == 1 and "not overwritten" in again.stderr


def test_an_allowed_key_gets_an_encrypted_session_that_knows_its_key(server, keys):
    with connect_as(server, keys, "alice") as r:
        assert r.sum(1, 2) == 3
        big = r.call("seq_len", 10**6)
        assert big[-1] == 10**6                          # Arrow payloads through CURVE
        key = r.call("rserver::session_key")
        public, _ = zmq.auth.load_certificate(keys / "alice.key")
        assert key == {"name": "alice", "key": public.decode()}
    # key strings work as well as paths
    public_server, _ = zmq.auth.load_certificate(keys / "server.key")
    _, secret = zmq.auth.load_certificate(keys / "alice.key_secret")
    with bridge.connect(server.endpoint, server_key=public_server.decode(), client_key=secret.decode()) as r:
        assert r.sum(2) == 2


def test_large_payloads_cross_curve_in_chunks_both_ways(server, keys):
    x = np.random.default_rng(2).normal(size=3_000_000)      # 24 MB: about 23 chunks each way
    with connect_as(server, keys, "alice", shm=False) as r:
        r.assign("x", x)
        assert r.eval("length(x)") == len(x) and r.eval("sum(x)") == pytest.approx(x.sum())
        assert "rbridge view" in "".join(r.eval("capture.output(.Internal(inspect(x)))"))
        np.testing.assert_array_equal(r["x"], x)
        frame = r.eval("data.frame(a = as.numeric(1:1e6), b = 1:1e6, c = rep(c('x', 'yz'), 5e5))")
        assert frame["a"].iloc[-1] == 1e6 and frame["b"].dtype == np.int32 and frame["c"].iloc[1] == "yz"


@pytest.mark.parametrize("who", ["mallory", "wrong-server-key", "plaintext"])
def test_a_refused_client_gets_authentication_error_within_2_s_and_no_session(server, keys, who):
    before = status_of(server.endpoint, str(keys / "server.key"), str(keys / "alice.key_secret"))["server"]
    started = time.monotonic()
    with pytest.raises(bridge.AuthenticationError):
        if who == "mallory":
            connect_as(server, keys, "mallory")
        elif who == "wrong-server-key":
            bridge.connect(server.endpoint, server_key=keys / "bob.key", client_key=keys / "alice.key_secret")
        else:
            bridge.connect(server.endpoint)
    assert time.monotonic() - started < 2.5
    after = status_of(server.endpoint, str(keys / "server.key"), str(keys / "alice.key_secret"))["server"]
    assert after["sessions_started"] == before["sessions_started"]
    assert after["auth_failures"] > before["auth_failures"]


def test_a_plaintext_client_gets_no_reply_at_all(server):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    sock.send(msgpack.packb({"v": 1, "id": 1, "op": "ping"}))
    assert sock.poll(1500) == 0
    sock.close()
    ctx.term()


def test_the_allow_directory_is_read_at_every_connection(server, keys):
    with pytest.raises(bridge.AuthenticationError):
        connect_as(server, keys, "bob")
    shutil.copy(keys / "bob.key", keys / "allow" / "bob.key")
    try:
        with connect_as(server, keys, "bob") as r:
            assert r.call("rserver::session_key")["name"] == "bob"
    finally:
        os.remove(keys / "allow" / "bob.key")
    with pytest.raises(bridge.AuthenticationError):
        connect_as(server, keys, "bob")


def test_ping_exits_0_only_after_a_real_authenticated_handshake(server, keys):
    ok = rbridge("ping", server.endpoint, "--server-key", str(keys / "server.key"),
                 "--client-key", str(keys / "alice.key_secret"))
    assert ok.returncode == 0 and "pong" in ok.stdout
    refused = rbridge("ping", server.endpoint, "--server-key", str(keys / "server.key"),
                      "--client-key", str(keys / "mallory.key_secret"))
    assert refused.returncode == 1 and "refused" in refused.stderr
    plain = rbridge("ping", server.endpoint, "--timeout", "2")
    assert plain.returncode == 1
    nobody = rbridge("ping", "tcp://127.0.0.1:9", "--timeout", "1")
    assert nobody.returncode == 1 and "no answer" in nobody.stderr


def test_status_names_the_key_of_each_session(server, keys):
    with connect_as(server, keys, "alice") as r:
        pid = r.call("Sys.getpid")
        status = status_of(server.endpoint, str(keys / "server.key"), str(keys / "alice.key_secret"))
        assert status["server"]["curve"] is True
        assert [s["key"] for s in status["sessions"] if s["pid"] == pid] == ["alice"]


def test_a_non_loopback_address_needs_a_key_or_insecure(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "tcp://0.0.0.0:*"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "refusing to serve tcp://0.0.0.0:* without encryption" in out.stderr
    srv = Server(tmp_path, "--insecure")   # (binds loopback in the test, so as not to expose it)
    assert srv.stop() == 0


def test_a_server_key_file_without_a_secret_is_refused(keys):
    out = rbridge("serve", "tcp://127.0.0.1:*", "--server-key", str(keys / "server.key"),
                  "--allow", str(keys / "allow"))
    assert out.returncode != 0 and "no valid secret-key" in out.stderr


def test_garbage_from_an_authenticated_client_gets_errors_and_starts_no_session(server, keys):
    public_server, _ = zmq.auth.load_certificate(keys / "server.key")
    public, secret = zmq.auth.load_certificate(keys / "alice.key_secret")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = public_server, public, secret
    sock.connect(server.endpoint)
    try:
        for frames in ([b"\xc1"], [msgpack.packb([1, 2])], [b"\x91" * 100 + b"\xc0"],
                       [msgpack.packb({"v": 9, "id": 5, "op": "eval"})]):
            sock.send_multipart(frames)
            assert sock.poll(5000)
            reply = msgpack.unpackb(sock.recv())
            assert reply["op"] == "error" and reply["error"]["class"][0] == "rbridge_protocol_error"
        sock.send(msgpack.packb({"v": 1, "id": 6, "op": "eval", "code": "1"}))
        assert sock.poll(5000) and msgpack.unpackb(sock.recv())["error"]["class"][0] == "rbridge_no_session"
    finally:
        sock.close()
        ctx.term()
    assert status_of(server.endpoint, str(keys / "server.key"), str(keys / "alice.key_secret"))["server"][
        "sessions_open"] == 0
