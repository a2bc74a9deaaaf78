"""R packages from pandas: dplyr, ggplot2, survival, lme4, forecast, xts and TTR.

Run with `.venv/bin/python examples/packages.py` (needs Debian's r-cran-dplyr,
r-cran-ggplot2, r-cran-survival, r-cran-lme4, r-cran-forecast, r-cran-xts and
r-cran-ttr; `make test` installs them).
"""

import tempfile
from pathlib import Path

import pandas as pd

import bridge
from bridge import expr, sym

with bridge.connect() as r:
    cars = r["mtcars"]

    # dplyr: verbs take R expressions; a grouped result knows its groups
    dplyr = r.importr("dplyr")
    by_cyl = dplyr.group_by(cars, sym("cyl"))
    summary = dplyr.summarise(by_cyl, mpg=expr("mean(mpg)"), n=expr("n()"))
    print(summary.round(2))
    print("class in R:", summary.attrs["r_class"])

    # ggplot2: aesthetics are symbols or expressions, layers are added with +
    gg = r.importr("ggplot2")
    plot = gg.ggplot(cars, gg.aes(x=sym("wt"), y=sym("mpg"), colour=expr("factor(cyl)"))) + gg.geom_point()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cars.png"
        gg.ggsave(str(out), plot, width=5, height=4, dpi=72)
        print("plot written:", out.stat().st_size > 0)

    # survival: formulas as strings, results as DataFrames
    survival = r.importr("survival")
    lung = r.eval("survival::lung")
    cox = survival.coxph("Surv(time, status) ~ age + sex", data=lung)
    print(r.summary(cox)["coefficients"].round(4))
    km = survival.survfit("Surv(time, status) ~ sex", data=lung)
    print("median survival by sex:", r.summary(km)["table"]["median"].to_dict())

    # lme4: mixed models; anova compares two fits of the same data
    lme4 = r.importr("lme4")
    sleep = r.eval("lme4::sleepstudy")
    full = lme4.lmer("Reaction ~ Days + (Days | Subject)", data=sleep, REML=False)
    null = lme4.lmer("Reaction ~ 1 + (Days | Subject)", data=sleep, REML=False)
    print("fixed effects:", lme4.fixef(full).round(3).to_dict())
    print("likelihood ratio test p:", f"{r.anova(null, full)['Pr(>Chisq)'].iloc[1]:.2e}")

    # forecast: a monthly pandas Series is sent as a monthly ts
    forecast = r.importr("forecast")
    air = r["AirPassengers"]
    assert isinstance(air.index, pd.PeriodIndex)
    fc = forecast.forecast(forecast.auto_arima(air), h=6)
    print(r.call("as.data.frame", fc).round(1))

    # xts and TTR: an xts series is a DataFrame indexed by its times, and
    # goes back to R as the same xts
    xts = r.importr("xts")
    ttr = r.importr("TTR")
    prices = xts.xts(air.to_numpy(), order_by=pd.Series(air.index.to_timestamp().tz_localize("UTC")))
    print("an xts in pandas:", type(prices).__name__, prices.index.dtype, prices.attrs["r_class"])
    sma = ttr.SMA(prices, n=12)
    print("12-month moving average, last:", round(float(sma.iloc[-1, 0]), 2),
          "pandas:", round(float(air.rolling(12).mean().iloc[-1]), 2))
    print("yearly means:", r.call("apply.yearly", prices, r.mean).iloc[:3, 0].round(1).tolist())
