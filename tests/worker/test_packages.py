"""Day-one workflows with real R packages (Debian's dplyr, ggplot2, data.table,
survival, lme4, forecast, tibble), as a pandas user runs them. Every result is
compared with what R itself computes for the same data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bridge
from bridge import expr, formula, sym


@pytest.fixture(scope="module")
def r():
    with bridge.connect() as session:
        yield session


def r_value(r, code):
    """What R computes, for comparison."""
    return r.eval(code)


@pytest.fixture(scope="module")
def cars(r):
    return r["mtcars"]     # a pandas DataFrame indexed by car names


# ---- stats: fits, predictions, re-evaluation ------------------------------------------

def test_predict_fitted_and_residuals_assign_into_the_frame_they_came_from(r):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=50), "g": rng.choice(["a", "b"], 50)})
    df["y"] = 2 * df["x"] + rng.normal(size=50)
    fit = r.lm("y ~ x + g", data=df)
    df["pred"] = r.predict(fit, newdata=df)
    df["fitted"] = r.fitted(fit)
    df["resid"] = r.residuals(fit)
    assert not df[["pred", "fitted", "resid"]].isna().any().any()
    np.testing.assert_allclose(df["pred"], df["fitted"])
    np.testing.assert_allclose(df["fitted"] + df["resid"], df["y"])
    # the same numbers as R's own fit
    r["df_copy"] = df[["x", "g", "y"]]
    np.testing.assert_allclose(df["pred"], r_value(r, "unname(fitted(lm(y ~ x + g, data = df_copy)))"))


def test_predictions_align_by_label_on_a_subset_and_with_dropped_rows(r):
    df = pd.DataFrame({"x": np.arange(10.0), "y": np.arange(10.0) * 3 + 1})
    df.loc[3, "y"] = np.nan                       # lm drops the row (na.omit)
    fit = r.lm("y ~ x", data=df)
    df["fitted"] = r.fitted(fit)                  # aligned by the pandas labels: row 3 is NaN
    assert df["fitted"].isna().tolist() == [i == 3 for i in range(10)]
    np.testing.assert_allclose(df["fitted"].drop(3), df["y"].drop(3))
    part = df.iloc[[2, 5, 7]]
    pred = r.predict(fit, newdata=part)
    assert pred.index.tolist() == [2, 5, 7]
    part = part.assign(pred=pred)
    np.testing.assert_allclose(part["pred"], [7.0, 16.0, 22.0])


def test_update_step_drop1_and_anova_reuse_the_original_data(r, cars):
    stats = r.importr("stats")
    fit = stats.lm("mpg ~ wt + hp + qsec", data=cars)
    r["data"] = pd.DataFrame({"mpg": [1.0, 2, 3, 4], "wt": [1.0, 5, 2, 3], "hp": [1.0, 1, 2, 3],
                              "qsec": [3.0, 2, 1, 0]})      # an unrelated global named `data`
    smaller = r.update(fit, ". ~ . - qsec")
    want = r_value(r, "coef(lm(mpg ~ wt + hp, data = mtcars))")
    np.testing.assert_allclose(r.coef(smaller), want)
    stepped = r.with_options().step(fit, trace=0)
    np.testing.assert_allclose(r.coef(stepped), r_value(r, "coef(step(lm(mpg ~ wt + hp + qsec, mtcars), trace = 0))"))
    dropped = r.drop1(fit)
    np.testing.assert_allclose(dropped["AIC"], r_value(r, "drop1(lm(mpg ~ wt + hp + qsec, mtcars))$AIC"))
    table = r.anova(smaller, fit)
    assert table.attrs["r_class"] == ["anova", "data.frame"]
    np.testing.assert_allclose(table["RSS"], r_value(r, "anova(lm(mpg ~ wt + hp, mtcars), "
                                                        "lm(mpg ~ wt + hp + qsec, mtcars))$RSS"))
    # R code sees the call as written, with a name that R can evaluate again
    assert "data = data." in str(fit) and "lm(formula = mpg ~ wt + hp + qsec" in str(fit)
    assert r.eval("function(f) nrow(eval(f$call$data))")(fit) == 32


def test_glm_with_family_and_confint_as_a_frame(r, cars):
    fit = r.glm("am ~ wt", data=cars, family=r.binomial())
    coef = r.summary(fit)["coefficients"]
    assert coef.index.tolist() == ["(Intercept)", "wt"]
    assert coef.columns.tolist() == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    np.testing.assert_allclose(coef.to_numpy(),
                               r_value(r, "summary(glm(am ~ wt, binomial, mtcars))$coefficients").to_numpy())
    ci = r.confint_default(fit)
    assert ci.columns.tolist() == ["2.5 %", "97.5 %"] and ci.shape == (2, 2)
    vc = r.vcov(fit)
    assert vc.index.tolist() == vc.columns.tolist() == ["(Intercept)", "wt"]
    cor = r.cor(cars[["mpg", "wt"]])
    assert cor.loc["mpg", "wt"] == pytest.approx(cars["mpg"].corr(cars["wt"]))


# ---- dplyr --------------------------------------------------------------------------

def test_dplyr_verbs_with_r_expressions(r, cars):
    dplyr = r.importr("dplyr")
    df = pd.DataFrame({"x": [1.0, 5.0, 3.0, 9.0], "g": ["a", "b", "a", "b"]})
    filtered = dplyr.filter(df, expr("x > 2"))
    assert filtered["x"].tolist() == [5.0, 3.0, 9.0]
    assert filtered.index.tolist() == [0, 1, 2]            # dplyr drops row names, as in R
    mutated = dplyr.mutate(df, y=expr("x * 2"), z=expr("cumsum(x)"))
    assert mutated["y"].tolist() == [2.0, 10.0, 6.0, 18.0] and mutated["z"].tolist() == [1.0, 6.0, 9.0, 18.0]
    assert dplyr.arrange(df, expr("desc(x)"))["x"].tolist() == [9.0, 5.0, 3.0, 1.0]
    summary = dplyr.summarise(dplyr.group_by(df, sym("g")), total=expr("sum(x)"), n=expr("n()"))
    assert summary.to_dict("list") == {"g": ["a", "b"], "total": [4.0, 14.0], "n": [2, 2]}
    assert summary.attrs["r_class"] == ["tbl_df", "tbl", "data.frame"]
    counted = dplyr.count(cars, sym("cyl"))
    assert counted["n"].tolist() == [11, 7, 14]
    joined = dplyr.left_join(df, pd.DataFrame({"g": ["a"], "label": ["first"]}), by="g")
    assert joined["label"].isna().tolist() == [False, True, False, True] and joined["label"][0] == "first"
    across = dplyr.mutate(df, expr("across(c(x), ~ .x / 2)"))     # across() is written inside the verb
    assert across["x"].tolist() == [0.5, 2.5, 1.5, 4.5]


def test_summarise_over_two_groups_is_a_grouped_tibble_that_converts(r, cars):
    dplyr = r.importr("dplyr")
    grouped = dplyr.group_by(cars, sym("cyl"), sym("gear"))      # a pandas DataFrame that knows its groups
    assert grouped.attrs["r_attributes"]["groups"] == ["cyl", "gear"]
    out = dplyr.summarise(grouped, mpg=expr("mean(mpg)"))          # so the grouping goes back with it
    want = r_value(r, "as.data.frame(dplyr::summarise(dplyr::group_by(mtcars, cyl, gear), mpg = mean(mpg)))")
    pd.testing.assert_frame_equal(out.reset_index(drop=True), want, check_like=False, check_dtype=True,
                                  check_index_type=False, check_frame_type=False, check_flags=False,
                                  check_exact=False, obj="grouped summary")
    assert out.attrs["r_class"][0] == "grouped_df" and out.attrs["r_attributes"]["groups"] == ["cyl"]
    rowwise = r.eval("dplyr::rowwise(data.frame(a = 1:2, b = 3:4))")
    assert rowwise.attrs["r_class"][0] == "rowwise_df" and rowwise["b"].tolist() == [3, 4]
    assert isinstance(rowwise.to_numpy(), np.ndarray)
    assert r.eval("function(d) class(d)")(rowwise).tolist() == ["rowwise_df", "tbl_df", "tbl", "data.frame"]
    with pytest.warns(bridge.RWarning, match="grouping columns gear are gone"):
        assert r.eval("function(d) class(d)")(grouped.drop(columns="gear"))[0] == "tbl_df"
    handle = r.with_options(convert=False).eval("dplyr::group_by(mtcars, cyl)")
    table = handle.to_arrow()
    assert table.num_rows == 32 and b"grouped_df" in table.schema.metadata[b"rbridge.r_class"]


# ---- ggplot2 ------------------------------------------------------------------------

def test_ggplot_aes_and_plus_on_plot_handles(r, cars, tmp_path):
    gg = r.importr("ggplot2")
    plot = gg.ggplot(cars, gg.aes(x=sym("wt"), y=sym("mpg"), colour=expr("factor(cyl)")))
    plot = plot + gg.geom_point() + gg.labs(title="Fuel economy")
    assert plot.rclass == ["gg", "ggplot"]
    built = gg.ggplot_build(plot)["data"][0]
    assert built["x"].tolist() == cars["wt"].tolist()       # x is mapped to wt, not to something else
    assert built["y"].tolist() == cars["mpg"].tolist()
    assert built["colour"].nunique() == 3
    assert plot["labels"]["title"] == "Fuel economy"
    out = tmp_path / "plot.png"
    gg.ggsave(str(out), plot, width=4, height=3, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    faceted = plot + gg.facet_wrap(formula("~ gear"))
    assert len(gg.ggplot_build(faceted)["layout"]["layout"]) == 3
    assert not Path("Rplots.pdf").exists()


def test_base_graphics_label_axes_with_names_not_arg1(r, tmp_path):
    png = str(tmp_path / "base.png")
    r.png(png)
    try:
        heights, weights = np.arange(5.0), np.arange(5.0) ** 2
        r.plot(heights, weights)
        labels = r.eval("c(par('usr')[1] <= 0, TRUE)")          # the plot exists
        assert labels.all()
        hist_title = r.eval("function(v) { h <- hist(v, plot = FALSE); h$xname }")(heights)
        assert not hist_title.startswith("arg")
        call = r.eval("function(...) deparse(sys.call())")
        assert "arg1" not in call(heights)
        assert r.eval("function(x, y) c(deparse(substitute(x)), deparse(substitute(y)))")(
            heights, weights).tolist() == ["x", "y"]                      # what plot() labels its axes with
    finally:
        r.dev_off()


# ---- data.table ---------------------------------------------------------------------

def test_data_table_results_and_grouping(r, cars):
    dt = r.importr("data.table")
    table = dt.as_data_table(cars)
    assert table.attrs["r_class"] == ["data.table", "data.frame"] and table.shape == (32, 11)
    grouped = r.eval("function(d) data.table::as.data.table(d)[, .(m = mean(mpg)), by = cyl][order(cyl)]")(cars)
    np.testing.assert_allclose(grouped["m"], cars.groupby("cyl")["mpg"].mean().to_numpy())
    read = dt.fread(text="a,b,c\n1,x,2.5\n2,y,NA")
    assert read.to_dict("list") == {"a": [1, 2], "b": ["x", "y"], "c": [2.5, None]} or \
        (read["a"].tolist() == [1, 2] and np.isnan(read["c"][1]))


# ---- survival -----------------------------------------------------------------------

def test_survival_coxph_survfit_with_string_formulas(r):
    survival = r.importr("survival")
    lung = r.eval("survival::lung")
    fit = survival.coxph("Surv(time, status) ~ age + sex", data=lung)
    coef = r.summary(fit)["coefficients"]
    np.testing.assert_allclose(coef.to_numpy(),
                               r_value(r, "summary(survival::coxph(Surv(time, status) ~ age + sex, "
                                          "survival::lung))$coefficients").to_numpy())
    km = survival.survfit("Surv(time, status) ~ sex", data=lung)
    table = r.summary(km)["table"]
    assert table.index.tolist() == ["sex=1", "sex=2"] and table["median"].tolist() == [270.0, 426.0]
    zph = survival.cox_zph(fit)["table"]
    assert zph.index.tolist() == ["age", "sex", "GLOBAL"]
    assert r.update(fit, ". ~ . - age").rclass == ["coxph"]
    risk = r.predict(fit, type="risk")
    assert len(risk) == 228 and (np.asarray(risk) > 0).all()
    surv = r.eval("with(survival::lung, Surv(time, status))")      # a Surv matrix
    assert surv.shape == (228, 2) and surv.columns.tolist() == ["time", "status"]


# ---- lme4 ---------------------------------------------------------------------------

def test_lme4_mixed_models(r):
    lme4 = r.importr("lme4")
    sleep = r.eval("lme4::sleepstudy")
    full = lme4.lmer("Reaction ~ Days + (Days | Subject)", data=sleep, REML=False)
    null = lme4.lmer("Reaction ~ 1 + (Days | Subject)", data=sleep, REML=False)
    fixef = lme4.fixef(full)
    np.testing.assert_allclose(fixef, r_value(r, "lme4::fixef(lme4::lmer(Reaction ~ Days + (Days | Subject), "
                                                  "lme4::sleepstudy, REML = FALSE))"))
    assert fixef.index.tolist() == ["(Intercept)", "Days"]
    ranef = lme4.ranef(full)["Subject"]
    assert ranef.shape == (18, 2) and ranef.index[0] == 308
    comparison = r.anova(null, full)                    # same data object: lme4 allows the comparison
    assert comparison["Chisq"].iloc[1] == pytest.approx(23.5365, abs=1e-3)
    pred = r.predict(full)
    assert len(pred) == 180 and pred.index.tolist() == list(range(180))
    assert full["beta"].tolist() == pytest.approx(fixef.tolist())     # an S4 slot


# ---- forecast -----------------------------------------------------------------------

def test_forecast_with_monthly_series_from_pandas(r):
    forecast = r.importr("forecast")
    air = r["AirPassengers"]
    assert isinstance(air.index, pd.PeriodIndex) and air.index[0] == pd.Period("1949-01", "M")
    fit = forecast.auto_arima(air)             # sent back as a monthly ts: a seasonal model
    order = forecast.arimaorder(fit)
    assert order["Frequency"] == 12
    want = r_value(r, "forecast::arimaorder(forecast::auto.arima(AirPassengers))")
    assert order.tolist() == want.tolist()
    fc = forecast.forecast(fit, h=12)
    mean = fc["mean"]
    assert isinstance(mean.index, pd.PeriodIndex) and mean.index[0] == pd.Period("1961-01", "M")
    table = r.as_data_frame_forecast(fc) if hasattr(forecast, "as_data_frame_forecast") else \
        r.call("as.data.frame", fc)
    assert isinstance(table.index, pd.PeriodIndex) and table.index[-1] == pd.Period("1961-12", "M")
    np.testing.assert_allclose(table["Point Forecast"], mean)
    # a plain DatetimeIndex of month starts is monthly too
    dated = pd.Series(air.to_numpy(), index=pd.date_range("1949-01-01", periods=len(air), freq="MS"))
    assert forecast.arimaorder(forecast.auto_arima(dated))["Frequency"] == 12
    # daily data: the frequency is the user's to give
    weekly = bridge.ts(np.sin(np.arange(70) * 2 * np.pi / 7) + np.arange(70) / 10, frequency=7)
    assert r.frequency(weekly) == 7
    with pytest.raises(ValueError, match="pass frequency"):
        bridge.ts(np.arange(10.0))
