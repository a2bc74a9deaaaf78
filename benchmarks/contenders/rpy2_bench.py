"""rpy2 3.5.17 (the last release for R 4.2), R embedded in this process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy
import rpy2.rinterface as ri
import rpy2.robjects as ro
from rpy2.robjects import numpy2ri, pandas2ri
from rpy2.robjects.conversion import localconverter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import (  # noqa: E402
    BULK_REPEATS,
    COLD_REPEATS,
    N_CALLBACKS,
    N_DOUBLES,
    R_WIDE,
    bulk,
    emit,
    errors_as_na,
    magic_input,
    make_wide,
    sequential,
    small_calls,
    timed,
)
from contenders.pyrserve_bench import R_FRAME, make_frame  # noqa: E402


def main() -> None:
    results: dict = {}
    # small calls first, in a clean session (a large heap slows R's garbage collector)
    errors_as_na(results, "small_call", lambda: small_calls(lambda: ro.r["sum"](1)))
    errors_as_na(results, "seq_10k", lambda: sequential(lambda: ro.r["sum"](1)))
    ro.r(f"x <- as.numeric(seq_len({N_DOUBLES}))")
    ro.r(R_FRAME)
    arr = numpy.arange(N_DOUBLES, dtype=numpy.float64)
    frame = make_frame()
    np_conv = ro.default_converter + numpy2ri.converter
    pd_conv = ro.default_converter + pandas2ri.converter

    # R -> numpy through the vector's memory view (a copy, so the array owns its data)
    errors_as_na(results, "dbl_r2py",
                 lambda: bulk(lambda: numpy.array(ro.globalenv["x"].memoryview())))

    def py2r_vector() -> None:
        with localconverter(np_conv):
            ro.globalenv["y"] = arr
    errors_as_na(results, "dbl_py2r", lambda: bulk(py2r_vector))

    def frames_both_ways(prefix: str, r_name: str, df) -> None:
        """pandas2ri's conversion of a data.frame R -> pandas and back."""
        def r2py() -> None:
            with localconverter(pd_conv):
                ro.conversion.get_conversion().rpy2py(ro.globalenv[r_name])

        def py2r() -> None:
            with localconverter(pd_conv):
                ro.globalenv[r_name + "2"] = df
        errors_as_na(results, f"{prefix}_r2py", lambda: bulk(r2py))
        errors_as_na(results, f"{prefix}_py2r", lambda: bulk(py2r))

    frames_both_ways("df", "df", frame)
    errors_as_na(results, "magic_df_input", lambda: magic_input("rpy2.ipython", frame))
    ro.r(R_WIDE)
    frames_both_ways("wide", "wide", make_wide())

    @ri.rternalize
    def py_add_one(v):
        return ri.FloatSexpVector([v[0] + 1])
    loop = ro.r(f"function(f) {{ for (i in seq_len({N_CALLBACKS})) f(i); NULL }}")
    errors_as_na(results, "callback_loop",
                 lambda: timed(lambda: loop(py_add_one), BULK_REPEATS, per=N_CALLBACKS))

    cold_code = "import rpy2.robjects as ro; ro.r['sum'](1)"
    errors_as_na(results, "cold_start", lambda: timed(
        lambda: subprocess.run([sys.executable, "-c", cold_code], check=True), COLD_REPEATS, warmup=0))

    def memory() -> dict:
        # in process, so in a fresh process: the peak of Python and R together above
        # the baseline (earlier workloads here would already have raised the peak)
        code = (
            "import os, sys, numpy, rpy2.robjects as ro\n"
            "from rpy2.robjects import numpy2ri\n"
            "from rpy2.robjects.conversion import localconverter\n"
            f"sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})\n"
            "from common import peak_rss_mb, reset_peak_rss\n"
            f"arr = numpy.arange({N_DOUBLES}, dtype=numpy.float64)\n"
            "ro.r('invisible(gc())'); reset_peak_rss(os.getpid()); before = peak_rss_mb(os.getpid())\n"
            "with localconverter(ro.default_converter + numpy2ri.converter):\n"
            "    ro.globalenv['y'] = arr\n"
            "print(peak_rss_mb(os.getpid()) - before)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return {"samples": [float(out.stdout.strip())], "unit": "MB"}
    errors_as_na(results, "peak_mem", memory)
    emit(results)


if __name__ == "__main__":
    main()
