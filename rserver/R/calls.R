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
# exactly as long as something made in the call (a formula, a fit) does; the
# names of values that are gone are swept away now and then.
#
# R code objects (bridge.expr/sym/formula, or a handle holding an unclassed
# language object) are spliced into the call, so non-standard evaluation
# (dplyr, ggplot2::aes, model formulas) sees them as written. A string with a
# `~` that fills a `formula` argument, or the dispatch argument of a generic
# that has a formula method, is spliced as the formula it spells.

ARG_STORE <- "rbridge:args"

calls_state <- new.env(parent = emptyenv())
calls_state$counter <- 0
# name -> a weak reference to the call environment that binds it or, for a name
# bound again, an environment of them by serial number, the newest again as `newest`
calls_state$published <- new.env(parent = emptyenv())
calls_state$recent <- list()                             # label -> its newest published names
calls_state$binds <- 0L                                  # bindings since the last sweep
calls_state$swept <- 0L                                  # names the last sweep looked at
calls_state$serial <- 0                                  # numbers the weak references

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

call_env <- function() new.env(parent = globalenv())

# Binds v in env and publishes its name on the search path: a fresh name, or
# the name a value identical to it already has (so two fits of one data set
# name the same data, as lme4's anova() requires). A published name keeps weak
# references to the call environments that bind it; sweep_args() takes away
# the names none of them is alive for.
bind_arg <- function(env, label, v) {
  store <- arg_store()
  name <- if (is.list(v)) bound_name(label, v)   # data frames, fits: what functions compare
  if (is.null(name)) {
    repeat {   # the counter never repeats a name of the store; a global may have it
      calls_state$counter <- calls_state$counter + 1
      name <- sprintf("%s.%.0f", label, calls_state$counter)
      if (!exists(name, envir = globalenv(), inherits = FALSE)) break
    }
    makeActiveBinding(name, arg_getter(name), store)
    if (is.list(v)) calls_state$recent[[label]] <- utils::head(c(name, calls_state$recent[[label]]), RECENT)
  }
  assign(name, v, envir = env)
  ref <- .Call(C_weak_ref, env)
  refs <- calls_state$published[[name]]
  if (is.null(refs)) {
    calls_state$published[[name]] <- ref       # one call environment: the reference itself
  } else {
    if (!is.environment(refs)) {               # a name bound again: an environment of references
      first <- refs
      refs <- calls_state$published[[name]] <- new.env(parent = emptyenv())
      refs[["0"]] <- first
    }
    calls_state$serial <- calls_state$serial + 1
    assign(sprintf("%.0f", calls_state$serial), ref, envir = refs)
    refs$newest <- ref
  }
  calls_state$binds <- calls_state$binds + 1L
  if (calls_state$binds >= max(SWEEP_EVERY, calls_state$swept)) sweep_args()   # amortized O(1)
  as.name(name)
}

# How many recently published names per label a new value is compared with,
# and how many bindings may pass between two sweeps.
RECENT <- 4L
SWEEP_EVERY <- 256L

# A recently published name of this label whose value (a list or data frame)
# is identical to v, or NULL; identical() answers at once for the same object.
bound_name <- function(label, v) {
  for (name in calls_state$recent[[label]]) {
    env <- live_env(name)
    if (is.null(env)) next
    other <- get(name, envir = env, inherits = FALSE)
    if (typeof(other) == typeof(v) && length(other) == length(v) && identical(other, v)) return(name)
  }
  NULL
}

# A live environment that binds a published name (the newest, usually), or NULL.
live_env <- function(name) {
  refs <- calls_state$published[[name]]
  if (is.null(refs)) return(NULL)
  if (!is.environment(refs)) return(.Call(C_weak_ref_key, refs))
  env <- .Call(C_weak_ref_key, refs$newest)
  if (!is.null(env)) return(env)
  for (ref in eapply(refs, identity, all.names = TRUE)) {
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

# Forgets the weak references whose environment R has collected, and takes
# the names left without one off the search path. Run every SWEEP_EVERY
# bindings and when the worker is idle (R/dispatch.R), so each binding costs
# O(1) and no call environment needs a finalizer.
sweep_args <- function() {
  calls_state$binds <- 0L
  names <- ls(calls_state$published, all.names = TRUE, sorted = FALSE)
  calls_state$swept <- length(names)
  gone <- character()
  for (name in names) {
    refs <- calls_state$published[[name]]
    if (!is.environment(refs)) {
      if (is.null(.Call(C_weak_ref_key, refs))) gone <- c(gone, name)
      next
    }
    keys <- setdiff(ls(refs, sorted = FALSE), "newest")
    dead <- keys[vapply(keys, function(k) is.null(.Call(C_weak_ref_key, refs[[k]])), NA)]
    if (length(dead) == length(keys)) gone <- c(gone, name)
    else if (length(dead)) rm(list = dead, envir = refs)
  }
  if (length(gone)) {
    rm(list = gone, envir = calls_state$published)
    if (ARG_STORE %in% search()) {
      store <- as.environment(ARG_STORE)
      rm(list = intersect(gone, ls(store, all.names = TRUE, sorted = FALSE)), envir = store)
    }
  }
  invisible(length(gone))
}

arg_store <- function() {
  if (ARG_STORE %in% search()) return(as.environment(ARG_STORE))
  attach_env <- get("attach", envir = baseenv())   # by name: R CMD check frowns on attach()
  attach_env(NULL, pos = 2L, name = ARG_STORE, warn.conflicts = FALSE)
}

# The number of names of values passed from Python that are still published,
# after a sweep (for tests).
live_args <- function() {
  sweep_args()
  if (!ARG_STORE %in% search()) return(0L)
  length(ls(as.environment(ARG_STORE), all.names = TRUE))
}

# The function position of the call: a symbol, pkg::name, or a function object.
function_expr <- function(fn) {
  if (!is.character(fn)) return(fn)
  if (grepl(":", fn, fixed = TRUE)) {
    parts <- regmatches(fn, regexec("^([^:]+)(:::?)([^:]+)$", fn))[[1L]]
    if (length(parts)) return(call(parts[[3L]], as.name(parts[[2L]]), as.name(parts[[4L]])))
  }
  if (grepl("_", fn, fixed = TRUE) && !exists(fn, envir = globalenv(), mode = "function")) {
    dotted <- chartr("_", ".", fn)
    if (exists(dotted, envir = globalenv(), mode = "function")) fn <- dotted
  }
  as.name(fn)
}

# The function a call target names, or NULL when it cannot be found (the call
# then fails with R's own error).
resolve_function <- function(target) {
  if (is.function(target)) return(target)
  if (is.name(target)) return(get0(as.character(target), envir = globalenv(), mode = "function"))
  f <- tryCatch(eval(target, globalenv()), error = function(e) NULL)
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
