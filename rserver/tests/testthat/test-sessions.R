# serve_sessions(): its argument checks and helpers. The server itself is
# tested end to end from Python (tests/server/), with real clients.

test_that("sizes are read as an operator writes them", {
  expect_equal(rserver:::parse_size("512M"), 512 * 2^20)
  expect_equal(rserver:::parse_size("2G"), 2 * 2^30)
  expect_equal(rserver:::parse_size("1.5GiB"), 1.5 * 2^30)
  expect_equal(rserver:::parse_size(1e9), 1e9)
  expect_equal(rserver:::parse_size("0"), 0)
  expect_error(rserver:::parse_size("lots"), "not a size")
})

test_that("only loopback and ipc endpoints may go without a server key", {
  expect_true(rserver:::loopback("tcp://127.0.0.1:5555"))
  expect_true(rserver:::loopback("tcp://localhost:*"))
  expect_true(rserver:::loopback("ipc:///tmp/x"))
  expect_false(rserver:::loopback("tcp://0.0.0.0:5555"))
  expect_false(rserver:::loopback("tcp://10.0.0.1:5555"))
  expect_error(rserver::serve_sessions("tcp://0.0.0.0:*"), "refusing to serve .* without encryption")
})

test_that("a server key file must hold a secret key, and allow must be a directory", {
  pub <- tempfile(fileext = ".key")
  writeLines(c("metadata", "curve", '    public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"'), pub)
  expect_error(rserver::serve_sessions("tcp://127.0.0.1:*", server_key = pub, allow = tempdir()),
               "no valid secret-key")
  bad <- tempfile(fileext = ".key_secret")
  writeLines('    secret-key = "not z85"', bad)
  expect_error(rserver::serve_sessions("tcp://127.0.0.1:*", server_key = bad, allow = tempdir()),
               "no valid public-key")
  expect_error(rserver::serve_sessions("tcp://127.0.0.1:*", server_key = "/nonexistent.key_secret",
                                       allow = tempdir()), "cannot read the key file")
})

test_that("R's out-of-memory errors name a session's memory limit", {
  old <- options(rserver.session_memory = 300 * 2^20)
  on.exit(options(old))
  expect_equal(rserver:::memory_note("cannot allocate vector of size 74.5 Gb"),
               "cannot allocate vector of size 74.5 Gb (this session's memory limit is 300 MiB: --session-memory)")
  expect_equal(rserver:::memory_note("object 'x' not found"), "object 'x' not found")
  options(rserver.session_memory = 0)
  expect_equal(rserver:::memory_note("cannot allocate vector of size 1 Gb"), "cannot allocate vector of size 1 Gb")
})

test_that("outside a session, session_key() is empty", {
  expect_identical(rserver::session_key(), list(name = "", key = ""))
})
