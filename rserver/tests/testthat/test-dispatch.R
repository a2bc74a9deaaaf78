make_call <- function(fn, args = list(), kwargs = structure(list(), names = character())) {
  .Call(rserver:::C_make_call, fn, args, kwargs, FALSE)
}

test_that("scalars are written into the call and other values bound to names", {
  built <- make_call("lm", list("y ~ x"), list(data = data.frame(x = 1:3, y = 1:3), w = 2))
  expect_identical(built[[1]], quote(lm("y ~ x", data = data, w = 2)))
  expect_true(is.data.frame(get("data", envir = built[[2]])))
  expect_identical(parent.env(built[[2]]), globalenv())
  built <- make_call("sum", list(1:3, c(a = 1)))
  expect_identical(built[[1]], quote(sum(arg1, arg2)))
  expect_identical(built[[2]]$arg2, c(a = 1))
  # a binding never shadows the function's own name, nor a keyword
  built <- make_call("f", list(1:2), list(f = 1:2, arg1 = 1:3))
  expect_identical(built[[1]], quote(f(.arg1, f = .f, arg1 = arg1)))
})

test_that("language values arrive as values, not code", {
  built <- make_call("identity", list(quote(stop("no"))))
  expect_identical(eval(built[[1]], built[[2]]), quote(stop("no")))
})

test_that("qualified and underscored names are left to R-level resolution", {
  expect_null(make_call("stats::median"))
  expect_null(make_call("is_na"))
  expect_identical(rserver:::function_expr("stats::median"), quote(stats::median))
  expect_identical(rserver:::function_expr("rserver:::plain"), quote(rserver:::plain))
  expect_identical(rserver:::function_expr("is_na"), quote(is.na))
  expect_identical(rserver:::translate_arg_names(c("na_rm", "x"), quote(sum)), c("na.rm", "x"))
  expect_identical(rserver:::call_function("sum", list(1, NA), list(na_rm = TRUE)), 1)
  # generics: the default method's arguments count
  expect_identical(rserver:::call_function("mean", list(c(1, NA, 3)), list(na_rm = TRUE)), 2)
  expect_identical(rserver:::call_function("stats::median", list(c(1, NA, 3)), list(na_rm = TRUE)), 2)
  # a name the function does not know at all passes through unchanged
  expect_identical(rserver:::translate_arg_names("my_arg", quote(lapply)), "my_arg")
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
