"""Helpers of the test suites (import them with ``from helpers import ...``):
workers started from the shell, waiting, timing an exception, raw exchanges."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

#: The repository's root (protocol/, README.md, examples/).
ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors"


def start_tcp_worker(tmp_path: Path, *extra_env: tuple[str, str],
                     endpoint: str = "tcp://127.0.0.1:*") -> tuple[str, subprocess.Popen]:
    """Starts `rserver::serve()` from the shell, by default on a free loopback port.
    R's temporary directory goes in ``tmp_path``: tests kill these workers."""
    log = tmp_path / f"worker-{time.monotonic_ns()}.log"
    env = dict(os.environ, TMPDIR=str(tmp_path), **dict(extra_env))
    with open(log, "wb") as out:
        proc = subprocess.Popen([shutil.which("Rscript"), "-e", f'rserver::serve("{endpoint}")'],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.search(r"listening on ((?:tcp|ipc)://\S+)", log.read_text())
        if found:
            return found.group(1), proc
        if proc.poll() is not None:
            raise RuntimeError(f"worker failed: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("worker did not start")


def segments(kind: str, pid: int) -> set[str]:
    """Names in /dev/shm of the shared-memory segments process ``pid`` made
    (``kind`` "c": a client's, "w": a worker's)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"rbridge-{kind}{pid}-")}


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of process ``pid`` from /proc/PID/status (``VmRSS``,
    ``RssShmem``, ...), in MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def worker_rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MB."""
    return proc_status_mb(pid, "VmRSS")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def run_in_threads(work, count: int) -> list[BaseException]:
    """Runs work(i) for i in range(count) on as many threads; returns their errors."""
    import threading

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:   # reported to the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def seconds_until_raised(trigger, run, expected, delay: float = 0.5) -> float:
    """Calls trigger() after `delay` s on a timer thread while run() runs; checks that
    run() raises `expected` and returns how long after the trigger (as it actually
    fired: a loaded machine delays timer threads) it did."""
    import threading

    fired: list[float] = []

    def fire() -> None:
        fired.append(time.monotonic())
        trigger()

    threading.Timer(delay, fire).start()
    with pytest.raises(expected):
        run()
    return time.monotonic() - fired[0]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def is_unasked_pong(frame: bytes) -> bool:
    """Whether ``frame`` is the worker checking that a client is still there (SPEC §8)."""
    reply = msgpack.unpackb(frame, raw=False)
    return reply.get("op") == "pong" and reply.get("id") == 0


def recv_reply(sock: zmq.Socket, timeout_ms: int = 10000) -> list[bytes]:
    """The next message on a bare DEALER other than an unasked pong, or an AssertionError."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        assert sock.poll(max(0, int((deadline - time.monotonic()) * 1000))), "no reply"
        frames = sock.recv_multipart()
        if not is_unasked_pong(frames[0]):
            return frames


def raw_exchange(endpoint: str, frames: list[bytes], timeout_ms: int = 5000) -> dict:
    """Sends raw frames with a bare DEALER and returns the decoded reply."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return msgpack.unpackb(recv_reply(sock, timeout_ms)[0], raw=False)
    finally:
        sock.close()
        ctx.term()


@contextlib.contextmanager
def shm_dealer(endpoint: str) -> Iterator[zmq.Socket]:
    """A bare DEALER that has said hello with a shared-memory probe, and been
    told ``"shm": true``."""
    from bridge._payloads import make_probe

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        name, token = make_probe()
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": "hello", "versions": [1],
                                 "shm_probe": {"name": name, "token": token}}))
        assert msgpack.unpackb(recv_reply(sock, 5000)[0])["shm"] is True
        yield sock
    finally:
        sock.close()
        ctx.term()


class Server:
    """`rbridge serve` (python -m bridge serve) on a free loopback port."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        import sys

        self.log = tmp_path / f"server-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "tcp://127.0.0.1:*", *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"listening on (tcp://\S+)", self.log.read_text())
            if found:
                self.endpoint = found.group(1)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server failed: {self.log.read_text()}")
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("server did not start")

    def processes(self) -> list[int]:
        """The server's process and all of its descendants that are alive."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return [p for p in found if pid_alive(p)]

    def directory(self) -> Path:
        """The server's private directory (its sessions' sockets and files)."""
        return Path(re.search(r"sessions in (\S+)", self.log.read_text()).group(1))

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def status_of(endpoint: str, *keys: str) -> dict:
    """`rbridge status --json`'s answer."""
    import json
    import sys

    key_args = ["--server-key", keys[0], "--client-key", keys[1]] if keys else []
    out = subprocess.run([sys.executable, "-m", "bridge", "status", endpoint, "--json", *key_args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class Relay:
    """A TCP relay to `target` ("tcp://host:port") that can be frozen: it then
    forwards nothing either way and keeps every connection open, as a silent
    network partition does."""

    def __init__(self, target: str) -> None:
        import socket
        import threading

        host, port = target[len("tcp://"):].rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self.frozen = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import selectors
        import socket

        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                if sock is self._listener:
                    client, _addr = self._listener.accept()
                    upstream = socket.create_connection(self._target)
                    peers[client], peers[upstream] = upstream, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(upstream, selectors.EVENT_READ)
                elif not self.frozen.is_set():
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        peers[sock].sendall(data)
                    else:
                        partner = peers.pop(sock)
                        peers.pop(partner, None)
                        for s in (sock, partner):
                            sel.unregister(s)
                            s.close()
            if self.frozen.is_set():
                self._stop.wait(0.05)
        for s in list(peers):
            s.close()
        self._listener.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
