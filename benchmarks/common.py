"""Shared by the benchmark contenders: workload sizes, timing, JSON output.

Every contender script prints one JSON object mapping workload names to
{"samples": [...], "unit": "s" | "MB"} or {"na": "reason"}.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

QUICK = "--quick" in sys.argv

# name -> what is measured (one sample = one timed repeat)
WORKLOADS = {
    "small_call": "round trip of sum(1), per call",
    "small_call_loaded": "round trip of sum(1) while a CPU-bound process runs on one of the cores, per call",
    "small_call_paired": "small call / bare echo on the same transport, batches interleaved in one process (ratio)",
    "small_call_loaded_paired": "the same ratio while a CPU-bound process runs on one of the cores",
    "small_call_curve": "round trip of a 64-byte message with CURVE encryption (wire tcp only: what CURVE adds to "
                        "the bare echo)",
    "seq_10k": "10,000 sequential small calls",
    "dbl_r2py": "1e7 doubles (80 MB) R -> Python",
    "dbl_py2r": "1e7 doubles (80 MB) Python -> R",
    "dbl_r2py_cold": "1e7 doubles R -> Python, the first transfer of a fresh session (connection)",
    "dbl_py2r_cold": "1e7 doubles Python -> R, the first transfer of a fresh session (connection)",
    "dbl_r2py_cold_reserved": "the same first transfer R -> Python, of a session opened with "
                              "connect(shm_reserve=128 MiB)",
    "dbl_py2r_cold_reserved": "the same first transfer Python -> R, of a session opened with "
                              "connect(shm_reserve=128 MiB)",
    "df_r2py": "data.frame, 1e6 rows (double, character, factor) R -> pandas",
    "df_py2r": "data.frame, 1e6 rows (double, character, factor) pandas -> R",
    "df_r2py_cold": "the same data.frame R -> pandas, the first transfer of a fresh session",
    "df_py2r_cold": "the same data.frame pandas -> R, the first transfer of a fresh session",
    "df_r2py_cold_reserved": "the first data.frame R -> pandas of a session opened with connect(shm_reserve=128 MiB)",
    "df_py2r_cold_reserved": "the first data.frame pandas -> R of a session opened with connect(shm_reserve=128 MiB)",
    "wide_r2py": "wide data.frame, 100 rows x 2,000 double columns, R -> pandas",
    "wide_py2r": "wide data.frame, 100 rows x 2,000 double columns, pandas -> R",
    "callback_loop": "R loop calling a Python function 10,000 times, per call",
    "cold_start": "from nothing running to the first result",
    "peak_mem": "R side's peak memory above its baseline while receiving the 80 MB vector",
    "idle_cpu": "CPU time an idle worker takes, as a share of one core, over 10 s (three windows)",
    "plot_png": "one 1000x700 PNG of a 10,000-point scatter, drawn in R and received in Python as bytes",
    "plot_png_in_r": "the same PNG in R alone: png(), plot(), dev.off() and readBin() of the file, timed inside R",
    "magic_df_input": "%%R -i df of the 1e6-row data.frame in an IPython shell (each tool's own magic)",
    # a server of sessions (the "rbridge server" column: tcp, CURVE)
    "session_start": "server: connect() to the first result of a new session (stats, methods, 100 MB preloaded)",
    "dbl_r2py_curve": "1e7 doubles R -> Python with CURVE encryption (server: frames; wire: bare pyzmq)",
    "dbl_py2r_curve": "1e7 doubles Python -> R with CURVE encryption (server: frames; wire: bare pyzmq)",
    "dbl_r2py_curve_chunks": "the same with CURVE, in the chunks rbridge sends (wire only)",
    "dbl_py2r_curve_chunks": "the same with CURVE, in the chunks rbridge sends (wire only)",
    "clients_50": "server: 50 concurrent clients, 1,000 small calls each: aggregate calls per second",
    "session_private_mem": "server: a session's own memory, not shared with the preloaded parent (median)",
    "idle_cpu_sessions": "server: CPU of the whole server with 50 idle sessions, share of one core over 10 s "
                         "(three windows)",
}

N_DOUBLES = 100_000 if QUICK else 10_000_000
N_ROWS = 10_000 if QUICK else 1_000_000
N_SEQ = 1_000 if QUICK else 10_000
N_CALLBACKS = 500 if QUICK else 10_000
WIDE_ROWS, WIDE_COLS = (100, 200) if QUICK else (100, 2_000)
#: The same wide frame on both sides: R makes it with this code, Python with make_wide().
R_WIDE = f"wide <- as.data.frame(matrix(as.numeric(seq_len({WIDE_ROWS * WIDE_COLS})), {WIDE_ROWS}))"
SMALL_BATCH = 100 if QUICK else 500
REPEATS = 3 if QUICK else 15
BULK_REPEATS = 2 if QUICK else 7
#: Bulk transfers are measured in steady state: caches such as rbridge's
#: shared-memory arenas fill during the first few (the same for everyone).
BULK_WARMUP = 1 if QUICK else 4
COLD_REPEATS = 1 if QUICK else 5
IDLE_SECONDS = 2 if QUICK else 10
IDLE_WINDOWS = 1 if QUICK else 3


def bulk(fn: Callable[[], Any]) -> dict[str, Any]:
    """Samples of one bulk transfer, in steady state."""
    return timed(fn, BULK_REPEATS, warmup=BULK_WARMUP)


def timed(fn: Callable[[], Any], repeats: int, per: int = 1, warmup: int = 1) -> dict[str, Any]:
    """Samples of fn's wall time (divided by `per`), after warm-up runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) / per)
    return {"samples": samples, "unit": "s"}


