#' Serve many clients on one port, each in its own R session.
#'
#' This R process loads `preload` (packages, and files of R code), then serves
#' on `endpoint` until SIGTERM, SIGINT or SIGHUP. Each client that says hello
#' gets a session: a process forked from this one, so preloaded packages and
#' objects cost it nothing until it changes them, and sessions share no
#' globals, handles or options. A front process owns the public socket and
#' relays each client's messages to its session; this process makes no
#' ZeroMQ context (one must not cross `fork()`). See protocol/SPEC.md §10.
#'
#' @param endpoint a ZeroMQ endpoint, e.g. `"tcp://0.0.0.0:5555"`.
#' @param preload package names, and paths of `.R` files sourced into the
#'   global environment, loaded once here before any session starts.
#' @param server_key the server's secret key file (`NAME.key_secret`, made by
#'   `rbridge keygen`): turns CurveZMQ encryption and client authentication on.
#' @param allow with `server_key`, the directory of the public key files
#'   (`*.key`) of the clients that may connect; read at every connection.
#' @param insecure serve a non-loopback address without `server_key`.
#' @param max_sessions sessions open at once; a client beyond gets `ServerBusy`.
#' @param session_memory bytes a session may allocate beyond what it shares
#'   with this process (0: no limit); R errors name the limit.
#' @param session_cpu CPU seconds a session may use (0: no limit); then it ends.
#' @param idle_timeout seconds without a request after which a session ends (0: never).
#' @param client_grace seconds a client may stay disconnected before its session ends.
#' @param interrupt_grace seconds R may ignore an interrupt before its session ends.
#' @param drain_timeout on SIGTERM, seconds calls in flight may take to finish.
#' @param liveness seconds of silence after which a client's connection is dropped.
#' @param quiet if `FALSE`, print the bound endpoint on stderr.
#' @return the bound endpoint, invisibly, once the server has stopped.
serve_sessions <- function(endpoint = "tcp://127.0.0.1:5555", preload = character(),
                           server_key = NULL, allow = NULL, insecure = FALSE,
                           max_sessions = 64, session_memory = 0, session_cpu = 0,
                           idle_timeout = 0, client_grace = 10, interrupt_grace = 5,
                           drain_timeout = 8, liveness = 30, quiet = FALSE) {
  stopifnot(is.character(endpoint), length(endpoint) == 1L, is.character(preload))
  if (is.null(server_key) && !insecure && !loopback(endpoint))
    stop("refusing to serve ", endpoint, " without encryption: give server_key and allow ",
         "(make keys with `rbridge keygen`), or insecure = TRUE if the network is trusted", call. = FALSE)
  for (item in preload) {
    if (grepl("\\.[Rr]$", item)) sys.source(item, envir = globalenv())
    else suppressPackageStartupMessages(library(item, character.only = TRUE))
  }
  load_namespace_fully()
  config <- list(endpoint = endpoint, server_key = if (is.null(server_key)) "" else normalizePath(server_key, mustWork = FALSE),
                 allow = if (is.null(allow)) "" else normalizePath(allow, mustWork = FALSE),
                 max_sessions = max_sessions, session_memory = parse_size(session_memory),
                 session_cpu = session_cpu, idle_timeout = idle_timeout, client_grace = client_grace,
                 interrupt_grace = interrupt_grace, drain_timeout = drain_timeout, liveness = liveness,
                 r_tempdir = tempdir())   # the front removes it if this process is killed
  started <- .Call(C_sessions_start, config)
  bound <- started[[1L]]
  if (!quiet) message("rserver: listening on ", bound, "\nrserver: sessions in ", started[[2L]])
  repeat {
    session <- .Call(C_sessions_next)
    if (is.list(session)) run_session(session)   # a child: never returns
    if (isFALSE(session)) break
  }
  if (!quiet) message("rserver: stopped")
  invisible(bound)
}

#' The client key a session serves.
#'
#' @return `list(name, key)`: the name of the client's public key file in the
#'   server's `allow` directory (without `.key`) and its Z85 text; empty
#'   strings outside an authenticated session.
session_key <- function() {
  s <- getOption("rserver.session")
  list(name = if (is.null(s)) "" else s$key_name, key = if (is.null(s)) "" else s$key)
}

# A forked session: serves its client until it says shutdown, then exits.
run_session <- function(cfg) {
  status <- tryCatch({
    options(rserver.session = cfg, rserver.session_memory = cfg$memory, rserver.idle_wait_ms = 30000L)
    if (cfg$memory > 0) mem.maxVSize(cfg$memory / 2^20)
    serve(cfg$endpoint, max_envelope = cfg$max_envelope, max_frame = cfg$max_frame,
          parent_pid = cfg$parent_pid, liveness = cfg$liveness, quiet = TRUE,
          interrupt_grace = cfg$interrupt_grace, heartbeat = 0,
          session = list(number = cfg$number, key_name = cfg$key_name))
    0L
  }, error = function(e) {
    message("rserver: the session failed: ", conditionMessage(e))
    1L
  })
  .Call(C_session_exit, status)
}

loopback <- function(endpoint) {
  grepl("^(ipc|inproc)://", endpoint) ||
    grepl("^tcp://(127\\.[0-9.]+|localhost|\\[::1\\]|::1)(:|$)", endpoint)
}

# "2G", "512M", "1e9" or a number of bytes.
parse_size <- function(size) {
  if (is.numeric(size)) return(as.numeric(size))
  m <- regmatches(size, regexec("^\\s*([0-9.E+]+)\\s*([KMGT]?)I?B?\\s*$", toupper(size)))[[1L]]
  if (!length(m)) stop("not a size: ", size, " (examples: 512M, 2G)", call. = FALSE)
  as.numeric(m[[2L]]) * 1024^(match(m[[3L]], c("", "K", "M", "G", "T")) - 1L)
}

# The libzmq this package uses: list(version, curve) (`rbridge doctor`).
zmq_info <- function() .Call(C_zmq_info)
