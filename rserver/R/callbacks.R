# Python callables as R functions. See src/callbacks.c and protocol/SPEC.md
# ("Callbacks").

# The R function a Python callable becomes. Unnamed arguments reach Python as
# positional arguments, named ones as keyword arguments under their R names.
make_callable <- function(ptr) {
  force(ptr)
  function(...) call_python(ptr, list(...))
}

# Sends the callback and waits for the client's reply. Most callbacks make no
# calls into R, so the wait starts without a serve loop of its own (whose
# condition handlers would cost more than the round trip); the first nested
# request starts one. An interrupt while waiting interrupts the calling request.
call_python <- function(ptr, args) {
  callback_id <- .Call(C_callback_send, ptr, args)
  # Interrupts are taken only while waiting: once a nested request has been
  # taken (it is on the request stack) it must reach serve_nested(), which
  # answers it even when interrupted.
  ctx <- NULL
  suspendInterrupts(repeat {
    got <- allowInterrupts(.Call(C_server_next, 1000L, NULL, FALSE))
    if (is.null(got)) next
    reply_id <- .Call(C_request_reply_id, got)
    if (is.null(reply_id)) {
      ctx <- serve_nested(callback_id, ptr, got)
      break
    }
    if (is_reply_to(got, reply_id, callback_id, ptr)) {
      ctx <- got
      break
    }
  })
  reply <- .Call(C_request_decode, ctx)   # here, so that a bad reply is this call's error
  if (identical(reply$op, "error")) stop(python_condition(reply$error))
  reply$value
}

# Callback waits that serve nested requests, by callback id (hex): FALSE, or
# a reply that came while a wait above it on the stack was waiting (another
# client's). Only such a wait can be below another, so a callback answered
# without nested requests (the common case) registers nothing.
open_waits <- new.env(parent = emptyenv())

# Whether `ctx` (with id `reply_id`) is the reply to callback `callback_id` from the
# client that owns `ptr`. Any other reply is kept for the callback it answers,
# when that one still waits; the rest are dropped.
is_reply_to <- function(ctx, reply_id, callback_id, ptr) {
  if (identical(reply_id, callback_id)) return(.Call(C_reply_from_owner, ctx, ptr))
  key <- paste(reply_id, collapse = "")
  if (isFALSE(open_waits[[key]])) open_waits[[key]] <- ctx
  FALSE
}

# A reply to the callback whose wait has `key` that came while it was not the
# innermost wait, or NULL.
kept_reply <- function(key, ptr) {
  ctx <- open_waits[[key]]
  if (isFALSE(ctx) || is.null(ctx)) return(NULL)
  open_waits[[key]] <- FALSE
  if (.Call(C_reply_from_owner, ctx, ptr)) ctx else NULL
}

# Serves the callback's calls into R, starting with `first`, until the reply to
# callback `callback_id` arrives; returns that reply. If the client that owns the
# callable disconnects meanwhile, no reply will come: that is an error.
serve_nested <- function(callback_id, ptr, first) {
  state <- new_loop_state()
  state$waiting_for <- callback_id
  state$wait_key <- paste(callback_id, collapse = "")
  open_waits[[state$wait_key]] <- FALSE   # no reply yet
  on.exit(rm(list = state$wait_key, envir = open_waits))
  state$callable <- ptr
  state$pending <- first
  state$ctx <- first   # an interrupt before the loop takes it is answered to it
  serve_loop(state)
  if (isTRUE(state$interrupted))
    stop(structure(class = c("interrupt", "condition"),
                   list(message = "interrupted while waiting for Python", call = NULL)))
  if (isTRUE(state$client_gone))
    stop("rbridge: the client of this Python function disconnected before it answered")
  state$reply
}

# A Python exception as an R condition of class python_error (catchable with
# tryCatch(python_error = ...)), carrying the Python type and traceback.
python_condition <- function(err) {
  cls <- unlist(err$class)
  if (!length(cls)) cls <- c("python_error", "error", "condition")
  structure(class = cls,
            list(message = as.character(err$message), call = NULL,
                 python_type = err$python_type, python_traceback = unlist(err$traceback)))
}
