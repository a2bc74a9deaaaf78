# Calls from Python (the `call` op). See protocol/SPEC.md ("call") and the
# README ("What R sees").
#
# A call R can evaluate again. Scalars are written into the call. Every other
# argument value is bound, under a name unique in the worker (`data.1`, `x.2`:
# the argument's name, or the formal it fills, and a counter), in a fresh
# environment whose parent is the global environment, and the call is
# evaluated there. So R sees `lm(formula = mpg ~ wt, data = data.1)`, and a
# formula made by the call keeps that environment. The search-path
# environment "rbridge:args" holds an active binding of each such name that
# reaches the value through a weak reference to its environment. So update(),
# step() and drop1(), which evaluate a fit's call again from elsewhere, find
# the original values (never an unrelated global), while the values live
# exactly as long as something made in the call (a formula, a fit) does.
#
# R code objects (bridge.expr/sym/formula, or a handle holding an unclassed
# language object) are spliced into the call, so non-standard evaluation
# (dplyr, ggplot2::aes, model formulas) sees them as written. A string with a
# `~` that fills a `formula` argument, or the dispatch argument of a generic
# that has a formula method, is spliced as the formula it spells.

ARG_STORE <- "rbridge:args"

calls_state <- new.env(parent = emptyenv())
calls_state$counter <- 0
calls_state$refs <- list()   # published name -> weak references to the environments binding it

call_function <- function(fn, args, kwargs) {
  call <- .Call(C_make_call, fn, args, kwargs)   # NULL: needs the work below
  if (!is.null(call)) return(rbridge_eval(call, globalenv()))
  target <- function_expr(fn)
  f <- resolve_function(target)
  if (length(kwargs)) names(kwargs) <- translate_arg_names(names(kwargs), f, target)
  built <- build_call(target, f, args, kwargs)
  rbridge_eval(built[[1L]], built[[2L]])
}

# list(call, environment to evaluate it in).
build_call <- function(target, f, args, kwargs) {
  npos <- length(args)
  values <- c(args, kwargs)
  tags <- c(character(npos), names(kwargs))
  labels <- arg_labels(f, npos, names(kwargs))
  formula_at <- formula_slots(target, f, labels, npos)
  elts <- vector("list", length(values))
  env <- NULL
  for (i in seq_along(values)) {
    v <- values[[i]]
    if (is_spliced(v)) {
      elts[i] <- list(v)
    } else if (is_scalar(v)) {
      elts[i] <- list(if (i %in% formula_at) as_formula_code(v) else v)
    } else {
      if (is.null(env)) env <- call_env()
      elts[i] <- list(bind_arg(env, labels[[i]], v))
    }
  }
  names(elts) <- tags
  list(as.call(c(list(target), elts)), if (is.null(env)) globalenv() else env)
}

# Values written into the call as they are (like C_make_call's fast path).
is_scalar <- function(v) {
  is.null(v) || (is.atomic(v) && length(v) == 1L && is.null(attributes(v)))
}

# Unclassed language (a call or a symbol) is code, spliced into the call; a
# formula object is a value (it keeps its own environment).
is_spliced <- function(v) {
  (is.call(v) || is.name(v)) && is.null(attr(v, "class", exact = TRUE))
}

# The name each argument value is bound under: a keyword's own name; for a
# positional value, the formal it fills, or "x" for one that goes to `...`.
arg_labels <- function(f, npos, knames) {
  labels <- rep("x", npos)
  formal <- formal_names(f)
  if (npos && length(formal)) {
    free <- formal[!formal %in% knames]
    dots <- match("...", free)
    if (!is.na(dots)) free <- free[seq_len(dots - 1L)]
    k <- min(npos, length(free))
    labels[seq_len(k)] <- free[seq_len(k)]
  }
  labels <- c(labels, knames)
  labels[!nzchar(labels) | is.na(labels)] <- "x"
  labels
}

formal_names <- function(f) {
  if (!is.function(f)) return(character())
  names(formals(if (is.primitive(f)) args(f) else f))
}

# Indices of the arguments where a string with `~` is a formula: those that
# fill an argument called `formula` (or `formula.`), and the first one of an
# S3 generic with a formula method (t.test, boxplot, aggregate, ...).
formula_slots <- function(target, f, labels, npos) {
  at <- which(labels %in% c("formula", "formula."))
  if (npos >= 1L && has_formula_method(target, f)) at <- c(at, 1L)
  at
}

has_formula_method <- function(target, f) {
  if (!is.function(f) || is.primitive(f)) return(FALSE)
  name <- call_name(target)
  if (is.null(name) || !is_s3_generic(f)) return(FALSE)
  envir <- if (is.call(target)) asNamespace(as.character(target[[2L]])) else globalenv()
  !is.null(utils::getS3method(name, "formula", optional = TRUE, envir = envir))
}

is_s3_generic <- function(f) {
  body <- body(f)
  uses <- function(e) is.call(e) && (identical(e[[1L]], as.name("UseMethod")) || any(vapply(as.list(e)[-1L], uses, NA)))
  uses(body)
}

# "f" for f and pkg::f; NULL for a function object.
call_name <- function(target) {
  if (is.name(target)) return(as.character(target))
  if (is.call(target) && length(target) == 3L) return(as.character(target[[3L]]))
  NULL
}

as_formula_code <- function(v) {
  if (!is.character(v) || is.na(v) || !grepl("~", v, fixed = TRUE)) return(v)
  code <- tryCatch(str2lang(v), error = function(e) NULL)
  if (is.call(code) && identical(code[[1L]], as.name("~"))) code else v
}

