# The ops that run on R's main thread, one handler each. See protocol/SPEC.md
# ("Ops"); the whole op table is in src/protocol.c.

# How a result is sent (SPEC "Ops"): converted, as a handle, or as an Arrow payload.
RESULT_MODES <- c("convert", "handle", "arrow")

run_op <- function(ctx, msg) {
  mode <- msg$mode
  if (is.null(mode)) mode <- "convert"   # the common case checks nothing more
  else if (!is.character(mode) || length(mode) != 1L || !mode %in% RESULT_MODES)
    stop("'mode' must be one of ", paste(RESULT_MODES, collapse = ", "))
  op <- msg$op
  handler <- OP_HANDLERS[[op]]
  if (is.null(handler)) stop("unknown op '", op, "'")
  if (!is.null(msg$plots)) {   # most requests capture nothing: no cost for them
    capture <- plots_begin(msg$plots)
    on.exit(plots_end(capture, ctx))
  }
  # call, eval and get return a value in the client's `mode`; the others a converted status
  list(value = handler(ctx, msg), mode = if (op == "call" || op == "eval" || op == "get") mode else "convert",
       stop = op == "shutdown")
}

# R's side of the op table (src/protocol.c has the whole table): the ops that
# run on the main thread, and client_gone, which only the I/O thread makes.
# Each returns its result's value.
OP_HANDLERS <- list(
  call = call_op,
  eval = function(ctx, msg) eval_code(msg$code, target_env(msg$env), draw = !is.null(msg$plots)),
  get = function(ctx, msg) get(msg$name, envir = target_env(msg$env)),
  assign = function(ctx, msg) {
    assign(msg$name, msg$value, envir = target_env(msg$env))
    NULL
  },
  release = function(ctx, msg) {
    counts <- .Call(C_request_release, ctx)
    list(released = counts[[1L]], live = counts[[2L]])
  },
  reserve = function(ctx, msg) {
    arena <- .Call(C_request_reserve, ctx, msg$bytes)
    list(reserved = if (is.null(arena)) 0 else msg$bytes, arena = arena)
  },
  shutdown = function(ctx, msg) NULL,
  client_gone = function(ctx, msg) .Call(C_request_release_client, ctx)
)

target_env <- function(env) {
  if (is.null(env)) return(globalenv())
  if (!is.environment(env)) stop("'env' must be a handle to an environment")
  env
}

# User code runs inside this marker frame, so tracebacks can start below it.
rbridge_eval <- function(expr, envir) eval(expr, envir)

# draw: a request that captures plots draws each visible plot object (a
# ggplot, a lattice plot), as R's console would.
eval_code <- function(code, envir, draw = FALSE) {
  value <- NULL
  for (expr in parse_code(code)) {
    if (!draw) {
      value <- rbridge_eval(expr, envir)
      next
    }
    shown <- withVisible(rbridge_eval(expr, envir))
    value <- shown$value
    if (shown$visible) draw_visible(value)
  }
  value
}

parse_code <- function(code) parse(text = single_string(code, "code"), keep.source = FALSE)

single_string <- function(x, name) {
  if (!is.character(x) || length(x) != 1L || is.na(x)) stop("'", name, "' must be a single string")
  x
}
