"""rbridge's server of sessions (`rbridge serve`) over tcp with CURVE: small
calls, 80 MB both ways (frames: encrypted, no shared memory: dbl_*_curve),
session start with a preloaded parent, 50 concurrent clients, idle CPU with
50 sessions. The same transfers through a server without CURVE (dbl_r2py,
dbl_py2r) show what the relay and what encryption cost."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (  # noqa: E402
    COLD_REPEATS,
    N_DOUBLES,
    QUICK,
    bulk,
    cpu_seconds,
    emit,
    errors_as_na,
    idle_share,
    paired_ratio,
    small_calls,
)
from wire import EchoClient  # noqa: E402

import bridge  # noqa: E402

CLIENTS = 10 if QUICK else 50
CALLS_PER_CLIENT = 100 if QUICK else 1000
PRELOAD = "big <- as.numeric(seq_len(1.25e7))   # 100 MB, shared copy-on-write\n"


class Server:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / f"server-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "tcp://127.0.0.1:*",
                                      "--max-sessions", "100", *args],
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        while not (found := re.search(r"listening on (\S+)", self.log.read_text())):
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.05)
        self.endpoint = found.group(1)

    def tree_cpu(self) -> float:
        pids = [self.proc.pid] + [int(p) for p in subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True).stdout.split()]
        pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                                text=True).stdout.split()]
        total = 0.0
        for pid in set(pids):
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def private_mb(pid: int) -> float:
    """Memory of a process that no other process shares (its own pages)."""
    total = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="server-bench-"))
    for name in ("server", "client"):
        subprocess.run([sys.executable, "-m", "bridge", "keygen", str(tmp / name)], check=True, capture_output=True)
    (tmp / "allow").mkdir()
    (tmp / "allow" / "client.key").write_bytes((tmp / "client.key").read_bytes())
    (tmp / "preload.R").write_text(PRELOAD)
    keys = {"server_key": tmp / "server.key", "client_key": tmp / "client.key_secret"}
    results: dict = {}

    server = Server(tmp, "--preload", "stats", "--preload", "methods", "--preload", str(tmp / "preload.R"),
                    "--server-key", str(tmp / "server.key_secret"), "--allow", str(tmp / "allow"))
    r = bridge.connect(server.endpoint, shm=False, **keys)
    echo = EchoClient("tcp://127.0.0.1:5798")

    def call() -> None:
        r.call("sum", 1)

    errors_as_na(results, "small_call", lambda: small_calls(call))
    errors_as_na(results, "small_call_paired", lambda: paired_ratio(call, echo))
    x = np.arange(N_DOUBLES, dtype=np.float64)
    r.eval(f"x <- as.numeric(seq_len({N_DOUBLES}))")
    errors_as_na(results, "dbl_r2py_curve", lambda: bulk(lambda: r.get("x")))
    errors_as_na(results, "dbl_py2r_curve", lambda: bulk(lambda: r.assign("y", x)))
    echo.close()

    def session_start() -> dict:
        samples = []
        for _ in range(COLD_REPEATS * 4):
            t = time.perf_counter()
            s = bridge.connect(server.endpoint, **keys)
            s.call("sum", 1)
            samples.append(time.perf_counter() - t)
            s.close()
        return {"samples": samples, "unit": "s"}
    errors_as_na(results, "session_start", session_start)

    def many_clients() -> dict:
        sessions = [bridge.connect(server.endpoint, **keys) for _ in range(CLIENTS)]
        errors: list[BaseException] = []

        def work(s: bridge.Session) -> None:
            try:
                for i in range(CALLS_PER_CLIENT):
                    assert s.call("sum", i) == i
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        pids = [s.call("Sys.getpid") for s in sessions]
        results["session_private_mem"] = {"samples": [float(np.median([private_mb(p) for p in pids]))],
                                          "unit": "MB"}
        results["idle_cpu_sessions"] = idle_share(server.tree_cpu)
        for s in sessions:
            s.close()
        if errors:
            raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
        return {"samples": [CLIENTS * CALLS_PER_CLIENT / elapsed], "unit": "calls/s"}
    errors_as_na(results, "clients_50", many_clients)
    r.close()
    server.stop()

    plain = Server(tmp)   # the same transfers without CURVE: what encryption costs
    p = bridge.connect(plain.endpoint, shm=False)
    p.eval(f"x <- as.numeric(seq_len({N_DOUBLES}))")
    errors_as_na(results, "dbl_r2py", lambda: bulk(lambda: p.get("x")))
    errors_as_na(results, "dbl_py2r", lambda: bulk(lambda: p.assign("y", x)))
    p.close()
    plain.stop()
    emit(results)


if __name__ == "__main__":
    main()
