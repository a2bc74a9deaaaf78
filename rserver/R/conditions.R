# R conditions as protocol data: class vector, message, call and traceback.
# See protocol/SPEC.md ("Errors").

# Errors raised outside user code (a bad request) carry no call or traceback.
# plain: the request was a plain call, run by C_server_next without a marker.
describe_error <- function(condition, trace, plain = FALSE) {
  frames <- user_frames(trace, plain)
  call <- if (is.null(frames)) NULL else user_call(conditionCall(condition))
  list(class(condition), memory_note(conditionMessage(condition)), call, as.character(frames))
}

# In a session with a memory limit, R's out-of-memory errors name it.
memory_note <- function(message) {
  limit <- getOption("rserver.session_memory", 0)
  if (limit > 0 && grepl("cannot allocate|vector memory (exhausted|limit)", message))
    message <- sprintf("%s (this session's memory limit is %s: --session-memory)", message, format_bytes(limit))
  message
}

format_bytes <- function(n) {
  units <- c("B", "KiB", "MiB", "GiB", "TiB")
  i <- max(1L, min(length(units), floor(log(n, 1024)) + 1L))
  sprintf("%g %s", signif(n / 1024^(i - 1L), 3), units[[i]])
}

describe_warning <- function(w) {
  call <- user_call(conditionCall(w))
  list(class(w), conditionMessage(w), call)
}

# The call of a condition, unless it is our own: the eval() of top-level
# code, or the serve loop's frame, under which a plain call runs (SPEC §9).
OWN_CALLS <- list(quote(eval(expr, envir)), quote(serve_requests(state)))
user_call <- function(call) {
  if (is.null(call) || any(vapply(OWN_CALLS, identical, NA, call))) return(NULL)
  deparse_call(call)
}

deparse_call <- function(call) {
  if (is.null(call)) return(NULL)
  paste(deparse(call, width.cutoff = 80L, nlines = 5L), collapse = "\n")
}

# The frames of user code, one line each: those below our rbridge_eval()
# marker and its eval() (for a plain call, below the serve loop's
# serve_requests(), whose wait ran it), without the frames of the condition
# machinery at the end, of rbridge's own helpers, and R's eval() appearing
# twice. NULL when the error did not happen in user code; empty when only in
# rbridge's helpers.
user_frames <- function(trace, plain = FALSE) {
  heads <- vapply(trace, call_head, "")
  marker <- which(heads == "rbridge_eval")
  if (!length(marker) && plain) marker <- which(heads == "serve_requests")
  if (!length(marker)) return(NULL)
  start <- max(marker) + 1L
  while (start <= length(trace) && identical(trace[[start]], quote(eval(expr, envir))))
    start <- start + 1L
  end <- length(trace)
  while (end >= start && heads[[end]] %in% c(".handleSimpleError", "h", ""))
    end <- end - 1L
  if (end < start) return(character())
  keep <- start:end
  keep <- keep[!vapply(trace[keep], is_own_call, NA)]
  repeated_eval <- function(i) heads[[i]] %in% c("eval", "evalq") && identical(trace[[i]], trace[[i - 1L]])
  keep <- keep[c(TRUE, !vapply(keep[-1L], repeated_eval, NA))]   # R's eval() shows up twice
  if (all(heads[keep] %in% SIGNALLERS)) return(character())
  vapply(trace[keep], frame_line, "")
}

SIGNALLERS <- c("stop", "warning", "signalCondition", "abort")

# A call of one of rbridge's helpers (rserver:::plain(...)).
is_own_call <- function(cl) {
  f <- cl[[1L]]
  is.call(f) && length(f) == 3L && as.character(f[[1L]]) %in% c("::", ":::") &&
    identical(as.character(f[[2L]]), "rserver")
}

# A call as one line of at most FRAME_WIDTH characters.
FRAME_WIDTH <- 120L
frame_line <- function(cl) {
  text <- paste(trimws(deparse(cl, width.cutoff = 500L, nlines = 3L)), collapse = " ")
  if (nchar(text) > FRAME_WIDTH) text <- paste0(substr(text, 1L, FRAME_WIDTH - 3L), "...")
  text
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