call_env <- function() {
  env <- new.env(parent = globalenv())
  reg.finalizer(env, forget_args)
  env
}

# Binds v in env and publishes its name on the search path: a fresh name, or
# the name a value identical to it already has (so two fits of one data set
# name the same data, as lme4's anova() requires).
bind_arg <- function(env, label, v) {
  store <- arg_store()
  name <- bound_name(label, v)
  if (is.null(name)) {
    repeat {
      calls_state$counter <- calls_state$counter + 1
      name <- paste0(label, ".", format(calls_state$counter, scientific = FALSE))
      if (!exists(name, envir = globalenv(), inherits = FALSE) && !exists(name, envir = store, inherits = FALSE))
        break
    }
    makeActiveBinding(name, arg_getter(name), store)
  }
  assign(name, v, envir = env)
  calls_state$refs[[name]] <- c(calls_state$refs[[name]], list(.Call(C_weak_ref, env)))
  as.name(name)
}

# The name under which a value identical to v is bound, or NULL. Only names
# made from the same label, for values of the same type and length, are
# compared; identical() answers at once for the very same object.
bound_name <- function(label, v) {
  prefix <- paste0(label, ".")
  for (name in names(calls_state$refs)) {
    if (!startsWith(name, prefix)) next
    env <- live_env(name)
    if (is.null(env)) next
    other <- get(name, envir = env, inherits = FALSE)
    if (typeof(other) == typeof(v) && length(other) == length(v) && identical(other, v)) return(name)
  }
  NULL
}

# The first live environment a published name's value is bound in, or NULL.
live_env <- function(name) {
  for (ref in calls_state$refs[[name]]) {
    env <- .Call(C_weak_ref_key, ref)
    if (!is.null(env)) return(env)
  }
  NULL
}

arg_getter <- function(name) {
  force(name)
  function(value) {
    if (!missing(value))
      stop("'", name, "' holds a value passed from Python; it cannot be assigned", call. = FALSE)
    env <- live_env(name)
    if (is.null(env))
      stop("the value passed from Python as '", name, "' is gone: nothing made by that call is alive",
           call. = FALSE)
    get(name, envir = env, inherits = FALSE)
  }
}

# The finalizer of a call's environment: its names leave the search path
# unless another live call environment binds them too.
forget_args <- function(env) {
  for (name in ls(env, all.names = TRUE)) {
    refs <- Filter(function(ref) {   # this environment's own reference may not be cleared yet
      key <- .Call(C_weak_ref_key, ref)
      !is.null(key) && !identical(key, env)
    }, calls_state$refs[[name]])
    if (length(refs)) {
      calls_state$refs[[name]] <- refs
      next
    }
    calls_state$refs[[name]] <- NULL
    if (ARG_STORE %in% search()) {
      store <- as.environment(ARG_STORE)
      if (exists(name, envir = store, inherits = FALSE)) rm(list = name, envir = store)
    }
  }
  invisible()
}

arg_store <- function() {
  if (ARG_STORE %in% search()) return(as.environment(ARG_STORE))
  attach_env <- get("attach", envir = baseenv())   # by name: R CMD check frowns on attach()
  attach_env(NULL, pos = 2L, name = ARG_STORE, warn.conflicts = FALSE)
}

# The number of values passed from Python that are still alive (for tests).
live_args <- function() {
  if (!ARG_STORE %in% search()) return(0L)
  length(ls(as.environment(ARG_STORE), all.names = TRUE))
}

# The function position of the call: a symbol, pkg::name, or a function object.
function_expr <- function(fn) {
  if (!is.character(fn)) return(fn)
  parts <- regmatches(fn, regexec("^([^:]+)(:::?)([^:]+)$", fn))[[1L]]
  if (length(parts)) return(call(parts[[3L]], as.name(parts[[2L]]), as.name(parts[[4L]])))
  if (grepl("_", fn, fixed = TRUE) && !exists(fn, envir = globalenv(), mode = "function")) {
    dotted <- chartr("_", ".", fn)
    if (exists(dotted, envir = globalenv(), mode = "function")) fn <- dotted
  }
  as.name(fn)
}

# The function a call target names, or NULL when it cannot be found (the call
# then fails with R's own error).
resolve_function <- function(target) {
  f <- if (is.function(target)) target else tryCatch(eval(target, globalenv()), error = function(e) NULL)
  if (is.function(f)) f else NULL
}

# na_rm -> na.rm, where the function has the dotted argument but not the other.
# For an S3 generic such as mean(x, ...), the arguments of its default method
# count too, so mean(x, na_rm = TRUE) reaches mean.default's na.rm.
translate_arg_names <- function(nms, f, target) {
  if (!any(grepl("_", nms, fixed = TRUE)) || !is.function(f)) return(nms)
  formal <- formal_names(f)
  default <- default_method(target)
  if (!is.null(default)) formal <- c(formal, names(formals(default)))
  dotted <- chartr("_", ".", nms)
  swap <- !(nms %in% formal) & dotted %in% formal
  nms[swap] <- dotted[swap]
  nms
}

# The default S3 method of a generic named by `target` (a symbol or pkg::name).
default_method <- function(target) {
  name <- call_name(target)
  if (is.null(name)) return(NULL)
  envir <- if (is.call(target)) asNamespace(as.character(target[[2L]])) else globalenv()
  f <- utils::getS3method(name, "default", optional = TRUE, envir = envir)
  if (is.function(f)) f else NULL
}
