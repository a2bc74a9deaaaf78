"""rbridge, over ipc:// (a private worker, large data through shared memory) or
tcp:// loopback (a worker started from the shell; shared memory turned off so
that data crosses the socket, as it would between hosts), written the way its
README says to use it.

Usage: rbridge_bench.py ipc|tcp [--quick]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import (  # noqa: E402
    BULK_REPEATS,
    COLD_REPEATS,
    N_CALLBACKS,
    N_DOUBLES,
    R_PNG_IN_R,
    R_SCATTER,
    R_WIDE,
    bulk,
    cold,
    cpu_hog,
    emit,
    errors_as_na,
    idle_cpu,
    magic_input,
    make_wide,
    na,
    paired_ratio,
    peak_rss_mb,
    reset_peak_rss,
    sequential,
    small_calls,
    timed,
)
from contenders.pyrserve_bench import R_FRAME, make_frame  # noqa: E402
from contenders.wire import EchoClient  # noqa: E402

import bridge  # noqa: E402


def start_tcp_worker() -> tuple[str, subprocess.Popen]:
    """A serve() worker on a free loopback port. Its output goes to a file
    that is removed once the endpoint is read (or the start fails)."""
    with tempfile.NamedTemporaryFile(prefix="rbridge-bench-", suffix=".log") as log:
        proc = subprocess.Popen(["Rscript", "-e", 'rserver::serve("tcp://127.0.0.1:*")'],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        for _ in range(400):
            text = open(log.name).read()
            found = re.search(r"listening on (tcp://\S+)", text)
            if found:
                return found.group(1), proc
            time.sleep(0.025)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the tcp worker did not start: {text}")


def echo_client(transport: str) -> EchoClient:
    """The bare pyzmq echo of wire.py, on the same transport, for paired ratios."""
    if transport == "ipc":
        return EchoClient("ipc")
    return EchoClient("tcp://127.0.0.1:5798")


#: what the *_cold_reserved workloads reserve (ipc only: shared memory)
SHM_RESERVE = 128 << 20


def connect(transport: str, shm_reserve: int = 0) -> tuple[bridge.Session, subprocess.Popen | None]:
    if transport == "ipc":
        return bridge.connect(shm_reserve=shm_reserve), None
    endpoint, proc = start_tcp_worker()
    return bridge.connect(endpoint, shm=False), proc


def close(r: bridge.Session, proc: subprocess.Popen | None) -> None:
    r.close()
    if proc is not None:   # an attached worker outlives its sessions: stop it
        proc.terminate()
        proc.wait(10)


def main() -> None:
    transport = sys.argv[1]
    results: dict = {}
    r, proc = connect(transport)
    # small calls first, in a clean session (a large heap slows R's garbage collector)
    errors_as_na(results, "small_call", lambda: small_calls(lambda: r.call("sum", 1)))
    errors_as_na(results, "seq_10k", lambda: sequential(lambda: r.call("sum", 1)))
    echo = echo_client(transport)
    errors_as_na(results, "small_call_paired", lambda: paired_ratio(lambda: r.call("sum", 1), echo))
    with cpu_hog():
        errors_as_na(results, "small_call_loaded", lambda: small_calls(lambda: r.call("sum", 1)))
        errors_as_na(results, "small_call_loaded_paired", lambda: paired_ratio(lambda: r.call("sum", 1), echo))
    echo.close()
    errors_as_na(results, "idle_cpu", lambda: idle_cpu(r.worker_pid))
    r.eval(f"x <- as.numeric(seq_len({N_DOUBLES}))")
    arr = np.arange(N_DOUBLES, dtype=np.float64)
    errors_as_na(results, "dbl_r2py", lambda: bulk(lambda: r["x"]))
    errors_as_na(results, "dbl_py2r", lambda: bulk(lambda: r.assign("y", arr)))
    r.eval("rm(x, y); gc(); NULL")
    frame = make_frame()
    r.eval(R_FRAME + "; NULL")
    errors_as_na(results, "df_r2py", lambda: bulk(lambda: r["df"]))
    errors_as_na(results, "df_py2r", lambda: bulk(lambda: r.assign("df2", frame)))
    r.eval("rm(df, df2); " + R_WIDE + "; NULL")
    wide = make_wide()
    errors_as_na(results, "wide_r2py", lambda: bulk(lambda: r["wide"]))
    errors_as_na(results, "wide_py2r", lambda: bulk(lambda: r.assign("wide2", wide)))
    loop = r.eval(f"function(f) {{ for (i in seq_len({N_CALLBACKS})) f(i); NULL }}")
    errors_as_na(results, "callback_loop",
                 lambda: timed(lambda: loop(lambda v: v + 1), BULK_REPEATS, per=N_CALLBACKS))
    if transport == "ipc":
        def plot() -> bytes:
            with r.plots(width=10, height=7, dpi=100) as plots:
                r.eval(R_SCATTER)
            return plots[0].data
        errors_as_na(results, "plot_png", lambda: timed(plot, BULK_REPEATS))
        errors_as_na(results, "plot_png_in_r", lambda: {"samples": [r.eval(R_PNG_IN_R) for _ in range(BULK_REPEATS)],
                                                          "unit": "s"})
        errors_as_na(results, "magic_df_input", lambda: magic_input("bridge.ipython", frame))
    close(r, proc)

    def start() -> None:
        s, p = connect(transport)
        s.call("sum", 1)
        close(s, p)
    errors_as_na(results, "cold_start", lambda: timed(start, COLD_REPEATS, warmup=0))

    def fresh(setup: str = "NULL", shm_reserve: int = 0) -> tuple[bridge.Session, subprocess.Popen | None]:
        s, p = connect(transport, shm_reserve)
        s.eval(setup + "; NULL")
        return s, p

    def done(it: tuple[bridge.Session, subprocess.Popen | None]) -> None:
        close(*it)
    x = f"x <- as.numeric(seq_len({N_DOUBLES}))"

    def first_transfers(suffix: str, reserve: int) -> None:
        errors_as_na(results, f"dbl_r2py_cold{suffix}",
                     lambda: cold(lambda: fresh(x, reserve), lambda it: it[0]["x"], done))
        errors_as_na(results, f"dbl_py2r_cold{suffix}",
                     lambda: cold(lambda: fresh(shm_reserve=reserve), lambda it: it[0].assign("y", arr), done))
        errors_as_na(results, f"df_r2py_cold{suffix}",
                     lambda: cold(lambda: fresh(R_FRAME, reserve), lambda it: it[0]["df"], done))
        errors_as_na(results, f"df_py2r_cold{suffix}",
                     lambda: cold(lambda: fresh(shm_reserve=reserve), lambda it: it[0].assign("df2", frame), done))
    first_transfers("", 0)
    if transport == "ipc":
        first_transfers("_reserved", SHM_RESERVE)
    else:
        for workload in ("dbl_r2py", "dbl_py2r", "df_r2py", "df_py2r"):
            results[f"{workload}_cold_reserved"] = na("shared memory is reserved on one host only (ipc)")

    def memory() -> dict:
        s, p = connect(transport)
        pid = s.info["pid"]
        s.eval("gc(); invisible(NULL)")
        reset_peak_rss(pid)
        before = peak_rss_mb(pid)
        s.assign("y", arr)
        after = peak_rss_mb(pid)
        close(s, p)
        return {"samples": [after - before], "unit": "MB"}
    errors_as_na(results, "peak_mem", memory)
    emit(results)


if __name__ == "__main__":
    main()
