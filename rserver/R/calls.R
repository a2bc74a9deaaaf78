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
calls_state$serial <- 0                                  # numbers the weak references
calls_state$records <- new.env(parent = emptyenv())      # records_call() answers, by function and class

# The call op's handler (ops.R): msg$fn called with msg$args and msg$kwargs.
# It is the handler itself, a closure less per call than a wrapper would be.
call_op <- function(ctx, msg) {
  fn <- msg$fn
  args <- msg$args
  kwargs <- msg$kwargs
  made <- .Call(C_make_call, fn, args, kwargs)   # a call of scalars, list(target, f), or NULL
  if (is.call(made)) return(rbridge_eval(made, globalenv()))
  if (is.null(made)) {   # pkg::name, or underscores that may stand for dots
    target <- function_expr(fn)
    f <- resolve_function(target)
    if (length(kwargs)) names(kwargs) <- translate_arg_names(names(kwargs), f, target)
  } else {
    target <- made[[1L]]
    f <- made[[2L]]
  }
  built <- build_call(target, f, args, kwargs)
  rbridge_eval(built[[1L]], built[[2L]])
}

# The same, from its parts (the tests call it).
call_function <- function(fn, args, kwargs) call_op(NULL, list(fn = fn, args = args, kwargs = kwargs))

# list(call, environment to evaluate it in). The values are bound in C
# (src/calls.c, C_bind_call); R decides the names and where formulas go.
build_call <- function(target, f, args, kwargs) {
  npos <- length(args)
  shape <- .Call(C_call_shape, args, kwargs)   # c(any R code, any string with a `~`)
  formula_at <- if (shape[[2L]])
    as.integer(formula_slots(target, f, arg_labels(f, npos, names(kwargs)), npos)) else integer()
  # code (spliced, or a formula made from a string) may refer to globals: a
  # value's plain name must not shadow one
  publish <- shape[[1L]] || length(formula_at) > 0L || records_call(target, f, if (npos) args[[1L]])
  .Call(C_bind_call, target, f, args, kwargs, formula_at, if (publish) arg_store())
}

# Whether a call of f may be recorded (match.call(), sys.call()) and evaluated
# again elsewhere, as model fits are by update(): then its values need names R
# finds from anywhere. For an S3 generic, the method that the first argument
# dispatches to is asked (every generic when it cannot be found). Cached per
# function and class.
records_call <- function(target, f, first) {
  if (!is.function(f) || is.primitive(f)) return(FALSE)
  name <- call_name(target)
  key <- paste(if (is.null(name)) "" else deparse(target), class(first)[[1L]], sep = "\r")
  cached <- if (!is.null(name)) calls_state$records[[key]]
  if (!is.null(cached) && identical(cached[[1L]], f)) return(cached[[2L]])
  calls <- body_calls(f)
  answer <- if (any(RECORDERS %in% calls)) TRUE
            else if ("UseMethod" %in% calls) dispatched_records(name, target, first)
            else FALSE
  if (!is.null(name)) calls_state$records[[key]] <- list(f, answer)
  answer
}

RECORDERS <- c("match.call", "sys.call", "sys.function", "standardGeneric")

dispatched_records <- function(name, target, first) {
  if (is.null(name)) return(TRUE)
  envir <- if (is.call(target)) asNamespace(as.character(target[[2L]])) else globalenv()
  for (cls in c(class(first), "default")) {
    method <- utils::getS3method(name, cls, optional = TRUE, envir = envir)
    if (is.function(method)) return(any(c(RECORDERS, "UseMethod", "NextMethod") %in% body_calls(method)))
  }
  TRUE
}

# The names of the functions a function's body calls.
body_calls <- function(f) {
  found <- character()
  walk <- function(e) {
    if (missing(e) || !is.call(e)) return()   # missing: an empty argument, as in x[, 1]
    head <- e[[1L]]
    if (is.name(head)) found[[length(found) + 1L]] <<- as.character(head)
    else if (is.call(head) && length(head) == 3L && as.character(head[[1L]]) %in% c("::", ":::"))
      found[[length(found) + 1L]] <<- as.character(head[[3L]])
    for (part in as.list(e)) walk(part)
  }
  walk(body(f))
  unique(found)
}

has_formula_string <- function(values) {
  for (v in values) if (is.character(v) && length(v) == 1L && !is.na(v) && grepl("~", v, fixed = TRUE)) return(TRUE)
  FALSE
}

# The name each argument value is bound under: a keyword's own name; for a
# positional value, the formal it fills, or "x" for one that goes to `...`.
# (src/calls.c, value_labels, does the same for C_bind_call.)
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
  if (is.primitive(f)) f <- args(f)   # NULL for language primitives such as `[[`
  if (!is.function(f)) return(character())
  as.character(names(formals(f)))
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

# Values are bound and their names published in C (src/calls.c, bind_value):
# a fresh name, or the name a list or data frame identical to a recent one
# already has (so two fits of one data set name the same data, as lme4's
# anova() requires). A published name keeps weak references to the call
# environments that bind it (one, or an environment of them once bound again);
# sweep_args() takes away the names none of them is alive for.

# The newest names published for lists and data frames, per label.
remember_name <- function(label, name) {
  calls_state$recent[[label]] <- utils::head(c(name, calls_state$recent[[label]]), RECENT)
}

# One more call environment binds a published name.
add_ref <- function(name, ref) {
  refs <- calls_state$published[[name]]
  if (!is.environment(refs)) {
    first <- refs
    refs <- calls_state$published[[name]] <- new.env(parent = emptyenv())
    if (!is.null(first)) refs[["0"]] <- first
  }
  calls_state$serial <- calls_state$serial + 1
  assign(sprintf("%.0f", calls_state$serial), ref, envir = refs)
  refs$newest <- ref
}

# How many recently published names per label a new list is compared with.
RECENT <- 4L

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
# the names left without one off the search path. Run (by src/calls.c) after
# 256 bindings, or as many as there were names at the last sweep, and when the
# worker is idle (R/dispatch.R): each binding costs O(1), and no call
# environment needs a finalizer.
sweep_args <- function() {
  names <- ls(calls_state$published, all.names = TRUE, sorted = FALSE)
  .Call(C_args_swept, length(names))
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
