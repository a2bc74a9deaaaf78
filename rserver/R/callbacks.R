# Python callables as R functions. See src/callbacks.c and protocol/SPEC.md
# ("Callbacks").

# The R function a Python callable becomes. Unnamed arguments reach Python as
# positional arguments, named ones as keyword arguments under their R names.
make_callable <- function(ptr) {
  force(ptr)
  function(...) call_python(ptr, list(...))
}

# Sends the callback, then serves requests (the callback's own calls into R)
# until the client's reply arrives.
call_python <- function(ptr, args) {
  state <- new_loop_state()
  state$waiting_for <- .Call(C_callback_send, ptr, args)
  serve_loop(state)
  if (isTRUE(state$interrupted))
    stop(structure(class = c("interrupt", "condition"),
                   list(message = "interrupted while waiting for Python", call = NULL)))
  reply <- .Call(C_request_decode, state$reply)
  if (identical(reply$op, "error")) stop(python_condition(reply$error))
  reply$value
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
