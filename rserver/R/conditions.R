# R conditions as protocol data: class vector, message, call and traceback.
# See protocol/SPEC.md ("Errors").

# Errors raised outside user code (a bad request) carry no call or traceback.
describe_error <- function(condition, trace) {
  frames <- user_frames(trace)
  call <- if (is.null(frames)) NULL else user_call(conditionCall(condition))
  list(class(condition), conditionMessage(condition), call, as.character(frames))
}

describe_warning <- function(w) {
  call <- user_call(conditionCall(w))
  list(class(w), conditionMessage(w), call)
}

# The call of a condition, unless it is our own eval() of top-level code.
user_call <- function(call) {
  if (is.null(call) || identical(call, quote(eval(expr, envir)))) return(NULL)
  deparse_call(call)
}

deparse_call <- function(call) {
  if (is.null(call)) return(NULL)
  paste(deparse(call, width.cutoff = 80L, nlines = 5L), collapse = "\n")
}

# The frames of user code: those below our rbridge_eval() marker and its
# eval(), without the frames of the condition machinery at the end. NULL when
# the error did not happen in user code.
user_frames <- function(trace) {
  heads <- vapply(trace, call_head, "")
  marker <- which(heads == "rbridge_eval")
  if (!length(marker)) return(NULL)
  start <- max(marker) + 1L
  while (start <= length(trace) && identical(trace[[start]], quote(eval(expr, envir))))
    start <- start + 1L
  end <- length(trace)
  while (end >= start && heads[[end]] %in% c(".handleSimpleError", "h", ""))
    end <- end - 1L
  if (end < start) return(character())
  vapply(trace[start:end], function(cl) deparse_call(cl), "")
}

interrupt_condition <- function(ctx) {
  if (.Call(C_request_timed_out, ctx))
    structure(class = c("rbridge_timeout", "interrupt", "condition"),
              list(message = "the request timed out and was interrupted", call = NULL))
  else
    structure(class = c("interrupt", "condition"),
              list(message = "the request was interrupted", call = NULL))
}

# The name of the function a call calls ("f" for f(), pkg::f() and pkg:::f()).
call_head <- function(cl) {
  f <- cl[[1L]]
  if (is.call(f) && identical(length(f), 3L) && as.character(f[[1L]]) %in% c("::", ":::")) f <- f[[3L]]
  if (is.name(f)) as.character(f) else ""
}
