"""pyRserve 1.0.3 against Debian's Rserve, started on loopback and stopped afterwards.

pyRserve predates NumPy 2: it needs numpy.string_, numpy.unicode_ and
numpy.compat.long, which NumPy 2 removed; they are restored before the import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import types

import numpy

numpy.string_ = numpy.bytes_          # type: ignore[attr-defined]
numpy.unicode_ = numpy.str_           # type: ignore[attr-defined]
numpy.compat = types.SimpleNamespace(long=int)  # type: ignore[attr-defined]
import pandas as pd  # noqa: E402
import pyRserve  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import (  # noqa: E402
    COLD_REPEATS,
    N_DOUBLES,
    N_ROWS,
    R_WIDE,
    bulk,
    emit,
    errors_as_na,
    make_wide,
    na,
    paired_ratio,
    peak_rss_mb,
    reset_peak_rss,
    sequential,
    small_calls,
    timed,
)
from wire import EchoClient  # noqa: E402

PORT = 6311


def start_rserve() -> None:
    # Rserve's connections work in /tmp/Rserv unless told otherwise, and it
    # leaves that behind: keep it in this run's own temporary directory
    workdir = os.path.join(tempfile.gettempdir(), "Rserv")
    subprocess.run(["Rscript", "-e", f'Rserve::Rserve(args="--no-save --RS-port {PORT} --RS-set workdir={workdir}")'],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    for _ in range(200):
        try:
            pyRserve.connect(port=PORT).close()
            return
        except Exception:
            time.sleep(0.025)
    raise RuntimeError("Rserve did not start")


def stop_rserve() -> None:
    try:
        pyRserve.connect(port=PORT).shutdown()
    except Exception:
        pass
    subprocess.run(["pkill", "-f", f"RS-port {PORT}"], check=False)
    time.sleep(0.2)


R_FRAME = (f"set.seed(1); df <- data.frame(d = runif({N_ROWS}), s = paste0('s', seq_len({N_ROWS}) %% 1000), "
           f"f = factor(sample(c('a', 'b', 'c'), {N_ROWS}, TRUE)))")


def make_frame() -> pd.DataFrame:
    rng = numpy.random.default_rng(1)
    return pd.DataFrame({"d": rng.random(N_ROWS),
                         "s": numpy.array([f"s{i % 1000}" for i in range(N_ROWS)], dtype=object),
                         "f": pd.Categorical.from_codes(rng.integers(0, 3, N_ROWS), ["a", "b", "c"])})


def df_to_pandas(tl) -> pd.DataFrame:
    """A TaggedList of columns (factors as AttrArray of codes) to pandas."""
    cols = {}
    for name, col in tl.astuples():
        name = str(name)
        attr = getattr(col, "attr", None) or {}
        if "levels" in attr:
            cols[name] = pd.Categorical.from_codes(numpy.asarray(col) - 1, list(attr["levels"]))
        else:
            cols[name] = numpy.asarray(col)
    return pd.DataFrame(cols)


def main() -> None:
    results: dict = {}
    stop_rserve()
    start_rserve()
    conn = pyRserve.connect(port=PORT)
    # small calls first, in a clean session (a large heap slows R's garbage collector)
    errors_as_na(results, "small_call", lambda: small_calls(lambda: conn.eval("sum(1)")))
    errors_as_na(results, "seq_10k", lambda: sequential(lambda: conn.eval("sum(1)")))
    # pyRserve against the bare ZeroMQ echo over tcp, interleaved: whether any
    # ZeroMQ client (which crosses two I/O threads per side) can beat it here
    echo = EchoClient("tcp://127.0.0.1:5795")
    errors_as_na(results, "small_call_paired", lambda: paired_ratio(lambda: conn.eval("sum(1)"), echo))
    echo.close()
    conn.eval(f"x <- as.numeric(seq_len({N_DOUBLES}))")
    arr = numpy.arange(N_DOUBLES, dtype=numpy.float64)
    frame = make_frame()
    conn.eval(R_FRAME)

    def py2r_frame() -> None:
        # pyRserve sends vectors, not data.frames: columns, then assemble in R
        conn.r.d = frame["d"].to_numpy()
        conn.r.s = frame["s"].to_numpy().astype(str)
        conn.r.fcodes = frame["f"].cat.codes.to_numpy().astype(numpy.int32) + 1
        conn.r.flev = numpy.array(frame["f"].cat.categories, dtype=str)
        conn.eval("df2 <- data.frame(d = d, s = s, f = factor(flev[fcodes], levels = flev)); NULL")

    errors_as_na(results, "dbl_r2py", lambda: bulk(lambda: conn.eval("x")))

    def py2r_vector() -> None:
        conn.r.y = arr
    errors_as_na(results, "dbl_py2r", lambda: bulk(py2r_vector))
    errors_as_na(results, "df_r2py", lambda: bulk(lambda: df_to_pandas(conn.eval("df"))))
    errors_as_na(results, "df_py2r", lambda: bulk(py2r_frame))
    conn.eval("rm(df, df2); " + R_WIDE + "; NULL")
    wide = make_wide()

    def py2r_wide() -> None:   # its best route: one matrix, made a data.frame in R
        conn.r.m = wide.to_numpy()
        conn.eval("wide2 <- as.data.frame(m); NULL")
    errors_as_na(results, "wide_r2py", lambda: bulk(lambda: df_to_pandas(conn.eval("wide"))))
    errors_as_na(results, "wide_py2r", lambda: bulk(py2r_wide))
    results["callback_loop"] = na("pyRserve cannot call Python from R")

    def memory() -> dict:
        c = pyRserve.connect(port=PORT)      # Rserve forks one R process per connection
        pid = int(c.eval("Sys.getpid()"))
        c.eval("invisible(gc())")
        reset_peak_rss(pid)
        before = peak_rss_mb(pid)
        c.r.y = arr
        after = peak_rss_mb(pid)
        c.close()
        return {"samples": [after - before], "unit": "MB"}
    errors_as_na(results, "peak_mem", memory)
    conn.close()
    stop_rserve()

    def cold() -> None:
        start_rserve()
        c = pyRserve.connect(port=PORT)
        c.eval("sum(1)")
        c.close()
        stop_rserve()
    errors_as_na(results, "cold_start", lambda: timed(cold, COLD_REPEATS, warmup=0))
    emit(results)


if __name__ == "__main__":
    main()
