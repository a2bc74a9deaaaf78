"""The wire limit: bare pyzmq between two Python processes, no R at all.

Usage: wire.py ipc|tcp [--quick]. Starts its own echo/bulk server process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import (  # noqa: E402
    COLD_REPEATS,
    N_DOUBLES,
    bulk,
    cold,
    cpu_hog,
    emit,
    errors_as_na,
    na,
    sequential,
    small_calls,
    timed,
)

SERVER = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.bind(sys.argv[1])
blob = bytearray(int(sys.argv[2]))
while True:
    rid, msg = s.recv_multipart(copy=False)
    b = msg.bytes if len(msg) < 64 else b""
    if b == b"stop":
        s.send_multipart([rid, b"bye"]); break
    elif b == b"give":
        s.send_multipart([rid.bytes, blob], copy=False)
    elif len(msg) > 64:
        s.send_multipart([rid.bytes, b"ok"])
    else:
        s.send_multipart([rid.bytes, msg.bytes])
"""


class EchoClient:
    """A DEALER to a bare echo server process (SERVER) at ``endpoint``;
    calling it is one 64-byte round trip."""

    def __init__(self, endpoint: str) -> None:
        self.server = subprocess.Popen([sys.executable, "-c", SERVER, endpoint, "0"])
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)
        time.sleep(0.3)

    def __call__(self) -> None:
        self.sock.send(b"x" * 64)
        self.sock.recv()

    def close(self) -> None:
        self.sock.send(b"stop")
        self.sock.recv()
        self.server.wait()
        self.sock.close()
        self.ctx.term()


def main() -> None:
    transport = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="wire-")
    endpoint = f"ipc://{tmp}/s" if transport == "ipc" else "tcp://127.0.0.1:5799"
    nbytes = N_DOUBLES * 8
    server = subprocess.Popen([sys.executable, "-c", SERVER, endpoint, str(nbytes)])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    msg64 = b"x" * 64
    payload = bytearray(nbytes)

    def echo() -> None:
        sock.send(msg64)
        sock.recv()

    def pull() -> None:
        sock.send(b"give")
        sock.recv(copy=False)

    def push() -> None:
        sock.send(payload, copy=False)
        sock.recv()

    results: dict = {}
    time.sleep(0.3)
    errors_as_na(results, "small_call", lambda: small_calls(echo))
    errors_as_na(results, "seq_10k", lambda: sequential(echo))
    with cpu_hog():
        errors_as_na(results, "small_call_loaded", lambda: small_calls(echo))
    errors_as_na(results, "dbl_r2py", lambda: bulk(pull))
    errors_as_na(results, "dbl_py2r", lambda: bulk(push))

    def fresh() -> zmq.Socket:   # a new connection, as a fresh session makes
        s = ctx.socket(zmq.DEALER)
        s.connect(endpoint)
        s.send(msg64)
        s.recv()
        return s

    def first_pull(s: zmq.Socket) -> None:
        s.send(b"give")
        s.recv(copy=False)

    def first_push(s: zmq.Socket) -> None:
        s.send(payload, copy=False)
        s.recv()
    errors_as_na(results, "dbl_r2py_cold", lambda: cold(fresh, first_pull, lambda s: s.close(linger=0)))
    errors_as_na(results, "dbl_py2r_cold", lambda: cold(fresh, first_push, lambda s: s.close(linger=0)))
    results["idle_cpu"] = na("no worker")
    for frame in ("df_r2py", "df_py2r", "wide_r2py", "wide_py2r", "df_r2py_cold", "df_py2r_cold"):
        results[frame] = na("the wire moves bytes, not data frames")
    results["callback_loop"] = na("one callback is one round trip: see small_call")
    if transport == "ipc":
        results["cold_start"] = timed(lambda: subprocess.run(["Rscript", "-e", "1"], check=True,
                                                             stdout=subprocess.DEVNULL), COLD_REPEATS)
    else:
        results["cold_start"] = na("Rscript -e 1 is listed under ipc")
    results["peak_mem"] = na("no R process")
    sock.send(b"stop")
    sock.recv()
    server.wait()
    sock.close()
    ctx.term()
    emit(results)


if __name__ == "__main__":
    main()
