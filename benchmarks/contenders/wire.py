"""The wire limit: bare pyzmq between two Python processes, no R at all.

Usage: wire.py ipc|tcp [--quick]. Starts its own echo/bulk server process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import zmq

from bridge._payloads import chunk_size

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
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER)
if sys.argv[3]:   # CURVE, with this secret key (no ZAP handler: any client key)
    s.curve_server = True
    s.curve_secretkey = sys.argv[3].encode()
s.bind(sys.argv[1])
blob = bytearray(int(sys.argv[2]))
size = int(sys.argv[4]) if len(sys.argv) > 4 else 1
chunks = [memoryview(blob)[at:at + size] for at in range(0, len(blob), size)]
while True:
    rid, msg, *more = s.recv_multipart(copy=False)
    b = msg.bytes if len(msg) < 64 else b""
    if b == b"stop":
        s.send_multipart([rid, b"bye"]); break
    elif b == b"give":
        s.send_multipart([rid.bytes, blob], copy=False)
    elif b == b"give chunks":
        s.send_multipart([rid.bytes, *chunks], copy=False)
    elif len(msg) > 64 or more:
        s.send_multipart([rid.bytes, b"ok"])
    else:
        s.send_multipart([rid.bytes, msg.bytes])
"""

#: rbridge's chunks for a payload of this many bytes (bridge._payloads.chunk_size).
CHUNK_BYTES = chunk_size(N_DOUBLES * 8)


class EchoClient:
    """A DEALER to a bare echo server process (SERVER) at ``endpoint``, or, for
    ``"ipc"``, at a socket in a temporary directory of its own (removed on
    close). The server also sends ``blob_bytes`` on request; calling it is one
    64-byte round trip."""

    def __init__(self, endpoint: str, blob_bytes: int = 0, curve: bool = False) -> None:
        self._own_dir = tempfile.mkdtemp(prefix="wire-") if endpoint == "ipc" else None
        endpoint = f"ipc://{self._own_dir}/s" if self._own_dir else endpoint
        self.endpoint = endpoint
        server_public, server_secret = zmq.curve_keypair()
        self.server = subprocess.Popen([sys.executable, "-c", SERVER, endpoint, str(blob_bytes),
                                        server_secret.decode() if curve else "", str(CHUNK_BYTES)])
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        if curve:
            self.sock.curve_serverkey = server_public
            self.sock.curve_publickey, self.sock.curve_secretkey = zmq.curve_keypair()
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
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)


def pull(sock: zmq.Socket) -> None:
    sock.send(b"give")
    sock.recv(copy=False)


def pull_chunks(sock: zmq.Socket) -> None:
    sock.send(b"give chunks")
    sock.recv_multipart(copy=False)


def main() -> None:
    transport = sys.argv[1]
    nbytes = N_DOUBLES * 8
    echo = EchoClient("ipc" if transport == "ipc" else "tcp://127.0.0.1:5799", nbytes)
    endpoint = echo.endpoint
    payload = bytearray(nbytes)

    def push(sock: zmq.Socket) -> None:
        sock.send(payload, copy=False)
        sock.recv()

    chunks = [memoryview(payload)[at:at + CHUNK_BYTES] for at in range(0, nbytes, CHUNK_BYTES)]

    def push_chunks(sock: zmq.Socket) -> None:
        sock.send_multipart(chunks, copy=False)
        sock.recv()

    results: dict = {}
    errors_as_na(results, "small_call", lambda: small_calls(echo))
    errors_as_na(results, "seq_10k", lambda: sequential(echo))
    with cpu_hog():
        errors_as_na(results, "small_call_loaded", lambda: small_calls(echo))
    errors_as_na(results, "dbl_r2py", lambda: bulk(lambda: pull(echo.sock)))
    errors_as_na(results, "dbl_py2r", lambda: bulk(lambda: push(echo.sock)))

    def fresh() -> zmq.Socket:   # a new connection, as a fresh session makes
        s = echo.ctx.socket(zmq.DEALER)
        s.connect(endpoint)
        s.send(b"x" * 64)
        s.recv()
        return s
    if transport == "tcp":   # the same bytes with CURVE encryption: what it costs without R
        secure = EchoClient("tcp://127.0.0.1:5796", nbytes, curve=True)
        errors_as_na(results, "small_call_curve", lambda: small_calls(secure))
        errors_as_na(results, "dbl_r2py_curve", lambda: bulk(lambda: pull(secure.sock)))
        errors_as_na(results, "dbl_py2r_curve", lambda: bulk(lambda: push(secure.sock)))
        # in the chunks rbridge sends: what CURVE costs at best
        errors_as_na(results, "dbl_r2py_curve_chunks", lambda: bulk(lambda: pull_chunks(secure.sock)))
        errors_as_na(results, "dbl_py2r_curve_chunks", lambda: bulk(lambda: push_chunks(secure.sock)))
        secure.close()
    errors_as_na(results, "dbl_r2py_cold", lambda: cold(fresh, pull, lambda s: s.close(linger=0)))
    errors_as_na(results, "dbl_py2r_cold", lambda: cold(fresh, push, lambda s: s.close(linger=0)))
    if transport != "tcp":
        results["small_call_curve"] = na("CURVE runs over tcp only")
    results["idle_cpu"] = na("no worker")
    for paired in ("small_call_paired", "small_call_loaded_paired"):
        results[paired] = na("rbridge's ratio to this echo: see the rbridge columns")
    for frame in ("df_r2py", "df_py2r", "wide_r2py", "wide_py2r", "df_r2py_cold", "df_py2r_cold",
                  "df_r2py_cold_reserved", "df_py2r_cold_reserved"):
        results[frame] = na("the wire moves bytes, not data frames")
    results["callback_loop"] = na("one callback is one round trip: see small_call")
    for reserved in ("dbl_r2py_cold_reserved", "dbl_py2r_cold_reserved"):
        results[reserved] = na("reserving is rbridge's: its ratio is to this column's cold row")
    if transport == "ipc":
        results["cold_start"] = timed(lambda: subprocess.run(["Rscript", "-e", "1"], check=True,
                                                             stdout=subprocess.DEVNULL), COLD_REPEATS)
    else:
        results["cold_start"] = na("Rscript -e 1 is listed under ipc")
    results["peak_mem"] = na("no R process")
    echo.close()
    emit(results)


if __name__ == "__main__":
    main()
