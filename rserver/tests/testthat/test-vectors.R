# The golden messages in protocol/vectors: the Python suite checks the same bytes.
vectors <- jsonlite::fromJSON(vectors_path(), simplifyVector = FALSE)

constants <- jsonlite::fromJSON(sub("messages.json", "constants.json", vectors_path(), fixed = TRUE),
                                simplifyVector = FALSE)

test_that("there are golden vectors for every op and every kind of worker message (the Python suite checks the same)", {
  ops <- vapply(vectors, function(v) rserver:::mp_decode(hex_to_raw(v$hex))$op, "")
  expect_true(all(c(names(constants$ops), unlist(constants$worker_messages)) %in% ops))
  expect_true(all(c(unlist(constants$server_ops), unlist(constants$server_messages)) %in% ops))
})

test_that("one op table: the C table, R's handlers and the hello capabilities agree with constants.json", {
  table <- .Call(rserver:::C_ops)
  expect_identical(as.list(table), constants$ops)
  expect_setequal(names(rserver:::OP_HANDLERS), c(names(table)[table == "main"], "client_gone"))
  expect_setequal(rserver:::worker_info("tcp://x", 1)$capabilities, c(names(table)[table != "reply"], "output"))
})

for (v in vectors) {
  local({
    v <- v
    bytes <- hex_to_raw(v$hex)
    test_that(paste("golden vector decodes:", v$name), {
      expect_identical(rserver:::mp_decode(bytes), eval(parse(text = v$r)))
    })
    if (!is.null(v$r_encode)) {
      test_that(paste("golden vector encodes byte for byte:", v$name), {
        expect_identical(rserver:::mp_encode(eval(parse(text = v$r_encode))), bytes)
      })
    }
  })
}

test_that("the C code has the numbers of protocol/vectors/constants.json (the Python suite checks its own)", {
  expected <- constants
  have <- .Call(rserver:::C_constants)
  for (name in names(have)) expect_equal(have[[name]], expected[[name]], info = name)
  expect_equal(eval(formals(rserver::serve)$liveness[[3L]]), expected$liveness)   # serve()'s default
  expect_equal(formals(rserver::serve)$heartbeat * 1000, expected$heartbeat_ms)     # serve()'s default
})
