"""rbridge quickstart: R from Python, out of process. Run with `make demo`."""

import numpy as np

import bridge

with bridge.connect() as r:                       # starts a private R worker
    print("R", r.info["r_version"], "worker pid", r.info["pid"])

    # evaluate code, call functions by name or attribute
    r.eval("x <- c(2.5, NA, 4)")
    print("sum(1, 2) =", r.sum(1, 2))
    print("mean(x, na.rm = TRUE) =", r.mean(r["x"], na_rm=True))

    # globals; numpy arrays in, numpy arrays out (NA is masked)
    r["y"] = np.array([1.0, 2.0, 3.0, 4.0])
    print("y * 2 =", r.eval("y * 2"))
    print("x =", r["x"])

    # objects without a Python equivalent stay in R, behind handles
    stats = r.importr("stats")
    fit = stats.lm("mpg ~ wt", data=r["mtcars"])
    print(fit)                                    # R's own print output
    print("coefficients:", r.coef(fit).to_py())

    # R's output and warnings reach Python; errors raise bridge.RError
    r.eval("cat('printed in R\\n')")
    try:
        r.eval("stop('something went wrong')")
    except bridge.RError as err:
        print("caught:", err.message, err.rclass)

    # per-call options never collide with R argument names
    try:
        r.with_options(timeout=0.5).eval("Sys.sleep(5)")
    except bridge.RTimeout:
        print("timed out, and the session still works:", r.sum(40, 2))
