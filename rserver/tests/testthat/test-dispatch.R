make_call <- function(fn, args = list(), kwargs = structure(list(), names = character())) {
  .Call(rserver:::C_make_call, fn, args, kwargs)
}

test_that("calls of scalars only are built in C and run in the global environment", {
  expect_identical(make_call("paste", list(1.5, "x"), list(sep = "-", n = NULL)),
                   quote(paste(1.5, "x", sep = "-", n = NULL)))
  expect_identical(make_call("sum", list(1:3)), list(quote(sum), sum))   # not a scalar: resolved for R/calls.R
  expect_identical(make_call("lm", list("y ~ x")), list(quote(lm), lm))  # a `~`: maybe a formula
  expect_identical(make_call("identity", list(quote(a)))[[1L]], quote(identity))   # code: spliced by R/calls.R
  expect_identical(make_call("noSuchFunctionAnywhere", list(1:2)), list(quote(noSuchFunctionAnywhere), NULL))
  local({
    sum <- 5    # not a function: skipped, as R's own lookup of a call's function does
    assign("sum", 5, envir = globalenv())
    on.exit(rm("sum", envir = globalenv()))
    expect_identical(make_call("sum", list(1:3))[[2L]], base::sum)
  })
  expect_null(make_call("stats::median"))
  expect_null(make_call("is_na"))
  expect_null(make_call("f", list(), list(na_rm = TRUE)))
})

build <- function(fn, args = list(), kwargs = structure(list(), names = character())) {
  target <- rserver:::function_expr(fn)
  rserver:::build_call(target, rserver:::resolve_function(target), args, kwargs)
}

test_that("other values are bound under unique names that R finds from anywhere", {
  built <- build("lm", list("y ~ x"), list(data = data.frame(x = 1:3, y = c(2, 4, 7)), model = TRUE))
  call <- built[[1L]]
  expect_identical(call[[2L]], quote(y ~ x))                # the string became the formula
  expect_match(as.character(call$data), "^data\\.[0-9]+$")
  expect_identical(call$model, TRUE)
  expect_identical(parent.env(built[[2L]]), globalenv())
  expect_true(is.data.frame(get(as.character(call$data), envir = built[[2L]])))
  # the name reaches the value from the global environment too (update() evaluates there)
  expect_true(is.data.frame(eval(call$data, globalenv())))
  fit <- eval(call, built[[2L]])
  expect_identical(environment(formula(fit)), built[[2L]])
  assign("data", data.frame(x = 1:3, y = c(0, 0, 0)), envir = globalenv())
  on.exit(rm("data", envir = globalenv()))
  expect_equal(coef(eval(fit$call, globalenv())), coef(fit))   # never the unrelated global `data`
})

test_that("positional values are named after the formals they fill", {
  labels <- function(fn, npos, knames = character()) {
    rserver:::arg_labels(rserver:::resolve_function(as.name(fn)), npos, knames)
  }
  expect_identical(labels("plot", 2L), c("x", "y"))
  expect_identical(labels("lm", 1L, "data"), c("formula", "data"))
  expect_identical(labels("sum", 2L), c("x", "x"))           # `...`
  expect_identical(labels("sapply", 2L, "X"), c("FUN", "x", "X"))   # the second goes to `...`
  expect_identical(build("plot", list(1:3, 4:6))[[1L]], quote(plot(x, y)))        # not recorded: plain names
  expect_identical(build("c", list(1:3, 4:6, 7:9))[[1L]], quote(c(x, x.2, x.3)))
})

test_that("code is spliced; a formula object and other language stay values", {
  built <- build("identity", list(quote(a + b)))
  expect_identical(built[[1L]], quote(identity(a + b)))
  f <- y ~ x
  built <- build("identity", list(f))
  expect_true(is.name(built[[1L]][[2L]]))                   # bound: it keeps its environment
  expect_identical(eval(built[[1L]], built[[2L]]), f)
})

test_that("strings with ~ become formulas only where a formula goes", {
  expect_identical(build("paste", list("a ~ b"))[[1L]], quote(paste("a ~ b")))
  expect_identical(build("t.test", list("extra ~ group"))[[1L]], quote(t.test(extra ~ group)))
  expect_identical(build("update", list(1L), list(formula. = ". ~ . + z"))[[1L]],
                   quote(update(1L, formula. = . ~ . + z)))
  expect_identical(build("lm", list("not ~ a ~ formula ("))[[1L]], quote(lm("not ~ a ~ formula (")))
})

test_that("bound values are released with the call's environment", {
  gc()
  before <- rserver:::live_args()
  local({
    built <- build("lm", list("y ~ 1"), list(data = data.frame(y = c(1, 2))))
    expect_equal(unname(coef(eval(built[[1L]], built[[2L]]))), 1.5)
    expect_identical(rserver:::live_args(), before + 1L)
    name <- as.character(built[[1L]]$data)
    expect_error(assign(name, 1, envir = as.environment("rbridge:args")), "cannot be assigned")
  })
  gc()
  expect_identical(rserver:::live_args(), before)
})

