"""rbridge quickstart: R from Python, out of process. Run with `make demo`."""

import numpy as np
import pandas as pd

import bridge

with bridge.connect() as r:                       # starts a private R worker
    print("R", r.info["r_version"], "worker pid", r.info["pid"])

    # evaluate code, call functions by name or attribute
    r.eval("x <- c(2.5, NA, 4)")
    print("sum(1, 2) =", r.sum(1, 2))
    print("mean(x, na.rm = TRUE) =", r.mean(r["x"], na_rm=True))
    print("mean([1, 2, 3]) =", r.mean([1, 2, 3]))      # a list of numbers is a numeric vector

    # globals; numpy arrays in, numpy arrays out (NA is masked)
    r["y"] = np.array([1.0, 2.0, 3.0, 4.0])
    print("y * 2 =", r.eval("y * 2"))
    print("x =", r["x"])

    # a model fitted on a pandas DataFrame; the fit stays in R, behind a handle
    cars = r["mtcars"]                            # an R data.frame as a DataFrame
    fit = r.lm("mpg ~ wt", data=cars)
    print(fit)                                    # R's own print output
    print("coefficients:", r.coef(fit).round(3).to_dict())
    cars["predicted"] = r.predict(fit)            # aligned with the frame's rows
    print(cars[["mpg", "predicted"]].head(3).round(2))
    smaller = r.update(fit, ". ~ 1")              # R evaluates the fit's call again, on the same data
    print("intercept-only mean:", round(float(r.coef(smaller).iloc[0]), 3))

    # R code from Python: expressions, symbols and formulas are spliced into calls
    df = pd.DataFrame({"g": ["a", "b", "a"], "v": [1.0, 2.0, 3.0]})
    print(r.subset(df, bridge.expr("v > 1")))

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