def small_calls(call: Callable[[], Any]) -> dict[str, Any]:
    def batch() -> None:
        for _ in range(SMALL_BATCH):
            call()
    return timed(batch, REPEATS, per=SMALL_BATCH, warmup=2)


def sequential(call: Callable[[], Any]) -> dict[str, Any]:
    def run() -> None:
        for _ in range(N_SEQ):
            call()
    return timed(run, 3 if not QUICK else 1, per=N_SEQ / 10_000)   # scaled to 10,000 calls


def make_wide() -> Any:
    import numpy as np
    import pandas as pd
    values = np.arange(1, WIDE_ROWS * WIDE_COLS + 1, dtype=np.float64).reshape((WIDE_ROWS, WIDE_COLS), order="F")
    return pd.DataFrame(values, columns=[f"V{i + 1}" for i in range(WIDE_COLS)])


def cold(fresh: Callable[[], Any], first: Callable[[Any], Any], done: Callable[[Any], Any]) -> dict[str, Any]:
    """Samples of the first transfer of a fresh session: ``fresh()`` makes one
    (untimed), ``first(it)`` is timed, ``done(it)`` closes it."""
    samples = []
    for _ in range(COLD_REPEATS):
        it = fresh()
        t = time.perf_counter()
        first(it)
        samples.append(time.perf_counter() - t)
        done(it)
    return {"samples": samples, "unit": "s"}


@contextlib.contextmanager
def cpu_hog() -> Iterator[None]:
    """A CPU-bound process, pinned to the last core, for the duration."""
    last = max(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                           preexec_fn=lambda: os.sched_setaffinity(0, {last}))
    try:
        time.sleep(0.3)
        yield
    finally:
        hog.kill()
        hog.wait()


def paired_ratio(call: Callable[[], Any], echo: Callable[[], Any]) -> dict[str, Any]:
    """Samples of (time of a batch of calls) / (time of a batch of echoes),
    the batches interleaved so that both meet the same machine: on a VM whose
    speed drifts by 2-4x over minutes, only ratios measured this way hold."""
    def batch(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        for _ in range(SMALL_BATCH):
            fn()
        return time.perf_counter() - t
    batch(call), batch(echo)   # warm-up
    return {"samples": [batch(call) / batch(echo) for _ in range(REPEATS * 2)], "unit": "x"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int) -> dict[str, Any]:
    """The share of one core (percent) the idle process takes over IDLE_SECONDS."""
    return idle_share(lambda: cpu_seconds(pid))


def idle_share(cpu: Callable[[], float]) -> dict[str, Any]:
    """Samples of the share of one core (percent) that ``cpu`` (CPU seconds so
    far) grows by, over IDLE_WINDOWS windows of IDLE_SECONDS each: the median
    is robust to one window that meets a wake-up or the VM's own noise."""
    time.sleep(1)
    samples = []
    for _ in range(IDLE_WINDOWS):
        before = cpu()
        time.sleep(IDLE_SECONDS)
        samples.append(100 * (cpu() - before) / IDLE_SECONDS)
    return {"samples": samples, "unit": "%"}


def na(reason: str) -> dict[str, str]:
    return {"na": reason}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Resets VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


#: The scatter of the plot workloads, drawn in R.
R_SCATTER = "set.seed(1); plot(rnorm(1e4), rnorm(1e4))"
#: The PNG of the plot workloads, made in R alone and timed inside R.
R_PNG_IN_R = ("local({ started <- Sys.time(); f <- tempfile(fileext = '.png'); "
              "png(f, width = 10, height = 7, units = 'in', res = 100, type = 'cairo'); " + R_SCATTER + "; "
              "dev.off(); bytes <- readBin(f, 'raw', file.size(f)); unlink(f); "
              "as.numeric(Sys.time() - started, units = 'secs') })")


def magic_input(extension: str, frame: Any) -> dict[str, Any]:
    """Samples of ``%%R -i df`` with a tool's IPython extension, in an IPython
    shell of this process."""
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", extension)
    shell.user_ns["df"] = frame
    return timed(lambda: shell.run_cell_magic("R", "-i df", "invisible(NULL)"), COLD_REPEATS)


def emit(results: dict[str, Any]) -> None:
    for name in WORKLOADS:
        results.setdefault(name, na("measured for rbridge and the wire only"))
    json.dump(results, sys.stdout)
    sys.stdout.flush()


def errors_as_na(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Runs one workload; a failure is reported as n/a with the error, not a crash."""
    try:
        results[name] = fn()
    except Exception as exc:   # the table must say what failed
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"{name} failed: {exc!r}", file=sys.stderr)


os.environ.setdefault("OMP_NUM_THREADS", "1")