test_that("qualified and underscored names are resolved in R", {
  expect_identical(rserver:::function_expr("stats::median"), quote(stats::median))
  expect_identical(rserver:::function_expr("rserver:::plain"), quote(rserver:::plain))
  expect_identical(rserver:::function_expr("is_na"), quote(is.na))
  expect_identical(rserver:::translate_arg_names(c("na_rm", "x"), sum, quote(sum)), c("na.rm", "x"))
  expect_identical(rserver:::call_function("sum", list(1, NA), list(na_rm = TRUE)), 1)
  # generics: the default method's arguments count
  expect_identical(rserver:::call_function("mean", list(c(1, NA, 3)), list(na_rm = TRUE)), 2)
  expect_identical(rserver:::call_function("stats::median", list(c(1, NA, 3)), list(na_rm = TRUE)), 2)
  # a name the function does not know at all passes through unchanged
  expect_identical(rserver:::translate_arg_names("my_arg", lapply, quote(lapply)), "my_arg")
  expect_identical(rserver:::call_function("stats::median", list(c(1, 5, 9)), NULL), 5)
})

test_that("eval_code evaluates every expression and returns the last value", {
  e <- new.env()
  expect_identical(rserver:::eval_code("a <- 2; b <- a * 3\nb + 1", e), 7)
  expect_identical(e$b, 6)
  expect_error(rserver:::eval_code(c("1", "2"), e), "single string")
  expect_error(rserver:::eval_code("1 +", e), "unexpected")
})

test_that("tracebacks keep only user frames", {
  f <- function() stop("boom")
  g <- function() f()
  trace <- NULL
  try(withCallingHandlers(rserver:::rbridge_eval(quote(g()), environment()),
                          error = function(e) trace <<- sys.calls()), silent = TRUE)
  expect_identical(rserver:::user_frames(trace), c("g()", "f()", "stop(\"boom\")"))
  expect_null(rserver:::user_frames(sys.calls()))
})

test_that("plain() converts deeply for RObject.to_py", {
  expect_identical(rserver:::plain(data.frame(a = 1:2, b = c("x", "y"))), list(a = 1:2, b = c("x", "y")))
  expect_identical(rserver:::plain(factor(c("u", "v"))), c("u", "v"))
  expect_identical(rserver:::plain(c(a = 1, b = 2)), list(a = 1, b = 2))
  expect_identical(rserver:::plain(matrix(1:4, 2)), list(c(1L, 3L), c(2L, 4L)))
  expect_error(rserver:::plain(mean), "cannot convert")
})

test_that("a value bound again, the same or identical, gets the same name", {
  gc()
  before <- rserver:::live_args()
  d <- data.frame(x = 1:3, y = c(2, 5, 4))
  a <- build("lm", list("y ~ x"), list(data = d))
  b <- build("lm", list("y ~ 1"), list(data = d))
  c <- build("lm", list("y ~ 1"), list(data = data.frame(x = 1:3, y = c(2, 5, 4))))
  other <- build("lm", list("y ~ 1"), list(data = data.frame(x = 1:3, y = c(2, 5, 5))))
  expect_identical(a[[1L]]$data, b[[1L]]$data)
  expect_identical(a[[1L]]$data, c[[1L]]$data)
  expect_false(identical(a[[1L]]$data, other[[1L]]$data))
  expect_identical(rserver:::live_args(), before + 2L)
  rm(a, c)
  gc()
  expect_true(is.data.frame(eval(b[[1L]]$data, globalenv())))   # still published by b's environment
  rm(b, other)
  gc()
  expect_identical(rserver:::live_args(), before)
})

test_that("only calls that R may record get worker-unique names", {
  records <- function(fn, first = NULL) {
    target <- rserver:::function_expr(fn)
    rserver:::records_call(target, rserver:::resolve_function(target), first)
  }
  expect_false(records("sum"))                                  # a primitive
  expect_false(records("coef", lm(mpg ~ wt, mtcars)))            # a generic whose method records nothing
  expect_false(records("plot", 1:3))
  expect_true(records("lm"))                                    # match.call()
  expect_true(records("update", lm(mpg ~ wt, mtcars)))
  expect_true(records("survival::coxph"))
  expect_true(records(function(a) match.call()))                # a function object
  # code in the call: values never shadow the globals it may use
  built <- build("sapply", list(1:3, quote(function(v) v + x)))
  expect_match(deparse(built[[1L]]), "^sapply\\(X\\.[0-9]+, function")
  expect_identical(rserver:::body_calls(function(m) m[, 1] + sum(x)), c("+", "[", "sum"))
})
