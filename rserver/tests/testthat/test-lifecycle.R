# Start-up in two steps (src/server.c): prepare, then start the I/O.

threads <- function() {
  line <- grep("^Threads:", readLines("/proc/self/status"), value = TRUE)
  as.integer(sub("^Threads:\\s+", "", line))
}

test_that("preparing a server makes no thread and no ZeroMQ context, so a process can fork after it", {
  before <- threads()
  info <- rserver:::mp_encode(list(pid = Sys.getpid()))
  .Call(rserver:::C_server_prepare, "tcp://127.0.0.1:*", 2^20, 2^20, 0, 30, 0, 1, info, FALSE)
  expect_equal(threads(), before)
  child <- parallel::mcparallel({
    bound <- .Call(rserver:::C_server_start_io)   # in the fork: its own context and I/O thread
    started <- threads()
    .Call(rserver:::C_server_stop)
    list(bound = bound, started = started)
  })
  got <- parallel::mccollect(child, wait = TRUE, timeout = 30)[[1L]]
  expect_match(got$bound, "^tcp://127\\.0\\.0\\.1:[0-9]+$")
  expect_gt(got$started, before)   # the I/O thread and libzmq's threads
  expect_equal(threads(), before)  # and none here
})
