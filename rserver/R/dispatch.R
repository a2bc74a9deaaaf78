# Request dispatch: the serve loop and one function per op.
# See protocol/SPEC.md ("Ops").

new_loop_state <- function() {
  state <- new.env(parent = emptyenv())
  state$ctx <- NULL          # request in progress
  state$warnings <- list()   # its warnings
  state$trace <- NULL        # calls at its last error
  state$stop <- FALSE
  state$waiting_for <- NULL  # id of the callback whose reply ends this loop
  state$wait_key <- NULL     # the same, as its key in open_waits
  state$reply <- NULL
  state$pending <- NULL      # a request received before this loop started
  state$callable <- NULL     # the callable whose reply ends this loop
  state$client_gone <- FALSE
  state$interrupted <- FALSE
  state$idle_wait_ms <- getOption("rserver.idle_wait_ms", 1000L)   # longest wait for a request; a session's is longer
  state
}

# Serves requests until a shutdown, or, in a callback, until the reply it waits
# for. Condition handlers are set up once per run of requests rather than once
# per request, because tryCatch() costs more than a whole small call; an error
# unwinds to here and is answered to the request in progress, and serving
# resumes. An interrupt while a callback waits (no request of its own in
# progress) ends the wait and is passed on to the request that made the call.
serve_loop <- function(state) {
  # Interrupts land only inside allowInterrupts(), where the handlers below
  # are in place: one that comes between two runs, or while a handler answers
  # a request, waits for the next run instead of unwinding the whole server.
  suspendInterrupts(while (!state$stop) {
    tryCatch(
      withCallingHandlers(
        allowInterrupts(serve_requests(state)),
        warning = function(w) {
          if (is.null(state$ctx)) return()   # idle: R's default handling
          state$warnings[[length(state$warnings) + 1L]] <- tryCatch(describe_warning(w), error = function(e)
            list(class(w), tryCatch(conditionMessage(w), error = function(e) "(undescribable warning)"), NULL))
          invokeRestart("muffleWarning")
        },
        error = function(e) state$trace <- sys.calls()
      ),
      error = function(e) reply_failure(state, e),
      interrupt = function(i) {
        if (is.null(state$ctx) && !is.null(state$waiting_for)) {
          state$interrupted <- TRUE
          state$stop <- TRUE
        } else if (.Call(C_terminate_requested)) {   # SIGTERM or SIGHUP (server.c)
          if (!is.null(state$ctx)) reply_failure(state, NULL)
          if (is.null(state$waiting_for)) message("rserver: terminated; stopping")
          state$stop <- TRUE
        } else if (is.null(state$ctx) && !.Call(C_interrupt_was_own)) {
          message("rserver: interrupted; stopping")   # Ctrl-C at the terminal of an idle server
          state$stop <- TRUE
        } else {
          reply_failure(state, NULL)
        }
      }
    )
  })
}

serve_requests <- function(state) {
  repeat {
    if (!is.null(state$waiting_for) && is.null(state$pending) && callback_wait_over(state)) return(invisible())
    ctx <- state$pending   # already state$ctx (serve_nested)
    if (is.null(ctx)) {
      wait <- state$idle_wait_ms
      later <- .Call(C_later_loaded)
      if (later) wait <- later_wait_ms(wait)
      # the outermost loop leaves plain calls to C, which answers them as the
      # code below would (C_server_next); with `later`, tasks run between requests
      ctx <- .Call(C_server_next, wait, state, !later && is.null(state$waiting_for))
    } else state$pending <- NULL
    if (is.null(ctx)) {
      run_idle_tasks()
      next
    }
    reply_id <- .Call(C_request_reply_id, ctx)
    if (!is.null(reply_id)) {
      if (!is.null(state$waiting_for) && is_reply_to(ctx, reply_id, state$waiting_for, state$callable)) {
        state$reply <- ctx      # decoded by call_python, so that a bad reply is its error
        state$stop <- TRUE
        return(invisible())
      }
      next   # kept for a wait further down, or one nobody waits for any more
    }
    # fresh warnings and trace; decoded also when expired: that gives shared memory back
    msg <- .Call(C_request_begin, ctx, state)
    if (.Call(C_request_timed_out, ctx)) stop(interrupt_condition(ctx))   # expired while queued
    out <- run_op(ctx, msg)
    .Call(C_reply_value, ctx, out$value, state$warnings, out$mode)
    state$ctx <- NULL
    if (!is.null(state$callable) && .Call(C_request_ends_callback, ctx, state$callable)) {
      state$client_gone <- TRUE
      state$stop <- TRUE
      return(invisible())
    }
    if (.Call(C_later_loaded)) run_later_tasks()
    if (out$stop) {
      state$stop <- TRUE
      return(invisible())
    }
  }
}

# Between requests of a callback's serve loop: whether its wait is over,
# because the reply came while a wait above it ran (another client's), or
# because the request that made the callback was told to stop (its deadline,
# an interrupt, its client gone) while another client's request ran above it.
callback_wait_over <- function(state) {
  kept <- kept_reply(state$wait_key, state$callable)
  if (!is.null(kept)) state$reply <- kept
  else if (.Call(C_active_request_stopped)) state$interrupted <- TRUE
  else return(FALSE)
  state$stop <- TRUE
  TRUE
}

# R's event loop between requests. Input handlers (sockets, pipes of other
# packages) are polled by C_server_next itself; the `later` package runs its
# tasks only when asked outside an interactive console, so when it is loaded
# it is asked after each request and while idle, and the wait for requests
# ends when its next task is due. (C_later_loaded costs less than
# isNamespaceLoaded(), which would run per request.)
run_later_tasks <- function() {
  if (later::next_op_secs() <= 0) later::run_now()
}

# While idle: the names of values passed from Python that are gone leave the search path.
run_idle_tasks <- function() {
  if (.Call(C_args_bound_since_sweep) > 0L) sweep_args()
  if (.Call(C_later_loaded)) run_later_tasks()
}

# The wait for a request, at most `most` ms: until later's next task is due.
later_wait_ms <- function(most) {
  secs <- later::next_op_secs()
  if (!is.finite(secs)) return(most)
  as.integer(max(0, min(most, ceiling(secs * 1000))))
}

# Answers the request in progress with an error (condition NULL: interrupted).
reply_failure <- function(state, condition) {
  ctx <- state$ctx
  state$ctx <- NULL
  if (is.null(ctx)) {
    if (!is.null(condition)) message("rserver: error while idle: ", conditionMessage(condition))
    return(invisible())
  }
  if (.Call(C_request_answered, ctx)) return(invisible())   # an interrupt that came after the reply left
  if (is.null(condition)) condition <- interrupt_condition(ctx)
  sent <- tryCatch({
    .Call(C_reply_error, ctx, describe_error(condition, state$trace, .Call(C_request_plain, ctx)), state$warnings)
    TRUE
  }, error = function(e) e)
  if (!isTRUE(sent))   # e.g. the result could not be encoded, or the condition described
    .Call(C_reply_error, ctx, list(c(class(condition)[[1L]], "rbridge_error", "error", "condition"),
                                   plain_message(condition, sent), NULL, character()), list())
}

# A condition's message, or, when even that fails, the error that prevented it.
plain_message <- function(condition, failure) {
  tryCatch(paste(conditionMessage(condition), collapse = "\n"),
           error = function(e) paste("(the error could not be described:", conditionMessage(failure), ")"))
}
