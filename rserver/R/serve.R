#' Serve rbridge clients from this R process.
#'
#' Binds a ZeroMQ ROUTER socket on `endpoint` and serves requests until a
#' client sends `shutdown`, the parent process dies (when `parent_pid` is
#' given), the process gets SIGTERM or SIGHUP (the request in progress is then
#' answered as interrupted; a second signal ends the process at once), or an
#' interrupt (Ctrl-C) comes while idle. R's thread reads the socket while it
#' waits; a C thread takes it over while R computes, so pings and interrupts
#' are answered then too.
#'
#' @param endpoint a ZeroMQ endpoint such as `"tcp://127.0.0.1:5555"`,
#'   `"tcp://127.0.0.1:*"` (any free port) or `"ipc:///path/to/socket"`.
#' @param max_envelope largest accepted envelope frame, in bytes.
#' @param max_frame largest frame libzmq accepts at all; larger frames drop
#'   the connection.
#' @param parent_pid stop when this process is no longer our parent (used by
#'   private workers); `0` disables the watch.
#' @param liveness seconds of silence (no message, no heartbeat) after which
#'   a client's connection is dropped; a client that reconnects within 2 s
#'   keeps its state. It should outlast a client's longest pause.
#' @param quiet if `FALSE`, print the bound endpoint on stderr.
#' @param interrupt_grace seconds R may ignore an interrupt (from a client, or
#'   a request's timeout) before the process exits; `0`: never. Sessions of
#'   [serve_sessions()] use it.
#' @param heartbeat seconds between ZMTP heartbeats to clients; `0`: none
#'   (sessions of [serve_sessions()], whose one client is their front).
#' @param session a session's description for the handshake (internal).
#' @return the bound endpoint, invisibly, once the server has stopped.
serve <- function(endpoint = Sys.getenv("RBRIDGE_ENDPOINT", "tcp://127.0.0.1:5555"),
                  max_envelope = env_number("RBRIDGE_MAX_ENVELOPE", 256 * 2^20),
                  max_frame = env_number("RBRIDGE_MAX_FRAME", 2^31 - 1),
                  parent_pid = env_number("RBRIDGE_PARENT_PID", 0),
                  liveness = env_number("RBRIDGE_LIVENESS", 30),
                  quiet = FALSE, interrupt_grace = 0, heartbeat = 1, session = NULL) {
  stopifnot(is.numeric(liveness), length(liveness) == 1L, liveness >= 1, liveness <= 3600)
  stopifnot(is.character(endpoint), length(endpoint) == 1L)
  load_namespace_fully()
  info <- .Call(C_mp_encode, worker_info(endpoint, max_envelope, session))
  # two steps: a server of sessions forks between them (no thread, no ZeroMQ context yet)
  .Call(C_server_prepare, endpoint, as.numeric(max_envelope), as.numeric(max_frame),
        as.numeric(parent_pid), as.numeric(liveness), as.numeric(interrupt_grace), as.numeric(heartbeat), info,
        !is.null(session))
  bound <- .Call(C_server_start_io)
  on.exit(.Call(C_server_stop), add = TRUE)
  owned <- Sys.getenv("RBRIDGE_OWNED_DIR")   # a private worker's directory
  if (nzchar(owned)) on.exit(unlink(owned, recursive = TRUE), add = TRUE)
  if (!quiet) message("rserver: listening on ", bound)
  serve_loop(new_loop_state())
  invisible(bound)
}

# The requests clients may send, from the op table in src/protocol.c.
request_ops <- function() {
  ops <- .Call(C_ops)
  names(ops)[ops != "reply"]
}

env_number <- function(name, default) {
  v <- Sys.getenv(name, "")
  if (nzchar(v)) as.numeric(v) else default
}

worker_info <- function(endpoint, max_envelope, session = NULL) {
  info <- list(
    r_version = paste(R.version$major, R.version$minor, sep = "."),
    rserver_version = as.character(utils::packageVersion("rserver")),
    pid = Sys.getpid(),
    platform = R.version$platform,
    endpoint = endpoint,
    capabilities = as.list(c(request_ops(), "output")),
    max_envelope = as.numeric(max_envelope)
  )
  if (!is.null(session)) info$session <- session
  info
}

# Forces every lazy-loaded object of this package now: an interrupt that lands
# while R loads one on first use would leave it half-made ("promise already
# under evaluation" on every later use).
load_namespace_fully <- function() {
  ns <- asNamespace("rserver")
  for (name in ls(ns, all.names = TRUE)) get(name, envir = ns, inherits = FALSE)
  invisible()
}
